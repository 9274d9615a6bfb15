//! The disk's geometry: sizes (`--size`, a tree's bytes, MiB rounding),
//! the GPT with the ESP and the RAMSTICK partition at MiB boundaries, and
//! the two filesystem images copied in at their offsets.

use crate::deps;
use anyhow::{bail, Context, Result};
use ramstick_common::cmdline::{parse_size, Size};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub(crate) const MIB: u64 = 1 << 20;
/// Space before the first partition and after the last (GPT backup).
pub(crate) const GPT_GAP: u64 = MIB;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// An image size like `512M` or `2G`: what the kernel command line's sizes
/// accept (bytes, or K/M/G/T as powers of 1024; one parser for both), a unit
/// optionally followed by `iB` or `B`.
pub fn parse_image_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    match parse_size(t) {
        Some(Size::Bytes(bytes)) => Ok(bytes),
        Some(Size::Percent(_)) | None => {
            bail!("invalid size {text:?}: expected e.g. 512M or 2G (a unit of K, M, G or T)")
        }
    }
}

pub(crate) fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB) * MIB
}

/// Total size of the regular files below `dir`.
pub(crate) fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Partition sizes in bytes (all MiB multiples).
pub(crate) struct Layout {
    pub(crate) total: u64,
    pub(crate) esp_size: u64,
    pub(crate) persist_size: u64,
}

impl Layout {
    fn esp_offset(&self) -> u64 {
        GPT_GAP
    }

    fn persist_offset(&self) -> u64 {
        GPT_GAP + self.esp_size
    }

    /// The sfdisk script for this layout.
    fn sfdisk_script(&self) -> String {
        let s = |bytes: u64| bytes / 512;
        format!(
            "label: gpt\nunit: sectors\nfirst-lba: {}\n\
             start={}, size={}, type={ESP_TYPE}, name=\"ESP\"\n\
             start={}, size={}, type={LINUX_TYPE}, name=\"RAMSTICK\"\n",
            s(GPT_GAP),
            s(self.esp_offset()),
            s(self.esp_size),
            s(self.persist_offset()),
            s(self.persist_size),
        )
    }
}

/// Creates the GPT disk `path` and copies the filesystems in.
pub(crate) fn write_disk(path: &Path, layout: &Layout, esp: &Path, ext4: &Path) -> Result<()> {
    let disk = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    disk.set_len(layout.total)
        .with_context(|| format!("cannot size {}", path.display()))?;
    deps::run_with_input(
        deps::cmd("sfdisk")
            .args([
                "--quiet",
                "--no-reread",
                "--no-tell-kernel",
                "--wipe",
                "never",
            ])
            .arg(path),
        &layout.sfdisk_script(),
    )?;
    copy_at(&disk, layout.esp_offset(), esp)?;
    copy_at(&disk, layout.persist_offset(), ext4)?;
    disk.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Copies `src` into `disk` at `offset`, skipping all-zero MiB blocks (the
/// disk file is sparse and already zero there).
fn copy_at(disk: &File, offset: u64, src: &Path) -> Result<()> {
    let mut input = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input
                .read(&mut buf[filled..])
                .with_context(|| format!("cannot read {}", src.display()))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(());
        }
        let chunk = &buf[..filled];
        if chunk.iter().any(|&b| b != 0) {
            disk.write_all_at(chunk, pos)
                .context("cannot write the disk image")?;
        }
        pos += filled as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_image_size("512M").unwrap(), 512 * MIB);
        assert_eq!(parse_image_size("2G").unwrap(), 2048 * MIB);
        assert_eq!(parse_image_size("2GiB").unwrap(), 2048 * MIB);
        assert_eq!(parse_image_size("64k").unwrap(), 64 * 1024);
        assert_eq!(parse_image_size("1000").unwrap(), 1000);
        assert!(parse_image_size("12X")
            .unwrap_err()
            .to_string()
            .contains("12X"));
        assert!(parse_image_size("M").is_err());
        assert!(parse_image_size("99999999999T").is_err());
        assert!(parse_image_size("50%").is_err());
    }

    #[test]
    fn sfdisk_script_is_mib_aligned() {
        let layout = Layout {
            total: 200 * MIB,
            esp_size: 64 * MIB,
            persist_size: 134 * MIB,
        };
        assert_eq!(
            layout.sfdisk_script(),
            "label: gpt\nunit: sectors\nfirst-lba: 2048\n\
             start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"\n\
             start=133120, size=274432, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"RAMSTICK\"\n"
        );
    }

    #[test]
    fn copy_at_writes_at_offset_and_keeps_holes() {
        let dir = ramstick_testkit::TempDir::new("copyat");
        let src = dir.join("src");
        let mut data = vec![0u8; 3 * MIB as usize + 10];
        data[5] = 1;
        data[3 * MIB as usize + 9] = 2;
        fs::write(&src, &data).unwrap();
        let disk_path = dir.join("disk");
        let disk = File::create(&disk_path).unwrap();
        disk.set_len(8 * MIB).unwrap();
        copy_at(&disk, MIB, &src).unwrap();
        let out = fs::read(&disk_path).unwrap();
        assert_eq!(&out[MIB as usize..MIB as usize + data.len()], &data[..]);
        assert!(out[..MIB as usize].iter().all(|&b| b == 0));
    }
}

//! The stick's ESP as update-stick reads and writes it: through mtools on
//! the partition's loop device (no kernel FAT driver needed on the host,
//! as `cargo xtask image` builds it), or a plain directory (the tests).
//!
//! GRUB's environment block is rewritten in place, as GRUB's `save_env`
//! does: the clusters of `grub/grubenv` are found (`mshowfat`) and the
//! 1024 bytes written over them on the device, so only its first sector
//! changes (see [`ramstick_common::grubenv`]).

use crate::deps;
use anyhow::{bail, Context, Result};
use ramstick_common::grubenv::{Env, BLOCK_SIZE};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What update-stick does on the ESP. Paths are relative to its root.
pub trait Esp {
    /// A file's bytes; `None` when it does not exist.
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Writes `from` as `path` (replacing it).
    fn write(&mut self, path: &str, from: &Path) -> Result<()>;
    /// Rewrites the existing environment block `path` in place.
    fn write_env(&mut self, path: &str, env: &Env) -> Result<()>;
}

/// A directory holding the ESP's files (the tests).
#[cfg(test)]
pub struct DirEsp(pub std::path::PathBuf);

#[cfg(test)]
impl Esp for DirEsp {
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        let p = self.0.join(path);
        match fs::read(&p) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    fn write(&mut self, path: &str, from: &Path) -> Result<()> {
        let to = self.0.join(path);
        let tmp = crate::initramfs::partial_path(&to);
        fs::copy(from, &tmp)
            .with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        fs::rename(&tmp, &to)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), to.display()))
    }

    fn write_env(&mut self, path: &str, env: &Env) -> Result<()> {
        let p = self.0.join(path);
        ramstick_common::grubenv::write_in_place(&p, env)
            .with_context(|| format!("cannot write {}", p.display()))
    }
}

/// The ESP partition `dev` (a loop device), through mtools.
pub struct MtoolsEsp {
    pub dev: String,
}

impl MtoolsEsp {
    fn cmd(&self, tool: &str) -> std::process::Command {
        let mut c = deps::cmd(tool);
        c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&self.dev);
        c
    }
}

impl Esp for MtoolsEsp {
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        let out = self
            .cmd("mtype")
            .arg(format!("::/{path}"))
            .output()
            .context("cannot run mtype")?;
        if out.status.success() {
            return Ok(Some(out.stdout));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not found") {
            return Ok(None);
        }
        bail!("mtype ::/{path} on {} failed: {}", self.dev, err.trim())
    }

    fn write(&mut self, path: &str, from: &Path) -> Result<()> {
        // mtools has no rename over an existing file: a new name (a
        // kernel) is written whole before anything names it; the menu
        // files are overwritten (see the README). Its stderr (a geometry
        // warning on a loop device) is shown only on a failure.
        deps::output(
            self.cmd("mcopy")
                .arg("-o")
                .arg(from)
                .arg(format!("::/{path}")),
        )
        .map(drop)
    }

    fn write_env(&mut self, path: &str, env: &Env) -> Result<()> {
        let block = env.to_block().map_err(anyhow::Error::msg)?;
        let clusters = deps::output(self.cmd("mshowfat").arg(format!("::/{path}")))?;
        let clusters = parse_clusters(&clusters)?;
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.dev)
            .with_context(|| format!("cannot open {}", self.dev))?;
        let mut boot = [0u8; 512];
        dev.read_exact_at(&mut boot, 0)
            .with_context(|| format!("cannot read {}'s boot sector", self.dev))?;
        let geo = Geometry::parse(&boot)?;
        let offsets = geo.offsets(&clusters, BLOCK_SIZE as u64);
        // The block as it is now: it must be GRUB's, whole, where we found it.
        let mut now = vec![0u8; BLOCK_SIZE];
        let mut at = 0;
        for (offset, len) in &offsets {
            dev.read_exact_at(&mut now[at..at + len], *offset)
                .with_context(|| format!("cannot read {}", self.dev))?;
            at += len;
        }
        Env::parse(&now).with_context(|| format!("::/{path} is not an environment block"))?;
        let mut at = 0;
        for (offset, len) in offsets {
            if block[at..at + len] != now[at..at + len] {
                dev.write_all_at(&block[at..at + len], offset)
                    .with_context(|| format!("cannot write {}", self.dev))?;
            }
            at += len;
        }
        dev.sync_all()
            .with_context(|| format!("cannot sync {}", self.dev))
    }
}

/// `::/grub/grubenv <6934-6935> <7000>` → [6934, 6935, 7000].
pub fn parse_clusters(text: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for range in text.split('<').skip(1) {
        let range = range.split('>').next().unwrap_or_default();
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
        out.extend(a..=b);
    }
    if out.is_empty() {
        bail!("mshowfat listed no cluster: {text:?}");
    }
    Ok(out)
}

/// Where a FAT file system keeps its clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Byte offset of cluster 2.
    pub data_start: u64,
    pub cluster_size: u64,
}

impl Geometry {
    /// From the boot sector (FAT12/16/32 BPB).
    pub fn parse(boot: &[u8; 512]) -> Result<Geometry> {
        let u16_at = |i: usize| u64::from(u16::from_le_bytes([boot[i], boot[i + 1]]));
        let u32_at = |i: usize| {
            u64::from(u32::from_le_bytes([
                boot[i],
                boot[i + 1],
                boot[i + 2],
                boot[i + 3],
            ]))
        };
        let sector = u16_at(11);
        let per_cluster = u64::from(boot[13]);
        let reserved = u16_at(14);
        let fats = u64::from(boot[16]);
        let root_entries = u16_at(17);
        let fat_size = match u16_at(22) {
            0 => u32_at(36),
            n => n,
        };
        if !sector.is_power_of_two() || sector < 512 || per_cluster == 0 || fats == 0 {
            bail!("not a FAT boot sector (sector size {sector}, {per_cluster} per cluster)");
        }
        let root_sectors = (root_entries * 32).div_ceil(sector);
        Ok(Geometry {
            data_start: (reserved + fats * fat_size + root_sectors) * sector,
            cluster_size: per_cluster * sector,
        })
    }

    /// The (byte offset, length) pieces of the first `len` bytes of a file
    /// in `clusters`.
    pub fn offsets(&self, clusters: &[u64], len: u64) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        let mut left = len;
        for c in clusters {
            if left == 0 {
                break;
            }
            let n = left.min(self.cluster_size);
            out.push((self.data_start + (c - 2) * self.cluster_size, n as usize));
            left -= n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_and_offsets() {
        assert_eq!(
            parse_clusters("::/grub/grubenv <6934-6935> <7000>\n").unwrap(),
            [6934, 6935, 7000]
        );
        assert_eq!(parse_clusters("::/x <9>").unwrap(), [9]);
        assert!(parse_clusters("::/x").is_err());
        let mut boot = [0u8; 512];
        boot[11..13].copy_from_slice(&512u16.to_le_bytes());
        boot[13] = 1;
        boot[14..16].copy_from_slice(&32u16.to_le_bytes());
        boot[16] = 2;
        boot[36..40].copy_from_slice(&1000u32.to_le_bytes());
        let g = Geometry::parse(&boot).unwrap();
        assert_eq!(g.data_start, (32 + 2000) * 512);
        assert_eq!(
            g.offsets(&[2, 10, 11], 1024),
            [(g.data_start, 512), (g.data_start + 8 * 512, 512)]
        );
        assert!(Geometry::parse(&[0u8; 512]).is_err());
    }
}

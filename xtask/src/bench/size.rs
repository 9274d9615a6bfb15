//! Size rows: our initramfs vs Debian's initramfs-tools initrd for the same
//! kernel, compressed (the file) and unpacked (the sum of the regular files'
//! sizes in its cpio archives: what it occupies in RAM). An initrd may be
//! several archives back to back: uncompressed ones (early microcode) are
//! read in place, a compressed one is piped through its decompressor.

use super::table::{Cell, Row, Unit};
use crate::build::Binaries;
use crate::{deps, initramfs, kernel};
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Regular file in a cpio mode.
const S_IFREG: u32 = 0o100000;
const S_IFMT: u32 = 0o170000;
/// The reference cell when Debian's initrd is not compared.
const SKIPPED: &str = "skipped in --quick (no Debian rootfs built)";
/// The newc header magic.
const NEWC: &[u8] = b"070701";

/// Both size rows. `debian_initrd` is Debian's initrd for `kernel` (or why
/// there is none); `None`: not compared (`--quick` without the Debian rootfs).
pub fn rows(
    bins: Result<&Binaries, &str>,
    kernel: Result<&kernel::Kernel, &str>,
    debian_initrd: Option<Result<PathBuf, String>>,
    work: &Path,
) -> Vec<Row> {
    let ours = bins.map_err(|e| anyhow::anyhow!("{e}")).and_then(|b| {
        let k = kernel.map_err(|e| anyhow::anyhow!("{e}"))?;
        fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
        let out = work.join("initramfs.img");
        initramfs::build(b, &k.modules_dir, &k.version, &out)?;
        sizes(&out)
    });
    let theirs = debian_initrd.map(|initrd| {
        initrd
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|p| sizes(&p))
    });
    let cell = |label: &str, r: &Result<Sizes>, pick: Pick| {
        let values = r.as_ref().map(|s| vec![pick(s) as f64]);
        Cell::from_result(
            label,
            Unit::Bytes,
            values.map_err(|e| anyhow::anyhow!("{e:#}")),
        )
    };
    let rows: [(&str, Pick); 2] = [
        ("initramfs size, compressed (same kernel)", |s| s.compressed),
        ("initramfs size, unpacked (sum of file sizes)", |s| {
            s.unpacked
        }),
    ];
    rows.into_iter()
        .map(|(name, pick)| Row {
            name: name.into(),
            ours: cell("", &ours, pick),
            reference: match &theirs {
                Some(t) => cell("initramfs-tools", t, pick),
                None => Cell::Skipped(SKIPPED.into()),
            },
        })
        .collect()
}

/// Which of the [`Sizes`] a row shows.
type Pick = fn(&Sizes) -> u64;

/// The two sizes of an initramfs.
struct Sizes {
    /// The file.
    compressed: u64,
    /// The regular files in it.
    unpacked: u64,
}

fn sizes(path: &Path) -> Result<Sizes> {
    let compressed = fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let unpacked = unpacked_size(path)?;
    Ok(Sizes {
        compressed,
        unpacked,
    })
}

/// The sum of the regular files' sizes in every archive of the initramfs.
pub fn unpacked_size(path: &Path) -> Result<u64> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut offset = 0;
    let mut total = 0;
    while offset < data.len() {
        let rest = &data[offset..];
        if rest.starts_with(NEWC) {
            let mut cursor = Cursor::new(rest);
            total += file_bytes(&mut cursor).with_context(|| {
                format!("reading the cpio archive at {offset} in {}", path.display())
            })?;
            offset += usize::try_from(cursor.position()).context("archive too large")?;
            // Archives are padded with zeros to a block boundary.
            offset += data[offset..].iter().take_while(|&&b| b == 0).count();
            continue;
        }
        let tool = decompressor(rest)
            .with_context(|| format!("unknown data at offset {offset} in {}", path.display()))?;
        total += compressed_file_bytes(path, offset as u64, tool)?;
        break;
    }
    Ok(total)
}

/// The decompressor for data starting with a known magic.
fn decompressor(data: &[u8]) -> Result<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
    ];
    match MAGICS.iter().find(|(m, _)| data.starts_with(m)) {
        Some((_, tool)) => Ok(tool),
        None => bail!(
            "not cpio nor gzip/zstd/xz/lz4 (starts with {:02x?})",
            &data[..data.len().min(6)]
        ),
    }
}

/// File bytes of the compressed archive at `offset` of `path`, via `tool -dc`.
fn compressed_file_bytes(path: &Path, offset: u64, tool: &str) -> Result<u64> {
    let mut input = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    input
        .seek(SeekFrom::Start(offset))
        .with_context(|| format!("cannot seek in {}", path.display()))?;
    let mut cmd = deps::cmd(tool);
    cmd.arg("-dc")
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", deps::describe(&cmd)))?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let counted = file_bytes(&mut stdout);
    // Read what follows the trailer too, so the decompressor can finish.
    let drained = io::copy(&mut stdout, &mut io::sink());
    let status = child
        .wait()
        .with_context(|| format!("waiting for {tool}"))?;
    let total =
        counted.with_context(|| format!("reading the {tool} archive in {}", path.display()))?;
    drained.with_context(|| format!("reading {tool}'s output"))?;
    if !status.success() {
        bail!("{tool} -dc of {} failed ({status})", path.display());
    }
    Ok(total)
}

/// Sum of the regular files' sizes of one newc archive read from `r`, up to its trailer.
fn file_bytes<R: Read>(r: &mut R) -> Result<u64> {
    let mut total = 0;
    loop {
        let entry = cpio::newc::Reader::new(&mut *r).context("bad cpio header")?;
        if entry.entry().is_trailer() {
            entry.finish().context("bad cpio trailer")?;
            return Ok(total);
        }
        if entry.entry().mode() & S_IFMT == S_IFREG {
            total += u64::from(entry.entry().file_size());
        }
        entry.finish().context("cut cpio archive")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A newc archive with `files` (name, size) and a directory.
    fn archive(files: &[(&str, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        let dir = cpio::newc::Builder::new("dir").mode(0o040755);
        out = dir.write(out, 0).finish().unwrap();
        for (name, size) in files {
            let b = cpio::newc::Builder::new(name).mode(0o100644);
            let mut w = b.write(out, *size as u32);
            w.write_all(&vec![b'x'; *size]).unwrap();
            out = w.finish().unwrap();
        }
        cpio::newc::trailer(out).unwrap()
    }

    #[test]
    fn sums_early_plain_and_compressed_archives() {
        let dir = ramstick_testkit::TempDir::new("xtask-size");
        let mut early = archive(&[("kernel/x86/microcode/a.bin", 1000)]);
        early.resize(early.len().div_ceil(512) * 512, 0);
        let main = archive(&[("init", 300), ("lib/x.ko", 5000)]);
        let mut image = early.clone();
        image.extend(zstd::bulk::compress(&main, 3).unwrap());
        let path = dir.join("initrd.img");
        fs::write(&path, &image).unwrap();
        assert_eq!(unpacked_size(&path).unwrap(), 6300);
        fs::write(&path, &early).unwrap();
        assert_eq!(unpacked_size(&path).unwrap(), 1000);
        fs::write(&path, b"garbage!").unwrap();
        assert!(unpacked_size(&path).is_err());
    }
}

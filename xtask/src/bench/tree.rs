//! Deterministic generated trees for the codec, boot and save benches: many small
//! text-like files, a few large semi-compressible files, and symlinks. The
//! same [`Shape`] always gives the same bytes; a finished tree is reused.

use crate::deps;
use anyhow::{Context, Result};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Directories holding the small files.
    pub dirs: u32,
    /// Small files in each directory (0–12 KiB of text each).
    pub files_per_dir: u32,
    /// Large files at the top.
    pub large_files: u32,
    /// Size of each large file in MiB.
    pub large_mib: u32,
}

/// About 300 MB: 100 MB of small files and 4 × 50 MiB.
pub const FULL: Shape = Shape {
    dirs: 200,
    files_per_dir: 100,
    large_files: 4,
    large_mib: 50,
};

/// About 10 MB, for `--quick`.
pub const QUICK: Shape = Shape {
    dirs: 10,
    files_per_dir: 100,
    large_files: 1,
    large_mib: 4,
};

/// Words the text is made of (compresses about like source code or logs).
const WORDS: &[&str] = &[
    "the", "ramstick", "overlay", "squashfs", "block", "fragment", "inode", "error", "return",
    "struct", "impl", "let", "mut", "self", "usb", "stick", "kernel", "module", "zstd", "saver",
    "init", "persist", "upper", "lower", "mount", "device", "0x1f", "42", "1337", "fn", "pub",
    "match",
];

/// splitmix64: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Append about `len` bytes of word text to `out`.
fn text(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let end = out.len() + len;
    while out.len() < end {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(word.as_bytes());
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(end);
}

/// One 128 KiB chunk of a large file: random bytes (a third of them), text,
/// or a low-entropy pattern.
fn large_chunk(rng: &mut Rng, out: &mut Vec<u8>) {
    const CHUNK: usize = 128 << 10;
    out.clear();
    match rng.below(3) {
        0 => {
            while out.len() < CHUNK {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
        1 => text(rng, CHUNK, out),
        _ => {
            while out.len() < CHUNK {
                let r = rng.next();
                out.extend((0..8).map(|i| b"abcd"[((r >> (i * 2)) & 3) as usize]));
            }
        }
    }
}

/// The tree of `shape` at `dir`, generated unless a finished one is there.
pub fn ensure(dir: &Path, shape: Shape) -> Result<PathBuf> {
    let stamp = dir.with_extension("done");
    let want = format!("{shape:?}\n");
    if dir.is_dir() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(dir.to_path_buf());
    }
    deps::remove_if_exists(&stamp)?;
    deps::remove_if_exists(dir)?;
    println!("bench: generating the tree {} ({shape:?})", dir.display());
    generate(dir, shape)?;
    fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(dir.to_path_buf())
}

/// Write the tree of `shape` at `dir` (which must not exist).
fn generate(dir: &Path, shape: Shape) -> Result<()> {
    let mut rng = Rng(0x5eed);
    let mut buf = Vec::new();
    for d in 0..shape.dirs {
        let sub = dir.join(format!("d{d:04}"));
        fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        for f in 0..shape.files_per_dir {
            buf.clear();
            let len = rng.below(12 * 1024) as usize;
            text(&mut rng, len, &mut buf);
            let path = sub.join(format!("f{f:04}.txt"));
            fs::write(&path, &buf).with_context(|| format!("writing {}", path.display()))?;
        }
        let link = sub.join("link");
        std::os::unix::fs::symlink("f0000.txt", &link)
            .with_context(|| format!("creating {}", link.display()))?;
    }
    for l in 0..shape.large_files {
        let path = dir.join(format!("large{l}.bin"));
        let file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        for _ in 0..shape.large_mib * 8 {
            large_chunk(&mut rng, &mut buf);
            out.write_all(&buf)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_reused() {
        let base = ramstick_testkit::TempDir::new("xtask-tree");
        let shape = Shape {
            dirs: 2,
            files_per_dir: 3,
            large_files: 1,
            large_mib: 1,
        };
        let a = ensure(&base.join("a"), shape).unwrap();
        let b = ensure(&base.join("b"), shape).unwrap();
        let listing = |p: &Path| ramstick_common::tree::tree_listing(p).unwrap();
        let read = |p: &Path| fs::read(p.join("d0001/f0002.txt")).unwrap();
        assert_eq!(read(&a), read(&b));
        assert_eq!(
            fs::read(a.join("large0.bin")).unwrap(),
            fs::read(b.join("large0.bin")).unwrap()
        );
        assert_eq!(fs::metadata(a.join("large0.bin")).unwrap().len(), 1 << 20);
        assert_eq!(listing(&a).len(), listing(&b).len());
        // A finished tree is kept as it is (a marker file survives).
        fs::write(a.join("extra"), "x").unwrap();
        ensure(&a, shape).unwrap();
        assert!(a.join("extra").exists());
        // Another shape regenerates it.
        let other = Shape { dirs: 1, ..shape };
        ensure(&a, other).unwrap();
        assert!(!a.join("extra").exists() && !a.join("d0001").exists());
    }

    #[test]
    fn large_files_are_semi_compressible() {
        let mut rng = Rng(1);
        let mut data = Vec::new();
        let mut chunk = Vec::new();
        for _ in 0..32 {
            large_chunk(&mut rng, &mut chunk);
            data.extend_from_slice(&chunk);
        }
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        let ratio = packed.len() as f64 / data.len() as f64;
        assert!(ratio > 0.2 && ratio < 0.8, "ratio {ratio}");
    }
}

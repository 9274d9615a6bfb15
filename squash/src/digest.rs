//! Digests of an image file, for the layer manifest: the whole file, and its
//! "metadata digest" — the superblock plus everything from the inode table
//! to the end of the used bytes (inode, directory, fragment, id and xattr
//! tables; about 1% of a typical image). Boot checks the metadata digest of
//! every layer at every boot: it reads little, and a torn, truncated or
//! damaged layer fails it. Data blocks are checked by the decompressor as
//! they are read, and the whole-file digest by `saver check`.
//!
//! Every read here first asks the kernel to drop the file's cached pages, so
//! that a check made right after writing reads what the device returns, not
//! what is still in the page cache.

use crate::format::{Superblock, SUPERBLOCK_SIZE};
use crate::read::image::{Image, Kind};
use crate::{Error, Result};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use ramstick_common::digest::Digest;
use ramstick_common::io::read_full_at;
use std::fs::File;
use std::path::Path;

/// Read size of the digests.
const CHUNK: usize = 1 << 20;

/// What the manifest records of an image's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// File size.
    pub size: u64,
    /// xxh3-128 of the superblock and the metadata tables (hex).
    pub meta: String,
    /// xxh3-128 of the whole file (hex).
    pub full: String,
}

/// Drops the cached pages of `image`, so that the next reads come from the
/// device (pages still dirty stay; callers sync first).
pub fn drop_cache(image: &Path) -> Result<()> {
    open_uncached(image).map(drop)
}

/// Opens `image` for reading, with its cached pages dropped.
fn open_uncached(image: &Path) -> Result<(File, u64)> {
    let file = File::open(image).map_err(|e| Error::io("open", image, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", image, e))?
        .len();
    // Clean pages are dropped; a failure only means reads may be cached.
    let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    Ok((file, size))
}

/// Reads `len` bytes of `file` from `offset` in chunks, handing each to `f`
/// with its offset; a file that ends early is corrupt.
fn read_range(
    file: &File,
    image: &Path,
    offset: u64,
    len: u64,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(CHUNK as u64) as usize;
        let got = read_full_at(file, &mut buf[..want], offset + done)
            .map_err(|e| Error::io("read", image, e))?;
        if got < want {
            return Err(Error::Corrupt {
                image: image.to_path_buf(),
                what: format!("truncated at byte {}", offset + done + got as u64),
            });
        }
        f(offset + done, &buf[..want]);
        done += want as u64;
    }
    Ok(())
}

/// The superblock of an opened image and the range its metadata digest
/// covers after it: from the inode table to the end of the used bytes.
fn metadata_range(
    file: &File,
    image: &Path,
    size: u64,
) -> Result<([u8; SUPERBLOCK_SIZE], u64, u64)> {
    let mut head = [0u8; SUPERBLOCK_SIZE];
    let got = read_full_at(file, &mut head, 0).map_err(|e| Error::io("read", image, e))?;
    let corrupt = |what: String| Error::Corrupt {
        image: image.to_path_buf(),
        what,
    };
    let sb = Superblock::parse(&head[..got]).map_err(corrupt)?;
    if sb.bytes_used > size || sb.inode_table > sb.bytes_used {
        return Err(corrupt(format!(
            "truncated or damaged: {size} bytes, tables at {}..{}",
            sb.inode_table, sb.bytes_used
        )));
    }
    Ok((head, sb.inode_table, sb.bytes_used))
}

/// The metadata digest and the file size of `image`.
pub fn meta_digest(image: &Path) -> Result<(u64, String)> {
    let (file, size) = open_uncached(image)?;
    let (head, start, end) = metadata_range(&file, image, size)?;
    let mut digest = Digest::new();
    digest.update(&head);
    read_range(&file, image, start, end - start, |_, chunk| {
        digest.update(chunk)
    })?;
    Ok((size, digest.hex()))
}

/// Both digests of `image`, in one read of it from the device.
pub fn digests(image: &Path) -> Result<Digests> {
    let (file, size) = open_uncached(image)?;
    let (head, start, end) = metadata_range(&file, image, size)?;
    let mut meta = Digest::new();
    meta.update(&head);
    let mut full = Digest::new();
    read_range(&file, image, 0, size, |at, chunk| {
        full.update(chunk);
        // The part of this chunk inside the metadata range.
        let from = start.clamp(at, at + chunk.len() as u64) - at;
        let to = end.clamp(at, at + chunk.len() as u64) - at;
        meta.update(&chunk[from as usize..to as usize]);
    })?;
    Ok(Digests {
        size,
        meta: meta.hex(),
        full: full.hex(),
    })
}

/// Checks that `image` opens as a squashfs image: the superblock and every
/// table parse and the root directory reads (no data blocks are read).
pub fn probe(image: &Path) -> Result<()> {
    let img = Image::open(image)?;
    let root = img.root()?;
    img.entries(&root).map(drop)
}

/// What an image holds, from its metadata alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Directory entries (hardlinks count per name), the root not counted.
    pub entries: u64,
    /// File data, each inode once.
    pub data_bytes: u64,
}

/// Counts the entries and file data of `image` by walking its directory
/// tree (metadata only; a cycle or an over-deep tree is a corrupt image).
pub fn summary(image: &Path) -> Result<Summary> {
    let img = Image::open(image)?;
    let mut out = Summary::default();
    let mut seen_files = std::collections::HashSet::new();
    let mut seen_dirs = std::collections::HashSet::new();
    let mut todo = vec![(img.root()?, 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        if depth > crate::read::MAX_DEPTH || !seen_dirs.insert(dir.number) {
            return Err(img.corrupt("a directory cycle or a tree deeper than the reader allows"));
        }
        for e in img.entries(&dir)? {
            out.entries += 1;
            let inode = img.inode(e.inode_ref)?;
            match &inode.kind {
                Kind::Dir { .. } => todo.push((inode, depth + 1)),
                Kind::File(data) if seen_files.insert(inode.number) => out.data_bytes += data.size,
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pack, PackOptions};
    use std::os::unix::fs::FileExt;

    fn scratch(name: &str) -> ramstick_testkit::TempDir {
        let dir = ramstick_testkit::TempDir::new(&format!("squash-digest-{name}"));
        dir.mkdir("tree/etc");
        std::fs::write(dir.join("tree/etc/a"), vec![7u8; 300_000]).unwrap();
        std::fs::write(dir.join("tree/b"), b"hello").unwrap();
        dir
    }

    #[test]
    fn one_pass_digests_equal_separate_ones_across_chunks() {
        let dir = scratch("chunks");
        // Incompressible: an image of several read chunks.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..(3 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join("tree/etc/noise"), noise).unwrap();
        let image = dir.join("l.squashfs");
        pack(&dir.join("tree"), &image, &PackOptions::default()).unwrap();
        let d = digests(&image).unwrap();
        assert!(d.size > 3 * CHUNK as u64 / 2, "{}", d.size);
        assert_eq!(meta_digest(&image).unwrap(), (d.size, d.meta.clone()));
        let whole = std::fs::read(&image).unwrap();
        assert_eq!(d.full, ramstick_common::digest::xxh3_hex(&whole));
    }

    #[test]
    fn data_damage_changes_the_full_digest_metadata_damage_both() {
        let dir = scratch("damage");
        let image = dir.join("l.squashfs");
        pack(&dir.join("tree"), &image, &PackOptions::default()).unwrap();
        let before = digests(&image).unwrap();
        assert_eq!(before.size, std::fs::metadata(&image).unwrap().len());
        assert_eq!(
            meta_digest(&image).unwrap(),
            (before.size, before.meta.clone())
        );
        probe(&image).unwrap();
        assert_eq!(
            summary(&image).unwrap(),
            Summary {
                entries: 3,
                data_bytes: 300_005
            }
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        // A byte of the first data block (right after the superblock).
        file.write_at(&[0xff], SUPERBLOCK_SIZE as u64 + 10).unwrap();
        let data_hit = digests(&image).unwrap();
        assert_eq!(data_hit.meta, before.meta);
        assert_ne!(data_hit.full, before.full);
        let sb = {
            let mut head = [0u8; SUPERBLOCK_SIZE];
            read_full_at(&File::open(&image).unwrap(), &mut head, 0).unwrap();
            Superblock::parse(&head).unwrap()
        };
        // A byte of the last table.
        file.write_at(&[0xa5], sb.bytes_used - 2).unwrap();
        assert_ne!(meta_digest(&image).unwrap().1, before.meta);
        // Truncated: refused, not digested.
        file.set_len(sb.inode_table + 1).unwrap();
        assert!(matches!(meta_digest(&image), Err(Error::Corrupt { .. })));
        assert!(probe(&image).is_err());
    }
}

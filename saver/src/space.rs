//! How much room a new layer needs, and how much /persist has.
//!
//! The compressed size is unknown before packing, so the estimate gives two
//! bounds: the worst case (nothing compresses: file data as stored, plus
//! metadata) and a floor (a tenth of that, better than zstd does on typical
//! data). Below the floor the save is refused without writing anything;
//! between the two it is tried, and running out of space while writing
//! leaves the partial layer unreferenced (no manifest names it; the next
//! save removes it) and the saved state untouched (see `save`).

use anyhow::{Context, Result};
use ramstick_squash::Exclude;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Metadata allowance per entry (inode, directory entry, xattrs, index).
const PER_ENTRY: u64 = 256;
/// Fixed allowance (superblock, tables, padding).
const FIXED: u64 = 1 << 20;
/// The floor assumes at most this compression ratio.
const BEST_RATIO: u64 = 10;

/// What packing a tree will store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Directory entries (hardlinks count per name).
    pub entries: u64,
    /// File data: allocated bytes (holes are free), each inode once.
    pub data: u64,
}

impl Estimate {
    /// The image size if nothing compresses.
    pub fn worst(&self) -> u64 {
        self.data + self.entries * PER_ENTRY + FIXED
    }

    /// The smallest size the image can reasonably have.
    pub fn floor(&self) -> u64 {
        self.worst() / BEST_RATIO
    }
}

/// Walks the tree at `root` (without following symlinks or crossing
/// mounts), leaving out what `exclude` excludes.
pub fn estimate(root: &Path, exclude: &Exclude) -> Result<Estimate> {
    estimate_with(root, exclude, true)
}

/// [`estimate`], crossing into other devices when `same_dev` is false: an
/// overlay's merged view shows the files of its lowers and upper with
/// their own devices (a root bind-mounted alone has no mounts to cross).
pub fn estimate_with(root: &Path, exclude: &Exclude, same_dev: bool) -> Result<Estimate> {
    let root_meta = std::fs::symlink_metadata(root)
        .with_context(|| format!("cannot stat {}", root.display()))?;
    let mut est = Estimate::default();
    let mut seen = HashSet::new();
    let mut todo: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let name = entry.file_name();
            let path = format!("{rel}/{}", name.to_string_lossy());
            if exclude.matches(&path) {
                continue;
            }
            let meta = entry
                .metadata()
                .with_context(|| format!("cannot stat {}", entry.path().display()))?;
            if same_dev && meta.dev() != root_meta.dev() {
                continue;
            }
            est.entries += 1;
            if meta.is_dir() {
                todo.push((entry.path(), path));
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                est.data += meta.len().min(meta.blocks() * 512);
            }
        }
    }
    Ok(est)
}

/// Bytes available on the filesystem holding `path`, as `df` shows them.
/// Root may also use ext4's reserved blocks, minus the few ext4 keeps for
/// its own metadata (which statvfs does not show): this is a lower bound.
pub fn free(path: &Path) -> Result<u64> {
    Ok(usage(path)?.free)
}

/// A filesystem's bytes, from one statvfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// In use.
    pub used: u64,
    /// Its size.
    pub size: u64,
    /// Available, as `df` shows ([`free`]).
    pub free: u64,
}

/// The usage of the filesystem holding `path`.
pub fn usage(path: &Path) -> Result<Usage> {
    let st = nix::sys::statvfs::statvfs(path)
        .with_context(|| format!("cannot get the space used and free on {}", path.display()))?;
    let size = st.blocks() * st.fragment_size();
    Ok(Usage {
        used: size - st.blocks_free() * st.fragment_size(),
        size,
        free: st.blocks_available() * st.fragment_size(),
    })
}

pub use ramstick_common::human::bytes as human;

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn estimate_counts_data_once_and_skips_exclusions() {
        let dir = ramstick_testkit::TempDir::new("saver-space");
        dir.mkdir("tmp");
        dir.mkdir("etc");
        fs::write(dir.join("etc/a"), vec![1u8; 10_000]).unwrap();
        fs::hard_link(dir.join("etc/a"), dir.join("etc/b")).unwrap();
        fs::write(dir.join("tmp/big"), vec![1u8; 100_000]).unwrap();
        // A sparse file: 1 GiB long, nothing allocated.
        fs::File::create(dir.join("sparse"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let ex = Exclude::parse("/tmp/*").unwrap();
        let est = estimate(&dir, &ex).unwrap();
        // tmp, etc, etc/a, etc/b, sparse
        assert_eq!(est.entries, 5);
        assert!(est.data >= 10_000 && est.data < 20_000, "{est:?}");
        assert!(est.worst() > est.data && est.floor() < est.worst());
        let all = estimate(&dir, &Exclude::none()).unwrap();
        assert_eq!(all.entries, 6);
        assert!(all.data >= 110_000, "{all:?}");
    }
}

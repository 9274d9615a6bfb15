//! Content hashes that name cached build outputs: the e2e disk images and
//! rootfs trees, the modules image, GRUB's EFI binary.
//!
//! FNV-1a 64 (`ramstick_common::digest::Fnv1a`: its values never change with
//! the Rust version) over length-prefixed fields, so that ("ab", "c") and ("a", "bc")
//! differ. Trees are hashed by content, not mtime: rebuilding an identical
//! rootfs keeps its hash and the cached images stay valid.

use anyhow::{Context, Result};
use ramstick_common::digest::Fnv1a;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// An incremental FNV-1a 64 hash of fields.
#[derive(Clone, Default)]
pub struct Hasher(Fnv1a);

impl Hasher {
    /// Mix in raw bytes.
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Mix in one field (its length first).
    pub fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    /// Mix in a string field.
    pub fn str(&mut self, s: &str) {
        self.field(s.as_bytes());
    }

    /// Mix in a file's length and contents.
    pub fn file(&mut self, path: &Path) -> Result<()> {
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        self.bytes(&len.to_le_bytes());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                return Ok(());
            }
            self.bytes(&buf[..n]);
        }
    }

    /// Mix in a directory tree: every entry's relative path, type, mode and
    /// contents (symlink target, file bytes), in sorted order.
    pub fn tree(&mut self, root: &Path) -> Result<()> {
        self.tree_below(root, root)
    }

    fn tree_below(&mut self, root: &Path, dir: &Path) -> Result<()> {
        let mut entries = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let rel = path.strip_prefix(root).unwrap_or(&path);
            self.field(rel.as_os_str().as_encoded_bytes());
            self.bytes(&meta.permissions().mode().to_le_bytes());
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target = fs::read_link(&path)
                    .with_context(|| format!("reading link {}", path.display()))?;
                self.field(target.as_os_str().as_encoded_bytes());
            } else if kind.is_dir() {
                self.tree_below(root, &path)?;
                self.str("end of dir");
            } else if kind.is_file() {
                self.file(&path)?;
            } else if kind.is_block_device() || kind.is_char_device() {
                self.bytes(&meta.rdev().to_le_bytes());
            }
        }
        Ok(())
    }

    pub fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_testkit::TempDir;

    fn tree_hash(root: &Path) -> u64 {
        let mut h = Hasher::default();
        h.tree(root).unwrap();
        h.finish()
    }

    fn make_tree(root: &Path) {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), "ramstick\n").unwrap();
        fs::write(root.join("init"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", root.join("sh")).unwrap();
    }

    #[test]
    fn fnv1a_known_values() {
        // Reference values of FNV-1a 64 (raw bytes, no length prefix).
        let mut h = Hasher::default();
        h.bytes(b"");
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        h.bytes(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
        let mut h = Hasher::default();
        h.bytes(b"foobar");
        assert_eq!(h.finish(), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fields_are_length_prefixed() {
        let mut a = Hasher::default();
        a.str("ab");
        a.str("c");
        let mut b = Hasher::default();
        b.str("a");
        b.str("bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn identical_trees_hash_equal_and_changes_show() {
        let s = TempDir::new("xtask-cache-trees");
        let (one, two) = (s.join("one"), s.join("two"));
        make_tree(&one);
        make_tree(&two);
        let base = tree_hash(&one);
        assert_eq!(base, tree_hash(&two), "same content, different mtimes");

        fs::write(two.join("etc/hostname"), "other\n").unwrap();
        assert_ne!(base, tree_hash(&two), "file content");
        fs::write(two.join("etc/hostname"), "ramstick\n").unwrap();
        assert_eq!(base, tree_hash(&two));

        fs::set_permissions(two.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(base, tree_hash(&two), "mode");
        fs::set_permissions(two.join("init"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(one.join("init"), fs::Permissions::from_mode(0o644)).unwrap();
        let base = tree_hash(&one);
        assert_eq!(base, tree_hash(&two));

        fs::remove_file(two.join("sh")).unwrap();
        std::os::unix::fs::symlink("/bin/other", two.join("sh")).unwrap();
        assert_ne!(base, tree_hash(&two), "symlink target");

        fs::remove_file(two.join("sh")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", two.join("sh")).unwrap();
        fs::rename(two.join("init"), two.join("etc/init")).unwrap();
        assert_ne!(base, tree_hash(&two), "a file moved into a subdirectory");
    }
}

//! Emptying a directory: init frees the initramfs before switch_root and
//! removes a layer it could not unpack whole.

use std::ffi::CStr;
use std::path::Path;

use nix::sys::stat::SFlag;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::walk::{kind_of, walk, Cursor, Visit, Visitor};
use super::TreeError;

/// Deletes everything inside `dir` (not `dir` itself) and returns the number
/// of entries removed. Symlinks are removed, never followed. With
/// `same_fs_only`, entries on another filesystem (mount points) are left
/// untouched together with their contents and the directories leading to them.
pub fn remove_contents(dir: &Path, same_fs_only: bool) -> Result<u64, TreeError> {
    let mut c = Cursor::open(dir)?;
    let mut remover = Remover {
        same_fs_only,
        keep: vec![false],
        removed: 0,
    };
    walk(&mut c, &mut remover)?;
    Ok(remover.removed)
}

struct Remover {
    same_fs_only: bool,
    /// Per open directory (`dir`, …, the cursor's): something below it must
    /// stay, so it stays too.
    keep: Vec<bool>,
    removed: u64,
}

impl Remover {
    /// unlinkat(2) of `name` in the cursor's directory.
    fn unlink(&mut self, c: &Cursor, name: &CStr, flags: UnlinkatFlags) -> Result<(), TreeError> {
        unlinkat(&c.fd, name, flags).map_err(|e| TreeError::Remove {
            path: c.path(name),
            source: e.into(),
        })?;
        self.removed += 1;
        Ok(())
    }
}

impl Visitor for Remover {
    fn visit(&mut self, c: &Cursor, name: &CStr) -> Result<Visit, TreeError> {
        let Some(st) = c.stat(name)? else {
            return Ok(Visit::Next); // already gone
        };
        if self.same_fs_only && st.st_dev != c.root_id().dev {
            // A mount point.
            if let Some(keep) = self.keep.last_mut() {
                *keep = true;
            }
            Ok(Visit::Next)
        } else if kind_of(&st) == SFlag::S_IFDIR {
            Ok(Visit::Enter(st))
        } else {
            self.unlink(c, name, UnlinkatFlags::NoRemoveDir)?;
            Ok(Visit::Next)
        }
    }

    fn entered(&mut self, _c: &Cursor, _st: &nix::sys::stat::FileStat) -> Result<(), TreeError> {
        self.keep.push(false);
        Ok(())
    }

    fn left(&mut self, c: &Cursor, name: &CStr) -> Result<(), TreeError> {
        if self.keep.pop() == Some(true) {
            if let Some(parent) = self.keep.last_mut() {
                *parent = true;
            }
            Ok(())
        } else {
            self.unlink(c, name, UnlinkatFlags::RemoveDir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;
    use ramstick_testkit::TempDir;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    #[test]
    fn tree_remove_contents_keeps_symlink_targets() {
        let tmp = TempDir::new("tree-remove");
        let (dir, outside) = (tmp.mkdir("dir"), tmp.mkdir("outside"));
        std::fs::write(outside.join("precious"), b"keep").unwrap();
        std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
        std::fs::write(dir.join("a/b/c/f"), b"x").unwrap();
        std::fs::write(dir.join("top"), b"x").unwrap();
        symlink(&outside, dir.join("a/link-to-dir")).unwrap();
        symlink(outside.join("precious"), dir.join("link-to-file")).unwrap();
        nix::unistd::mkfifo(&dir.join("a/fifo"), Mode::S_IRWXU).unwrap();

        assert_eq!(remove_contents(&dir, true).unwrap(), 8);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
        assert_eq!(remove_contents(&dir, false).unwrap(), 0);
    }

    #[test]
    fn tree_deep_listing_and_remove() {
        let tmp = TempDir::new("tree-deep");
        let dir = tmp.mkdir("dir");
        let deep: PathBuf = std::iter::repeat_n("d", 1000).collect();
        std::fs::create_dir_all(dir.join(&deep)).unwrap();
        std::fs::write(dir.join(&deep).join("bottom"), b"deep").unwrap();
        let listing = crate::tree::tree_listing(&dir).unwrap();
        assert_eq!(listing.len(), 1002);
        let bottom = format!("/{}/bottom file ", deep.display());
        assert!(listing.iter().any(|l| l.starts_with(&bottom)));
        assert_eq!(remove_contents(&dir, true).unwrap(), 1001);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}

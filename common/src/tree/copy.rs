//! Copying a small tree of our own: init keeps its initramfs (minus what is
//! mounted on it) in /run/ramstick for the saver's kernel hook. Directories,
//! regular files, symlinks and device nodes with their permission bits; the
//! owner is whoever copies (root at boot, the owner of everything in an
//! initramfs). Not a fidelity copy: no xattrs, hard links become copies.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{mkdirat, mknodat, FileStat, Mode, SFlag};
use nix::unistd::symlinkat;

use super::walk::{kind_of, walk, Cursor, Visit, Visitor};
use super::TreeError;

/// Copies what is inside `src` into the existing directory `dst`, without
/// crossing into other filesystems (mount points are left out) and without
/// the entries at the paths `leave_out` (relative to `src`), and returns the
/// number of entries copied.
pub fn copy_contents(src: &Path, dst: &Path, leave_out: &[&Path]) -> Result<u64, TreeError> {
    let mut c = Cursor::open(src)?;
    let mut copier = Copier {
        dst: dst.to_path_buf(),
        leave_out,
        copied: 0,
    };
    walk(&mut c, &mut copier)?;
    Ok(copier.copied)
}

struct Copier<'a> {
    /// The destination directory matching the cursor's.
    dst: PathBuf,
    leave_out: &'a [&'a Path],
    copied: u64,
}

impl Copier<'_> {
    fn create_err(&self, name: &CStr) -> impl FnOnce(io::Error) -> TreeError {
        let path = self.dst.join(OsStr::from_bytes(name.to_bytes()));
        move |source| TreeError::Create { path, source }
    }

    fn dst_dir(&self) -> Result<File, TreeError> {
        File::open(&self.dst).map_err(|source| TreeError::Open {
            path: self.dst.clone(),
            source,
        })
    }

    fn copy_file(&self, c: &Cursor, name: &CStr, st: &FileStat) -> Result<(), TreeError> {
        let mut from = c.open_file(name, st)?;
        let dir = self.dst_dir()?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
        let fd =
            openat(&dir, name, flags, perm(st)).map_err(|e| self.create_err(name)(e.into()))?;
        let mut to = File::from(fd);
        io::copy(&mut from, &mut to).map_err(|source| TreeError::Read {
            path: c.path(name),
            source,
        })?;
        Ok(())
    }
}

/// The permission bits of `st` (setuid, setgid and sticky included).
fn perm(st: &FileStat) -> Mode {
    Mode::from_bits_truncate(st.st_mode & 0o7777)
}

impl Visitor for Copier<'_> {
    fn visit(&mut self, c: &Cursor, name: &CStr) -> Result<Visit, TreeError> {
        let Some(st) = c.stat(name)? else {
            return Ok(Visit::Next);
        };
        let rel = c.rel.join(OsStr::from_bytes(name.to_bytes()));
        if st.st_dev != c.root_id().dev || self.leave_out.contains(&rel.as_path()) {
            return Ok(Visit::Next); // a mount point, or left out
        }
        let dir = self.dst_dir()?;
        let kind = kind_of(&st);
        if kind == SFlag::S_IFDIR {
            mkdirat(&dir, name, perm(&st)).map_err(|e| self.create_err(name)(e.into()))?;
        } else if kind == SFlag::S_IFREG {
            self.copy_file(c, name, &st)?;
        } else if kind == SFlag::S_IFLNK {
            let target = readlinkat(&c.fd, name).map_err(|e| TreeError::ReadLink {
                path: c.path(name),
                source: e.into(),
            })?;
            symlinkat(target.as_os_str(), &dir, name)
                .map_err(|e| self.create_err(name)(e.into()))?;
        } else {
            mknodat(&dir, name, kind, perm(&st), st.st_rdev)
                .map_err(|e| self.create_err(name)(e.into()))?;
        }
        self.copied += 1;
        if kind == SFlag::S_IFDIR {
            Ok(Visit::Enter(st))
        } else {
            Ok(Visit::Next)
        }
    }

    fn entered(&mut self, c: &Cursor, _st: &FileStat) -> Result<(), TreeError> {
        if let Some(name) = c.rel.file_name() {
            self.dst.push(name);
        }
        Ok(())
    }

    fn left(&mut self, _c: &Cursor, _name: &CStr) -> Result<(), TreeError> {
        self.dst.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_testkit::TempDir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn copies_dirs_files_symlinks_and_nodes_with_their_modes() {
        let tmp = TempDir::new("tree-copy");
        let (src, dst) = (tmp.mkdir("src"), tmp.mkdir("dst"));
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("a/b/tool"), PermissionsExt::from_mode(0o4755)).unwrap();
        std::fs::set_permissions(src.join("a"), PermissionsExt::from_mode(0o700)).unwrap();
        symlink("b/tool", src.join("a/link")).unwrap();
        symlink("/nowhere", src.join("dangling")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();

        std::fs::create_dir_all(src.join("a/b/skipped/deep")).unwrap();
        assert_eq!(
            copy_contents(&src, &dst, &[Path::new("a/b/skipped")]).unwrap(),
            6
        );
        assert!(!dst.join("a/b/skipped").exists());
        std::fs::remove_dir_all(src.join("a/b/skipped")).unwrap();
        // Equal but for the times (the seventh field), which are not copied.
        let without_times = |dir: &Path| -> Vec<String> {
            let lines = crate::tree::tree_listing(dir).unwrap();
            let drop_time = |l: &String| {
                let mut f: Vec<&str> = l.split(' ').collect();
                f.remove(6);
                f.join(" ")
            };
            lines.iter().map(drop_time).collect()
        };
        assert_eq!(without_times(&dst), without_times(&src));
        assert_eq!(std::fs::read(dst.join("a/link")).unwrap(), b"#!/bin/sh\n");
        // An existing destination entry is an error, not an overwrite.
        assert!(matches!(
            copy_contents(&src, &dst, &[]),
            Err(TreeError::Create { .. })
        ));
    }
}

//! The one walk of a tree: iterative, one open directory at a time, never
//! following a symlink and never resolving a path outside the root.
//!
//! A directory is entered with `openat(name, O_NOFOLLOW|O_DIRECTORY)` and
//! left with `openat("..")`, each checked against the device and inode
//! recorded on the way down, so a directory renamed or replaced under the
//! walk is an error ([`TreeError::Changed`]), not a step into another tree.
//! Depth is limited by memory only. Entry names are read in full (and
//! sorted) before a directory is processed.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::libc;
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use super::TreeError;

/// What a [`Visitor`] wants done with an entry.
pub(super) enum Visit {
    /// Go on with the next entry.
    Next,
    /// Enter the directory, whose lstat this is (it must still be that inode).
    Enter(FileStat),
}

/// What a walk does at each entry. The cursor is in the directory holding
/// the entry (`visit`), in the directory just entered (`entered`), or back
/// in the parent of the directory just finished (`left`).
pub(super) trait Visitor {
    /// Entry `name` of the cursor's directory (names come sorted).
    fn visit(&mut self, c: &Cursor, name: &CStr) -> Result<Visit, TreeError>;

    /// A directory was entered; `st` is its lstat.
    fn entered(&mut self, _c: &Cursor, _st: &FileStat) -> Result<(), TreeError> {
        Ok(())
    }

    /// Directory `name` of the cursor's directory is done (all of its
    /// entries were visited).
    fn left(&mut self, _c: &Cursor, _name: &CStr) -> Result<(), TreeError> {
        Ok(())
    }
}

/// Walks the tree below the cursor's directory, depth first, each
/// directory's entries in name order.
pub(super) fn walk(c: &mut Cursor, v: &mut impl Visitor) -> Result<(), TreeError> {
    // One frame per open directory: its names not yet visited. `entered`
    // holds the names of the directories below the root the cursor is in.
    let mut todo = vec![c.names()?];
    let mut entered: Vec<CString> = Vec::new();
    while let Some(names) = todo.last_mut() {
        match names.pop() {
            None => {
                todo.pop();
                if let Some(name) = entered.pop() {
                    c.up()?;
                    v.left(c, &name)?;
                }
            }
            Some(name) => {
                if let Visit::Enter(st) = v.visit(c, &name)? {
                    c.down(&name, Id::of(&st))?;
                    v.entered(c, &st)?;
                    todo.push(c.names()?);
                    entered.push(name);
                }
            }
        }
    }
    Ok(())
}

/// True if `name` is a single path component that stays inside its
/// directory: not empty, not `.` or `..`, without `/` or NUL. A directory
/// entry read from disk (or from an image) is used only if it is one.
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Device and inode number: identifies an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Id {
    pub(super) dev: libc::dev_t,
    ino: libc::ino_t,
}

impl Id {
    pub(super) fn of(st: &FileStat) -> Id {
        Id {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

pub(super) fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// One open directory inside a tree, reached without following symlinks.
pub(super) struct Cursor {
    /// The tree's root as given (for messages and the no-/proc fallback).
    root: PathBuf,
    /// The current directory relative to `root`.
    pub(super) rel: PathBuf,
    /// The current directory.
    pub(super) fd: OwnedFd,
    /// Ids of the root, …, the current directory.
    ids: Vec<Id>,
}

impl Cursor {
    /// Opens `root` (which may be reached through symlinks).
    pub(super) fn open(root: &Path) -> Result<Cursor, TreeError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, root, flags, Mode::empty()).map_err(|e| TreeError::Open {
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        let st = fstat(&fd).map_err(|e| TreeError::Stat {
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Cursor {
            root: root.to_path_buf(),
            rel: PathBuf::new(),
            fd,
            ids: vec![Id::of(&st)],
        })
    }

    /// The root's id (its device tells what is on the root's filesystem).
    pub(super) fn root_id(&self) -> Id {
        self.ids[0]
    }

    /// Full path of the current directory.
    pub(super) fn dir_path(&self) -> PathBuf {
        if self.rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(&self.rel)
        }
    }

    /// Full path of entry `name` of the current directory.
    pub(super) fn path(&self, name: &CStr) -> PathBuf {
        self.dir_path().join(OsStr::from_bytes(name.to_bytes()))
    }

    /// Path for the l*xattr calls on entry `name` of the current directory.
    pub(super) fn xattr_path(&self, name: &CStr) -> io::Result<CString> {
        crate::xattr::entry_path(self.fd.as_fd(), name.to_bytes(), &self.path(name))
    }

    /// fstat of the current directory.
    pub(super) fn fstat(&self) -> Result<FileStat, TreeError> {
        fstat(&self.fd).map_err(|e| TreeError::Stat {
            path: self.dir_path(),
            source: e.into(),
        })
    }

    /// lstat of entry `name`; `None` when it no longer exists.
    pub(super) fn stat(&self, name: &CStr) -> Result<Option<FileStat>, TreeError> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(TreeError::Stat {
                path: self.path(name),
                source: e.into(),
            }),
        }
    }

    /// The names in the current directory, validated, in reverse sorted
    /// order (so that `pop()` yields them sorted).
    fn names(&self) -> Result<Vec<CString>, TreeError> {
        let read_err = |e: Errno| TreeError::ReadDir {
            path: self.dir_path(),
            source: e.into(),
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(&self.fd, ".", flags, Mode::empty()).map_err(read_err)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            if !is_plain_name(name.to_bytes()) {
                return Err(TreeError::OutsideTarget {
                    path: self.path(name),
                });
            }
            names.push(name.to_owned());
        }
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }

    /// Enters subdirectory `name`, which must be the inode `expect`.
    fn down(&mut self, name: &CStr, expect: Id) -> Result<(), TreeError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        self.fd = self.open_entry(name, flags, expect)?;
        self.ids.push(expect);
        self.rel.push(OsStr::from_bytes(name.to_bytes()));
        Ok(())
    }

    /// Returns to the parent directory, checking it is the one we came from.
    fn up(&mut self) -> Result<(), TreeError> {
        let changed = || TreeError::Changed {
            path: self.dir_path(),
        };
        let parent = match self.ids.len().checked_sub(2) {
            Some(i) => self.ids[i],
            None => return Err(changed()),
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, "..", flags, Mode::empty()).map_err(|e| TreeError::Open {
            path: self.dir_path().join(".."),
            source: e.into(),
        })?;
        let st = fstat(&fd).map_err(|e| TreeError::Stat {
            path: self.dir_path().join(".."),
            source: e.into(),
        })?;
        if Id::of(&st) != parent {
            return Err(changed());
        }
        self.fd = fd;
        self.ids.pop();
        self.rel.pop();
        Ok(())
    }

    /// Opens regular file `name` for reading and checks it is the inode `st`.
    pub(super) fn open_file(&self, name: &CStr, st: &FileStat) -> Result<File, TreeError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        self.open_entry(name, flags, Id::of(st)).map(File::from)
    }

    /// Opens entry `name` with `flags` (which hold `O_NOFOLLOW`) and checks
    /// it is still the inode `expect` (nothing replaced it since its lstat).
    fn open_entry(&self, name: &CStr, flags: OFlag, expect: Id) -> Result<OwnedFd, TreeError> {
        let fd = openat(&self.fd, name, flags, Mode::empty()).map_err(|e| TreeError::Open {
            path: self.path(name),
            source: e.into(),
        })?;
        let now = fstat(&fd).map_err(|e| TreeError::Stat {
            path: self.path(name),
            source: e.into(),
        })?;
        if Id::of(&now) != expect {
            return Err(TreeError::Changed {
                path: self.path(name),
            });
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_in_their_directory() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"../x", b"a\0b"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"a b", b"\xff"] {
            assert!(is_plain_name(good), "{good:?}");
        }
    }
}

//! Full-fidelity directory tree copy, removal and listing.
//!
//! `init` uses [`copy_tree`] to unpack the user's saved upper layer: it
//! loop-mounts `upperfs.squashfs` read-only and copies the tree into the fresh
//! overlay upperdir (zram-ext4 or tmpfs). Everything an overlay upper can hold
//! is reproduced: file contents (holes stay holes), directories, symlinks
//! (never followed), hardlinks, device nodes incl. whiteouts (char 0:0), fifos,
//! sockets, owners, modes incl. setuid/setgid/sticky, all extended attributes
//! (`trusted.overlay.*`, `security.capability`, `user.*`, …) and nanosecond
//! atimes/mtimes (directories after their contents).
//!
//! [`remove_contents`] empties a directory without following symlinks or
//! (optionally) entering other filesystems; [`tree_listing`] describes a tree
//! one line per entry so that two trees can be compared.
//!
//! All three walk the tree iteratively and keep only one open directory per
//! tree: a directory is entered with `openat(name, O_NOFOLLOW|O_DIRECTORY)`
//! and left with `openat("..")`, each checked against the device and inode
//! recorded on the way down. Depth is therefore limited by memory only and
//! no path outside the given roots is ever resolved. Entry names are read in
//! full (and sorted) before a directory is processed.
//!
//! Extended attributes of symlinks and special files have no fd-based
//! syscall on Linux 6.1; they are addressed as `/proc/self/fd/<dirfd>/<name>`
//! when `/proc` is mounted, else by the full path.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::xattr::XTarget;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag, AT_FDCWD};
use nix::libc;
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, major, minor, mkdirat, mknodat, utimensat,
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    fchown, fchownat, linkat, lseek, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags, Whence,
};

/// Size of the copy buffer.
const BUF_SIZE: usize = 1 << 20;
/// Granularity of zero detection (sparse output) and of content hashing.
const BLOCK: usize = 4096;
/// Progress is reported after this many bytes …
const PROGRESS_BYTES: u64 = 64 << 20;
/// … or this many entries, whichever comes first.
const PROGRESS_ENTRIES: u64 = 1000;

static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];

/// A failed step of a tree operation, with the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot read directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot stat {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot create node {path}: {source}")]
    Mknod { path: PathBuf, source: io::Error },
    #[error("cannot read symlink {path}: {source}")]
    ReadLink { path: PathBuf, source: io::Error },
    #[error("cannot create symlink {path}: {source}")]
    Symlink { path: PathBuf, source: io::Error },
    #[error("cannot create hardlink {path}: {source}")]
    Link { path: PathBuf, source: io::Error },
    #[error("cannot change owner of {path}: {source}")]
    Chown { path: PathBuf, source: io::Error },
    #[error("cannot change mode of {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
    #[error("cannot copy extended attribute {name} of {path}: {source}")]
    Xattr {
        path: PathBuf,
        name: String,
        source: io::Error,
    },
    #[error("cannot set times of {path}: {source}")]
    Utime { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("{path} changed while being processed")]
    Changed { path: PathBuf },
    #[error("refusing directory entry that would leave the target: {path}")]
    OutsideTarget { path: PathBuf },
}

/// Counters of a [`copy_tree`] run (also passed to its progress callback).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files copied (each hardlinked inode once).
    pub files: u64,
    /// Directories created (not counting the destination root).
    pub dirs: u64,
    pub symlinks: u64,
    /// Additional names linked to an inode copied before.
    pub hardlinks: u64,
    /// Device nodes (incl. whiteouts), fifos and sockets.
    pub specials: u64,
    /// File data read from the source (holes the source reports are skipped).
    pub bytes: u64,
    /// Extended attributes set.
    pub xattrs: u64,
}

impl CopyStats {
    /// Number of directory entries created so far.
    pub fn entries(&self) -> u64 {
        self.files + self.dirs + self.symlinks + self.hardlinks + self.specials
    }
}

/// Copies the contents of `src` into the existing directory `dst`, then gives
/// `dst` itself the owner, mode, xattrs and times of `src`.
///
/// `src` and `dst` themselves may be reached through symlinks; nothing below
/// them is followed. Names that already exist in `dst` are an error (nothing
/// is overwritten).
/// Entries on another filesystem than `src` (mount points) are skipped.
/// `progress` is called every ~64 MiB of data or 1000 entries, and once at the end.
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(&CopyStats),
) -> Result<CopyStats, TreeError> {
    let mut s = Cursor::open(src)?;
    let mut d = Cursor::open(dst)?;
    let dst_root = d.fd.try_clone().map_err(|e| TreeError::Open {
        path: dst.to_path_buf(),
        source: e,
    })?;
    let root_stat = s.fstat()?;
    let mut copier = Copier {
        progress: Progress {
            stats: CopyStats::default(),
            report: progress,
            reported_bytes: 0,
            reported_entries: 0,
        },
        links: HashMap::new(),
        dst_root,
        buf: vec![0; BUF_SIZE],
    };

    // One frame per open directory: its remaining names and its stat.
    let mut todo = vec![(s.names()?, root_stat)];
    while let Some((names, _)) = todo.last_mut() {
        match names.pop() {
            None => {
                if let Some((_, dir_stat)) = todo.pop() {
                    copier.copy_metadata_fd(&s, &d, &dir_stat)?;
                }
                if !todo.is_empty() {
                    s.up()?;
                    d.up()?;
                }
            }
            Some(name) => {
                let st = s.stat(&name)?;
                if st.st_dev != s.root_id().dev {
                    log::debug!("not crossing mount point {}", s.path(&name).display());
                    continue;
                }
                if kind_of(&st) == SFlag::S_IFDIR {
                    mkdirat(&d.fd, name.as_c_str(), Mode::S_IRWXU).map_err(|e| {
                        TreeError::Create {
                            path: d.path(&name),
                            source: e.into(),
                        }
                    })?;
                    s.down(&name, Some(Id::of(&st)))?;
                    d.down(&name, None)?;
                    copier.progress.stats.dirs += 1;
                    copier.progress.tick();
                    todo.push((s.names()?, st));
                } else {
                    copier.copy_entry(&s, &d, &name, &st)?;
                    copier.progress.tick();
                }
            }
        }
    }
    let stats = copier.progress.stats;
    (copier.progress.report)(&stats);
    Ok(stats)
}

/// Deletes everything inside `dir` (not `dir` itself) and returns the number
/// of entries removed. Symlinks are removed, never followed. With
/// `same_fs_only`, entries on another filesystem (mount points) are left
/// untouched together with their contents and the directories leading to them.
pub fn remove_contents(dir: &Path, same_fs_only: bool) -> Result<u64, TreeError> {
    /// A directory being emptied.
    struct Frame {
        /// Names not yet processed.
        names: Vec<CString>,
        /// Its name in the parent (None for `dir`).
        name: Option<CString>,
        /// Something below it must stay, so it stays too.
        keep: bool,
    }
    let mut c = Cursor::open(dir)?;
    let mut removed = 0;
    let mut todo = vec![Frame {
        names: c.names()?,
        name: None,
        keep: false,
    }];
    while let Some(frame) = todo.last_mut() {
        let Some(name) = frame.names.pop() else {
            let Some(Frame {
                name: Some(name),
                keep,
                ..
            }) = todo.pop()
            else {
                break; // `dir` itself is done
            };
            c.up()?;
            if keep {
                if let Some(parent) = todo.last_mut() {
                    parent.keep = true;
                }
            } else {
                unlink(&c, &name, UnlinkatFlags::RemoveDir)?;
                removed += 1;
            }
            continue;
        };
        let st = match fstatat(&c.fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => continue,
            other => other.map_err(|e| TreeError::Stat {
                path: c.path(&name),
                source: e.into(),
            })?,
        };
        if same_fs_only && st.st_dev != c.root_id().dev {
            frame.keep = true; // a mount point
        } else if kind_of(&st) == SFlag::S_IFDIR {
            c.down(&name, Some(Id::of(&st)))?;
            todo.push(Frame {
                names: c.names()?,
                name: Some(name),
                keep: false,
            });
        } else {
            unlink(&c, &name, UnlinkatFlags::NoRemoveDir)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Describes the tree under `root` (staying on its filesystem), one line per
/// entry, sorted by path:
///
/// `path type mode uid gid size-or-rdev mtime_ns link_target xattrs content-hash`
///
/// Paths start with `/` (the root itself is `/`); bytes outside printable
/// ASCII, space and `\` are written as `\xNN`. `type` is one of dir, file,
/// symlink, char, block, fifo, socket; mode is octal incl. setuid/setgid/
/// sticky; size is `-` for directories, fifos, sockets and symlinks and
/// `major:minor` for devices; xattrs are `name=hexvalue` joined by `,`
/// (sorted, `-` if none); the hash is FNV-1a 64 of the size and the
/// non-zero 4 KiB blocks with their offsets (so holes and zero blocks compare
/// equal). Unused fields are `-`. A name of an inode listed before (in path
/// order) is written `path hardlink-of:<first path>`.
pub fn tree_listing(root: &Path) -> Result<Vec<String>, TreeError> {
    let mut c = Cursor::open(root)?;
    let mut buf = vec![0; BUF_SIZE];
    let mut hashes = HashMap::new();
    let root_stat = c.fstat()?;
    let mut rows = vec![c.describe(None, &root_stat, &mut buf, &mut hashes)?];
    let mut todo = vec![c.names()?];
    while let Some(names) = todo.last_mut() {
        match names.pop() {
            None => {
                todo.pop();
                if !todo.is_empty() {
                    c.up()?;
                }
            }
            Some(name) => {
                let st = c.stat(&name)?;
                if st.st_dev != c.root_id().dev {
                    continue;
                }
                if kind_of(&st) == SFlag::S_IFDIR {
                    c.down(&name, Some(Id::of(&st)))?;
                    rows.push(c.describe(None, &st, &mut buf, &mut hashes)?);
                    todo.push(c.names()?);
                } else {
                    rows.push(c.describe(Some(&name), &st, &mut buf, &mut hashes)?);
                }
            }
        }
    }
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    let mut first_paths: HashMap<Id, String> = HashMap::new();
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        match row.link_id.map(|id| first_paths.get(&id).ok_or(id)) {
            Some(Ok(first)) => lines.push(format!("{} hardlink-of:{first}", row.path)),
            Some(Err(id)) => {
                first_paths.insert(id, row.path.clone());
                lines.push(format!("{} {}", row.path, row.rest));
            }
            None => lines.push(format!("{} {}", row.path, row.rest)),
        }
    }
    Ok(lines)
}

/// True if `name` is a single path component that stays inside its directory.
pub(crate) fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/')
}

/// Device and inode number: identifies an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Id {
    dev: libc::dev_t,
    ino: libc::ino_t,
}

impl Id {
    fn of(st: &FileStat) -> Id {
        Id {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// unlinkat(2) of `name` in the cursor's directory.
fn unlink(c: &Cursor, name: &CStr, flags: UnlinkatFlags) -> Result<(), TreeError> {
    unlinkat(&c.fd, name, flags).map_err(|e| TreeError::Remove {
        path: c.path(name),
        source: e.into(),
    })
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn perm_of(st: &FileStat) -> Mode {
    Mode::from_bits_truncate(st.st_mode & 0o7777)
}

fn owner_of(st: &FileStat) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
}

fn size_of(st: &FileStat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// One open directory inside a tree, reached without following symlinks.
struct Cursor {
    /// The tree's root as given (for messages and the no-/proc fallback).
    root: PathBuf,
    /// The current directory relative to `root`.
    rel: PathBuf,
    /// The current directory.
    fd: OwnedFd,
    /// Ids of the root, …, the current directory.
    ids: Vec<Id>,
}

impl Cursor {
    fn open(root: &Path) -> Result<Cursor, TreeError> {
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

    fn root_id(&self) -> Id {
        self.ids[0]
    }

    /// Full path of the current directory.
    fn dir_path(&self) -> PathBuf {
        if self.rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(&self.rel)
        }
    }

    /// Full path of entry `name` of the current directory.
    fn path(&self, name: &CStr) -> PathBuf {
        self.dir_path().join(OsStr::from_bytes(name.to_bytes()))
    }

    /// Path for the l*xattr calls on entry `name` of the current directory.
    fn xattr_path(&self, name: &CStr) -> io::Result<CString> {
        crate::xattr::entry_path(self.fd.as_fd(), name.to_bytes(), &self.path(name))
    }

    fn fstat(&self) -> Result<FileStat, TreeError> {
        fstat(&self.fd).map_err(|e| TreeError::Stat {
            path: self.dir_path(),
            source: e.into(),
        })
    }

    /// lstat of entry `name`.
    fn stat(&self, name: &CStr) -> Result<FileStat, TreeError> {
        fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| TreeError::Stat {
            path: self.path(name),
            source: e.into(),
        })
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
            if !is_safe_name(name.to_bytes()) {
                return Err(TreeError::OutsideTarget {
                    path: self.path(name),
                });
            }
            names.push(name.to_owned());
        }
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }

    /// Enters subdirectory `name`, which must be the inode `expect` if given.
    fn down(&mut self, name: &CStr, expect: Option<Id>) -> Result<(), TreeError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::empty()).map_err(|e| TreeError::Open {
            path: self.path(name),
            source: e.into(),
        })?;
        let st = fstat(&fd).map_err(|e| TreeError::Stat {
            path: self.path(name),
            source: e.into(),
        })?;
        if expect.is_some_and(|id| id != Id::of(&st)) {
            return Err(TreeError::Changed {
                path: self.path(name),
            });
        }
        self.fd = fd;
        self.ids.push(Id::of(&st));
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
    fn open_file(&self, name: &CStr, st: &FileStat) -> Result<File, TreeError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::empty()).map_err(|e| TreeError::Open {
            path: self.path(name),
            source: e.into(),
        })?;
        let now = fstat(&fd).map_err(|e| TreeError::Stat {
            path: self.path(name),
            source: e.into(),
        })?;
        if Id::of(&now) != Id::of(st) {
            return Err(TreeError::Changed {
                path: self.path(name),
            });
        }
        Ok(File::from(fd))
    }

    /// The listing row of entry `name`, or of the current directory if None.
    fn describe(
        &self,
        name: Option<&CStr>,
        st: &FileStat,
        buf: &mut [u8],
        hashes: &mut HashMap<Id, u64>,
    ) -> Result<Row, TreeError> {
        let rel = match name {
            Some(name) => self.rel.join(OsStr::from_bytes(name.to_bytes())),
            None => self.rel.clone(),
        };
        let path = format!("/{}", escape(rel.as_os_str().as_bytes()));
        let full = match name {
            Some(name) => self.path(name),
            None => self.dir_path(),
        };
        let kind = kind_of(st);
        let mut size = "-".to_string();
        let mut target = "-".to_string();
        let mut hash = "-".to_string();
        let xattrs;
        if kind == SFlag::S_IFDIR {
            xattrs = read_xattrs(&XTarget::Fd(self.fd.as_fd()), &full)?;
        } else if let Some(name) = name.filter(|_| kind == SFlag::S_IFREG) {
            size = st.st_size.to_string();
            let id = Id::of(st);
            let file = self.open_file(name, st)?;
            xattrs = read_xattrs(&XTarget::Fd(file.as_fd()), &full)?;
            let value = match hashes.get(&id) {
                Some(value) => *value,
                None => hash_content(&file, size_of(st), &full, buf)?,
            };
            if st.st_nlink > 1 {
                hashes.insert(id, value);
            }
            hash = format!("{value:016x}");
        } else if let Some(name) = name {
            let xpath = self.xattr_path(name).map_err(|e| TreeError::Xattr {
                path: full.clone(),
                name: String::new(),
                source: e,
            })?;
            xattrs = read_xattrs(&XTarget::Path(xpath), &full)?;
            if kind == SFlag::S_IFLNK {
                let link = readlinkat(&self.fd, name).map_err(|e| TreeError::ReadLink {
                    path: full.clone(),
                    source: e.into(),
                })?;
                target = escape(link.as_bytes());
            } else if kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK {
                size = format!("{}:{}", major(st.st_rdev), minor(st.st_rdev));
            }
        } else {
            return Err(TreeError::Changed { path: full });
        }
        let xattrs = if xattrs.is_empty() {
            "-".to_string()
        } else {
            let parts: Vec<String> = xattrs
                .iter()
                .map(|(n, v)| format!("{}={}", escape(n.to_bytes()), hex(v)))
                .collect();
            parts.join(",")
        };
        let mtime_ns = i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
        let rest = format!(
            "{} {:04o} {} {} {size} {mtime_ns} {target} {xattrs} {hash}",
            kind_name(kind),
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid,
        );
        let link_id = (kind != SFlag::S_IFDIR && st.st_nlink > 1).then(|| Id::of(st));
        Ok(Row {
            path,
            rest,
            link_id,
        })
    }
}

/// One entry of [`tree_listing`] before hardlinks are resolved.
struct Row {
    path: String,
    /// Everything after the path.
    rest: String,
    /// Set for non-directories with more than one link.
    link_id: Option<Id>,
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "dir",
        SFlag::S_IFREG => "file",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFCHR => "char",
        SFlag::S_IFBLK => "block",
        SFlag::S_IFIFO => "fifo",
        SFlag::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

/// Printable ASCII except `\` as is, everything else as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// FNV-1a 64.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Hash of the size and of every non-zero block with its offset.
fn hash_content(file: &File, size: u64, path: &Path, buf: &mut [u8]) -> Result<u64, TreeError> {
    let mut fnv = Fnv::new();
    fnv.update(&size.to_le_bytes());
    for_each_data(file, size, path, buf, |offset, data| {
        let mut block_offset = offset;
        for block in data.chunks(BLOCK) {
            if block != &ZERO_BLOCK[..block.len()] {
                fnv.update(&block_offset.to_le_bytes());
                fnv.update(block);
            }
            block_offset += BLOCK as u64;
        }
        Ok(())
    })?;
    Ok(fnv.0)
}

/// Reads the first `size` bytes of `file`, skipping the holes the filesystem
/// reports (SEEK_DATA/SEEK_HOLE), and passes each buffer with its offset to
/// `sink`. Offsets are multiples of [`BLOCK`].
fn for_each_data(
    file: &File,
    size: u64,
    path: &Path,
    buf: &mut [u8],
    mut sink: impl FnMut(u64, &[u8]) -> Result<(), TreeError>,
) -> Result<(), TreeError> {
    let read_err = |e: io::Error| TreeError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    let block = BLOCK as u64;
    // Everything before `pos` (a multiple of BLOCK or the end) is done.
    let mut pos = 0u64;
    while pos < size {
        let offset = i64::try_from(pos).map_err(|e| read_err(io::Error::other(e)))?;
        let data = match lseek(file, offset, Whence::SeekData) {
            Ok(data) => data,
            Err(Errno::ENXIO) => return Ok(()), // only a hole is left
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => offset,
            Err(e) => return Err(read_err(e.into())),
        };
        let hole = match lseek(file, data, Whence::SeekHole) {
            Ok(hole) => hole,
            Err(Errno::ENXIO | Errno::EINVAL | Errno::EOPNOTSUPP) => i64::MAX,
            Err(e) => return Err(read_err(e.into())),
        };
        let data = u64::try_from(data).unwrap_or(0);
        let hole = u64::try_from(hole).unwrap_or(0);
        let mut offset = (data / block * block).max(pos);
        let end = hole.div_ceil(block).saturating_mul(block).min(size);
        while offset < end {
            let want = usize::try_from(end - offset).map_or(buf.len(), |n| n.min(buf.len()));
            let got = read_full(file, &mut buf[..want], offset).map_err(read_err)?;
            if got == 0 {
                return Ok(()); // the file shrank
            }
            sink(offset, &buf[..got])?;
            offset += got as u64;
        }
        if end <= pos {
            return Ok(());
        }
        pos = end;
    }
    Ok(())
}

/// Reads at `offset` until `buf` is full or the end of the file.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// All extended attributes of `target`, sorted by name; `path` is for messages.
fn read_xattrs(target: &XTarget, path: &Path) -> Result<Vec<(CString, Vec<u8>)>, TreeError> {
    target.read_all().map_err(|(name, e)| TreeError::Xattr {
        path: path.to_path_buf(),
        name: name.to_string_lossy().into_owned(),
        source: e,
    })
}

/// Progress reporting state of a [`copy_tree`] run.
struct Progress<'a> {
    stats: CopyStats,
    report: &'a mut dyn FnMut(&CopyStats),
    reported_bytes: u64,
    reported_entries: u64,
}

impl Progress<'_> {
    /// Reports if enough happened since the last report.
    fn tick(&mut self) {
        let entries = self.stats.entries();
        if self.stats.bytes - self.reported_bytes >= PROGRESS_BYTES
            || entries - self.reported_entries >= PROGRESS_ENTRIES
        {
            (self.report)(&self.stats);
            self.reported_bytes = self.stats.bytes;
            self.reported_entries = entries;
        }
    }
}

/// State of a [`copy_tree`] run besides the two cursors.
struct Copier<'a> {
    progress: Progress<'a>,
    /// First destination path (relative to the destination root) of every
    /// source inode with more than one link.
    links: HashMap<Id, PathBuf>,
    dst_root: OwnedFd,
    buf: Vec<u8>,
}

impl Copier<'_> {
    /// Copies non-directory entry `name` (with lstat `st`) of `s` into `d`.
    fn copy_entry(
        &mut self,
        s: &Cursor,
        d: &Cursor,
        name: &CStr,
        st: &FileStat,
    ) -> Result<(), TreeError> {
        let id = Id::of(st);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&id) {
                linkat(&self.dst_root, first, &d.fd, name, AtFlags::empty()).map_err(|e| {
                    TreeError::Link {
                        path: d.path(name),
                        source: e.into(),
                    }
                })?;
                self.progress.stats.hardlinks += 1;
                return Ok(());
            }
        }
        let kind = kind_of(st);
        if kind == SFlag::S_IFREG {
            self.copy_file(s, d, name, st)?;
            self.progress.stats.files += 1;
        } else if kind == SFlag::S_IFLNK {
            let target = readlinkat(&s.fd, name).map_err(|e| TreeError::ReadLink {
                path: s.path(name),
                source: e.into(),
            })?;
            symlinkat(target.as_os_str(), &d.fd, name).map_err(|e| TreeError::Symlink {
                path: d.path(name),
                source: e.into(),
            })?;
            self.copy_metadata_at(s, d, name, st)?;
            self.progress.stats.symlinks += 1;
        } else {
            mknodat(&d.fd, name, kind, Mode::S_IRUSR | Mode::S_IWUSR, st.st_rdev).map_err(|e| {
                TreeError::Mknod {
                    path: d.path(name),
                    source: e.into(),
                }
            })?;
            self.copy_metadata_at(s, d, name, st)?;
            self.progress.stats.specials += 1;
        }
        if st.st_nlink > 1 {
            let rel = d.rel.join(OsStr::from_bytes(name.to_bytes()));
            self.links.insert(id, rel);
        }
        Ok(())
    }

    /// Copies regular file `name` with its data (keeping holes) and metadata.
    fn copy_file(
        &mut self,
        s: &Cursor,
        d: &Cursor,
        name: &CStr,
        st: &FileStat,
    ) -> Result<(), TreeError> {
        let src_path = s.path(name);
        let dst_path = d.path(name);
        let src = s.open_file(name, st)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dst = openat(&d.fd, name, flags, Mode::S_IRUSR | Mode::S_IWUSR).map_err(|e| {
            TreeError::Create {
                path: dst_path.clone(),
                source: e.into(),
            }
        })?;
        let dst = File::from(dst);
        let size = size_of(st);
        let progress = &mut self.progress;
        for_each_data(&src, size, &src_path, &mut self.buf, |offset, data| {
            let mut run_start = None;
            // Write each run of non-zero blocks; zero blocks become holes.
            for (i, block) in data.chunks(BLOCK).enumerate() {
                let zero = block == &ZERO_BLOCK[..block.len()];
                match (zero, run_start) {
                    (false, None) => run_start = Some(i * BLOCK),
                    (true, Some(start)) => {
                        write_run(&dst, &data[start..i * BLOCK], offset, start, &dst_path)?;
                        run_start = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = run_start {
                write_run(&dst, &data[start..], offset, start, &dst_path)?;
            }
            progress.stats.bytes += data.len() as u64;
            progress.tick();
            Ok(())
        })?;
        dst.set_len(size).map_err(|e| TreeError::Write {
            path: dst_path.clone(),
            source: e,
        })?;
        self.copy_metadata(&XTarget::Fd(src.as_fd()), &dst, st, &src_path, &dst_path)
    }

    /// Gives the current directory of `d` the metadata of that of `s`.
    fn copy_metadata_fd(&mut self, s: &Cursor, d: &Cursor, st: &FileStat) -> Result<(), TreeError> {
        let src = XTarget::Fd(s.fd.as_fd());
        self.copy_metadata(&src, &d.fd, st, &s.dir_path(), &d.dir_path())
    }

    /// Sets owner, mode, xattrs and times of the open file `dst` from `st`
    /// and `src`. Order matters: chown clears setuid bits and capabilities.
    fn copy_metadata(
        &mut self,
        src: &XTarget,
        dst: &impl AsFd,
        st: &FileStat,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), TreeError> {
        let owner = owner_of(st);
        fchown(dst, owner.0, owner.1).map_err(|e| TreeError::Chown {
            path: dst_path.to_path_buf(),
            source: e.into(),
        })?;
        fchmod(dst, perm_of(st)).map_err(|e| TreeError::Chmod {
            path: dst_path.to_path_buf(),
            source: e.into(),
        })?;
        self.copy_xattrs(src, &XTarget::Fd(dst.as_fd()), src_path, dst_path)?;
        let (atime, mtime) = times_of(st);
        futimens(dst, &atime, &mtime).map_err(|e| TreeError::Utime {
            path: dst_path.to_path_buf(),
            source: e.into(),
        })
    }

    /// Like [`Copier::copy_metadata`] for symlink or special file `name`,
    /// which cannot be opened. Symlinks have no mode of their own.
    fn copy_metadata_at(
        &mut self,
        s: &Cursor,
        d: &Cursor,
        name: &CStr,
        st: &FileStat,
    ) -> Result<(), TreeError> {
        let (src_path, dst_path) = (s.path(name), d.path(name));
        let owner = owner_of(st);
        fchownat(&d.fd, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
            TreeError::Chown {
                path: dst_path.clone(),
                source: e.into(),
            }
        })?;
        if kind_of(st) != SFlag::S_IFLNK {
            // Following is safe: we just created `name` as a non-symlink in
            // a directory we created (and lchmod needs /proc before 6.6).
            fchmodat(&d.fd, name, perm_of(st), FchmodatFlags::FollowSymlink).map_err(|e| {
                TreeError::Chmod {
                    path: dst_path.clone(),
                    source: e.into(),
                }
            })?;
        }
        let xattr_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e| TreeError::Xattr {
                path,
                name: String::new(),
                source: e,
            }
        };
        let src = XTarget::Path(s.xattr_path(name).map_err(xattr_err(&src_path))?);
        let dst = XTarget::Path(d.xattr_path(name).map_err(xattr_err(&dst_path))?);
        self.copy_xattrs(&src, &dst, &src_path, &dst_path)?;
        let (atime, mtime) = times_of(st);
        utimensat(&d.fd, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(|e| {
            TreeError::Utime {
                path: dst_path,
                source: e.into(),
            }
        })
    }

    fn copy_xattrs(
        &mut self,
        src: &XTarget,
        dst: &XTarget,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), TreeError> {
        for (name, value) in read_xattrs(src, src_path)? {
            dst.set(&name, &value).map_err(|e| TreeError::Xattr {
                path: dst_path.to_path_buf(),
                name: name.to_string_lossy().into_owned(),
                source: e,
            })?;
            self.progress.stats.xattrs += 1;
        }
        Ok(())
    }
}

/// Writes `run` (which starts at `start` within a buffer read at `offset`).
fn write_run(
    dst: &File,
    run: &[u8],
    offset: u64,
    start: usize,
    path: &Path,
) -> Result<(), TreeError> {
    dst.write_all_at(run, offset + start as u64)
        .map_err(|e| TreeError::Write {
            path: path.to_path_buf(),
            source: e,
        })
}

/// (atime, mtime) of `st` with nanoseconds.
fn times_of(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// Resolves `rel` inside the tree `root` as a chroot would: absolute
/// symlinks point into `root`, `..` stops at it. Returns the host path of
/// the final target, or `None` when a component is missing or there are
/// too many links.
pub fn resolve_in_root(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![rel.to_path_buf()];
    let mut resolved = PathBuf::new(); // relative to root, symlink-free
    let mut links = 0;
    while let Some(path) = pending.pop() {
        let mut components = path.components();
        let Some(first) = components.next() else {
            continue;
        };
        let rest: PathBuf = components.collect();
        if !rest.as_os_str().is_empty() {
            pending.push(rest);
        }
        match first {
            std::path::Component::RootDir => resolved = PathBuf::new(),
            std::path::Component::CurDir | std::path::Component::Prefix(_) => {}
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            std::path::Component::Normal(name) => {
                let candidate = resolved.join(name);
                let host = root.join(&candidate);
                let meta = host.symlink_metadata().ok()?;
                if meta.file_type().is_symlink() {
                    links += 1;
                    if links > 40 {
                        return None;
                    }
                    pending.push(std::fs::read_link(&host).ok()?);
                } else {
                    resolved = candidate;
                }
            }
        }
    }
    Some(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("ramstick-tree-{}-{tag}-{n}", std::process::id()));
            std::fs::create_dir(&path).unwrap();
            TempDir(path)
        }

        fn sub(&self, name: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::create_dir(&path).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set_times(path: &Path, atime: i64, mtime: i64) {
        utimensat(
            AT_FDCWD,
            path,
            &TimeSpec::new(atime, 123_456_789),
            &TimeSpec::new(mtime, 987_654_321),
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    fn set_user_xattr(path: &Path, name: &CStr, value: &[u8]) {
        let path = CString::new(path.as_os_str().as_bytes()).unwrap();
        XTarget::Path(path).set(name, value).unwrap();
    }

    /// Deterministic pseudo-random bytes.
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Builds a tree with every kind of entry an unprivileged user can make.
    fn build_source(src: &Path) {
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::create_dir(src.join("sticky")).unwrap();
        std::fs::write(src.join("a/f"), b"hello\n").unwrap();
        std::fs::write(src.join("a/big"), noise(3 << 20)).unwrap();
        std::fs::hard_link(src.join("a/f"), src.join("a/b/link")).unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        symlink("a/f", src.join("rel")).unwrap();
        symlink("nope/nothing", src.join("dangling")).unwrap();
        symlink("/etc/passwd", src.join("abs")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        nix::sys::stat::mknod(
            &src.join("sock"),
            SFlag::S_IFSOCK,
            Mode::from_bits_truncate(0o755),
            0,
        )
        .unwrap();
        let sparse = File::create(src.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        sparse.write_all_at(&[7u8; 4096], 32 << 20).unwrap();
        drop(sparse);
        set_user_xattr(&src.join("a/f"), c"user.comment", b"hi there");
        set_user_xattr(&src.join("a"), c"user.dir", b"\x00\x01binary");
        let chmod = |path: &str, mode| {
            std::fs::set_permissions(src.join(path), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod("empty", 0o4755);
        chmod("sticky", 0o1777);
        chmod("a/b", 0o2750);
        for (i, path) in [
            "a/f", "a/big", "empty", "rel", "dangling", "abs", "fifo", "sock", "sparse", "a/b",
            "sticky", "a", "",
        ]
        .iter()
        .enumerate()
        {
            let i = i as i64;
            set_times(&src.join(path), 1_500_000_000 + i, 1_400_000_000 + i);
        }
    }

    #[test]
    fn tree_copy_reproduces_every_entry_kind() {
        let tmp = TempDir::new("copy");
        let (src, dst) = (tmp.sub("src"), tmp.sub("dst"));
        build_source(&src);

        let mut reports = Vec::new();
        let stats = copy_tree(&src, &dst, &mut |s| reports.push(*s)).unwrap();

        let expect = CopyStats {
            files: 4,
            dirs: 3,
            symlinks: 3,
            hardlinks: 1,
            specials: 2,
            bytes: stats.bytes,
            xattrs: 2,
        };
        assert_eq!(stats, expect);
        assert!(stats.bytes >= (3 << 20) + 4096, "bytes {}", stats.bytes);
        assert_eq!(reports.last(), Some(&stats));
        // atimes are copied too (checked before listing reads anything).
        let meta = std::fs::symlink_metadata(dst.join("a/f")).unwrap();
        assert_eq!(
            (meta.atime(), meta.atime_nsec()),
            (1_500_000_000, 123_456_789)
        );
        let meta = std::fs::symlink_metadata(&dst).unwrap();
        assert_eq!(
            (meta.atime(), meta.atime_nsec()),
            (1_500_000_012, 123_456_789)
        );
        // The sparse file stays sparse.
        let meta = std::fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(meta.blocks() * 512 <= 256 << 10, "blocks {}", meta.blocks());

        let want = tree_listing(&src).unwrap();
        let got = tree_listing(&dst).unwrap();
        assert_eq!(want, got);
        assert_eq!(want.len(), 14);
        assert!(
            want.iter().any(|l| l == "/a/f hardlink-of:/a/b/link"),
            "{want:#?}"
        );
        assert!(want.iter().any(|l| l.starts_with("/empty file 4755 ")));
        assert!(want.iter().any(|l| l.starts_with("/sticky dir 1777 ")));
        assert!(want.iter().any(|l| l.starts_with("/sock socket 0755 ")));
        assert!(want.iter().any(|l| l.contains(" /etc/passwd ")));
        assert!(want
            .iter()
            .any(|l| l.starts_with("/a dir ") && l.contains(" user.dir=000162696e617279 ")));
        assert!(want.iter().any(|l| l.starts_with("/ dir ")));

        // The listing does see a changed byte.
        let file = File::options().write(true).open(dst.join("a/big")).unwrap();
        file.write_all_at(b"!", 1 << 20).unwrap();
        set_times(&dst.join("a/big"), 1_500_000_001, 1_400_000_001);
        assert_ne!(tree_listing(&dst).unwrap(), want);
    }

    #[test]
    fn tree_copy_turns_zero_blocks_into_holes() {
        // Like squashfs before Linux 6.16: no SEEK_HOLE, zeros are read.
        let tmp = TempDir::new("zeros");
        let (src, dst) = (tmp.sub("src"), tmp.sub("dst"));
        let mut content = vec![0u8; 8 << 20];
        content[5 << 20] = 1;
        content.push(2);
        std::fs::write(src.join("zeros"), &content).unwrap();
        let stats = copy_tree(&src, &dst, &mut |_| {}).unwrap();
        assert_eq!(stats.bytes, content.len() as u64);
        assert_eq!(std::fs::read(dst.join("zeros")).unwrap(), content);
        let blocks = std::fs::metadata(dst.join("zeros")).unwrap().blocks();
        assert!(blocks * 512 <= 64 << 10, "blocks {blocks}");
    }

    #[test]
    fn tree_copy_refuses_to_overwrite() {
        let tmp = TempDir::new("exists");
        let (src, dst) = (tmp.sub("src"), tmp.sub("dst"));
        std::fs::write(src.join("x"), b"new").unwrap();
        std::fs::write(dst.join("x"), b"old").unwrap();
        let err = copy_tree(&src, &dst, &mut |_| {}).unwrap_err();
        assert!(matches!(err, TreeError::Create { .. }), "{err}");
        assert_eq!(std::fs::read(dst.join("x")).unwrap(), b"old");
    }

    #[test]
    fn tree_copy_into_symlinked_name_does_not_follow() {
        let tmp = TempDir::new("nofollow");
        let (src, dst, outside) = (tmp.sub("src"), tmp.sub("dst"), tmp.sub("outside"));
        std::fs::write(src.join("x"), b"new").unwrap();
        symlink(outside.join("x"), dst.join("x")).unwrap();
        assert!(copy_tree(&src, &dst, &mut |_| {}).is_err());
        assert!(!outside.join("x").exists());
    }

    #[test]
    fn tree_deep_copy_and_remove() {
        let tmp = TempDir::new("deep");
        let (src, dst) = (tmp.sub("src"), tmp.sub("dst"));
        let deep: PathBuf = std::iter::repeat_n("d", 1000).collect();
        std::fs::create_dir_all(src.join(&deep)).unwrap();
        std::fs::write(src.join(&deep).join("bottom"), b"deep").unwrap();
        let stats = copy_tree(&src, &dst, &mut |_| {}).unwrap();
        assert_eq!((stats.dirs, stats.files), (1000, 1));
        assert_eq!(tree_listing(&src).unwrap(), tree_listing(&dst).unwrap());
        assert_eq!(remove_contents(&dst, true).unwrap(), 1001);
        assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
    }

    #[test]
    fn tree_progress_is_rate_limited() {
        let tmp = TempDir::new("progress");
        let (src, dst) = (tmp.sub("src"), tmp.sub("dst"));
        for i in 0..2500 {
            std::fs::write(src.join(format!("f{i}")), b"").unwrap();
        }
        let mut seen = Vec::new();
        let stats = copy_tree(&src, &dst, &mut |s| seen.push(s.entries())).unwrap();
        assert_eq!(stats.files, 2500);
        assert_eq!(seen, vec![1000, 2000, 2500]);
    }

    #[test]
    fn tree_remove_contents_keeps_symlink_targets() {
        let tmp = TempDir::new("remove");
        let (dir, outside) = (tmp.sub("dir"), tmp.sub("outside"));
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
    fn tree_name_validator() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"../x"] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"a b", b"\xff"] {
            assert!(is_safe_name(good), "{good:?}");
        }
    }

    #[test]
    fn tree_listing_escapes_and_hashes_holes_as_zeros() {
        assert_eq!(escape(b"a b\\\n\xff/c"), "a\\x20b\\x5c\\x0a\\xff/c");
        let tmp = TempDir::new("hash");
        let path = tmp.0.join("f");
        let mut buf = vec![0; BUF_SIZE];
        let mut hash_of = |content: &dyn Fn(&File)| {
            let file = File::create(&path).unwrap();
            content(&file);
            let file = File::open(&path).unwrap();
            let size = file.metadata().unwrap().len();
            hash_content(&file, size, &path, &mut buf).unwrap()
        };
        let zeros = hash_of(&|f| f.write_all_at(&vec![0; 3 << 20], 0).unwrap());
        let holes = hash_of(&|f| f.set_len(3 << 20).unwrap());
        let one = hash_of(&|f| {
            f.set_len(3 << 20).unwrap();
            f.write_all_at(b"1", 2 << 20).unwrap();
        });
        let moved = hash_of(&|f| {
            f.set_len(3 << 20).unwrap();
            f.write_all_at(b"1", 1 << 20).unwrap();
        });
        let shorter = hash_of(&|f| f.set_len(2 << 20).unwrap());
        assert_eq!(zeros, holes);
        assert_ne!(zeros, one);
        assert_ne!(one, moved);
        assert_ne!(zeros, shorter);
    }

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let root = std::env::temp_dir().join(format!("ramstick-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), "").unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
        std::os::unix::fs::symlink("../lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/systemd/systemd", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let target = root.join("usr/lib/systemd/systemd");
        assert_eq!(
            resolve_in_root(&root, Path::new("sbin/init")),
            Some(target.clone())
        );
        assert_eq!(resolve_in_root(&root, Path::new("abs")), Some(target));
        assert_eq!(resolve_in_root(&root, Path::new("loop")), None);
        assert_eq!(resolve_in_root(&root, Path::new("sbin/missing")), None);
        // `..` cannot leave the root.
        assert_eq!(
            resolve_in_root(&root, Path::new("../../usr/sbin")),
            Some(root.join("usr/sbin"))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! Extended attributes of an open file or of a path that is not followed:
//! list, read, set. Shared by the tree listing (`tree`) and the squashfs codec.

use nix::libc;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Attributes as (name, value) pairs.
pub type Xattrs = Vec<(CString, Vec<u8>)>;

/// Where an extended attribute lives: an open file, or a path that is not
/// followed if it is a symlink.
pub enum XTarget<'a> {
    Fd(BorrowedFd<'a>),
    Path(CString),
}

impl XTarget<'_> {
    /// Calls `f(buf)` (a list or get syscall returning a length) with an
    /// exactly sized buffer and returns the filled part.
    fn read_sized(mut f: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
        loop {
            let size = f(&mut []);
            let size = usize::try_from(size).map_err(|_| io::Error::last_os_error())?;
            let mut buf = vec![0u8; size];
            let got = f(&mut buf);
            match usize::try_from(got) {
                Ok(got) => {
                    buf.truncate(got);
                    return Ok(buf);
                }
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::ERANGE) {
                        return Err(err);
                    }
                    // It grew between the two calls: ask again.
                }
            }
        }
    }

    /// The names of all extended attributes (none if unsupported).
    pub fn list(&self) -> io::Result<Vec<CString>> {
        let list = Self::read_sized(|buf| match self {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes and the fd is open.
            XTarget::Fd(fd) => unsafe {
                libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            },
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `path` is NUL-terminated.
            XTarget::Path(path) => unsafe {
                libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            },
        });
        let list = match list {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(list
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .filter_map(|name| CString::new(name).ok())
            .collect())
    }

    /// The value of attribute `name`.
    pub fn get(&self, name: &CStr) -> io::Result<Vec<u8>> {
        Self::read_sized(|buf| match self {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes, `name` is NUL-terminated.
            XTarget::Fd(fd) => unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            },
            // SAFETY: as above, and `path` is NUL-terminated.
            XTarget::Path(path) => unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            },
        })
    }

    /// Sets attribute `name` to `value` (creating or replacing it).
    pub fn set(&self, name: &CStr, value: &[u8]) -> io::Result<()> {
        let ret = match self {
            // SAFETY: `value` is valid for reads of `value.len()` bytes, `name` is NUL-terminated.
            XTarget::Fd(fd) => unsafe {
                libc::fsetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            },
            // SAFETY: as above, and `path` is NUL-terminated.
            XTarget::Path(path) => unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            },
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Every attribute (name, value), sorted by name; one removed between
    /// listing and reading is left out. An error names the attribute
    /// (`*` for the listing).
    pub fn read_all(&self) -> Result<Xattrs, (CString, io::Error)> {
        let mut names = self.list().map_err(|e| (c"*".to_owned(), e))?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match self.get(&name) {
                Ok(value) => out.push((name, value)),
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {} // removed meanwhile
                Err(e) => return Err((name, e)),
            }
        }
        Ok(out)
    }
}

/// The path addressing entry `name` of the open directory `dir` for the
/// l*xattr calls (symlinks and special files have no fd-based ones on 6.1)
/// without resolving anything above `dir`: `/proc/self/fd/<dir>/<name>` when
/// /proc is mounted, else `full` (the entry's full path).
pub fn entry_path(dir: BorrowedFd, name: &[u8], full: &Path) -> io::Result<CString> {
    let bytes = if Path::new("/proc/self/fd").is_dir() {
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name);
        p
    } else {
        full.as_os_str().as_bytes().to_vec()
    };
    CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

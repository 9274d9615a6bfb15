//! Small filesystem helpers of the reader, verifier and writer: opening a
//! directory without following links, finding holes of a sparse file
//! ([`Holes`]), and extended attributes through `ramstick_common::xattr`
//! with this crate's errors.

use crate::format::xattr;
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{lseek, Whence};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

pub(crate) use ramstick_common::xattr::{entry_path, XTarget};

/// Opens directory `name` of `at` without following a symlink; `path`
/// names it in the error.
pub(crate) fn open_dir<P: ?Sized + nix::NixPath>(
    at: impl AsFd,
    name: &P,
    path: &Path,
) -> Result<OwnedFd> {
    openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", path, e.into()))
}

/// What `SEEK_DATA`/`SEEK_HOLE` told so far about an open file read front
/// to back: one query per data region or hole, so a 1 TiB sparse file with
/// one data block costs a few system calls, not 2^40 zero bytes read.
#[derive(Default)]
pub(crate) struct Holes {
    /// Bytes before this offset (from the last query on) are zeros.
    zero_until: u64,
    /// Bytes before this offset (from the last data found on) are data.
    data_until: u64,
}

impl Holes {
    /// Whether `[at, at + len)` of `file` is known to hold only zeros. A
    /// filesystem without `SEEK_DATA` has no holes here; a file that
    /// shrank reads as zeros (its caller checks the size).
    pub(crate) fn is_hole(&mut self, file: &impl AsFd, at: u64, len: u64) -> bool {
        self.query(file, at, len, true)
    }

    /// [`Self::is_hole`], but only for a hole with data after it: no data
    /// from `at` on (the end of the file, or a hole up to it) is not known
    /// as a hole, so a file that shrank is read (and found shorter).
    pub(crate) fn is_inner_hole(&mut self, file: &impl AsFd, at: u64, len: u64) -> bool {
        self.query(file, at, len, false)
    }

    fn query(&mut self, file: &impl AsFd, at: u64, len: u64, to_the_end: bool) -> bool {
        let end = at.saturating_add(len);
        if end <= self.zero_until {
            return true;
        }
        if end <= self.data_until {
            return false;
        }
        let Ok(offset) = i64::try_from(at) else {
            return false;
        };
        match lseek(file, offset, Whence::SeekData) {
            Ok(data) if data as u64 >= end => {
                self.zero_until = data as u64;
                true
            }
            Ok(data) => {
                self.data_until =
                    lseek(file, data, Whence::SeekHole).map_or(u64::MAX, |hole| hole as u64);
                false
            }
            // No data from `at` on.
            Err(Errno::ENXIO) if to_the_end => {
                self.zero_until = u64::MAX;
                true
            }
            Err(Errno::ENXIO) => {
                self.data_until = u64::MAX;
                false
            }
            Err(_) => {
                self.data_until = u64::MAX;
                false
            }
        }
    }
}

/// Sets `xattrs` (full names) on `t`; `path` names the entry in errors.
pub(crate) fn set_xattrs(t: &XTarget, xattrs: &[(Vec<u8>, Vec<u8>)], path: &Path) -> Result<()> {
    for (name, value) in xattrs {
        let name = CString::new(name.as_slice())
            .map_err(|_| Error::io("set xattrs of", path, io::ErrorKind::InvalidInput.into()))?;
        t.set(&name, value)
            .map_err(|e| Error::io("set xattrs of", path, e))?;
    }
    Ok(())
}

/// The extended attributes of `t` that squashfs can store (`user.`,
/// `trusted.`, `security.`; not `system.*` = POSIX ACLs, which packing
/// skips), as (full name, value) sorted by name.
pub(crate) fn storable_xattrs(t: &XTarget, path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let all = t
        .read_all()
        .map_err(|(_, e)| Error::io("read xattrs of", path, e))?;
    Ok(all
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), v))
        .filter(|(n, _)| {
            xattr::PREFIXES
                .iter()
                .any(|(_, prefix)| n.starts_with(prefix.as_bytes()))
        })
        .collect())
}

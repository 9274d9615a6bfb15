//! Small filesystem helpers of the reader and verifier: opening a directory
//! without following links, and extended attributes through
//! `ramstick_common::xattr` with this crate's errors.

use crate::format::xattr;
use crate::{Error, Result};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
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

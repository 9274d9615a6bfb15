//! A tree described one line per entry, so that two trees can be compared:
//! the saver checks the image it wrote against the upper it saved, and the
//! codec's tests check what they pack and unpack.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::readlinkat;
use nix::sys::stat::{major, minor, FileStat, SFlag};

use super::hash::hash_content;
use super::walk::{kind_of, walk, Cursor, Id, Visit, Visitor};
use super::TreeError;
use crate::xattr::XTarget;

/// Size of the read buffer of the content hash.
const BUF_SIZE: usize = 1 << 20;

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
    let mut lister = Lister {
        rows: Vec::new(),
        buf: vec![0; BUF_SIZE],
        hashes: HashMap::new(),
    };
    let root_stat = c.fstat()?;
    lister.entered(&c, &root_stat)?;
    walk(&mut c, &mut lister)?;
    let mut rows = lister.rows;
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

/// One entry of [`tree_listing`] before hardlinks are resolved.
struct Row {
    path: String,
    /// Everything after the path.
    rest: String,
    /// Set for non-directories with more than one link.
    link_id: Option<Id>,
}

/// The rows of a [`tree_listing`] being made.
struct Lister {
    rows: Vec<Row>,
    buf: Vec<u8>,
    /// Content hashes of the files with more than one link, by inode.
    hashes: HashMap<Id, u64>,
}

impl Visitor for Lister {
    fn visit(&mut self, c: &Cursor, name: &CStr) -> Result<Visit, TreeError> {
        let Some(st) = c.stat(name)? else {
            return Err(TreeError::Changed { path: c.path(name) });
        };
        if st.st_dev != c.root_id().dev {
            return Ok(Visit::Next); // a mount point
        }
        if kind_of(&st) == SFlag::S_IFDIR {
            return Ok(Visit::Enter(st));
        }
        let row = self.describe(c, Some(name), &st)?;
        self.rows.push(row);
        Ok(Visit::Next)
    }

    fn entered(&mut self, c: &Cursor, st: &FileStat) -> Result<(), TreeError> {
        let row = self.describe(c, None, st)?;
        self.rows.push(row);
        Ok(())
    }
}

impl Lister {
    /// The row of entry `name` of the cursor's directory, or of the
    /// directory itself if None.
    fn describe(
        &mut self,
        c: &Cursor,
        name: Option<&CStr>,
        st: &FileStat,
    ) -> Result<Row, TreeError> {
        let rel = match name {
            Some(name) => c.rel.join(OsStr::from_bytes(name.to_bytes())),
            None => c.rel.clone(),
        };
        let path = format!("/{}", escape(rel.as_os_str().as_bytes()));
        let full = match name {
            Some(name) => c.path(name),
            None => c.dir_path(),
        };
        let kind = kind_of(st);
        let mut size = "-".to_string();
        let mut target = "-".to_string();
        let mut hash = "-".to_string();
        let xattrs;
        if kind == SFlag::S_IFDIR {
            xattrs = read_xattrs(&XTarget::Fd(c.fd.as_fd()), &full)?;
        } else if let Some(name) = name.filter(|_| kind == SFlag::S_IFREG) {
            size = st.st_size.to_string();
            let id = Id::of(st);
            let file = c.open_file(name, st)?;
            xattrs = read_xattrs(&XTarget::Fd(file.as_fd()), &full)?;
            let value = match self.hashes.get(&id) {
                Some(value) => *value,
                None => {
                    let len = u64::try_from(st.st_size).unwrap_or(0);
                    hash_content(&file, len, &full, &mut self.buf)?
                }
            };
            if st.st_nlink > 1 {
                self.hashes.insert(id, value);
            }
            hash = format!("{value:016x}");
        } else if let Some(name) = name {
            let xpath = c.xattr_path(name).map_err(|e| TreeError::Xattr {
                path: full.clone(),
                name: String::new(),
                source: e,
            })?;
            xattrs = read_xattrs(&XTarget::Path(xpath), &full)?;
            if kind == SFlag::S_IFLNK {
                let link = readlinkat(&c.fd, name).map_err(|e| TreeError::ReadLink {
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

/// All extended attributes of `target`, sorted by name; `path` is for messages.
/// Those of symlinks and special files have no fd-based syscall on Linux
/// 6.1: they are read by path (see [`Cursor::xattr_path`]).
fn read_xattrs(target: &XTarget, path: &Path) -> Result<Vec<(CString, Vec<u8>)>, TreeError> {
    target.read_all().map_err(|(name, e)| TreeError::Xattr {
        path: path.to_path_buf(),
        name: name.to_string_lossy().into_owned(),
        source: e,
    })
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

#[cfg(test)]
mod tests;

//! The writer's first pass over a directory: walks the tree (never
//! following symlinks) and adds one [`Node`](super::tree::Node) per inode to
//! a [`Builder`] — type, mode, owners, mtime, xattrs and, for files, where
//! to read them later (their directory's node and entry: the data pass
//! opens them the same way).
//!
//! The walk holds one open directory fd per level and reaches everything
//! with `*at()` calls relative to it (`fstatat`, `readlinkat`, `openat`),
//! so no path it resolves is longer than a name: a tree deeper than
//! PATH_MAX packs. Xattrs of an entry are read with the `l*xattr` calls on
//! `/proc/self/fd/<dir fd>/<name>` (the kernel follows the fd's magic link
//! to the open directory, then resolves only `name`, without following it;
//! symlinks and device nodes have no fd-based xattr calls on 6.1). The
//! reader's limits are enforced here, before anything is written: names of
//! at most [`MAX_NAME`] bytes, directories nested at most [`MAX_DEPTH`]
//! deep; the error names the offending path.

use super::source::Source;
use super::tree::{split_xattr_name, stored_mtime, Builder, Kind, Meta, Tree, Xattr};
use crate::format::MAX_NAME;
use crate::read::fsops::{entry_path, open_dir};
use crate::read::MAX_DEPTH;
use crate::{Error, Exclude, Result};
use nix::fcntl::{readlinkat, AtFlags, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, FileStat, SFlag};
use ramstick_common::xattr::XTarget;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Scan state.
struct Scanner<'a> {
    root: &'a Path,
    exclude: &'a Exclude,
    b: Builder,
    /// (st_dev, st_ino) of multiply linked non-directories → node.
    links: HashMap<(u64, u64), usize>,
}

/// An open directory of the walk and its subdirectories still to visit
/// (last first).
struct Frame {
    fd: OwnedFd,
    /// Path from the root with a leading `/` (empty for the root).
    rel: String,
    /// Depth of this directory's listing (the root's is 1).
    depth: usize,
    subdirs: Vec<(Vec<u8>, usize)>,
}

/// Scans the tree at `root`.
pub(crate) fn scan(root: &Path, exclude: &Exclude) -> Result<Tree> {
    let fd = open_dir(AT_FDCWD, root, root).map_err(|e| match e {
        Error::Io { error, .. } if error.raw_os_error() == Some(nix::libc::ENOTDIR) => {
            Error::Unpackable {
                path: root.to_path_buf(),
                what: "not a directory".into(),
            }
        }
        other => other,
    })?;
    let st = fstat(&fd).map_err(|e| Error::io("stat", root, e.into()))?;
    let mut s = Scanner {
        root,
        exclude,
        b: Builder::default(),
        links: HashMap::new(),
    };
    let xattrs = read_xattrs(&XTarget::Fd(fd.as_fd()), root, &mut s.b.skipped_xattrs)?;
    let kind = Kind::Dir {
        entries: Vec::new(),
        parent: 0,
    };
    s.add_node(root, &st, kind, xattrs)?;
    let mut stack = vec![s.frame(fd, 0, String::new(), 1)?];
    while let Some(top) = stack.last_mut() {
        let Some((name, node)) = top.subdirs.pop() else {
            stack.pop();
            continue;
        };
        let rel = format!("{}/{}", top.rel, String::from_utf8_lossy(&name));
        let depth = top.depth + 1;
        let full = s.full(&rel);
        let fd = open_dir(top.fd.as_fd(), name.as_slice(), &full)?;
        let frame = s.frame(fd, node, rel, depth)?;
        stack.push(frame);
    }
    let mut tree = s.b.finish();
    tree.root = Some(root.to_path_buf());
    Ok(tree)
}

impl Scanner<'_> {
    /// The full path of `rel` (for messages).
    fn full(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Lists the open directory `fd` (node `node`): adds its entries and
    /// returns its frame, with the subdirectories to visit.
    fn frame(&mut self, fd: OwnedFd, node: usize, rel: String, depth: usize) -> Result<Frame> {
        let full = self.full(&rel);
        let mut names = Vec::new();
        let listing = open_dir(fd.as_fd(), ".", &full)?;
        let mut dir =
            nix::dir::Dir::from_fd(listing).map_err(|e| Error::io("list", &full, e.into()))?;
        for e in dir.iter() {
            let e = e.map_err(|e| Error::io("list", &full, e.into()))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        drop(dir);
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        let mut subdirs = Vec::new();
        for name in names {
            let child_rel = format!("{rel}/{}", String::from_utf8_lossy(&name));
            if self.exclude.matches(&child_rel) {
                continue;
            }
            let child_full = full.join(OsStr::from_bytes(&name));
            if name.len() > MAX_NAME {
                return Err(Error::Unpackable {
                    path: child_full,
                    what: format!("name of {} bytes (squashfs allows {MAX_NAME})", name.len()),
                });
            }
            let at = Entry {
                dir: fd.as_fd(),
                node,
                index: entries.len(),
                name: &name,
                full: &child_full,
            };
            let (child, is_dir) = self.entry(&at)?;
            if is_dir {
                if depth >= MAX_DEPTH {
                    return Err(Error::Unpackable {
                        path: child_full,
                        what: format!(
                            "more than {} nested directories (the reader's limit)",
                            MAX_DEPTH - 1
                        ),
                    });
                }
                subdirs.push((name.clone(), child));
            }
            entries.push((name, child));
        }
        self.b.set_entries(node, entries);
        subdirs.reverse();
        Ok(Frame {
            fd,
            rel,
            depth,
            subdirs,
        })
    }

    /// Adds the node of one entry (or finds its hardlink's); returns it and
    /// whether it is a directory.
    fn entry(&mut self, at: &Entry) -> Result<(usize, bool)> {
        let st = fstatat(at.dir, at.name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io("stat", at.full, e.into()))?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let linked = kind != SFlag::S_IFDIR && st.st_nlink > 1;
        let id = (st.st_dev, st.st_ino);
        if let Some(&existing) = linked.then(|| self.links.get(&id)).flatten() {
            return Ok((existing, false));
        }
        let kind = match kind {
            SFlag::S_IFDIR => Kind::Dir {
                entries: Vec::new(),
                parent: at.node,
            },
            SFlag::S_IFREG => Kind::File {
                source: Source::Tree {
                    dir: at.node,
                    entry: at.index,
                    mtime: (st.st_mtime, st.st_mtime_nsec),
                },
                size: st.st_size as u64,
            },
            SFlag::S_IFLNK => {
                let target = readlinkat(at.dir, at.name)
                    .map_err(|e| Error::io("read symlink", at.full, e.into()))?;
                Kind::Symlink(target.as_bytes().to_vec())
            }
            SFlag::S_IFCHR => Kind::CharDev(dev(st.st_rdev)),
            SFlag::S_IFBLK => Kind::BlockDev(dev(st.st_rdev)),
            SFlag::S_IFIFO => Kind::Fifo,
            _ => Kind::Socket,
        };
        let is_dir = matches!(kind, Kind::Dir { .. });
        let xpath =
            entry_path(at.dir, at.name, at.full).map_err(|e| Error::io("address", at.full, e))?;
        let xattrs = read_xattrs(&XTarget::Path(xpath), at.full, &mut self.b.skipped_xattrs)?;
        let child = self.add_node(at.full, &st, kind, xattrs)?;
        if linked {
            self.links.insert(id, child);
        }
        Ok((child, is_dir))
    }

    /// Adds a node for `path` (owners, mode, mtime, `xattrs`).
    fn add_node(
        &mut self,
        path: &Path,
        st: &FileStat,
        kind: Kind,
        xattrs: Vec<Xattr>,
    ) -> Result<usize> {
        let meta = Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: stored_mtime(st.st_mtime),
        };
        self.b
            .add(kind, &meta, xattrs)
            .map_err(|_| Error::Unpackable {
                path: path.to_path_buf(),
                what: "more than 65536 distinct owners and groups".into(),
            })
    }
}

/// One entry being scanned: `name` in the open directory `dir` (node
/// `node`), its index among the directory's entries and its full path.
struct Entry<'a> {
    dir: BorrowedFd<'a>,
    node: usize,
    index: usize,
    name: &'a [u8],
    full: &'a Path,
}

/// A device number as squashfs stores it.
fn dev(rdev: u64) -> u32 {
    crate::format::encode_dev(
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    )
}

/// The xattrs of `t` that squashfs can hold; the others (`system.*`) are
/// counted in `skipped`.
fn read_xattrs(t: &XTarget, path: &Path, skipped: &mut u64) -> Result<Vec<Xattr>> {
    let all = t
        .read_all()
        .map_err(|(_, e)| Error::io("read xattrs of", path, e))?;
    let mut out = Vec::new();
    for (name, value) in all {
        match split_xattr_name(name.to_bytes()) {
            Some((kind, short)) => out.push((kind, short.to_vec(), value)),
            None => *skipped += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_orders_children_first_and_counts_links() {
        let root = ramstick_testkit::TempDir::new("scan");
        root.mkdir("b/c");
        root.mkdir("skip/deep");
        std::fs::write(root.join("a"), b"x").unwrap();
        std::fs::hard_link(root.join("a"), root.join("b/c/a2")).unwrap();
        std::fs::write(root.join("z"), b"yz").unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("b/l")).unwrap();
        let exclude = Exclude::new(["/skip"]).unwrap();
        let tree = scan(&root, &exclude).unwrap();
        drop(root);
        // Writing order: a, b/c (after its a2 = a), b/l, b, z, root.
        let names: Vec<String> = tree
            .order
            .iter()
            .map(|&n| match &tree.nodes[n].kind {
                Kind::Dir { entries, .. } => format!("dir{}", entries.len()),
                Kind::File {
                    source: Source::Tree { dir, entry, .. },
                    size,
                } => match &tree.nodes[*dir].kind {
                    Kind::Dir { entries, .. } => {
                        format!("{}:{size}", String::from_utf8_lossy(&entries[*entry].0))
                    }
                    _ => "not in a directory".into(),
                },
                Kind::Symlink(t) => String::from_utf8_lossy(t).into_owned(),
                _ => "?".into(),
            })
            .collect();
        assert_eq!(names, ["a:1", "dir1", "nowhere", "dir2", "z:2", "dir3"]);
        assert_eq!(tree.nodes[tree.order[0]].nlink, 2);
        assert_eq!(tree.nodes[0].nlink, 3, "root: 2 + b");
        assert_eq!(tree.nodes[0].number, 6);
        assert_eq!(tree.entries, 7, "root, a, b, b/c, b/c/a2, b/l, z");
        assert_eq!(tree.total_bytes, 3);
        for (i, &n) in tree.order.iter().enumerate() {
            assert_eq!(tree.nodes[n].number as usize, i + 1);
        }
    }
}

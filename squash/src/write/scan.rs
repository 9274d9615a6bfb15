//! The writer's first pass over a directory: walks the tree (never
//! following symlinks) and adds one [`Node`] per inode to a [`Builder`] —
//! type, mode, owners, mtime, xattrs and, for files, the path and size to
//! read later.

use super::source::Source;
use super::tree::{split_xattr_name, Builder, Kind, Meta, Tree, Xattr};
use crate::format::MAX_NAME;
use crate::{Error, Exclude, Result};
use ramstick_common::xattr::XTarget;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Scan state.
struct Scanner<'a> {
    exclude: &'a Exclude,
    b: Builder,
    /// (st_dev, st_ino) of multiply linked non-directories → node.
    links: HashMap<(u64, u64), usize>,
}

/// Scans the tree at `root`.
pub(crate) fn scan(root: &Path, exclude: &Exclude) -> Result<Tree> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| Error::io("stat", root, e))?;
    if !meta.is_dir() {
        return Err(Error::Unpackable {
            path: root.to_path_buf(),
            what: "not a directory".into(),
        });
    }
    let mut s = Scanner {
        exclude,
        b: Builder::default(),
        links: HashMap::new(),
    };
    let kind = Kind::Dir {
        entries: Vec::new(),
        parent: 0,
    };
    s.add_node(root, &meta, kind)?;
    // (node, path, path from the root with a leading '/').
    let mut todo = vec![(0usize, root.to_path_buf(), String::new())];
    while let Some((node, path, rel)) = todo.pop() {
        let entries = s.read_dir(node, &path, &rel, &mut todo)?;
        s.b.set_entries(node, entries);
    }
    Ok(s.b.finish())
}

impl Scanner<'_> {
    /// Reads the directory `path` (node `node`): returns its sorted
    /// entries, queueing subdirectories on `todo`.
    fn read_dir(
        &mut self,
        node: usize,
        path: &Path,
        rel: &str,
        todo: &mut Vec<(usize, PathBuf, String)>,
    ) -> Result<Vec<(Vec<u8>, usize)>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io("read directory", path, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", path, e))?;
            names.push(entry.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let child_path = path.join(&name);
            let child_rel = format!("{rel}/{}", String::from_utf8_lossy(name.as_bytes()));
            if self.exclude.matches(&child_rel) {
                continue;
            }
            if name.len() > MAX_NAME {
                return Err(Error::Unpackable {
                    path: child_path,
                    what: format!("name of {} bytes (squashfs allows {MAX_NAME})", name.len()),
                });
            }
            let meta = std::fs::symlink_metadata(&child_path)
                .map_err(|e| Error::io("stat", &child_path, e))?;
            let linked = !meta.is_dir() && meta.nlink() > 1;
            if let Some(&existing) = linked
                .then(|| self.links.get(&(meta.dev(), meta.ino())))
                .flatten()
            {
                entries.push((name.as_bytes().to_vec(), existing));
                continue;
            }
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir {
                    entries: Vec::new(),
                    parent: node,
                }
            } else if ft.is_file() {
                Kind::File {
                    source: Source::Path(child_path.clone()),
                    size: meta.len(),
                }
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&child_path)
                    .map_err(|e| Error::io("read symlink", &child_path, e))?;
                Kind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else if ft.is_char_device() {
                Kind::CharDev(dev(meta.rdev()))
            } else if ft.is_block_device() {
                Kind::BlockDev(dev(meta.rdev()))
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            let is_dir = ft.is_dir();
            let child = self.add_node(&child_path, &meta, kind)?;
            if linked {
                self.links.insert((meta.dev(), meta.ino()), child);
            }
            if is_dir {
                todo.push((child, child_path, child_rel));
            }
            entries.push((name.as_bytes().to_vec(), child));
        }
        Ok(entries)
    }

    /// Adds a node for `path` (owners, xattrs, mode, mtime).
    fn add_node(&mut self, path: &Path, meta: &std::fs::Metadata, kind: Kind) -> Result<usize> {
        let xattrs = read_xattrs(path, &mut self.b.skipped_xattrs)?;
        let meta = Meta {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime().clamp(0, i64::from(u32::MAX)) as u32,
        };
        self.b
            .add(kind, &meta, xattrs)
            .map_err(|_| Error::Unpackable {
                path: path.to_path_buf(),
                what: "more than 65536 distinct owners and groups".into(),
            })
    }
}

/// A device number as squashfs stores it.
fn dev(rdev: u64) -> u32 {
    crate::format::encode_dev(
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    )
}

/// The xattrs of `path` (not following a symlink), sorted by name. Xattrs
/// of other namespaces than squashfs holds are counted in `skipped`.
fn read_xattrs(path: &Path, skipped: &mut u64) -> Result<Vec<Xattr>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Unpackable {
        path: path.to_path_buf(),
        what: "path contains a NUL byte".into(),
    })?;
    let all = XTarget::Path(c_path)
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
        let root = std::env::temp_dir().join(format!("ramstick-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join("skip/deep")).unwrap();
        std::fs::write(root.join("a"), b"x").unwrap();
        std::fs::hard_link(root.join("a"), root.join("b/c/a2")).unwrap();
        std::fs::write(root.join("z"), b"yz").unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("b/l")).unwrap();
        let exclude = Exclude::new(["/skip"]).unwrap();
        let tree = scan(&root, &exclude).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        // Writing order: a, b/c (after its a2 = a), b/l, b, z, root.
        let names: Vec<String> = tree
            .order
            .iter()
            .map(|&n| match &tree.nodes[n].kind {
                Kind::Dir { entries, .. } => format!("dir{}", entries.len()),
                Kind::File {
                    source: Source::Path(path),
                    size,
                } => format!("{}:{size}", path.display())
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
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

//! The writer's first pass: walks the tree (never following symlinks) and
//! keeps one [`Node`] per inode — type, mode, owner indices, mtime, xattr
//! set, link count and, for files, the path and size to read later. This
//! per-entry metadata is all the writer holds in memory; file contents are
//! streamed afterwards. Inode numbers follow the order inodes are written:
//! depth-first, children (by name) before their directory, the root last.

use crate::format::{xattr, MAX_NAME, NONE_U32};
use crate::{Error, Exclude, Result};
use ramstick_common::xattr::XTarget;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What an inode is.
pub(crate) enum Kind {
    /// Entries sorted by name bytes: (name, node index).
    Dir {
        entries: Vec<(Vec<u8>, usize)>,
        parent: usize,
    },
    File {
        path: PathBuf,
        size: u64,
    },
    Symlink(Vec<u8>),
    /// Device number as squashfs stores it.
    CharDev(u32),
    BlockDev(u32),
    Fifo,
    Socket,
}

/// One inode of the tree.
pub(crate) struct Node {
    pub kind: Kind,
    /// Permission bits of `st_mode` (incl. setuid, setgid, sticky).
    pub mode: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    /// Index into [`Tree::xattr_sets`], or `NONE_U32`.
    pub xattr: u32,
    /// Names inside the tree (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Inode number (1-based, position in [`Tree::order`] + 1).
    pub number: u32,
}

/// One xattr as squashfs stores it: prefix type, name without the
/// prefix, value.
pub(crate) type Xattr = (u16, Vec<u8>, Vec<u8>);

/// The scanned tree. Node 0 is the root.
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    /// Node indices in writing order (post-order, root last).
    pub order: Vec<usize>,
    /// uid/gid values, indexed by the nodes' id indices.
    pub ids: Vec<u32>,
    /// Distinct xattr sets (each sorted by name), stored once.
    pub xattr_sets: Vec<Vec<Xattr>>,
    /// Directory entries (names; hardlinks count per name, root included).
    pub entries: u64,
    /// Sum of the sizes of distinct regular files.
    pub total_bytes: u64,
    /// Xattrs of namespaces squashfs cannot hold (`system.*`), left out.
    pub skipped_xattrs: u64,
}

/// Scan state.
struct Scanner<'a> {
    exclude: &'a Exclude,
    nodes: Vec<Node>,
    ids: Vec<u32>,
    id_index: HashMap<u32, u16>,
    xattr_sets: Vec<Vec<Xattr>>,
    xattr_index: HashMap<Vec<Xattr>, u32>,
    /// (st_dev, st_ino) of multiply linked non-directories → node.
    links: HashMap<(u64, u64), usize>,
    entries: u64,
    total_bytes: u64,
    skipped_xattrs: u64,
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
        nodes: Vec::new(),
        ids: Vec::new(),
        id_index: HashMap::new(),
        xattr_sets: Vec::new(),
        xattr_index: HashMap::new(),
        links: HashMap::new(),
        entries: 1,
        total_bytes: 0,
        skipped_xattrs: 0,
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
        let subdirs = entries
            .iter()
            .filter(|(_, child)| matches!(s.nodes[*child].kind, Kind::Dir { .. }))
            .count();
        let n = &mut s.nodes[node];
        n.nlink = 2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2);
        if let Kind::Dir { entries: e, .. } = &mut n.kind {
            *e = entries;
        }
    }
    let (order, numbers) = post_order(&s.nodes);
    for (node, number) in s.nodes.iter_mut().zip(numbers) {
        node.number = number;
    }
    Ok(Tree {
        nodes: s.nodes,
        order,
        ids: s.ids,
        xattr_sets: s.xattr_sets,
        entries: s.entries,
        total_bytes: s.total_bytes,
        skipped_xattrs: s.skipped_xattrs,
    })
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
            self.entries += 1;
            let linked = !meta.is_dir() && meta.nlink() > 1;
            if let Some(&existing) = linked
                .then(|| self.links.get(&(meta.dev(), meta.ino())))
                .flatten()
            {
                self.nodes[existing].nlink += 1;
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
                self.total_bytes += meta.len();
                Kind::File {
                    path: child_path.clone(),
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

    /// Adds a node for `path` (owner ids, xattrs, mode, mtime).
    fn add_node(&mut self, path: &Path, meta: &std::fs::Metadata, kind: Kind) -> Result<usize> {
        let uid_idx = self.id(meta.uid(), path)?;
        let gid_idx = self.id(meta.gid(), path)?;
        let xattrs = read_xattrs(path, &mut self.skipped_xattrs)?;
        let xattr = if xattrs.is_empty() {
            NONE_U32
        } else if let Some(&i) = self.xattr_index.get(&xattrs) {
            i
        } else {
            let i = self.xattr_sets.len() as u32;
            self.xattr_sets.push(xattrs.clone());
            self.xattr_index.insert(xattrs, i);
            i
        };
        self.nodes.push(Node {
            kind,
            // Permission bits only, like mksquashfs (the type is in the
            // inode type; recent kernels reject type bits here).
            mode: (meta.mode() & 0o7777) as u16,
            uid_idx,
            gid_idx,
            mtime: meta.mtime().clamp(0, i64::from(u32::MAX)) as u32,
            xattr,
            nlink: 1,
            number: 0,
        });
        Ok(self.nodes.len() - 1)
    }

    /// The id table index of a uid or gid.
    fn id(&mut self, id: u32, path: &Path) -> Result<u16> {
        if let Some(&i) = self.id_index.get(&id) {
            return Ok(i);
        }
        let i = u16::try_from(self.ids.len()).map_err(|_| Error::Unpackable {
            path: path.to_path_buf(),
            what: "more than 65536 distinct owners and groups".into(),
        })?;
        self.ids.push(id);
        self.id_index.insert(id, i);
        Ok(i)
    }
}

/// A device number as squashfs stores it.
fn dev(rdev: u64) -> u32 {
    crate::format::encode_dev(
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    )
}

/// Inode writing order (children by name before their directory, a
/// hardlinked inode at its first name, the root last) and each node's
/// inode number.
fn post_order(nodes: &[Node]) -> (Vec<usize>, Vec<u32>) {
    let mut numbers = vec![0u32; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack = vec![(0usize, 0usize)];
    while let Some(&mut (dir, ref mut next)) = stack.last_mut() {
        let Kind::Dir { entries, .. } = &nodes[dir].kind else {
            stack.pop();
            continue;
        };
        match entries.get(*next) {
            Some(&(_, child)) => {
                *next += 1;
                if matches!(nodes[child].kind, Kind::Dir { .. }) {
                    stack.push((child, 0));
                } else if numbers[child] == 0 {
                    order.push(child);
                    numbers[child] = order.len() as u32;
                }
            }
            None => {
                order.push(dir);
                numbers[dir] = order.len() as u32;
                stack.pop();
            }
        }
    }
    (order, numbers)
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
        let name = name.to_bytes();
        match xattr::PREFIXES
            .iter()
            .find_map(|(kind, prefix)| name.strip_prefix(prefix.as_bytes()).map(|s| (*kind, s)))
        {
            Some((kind, short)) => out.push((kind, short.to_vec(), value)),
            None => *skipped += 1,
        }
    }
    out.sort();
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
                Kind::File { path, size } => format!("{}:{size}", path.display())
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

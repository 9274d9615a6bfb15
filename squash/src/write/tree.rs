//! The writer's in-memory tree: one [`Node`] per inode — type, mode, owner
//! indices, mtime, xattr set, link count and, for files, where to read the
//! contents ([`Source`]) — built by [`Builder`] from a directory walk
//! ([`super::scan`]) or a merge of images ([`crate::merge`]). This
//! per-entry metadata is all the writer holds; file contents are streamed
//! afterwards. Inode numbers follow the order inodes are written:
//! depth-first, children (by name) before their directory, the root last.

use super::source::Source;
use crate::format::{xattr, NONE_U32};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What an inode is.
pub(crate) enum Kind {
    /// Entries sorted by name bytes: (name, node index).
    Dir {
        entries: Vec<(Vec<u8>, usize)>,
        parent: usize,
    },
    File {
        source: Source,
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
    /// Names inside the tree (directories: 2 + subdirectories); set by
    /// [`Builder::finish`].
    pub nlink: u32,
    /// Inode number (1-based, position in [`Tree::order`] + 1).
    pub number: u32,
}

/// One xattr as squashfs stores it: prefix type, name without the
/// prefix, value.
pub(crate) type Xattr = (u16, Vec<u8>, Vec<u8>);

/// The finished tree. Node 0 is the root.
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
    /// The directory scanned (files of [`Source::Tree`] are below it).
    pub root: Option<PathBuf>,
}

impl Tree {
    /// The name of node `node` in its parent directory (not for the root).
    pub(crate) fn name_of(&self, node: usize) -> Option<&[u8]> {
        let parent = match self.nodes.get(node)?.kind {
            Kind::Dir { parent, .. } => parent,
            _ => return None,
        };
        match &self.nodes.get(parent)?.kind {
            Kind::Dir { entries, .. } => entries
                .iter()
                .find(|(_, child)| *child == node)
                .map(|(name, _)| name.as_slice()),
            _ => None,
        }
    }

    /// Directory nodes from the root down to `dir` (none if `dir` is not
    /// a directory reachable from the root).
    pub(crate) fn chain(&self, dir: usize) -> Vec<usize> {
        let mut chain = vec![dir];
        let mut at = dir;
        while at != 0 {
            match self.nodes.get(at).map(|n| &n.kind) {
                Some(Kind::Dir { parent, .. }) if chain.len() <= self.nodes.len() => {
                    at = *parent;
                    chain.push(at);
                }
                _ => return Vec::new(),
            }
        }
        chain.reverse();
        chain
    }

    /// The full path of entry `name` of directory `dir` (for messages).
    pub(crate) fn path_of(&self, dir: usize, name: &[u8]) -> PathBuf {
        self.path_below(self.root.clone().unwrap_or_default(), dir, name)
    }

    /// The path of entry `name` of directory `dir` from the root, with a
    /// leading `/`.
    pub(crate) fn rel_path(&self, dir: usize, name: &[u8]) -> PathBuf {
        self.path_below(PathBuf::from("/"), dir, name)
    }

    fn path_below(&self, mut path: PathBuf, dir: usize, name: &[u8]) -> PathBuf {
        for &d in self.chain(dir).iter().skip(1) {
            path.push(OsStr::from_bytes(self.name_of(d).unwrap_or(b"?")));
        }
        path.push(OsStr::from_bytes(name));
        path
    }
}

/// Metadata of a node to add.
pub(crate) struct Meta {
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
}

/// Builds a [`Tree`]: interns owners and xattr sets, counts links.
#[derive(Default)]
pub(crate) struct Builder {
    pub nodes: Vec<Node>,
    ids: Vec<u32>,
    id_index: HashMap<u32, u16>,
    xattr_sets: Vec<Vec<Xattr>>,
    xattr_index: HashMap<Vec<Xattr>, u32>,
    total_bytes: u64,
    pub skipped_xattrs: u64,
}

/// More than 65536 distinct owners and groups: squashfs cannot hold them.
pub(crate) struct TooManyIds;

impl Builder {
    /// Adds a node; `xattrs` as squashfs stores them (any order).
    pub(crate) fn add(
        &mut self,
        kind: Kind,
        meta: &Meta,
        mut xattrs: Vec<Xattr>,
    ) -> Result<usize, TooManyIds> {
        let uid_idx = self.id(meta.uid)?;
        let gid_idx = self.id(meta.gid)?;
        xattrs.sort();
        let xattr = self.intern(xattrs);
        if let Kind::File { size, .. } = kind {
            self.total_bytes += size;
        }
        self.nodes.push(Node {
            kind,
            // Permission bits only, like mksquashfs (the type is in the
            // inode type; recent kernels reject type bits here).
            mode: (meta.mode & 0o7777) as u16,
            uid_idx,
            gid_idx,
            mtime: meta.mtime,
            xattr,
            nlink: 0,
            number: 0,
        });
        Ok(self.nodes.len() - 1)
    }

    /// The index of an xattr set (sorted), stored once.
    fn intern(&mut self, xattrs: Vec<Xattr>) -> u32 {
        if xattrs.is_empty() {
            NONE_U32
        } else if let Some(&i) = self.xattr_index.get(&xattrs) {
            i
        } else {
            let i = self.xattr_sets.len() as u32;
            self.xattr_sets.push(xattrs.clone());
            self.xattr_index.insert(xattrs, i);
            i
        }
    }

    /// Adds `xattr` to the set of `node` unless it has one of that name.
    pub(crate) fn add_xattr(&mut self, node: usize, xattr: Xattr) {
        let current = self.nodes[node].xattr;
        let mut set = self
            .xattr_sets
            .get(current as usize)
            .cloned()
            .unwrap_or_default();
        if set.iter().any(|(k, n, _)| (*k, n) == (xattr.0, &xattr.1)) {
            return;
        }
        set.push(xattr);
        set.sort();
        self.nodes[node].xattr = self.intern(set);
    }

    /// The id table index of a uid or gid.
    fn id(&mut self, id: u32) -> Result<u16, TooManyIds> {
        if let Some(&i) = self.id_index.get(&id) {
            return Ok(i);
        }
        let i = u16::try_from(self.ids.len()).map_err(|_| TooManyIds)?;
        self.ids.push(id);
        self.id_index.insert(id, i);
        Ok(i)
    }

    /// Sets the entries of directory node `dir` (sorted by name).
    pub(crate) fn set_entries(&mut self, dir: usize, list: Vec<(Vec<u8>, usize)>) {
        if let Kind::Dir { entries, .. } = &mut self.nodes[dir].kind {
            *entries = list;
        }
    }

    /// Counts links and numbers the inodes in writing order.
    pub(crate) fn finish(mut self) -> Tree {
        let mut names = vec![0u32; self.nodes.len()];
        let mut entries = 1u64;
        for node in &self.nodes {
            if let Kind::Dir { entries: list, .. } = &node.kind {
                entries += list.len() as u64;
                for &(_, child) in list {
                    names[child] = names[child].saturating_add(1);
                }
            }
        }
        let subdirs: Vec<u32> = self
            .nodes
            .iter()
            .map(|node| match &node.kind {
                Kind::Dir { entries: list, .. } => list
                    .iter()
                    .filter(|(_, c)| matches!(self.nodes[*c].kind, Kind::Dir { .. }))
                    .count() as u32,
                _ => 0,
            })
            .collect();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.nlink = match node.kind {
                Kind::Dir { .. } => subdirs[i].saturating_add(2),
                _ => names[i].max(1),
            };
        }
        let (order, numbers) = post_order(&self.nodes);
        for (node, number) in self.nodes.iter_mut().zip(numbers) {
            node.number = number;
        }
        // Keep only the xattr sets still used (`add_xattr` replaces sets).
        let mut renumber = vec![NONE_U32; self.xattr_sets.len()];
        let mut sets = Vec::new();
        for node in &mut self.nodes {
            if let Some(slot) = renumber.get_mut(node.xattr as usize) {
                if *slot == NONE_U32 {
                    *slot = sets.len() as u32;
                    sets.push(std::mem::take(&mut self.xattr_sets[node.xattr as usize]));
                }
                node.xattr = *slot;
            }
        }
        Tree {
            nodes: self.nodes,
            order,
            ids: self.ids,
            xattr_sets: sets,
            entries,
            total_bytes: self.total_bytes,
            skipped_xattrs: self.skipped_xattrs,
            root: None,
        }
    }
}

/// An mtime (seconds since the epoch) as squashfs stores it: a u32.
pub(crate) fn stored_mtime(secs: i64) -> u32 {
    secs.clamp(0, i64::from(u32::MAX)) as u32
}

/// Splits a full xattr name into squashfs' (prefix type, rest); `None` for
/// namespaces squashfs cannot hold.
pub(crate) fn split_xattr_name(name: &[u8]) -> Option<(u16, &[u8])> {
    xattr::PREFIXES
        .iter()
        .find_map(|(kind, prefix)| name.strip_prefix(prefix.as_bytes()).map(|s| (*kind, s)))
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

//! Merging a chain of layer images into one (see [`crate::merge`]).
//!
//! The rule is overlayfs' lookup through lower layers, top layer first,
//! for one name at a time ([`decide`], pure): the topmost layer that has the
//! name decides; a non-directory there (a whiteout too) hides everything
//! below; a directory merges with the directories below it until a layer's
//! directory is opaque (included, then stop) or a layer has a
//! non-directory (stop before it). A stop makes the output directory
//! opaque, so that it keeps hiding the base the chain sits on.
//!
//! [`Walk`] applies the rule over the images' directory trees with the
//! reader's checks (plain sorted unique names, entries matching inodes, no
//! directory reached twice, depth at most [`MAX_DEPTH`], no more inodes than
//! counted) and builds the writer's [`Tree`]: metadata from the deciding
//! layer, files pointing at their inodes in the input images, which the
//! writer then streams (decompressed and recompressed). Hardlinks: names of
//! one inode of one layer stay one inode; names from different layers are
//! never linked. A directory merged from several layers that keeps
//! whiteouts gets the empty `trusted.overlay.origin` mark, so that the
//! kernel keeps hiding them when the base lacks the directory.

use super::source::Source;
use super::tree::{split_xattr_name, Builder, Kind, Meta, Tree, Xattr};
use super::{check_block_size, write_image};
use crate::format::xattr::TRUSTED;
use crate::read::image::{Child, Image, Inode, Kind as InodeKind};
use crate::read::MAX_DEPTH;
use crate::{Error, PackOptions, PackStats, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `trusted.overlay.opaque` without its prefix; the value `y` makes a
/// directory opaque.
const OPAQUE: &[u8] = b"overlay.opaque";
/// `trusted.overlay.origin`: empty, it means "copied up, origin unknown",
/// and makes overlayfs look for whiteouts when listing a directory that
/// only one layer has (see [`Walk::fill`]).
const ORIGIN: &[u8] = b"overlay.origin";

pub(crate) fn merge(layers: &[&Path], out: &Path, options: &PackOptions) -> Result<PackStats> {
    check_block_size(out, options)?;
    if layers.is_empty() {
        return Err(Error::Unpackable {
            path: out.to_path_buf(),
            what: "no layers to merge".into(),
        });
    }
    refuse_input_as_output(layers, out)?;
    let images = layers
        .iter()
        .map(|layer| Image::open(layer))
        .collect::<Result<Vec<_>>>()?;
    let tree = Walk::new(&images, out).run()?;
    write_image(&tree, &images, out, options)
}

/// Writing `out` must not truncate one of the inputs.
fn refuse_input_as_output(layers: &[&Path], out: &Path) -> Result<()> {
    let Ok(o) = std::fs::metadata(out) else {
        return Ok(());
    };
    for layer in layers {
        let m = std::fs::metadata(layer).map_err(|e| Error::io("stat", layer, e))?;
        if (m.dev(), m.ino()) == (o.dev(), o.ino()) {
            return Err(Error::Unpackable {
                path: out.to_path_buf(),
                what: format!("it is the input layer {}", layer.display()),
            });
        }
    }
    Ok(())
}

/// What one layer has at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Dir {
        opaque: bool,
    },
    /// A file, symlink, device, fifo, socket or whiteout.
    Other,
}

/// How a name merges.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Merged {
    /// The non-directory `found[i]` is the output entry.
    Entry(usize),
    /// A directory merged from the directories `found[layers]` (top first),
    /// its metadata from the first; `opaque`: merging stopped (so the
    /// output must hide the base too).
    Dir { layers: Vec<usize>, opaque: bool },
}

/// The rule for one name: `found` holds what each layer that has it has,
/// top layer first (at least one).
pub(crate) fn decide(found: &[Found]) -> Merged {
    if !matches!(found.first(), Some(Found::Dir { .. })) {
        return Merged::Entry(0);
    }
    let mut layers = Vec::new();
    for (i, f) in found.iter().enumerate() {
        match f {
            Found::Other => {
                return Merged::Dir {
                    layers,
                    opaque: true,
                }
            }
            Found::Dir { opaque } => {
                layers.push(i);
                if *opaque {
                    return Merged::Dir {
                        layers,
                        opaque: true,
                    };
                }
            }
        }
    }
    Merged::Dir {
        layers,
        opaque: false,
    }
}

/// An output directory to fill: its node, the layers' directories merged
/// into it (top first), the depth of its listing and its path.
struct Pending {
    node: usize,
    stack: Vec<(usize, Inode)>,
    depth: usize,
    path: PathBuf,
}

/// The merge of the images' trees into a [`Tree`].
struct Walk<'a> {
    /// Bottom layer first.
    images: &'a [Image],
    out: &'a Path,
    b: Builder,
    /// (layer, inode number) of non-directories reached.
    seen: HashSet<(usize, u32)>,
    /// …and the node of those with several links.
    links: HashMap<(usize, u32), usize>,
    /// (layer, by number?, number or reference) of directories entered.
    dirs_seen: HashSet<(usize, bool, u64)>,
    /// Distinct inodes reached per layer.
    reached: Vec<u64>,
}

impl<'a> Walk<'a> {
    fn new(images: &'a [Image], out: &'a Path) -> Self {
        Walk {
            images,
            out,
            b: Builder::default(),
            seen: HashSet::new(),
            links: HashMap::new(),
            dirs_seen: HashSet::new(),
            reached: vec![0; images.len()],
        }
    }

    fn run(mut self) -> Result<Tree> {
        let mut stack = Vec::new();
        for (layer, img) in self.images.iter().enumerate().rev() {
            let root = img.root()?;
            let child = Child {
                name: Vec::new(),
                inode_ref: img.sb.root_inode,
                inode: root,
            };
            self.enter(layer, &child, Path::new("/"))?;
            stack.push((layer, child.inode));
        }
        // All roots merge: the kernel ignores a layer root's opacity.
        let (top, root) = &stack[0];
        let node = self.dir_node(*top, root, false, 0)?;
        let mut todo = vec![Pending {
            node,
            stack,
            depth: 1,
            path: PathBuf::from("/"),
        }];
        while let Some(p) = todo.pop() {
            self.fill(p, &mut todo)?;
        }
        Ok(self.b.finish())
    }

    /// Lists the merged entries of `p`, queueing its subdirectories.
    fn fill(&mut self, p: Pending, todo: &mut Vec<Pending>) -> Result<()> {
        let mut names: BTreeMap<Vec<u8>, Vec<(usize, Child)>> = BTreeMap::new();
        for (layer, dir) in &p.stack {
            for child in self.images[*layer].children(dir, &p.path)? {
                names
                    .entry(child.name.clone())
                    .or_default()
                    .push((*layer, child));
            }
        }
        let mut entries = Vec::with_capacity(names.len());
        for (name, found) in names {
            let path = p.path.join(OsStr::from_bytes(&name));
            let kinds = found
                .iter()
                .map(|(layer, c)| self.found(*layer, &c.inode))
                .collect::<Result<Vec<_>>>()?;
            let node = match decide(&kinds) {
                Merged::Entry(i) => self.other(found[i].0, &found[i].1, &path)?,
                Merged::Dir { layers, opaque } => {
                    let (top, top_child) = &found[layers[0]];
                    if p.depth >= MAX_DEPTH {
                        return Err(self.images[*top].corrupt(format!(
                            "{}: directories nested deeper than {MAX_DEPTH}",
                            path.display()
                        )));
                    }
                    let mut stack = Vec::with_capacity(layers.len());
                    for &i in &layers {
                        let (layer, child) = &found[i];
                        self.enter(*layer, child, &path)?;
                        stack.push((*layer, child.inode.clone()));
                    }
                    let node = self.dir_node(*top, &top_child.inode, opaque, p.node)?;
                    todo.push(Pending {
                        node,
                        stack,
                        depth: p.depth + 1,
                        path,
                    });
                    node
                }
            };
            entries.push((name, node));
        }
        // Overlayfs hides whiteouts when listing a directory that several
        // layers have, but lists a one-layer directory as it is, whiteouts
        // included (they then fail to stat). Merged from several layers, this
        // directory showed no whiteouts; alone in the merged image (over a
        // base without it) it must not either: the empty origin mark makes
        // the kernel filter them (as it does for copied-up directories).
        let whiteouts = entries
            .iter()
            .any(|(_, n)| matches!(self.b.nodes[*n].kind, Kind::CharDev(0)));
        if p.node != 0 && p.stack.len() > 1 && whiteouts {
            self.b
                .add_xattr(p.node, (TRUSTED, ORIGIN.to_vec(), Vec::new()));
        }
        self.b.set_entries(p.node, entries);
        Ok(())
    }

    /// What `inode` of `layer` is for the rule.
    fn found(&self, layer: usize, inode: &Inode) -> Result<Found> {
        if !matches!(inode.kind, InodeKind::Dir { .. }) {
            return Ok(Found::Other);
        }
        let opaque = self.images[layer]
            .xattrs(inode)?
            .iter()
            .any(|(name, value)| {
                split_xattr_name(name) == Some((TRUSTED, OPAQUE)) && value.as_slice() == b"y"
            });
        Ok(Found::Dir { opaque })
    }

    /// Records directory `child` of `layer` as entered: reaching it twice
    /// is a cycle.
    fn enter(&mut self, layer: usize, child: &Child, path: &Path) -> Result<()> {
        let number = u64::from(child.inode.number);
        if !self.dirs_seen.insert((layer, true, number))
            || !self.dirs_seen.insert((layer, false, child.inode_ref))
        {
            return Err(self.images[layer].corrupt(format!(
                "{}: directory inode {number} reached twice (a cycle)",
                path.display()
            )));
        }
        self.count(layer)
    }

    /// Counts one more inode of `layer`: never more than its superblock says.
    fn count(&mut self, layer: usize) -> Result<()> {
        let img = &self.images[layer];
        self.reached[layer] += 1;
        if self.reached[layer] > u64::from(img.sb.inode_count) {
            return Err(img.corrupt(format!(
                "more inodes reached than the {} the superblock counts",
                img.sb.inode_count
            )));
        }
        Ok(())
    }

    /// The node of non-directory `child` of `layer` (a hardlink's node if
    /// one of its names came first).
    fn other(&mut self, layer: usize, child: &Child, path: &Path) -> Result<usize> {
        let img = &self.images[layer];
        let inode = &child.inode;
        let key = (layer, inode.number);
        if !self.seen.insert(key) {
            return self.links.get(&key).copied().ok_or_else(|| {
                img.corrupt(format!(
                    "{}: inode {} has one link but several names",
                    path.display(),
                    inode.number
                ))
            });
        }
        self.count(layer)?;
        let kind = match &inode.kind {
            InodeKind::File(data) => Kind::File {
                source: Source::Image {
                    layer,
                    inode: child.inode_ref,
                },
                size: data.size,
            },
            InodeKind::Symlink(target) => Kind::Symlink(target.clone()),
            InodeKind::CharDev(dev) => Kind::CharDev(*dev),
            InodeKind::BlockDev(dev) => Kind::BlockDev(*dev),
            InodeKind::Fifo => Kind::Fifo,
            InodeKind::Socket => Kind::Socket,
            InodeKind::Dir { .. } => {
                return Err(img.corrupt(format!("{}: directory as a plain entry", path.display())))
            }
        };
        let node = self.add(layer, inode, kind, None)?;
        if inode.nlink > 1 {
            self.links.insert(key, node);
        }
        Ok(node)
    }

    /// A directory node with the metadata of `inode` of `layer`, made
    /// opaque if `opaque`.
    fn dir_node(
        &mut self,
        layer: usize,
        inode: &Inode,
        opaque: bool,
        parent: usize,
    ) -> Result<usize> {
        let kind = Kind::Dir {
            entries: Vec::new(),
            parent,
        };
        let set = opaque.then_some((TRUSTED, OPAQUE.to_vec(), b"y".to_vec()));
        self.add(layer, inode, kind, set)
    }

    /// Adds a node of `kind` with the metadata and xattrs of `inode` of
    /// `layer`; `set` replaces (or adds) one xattr.
    fn add(
        &mut self,
        layer: usize,
        inode: &Inode,
        kind: Kind,
        set: Option<Xattr>,
    ) -> Result<usize> {
        let img = &self.images[layer];
        let mut xattrs = Vec::new();
        for (name, value) in img.xattrs(inode)? {
            let (prefix, short) = split_xattr_name(&name)
                .ok_or_else(|| img.corrupt("xattr of an unknown namespace"))?;
            let replaced = set
                .as_ref()
                .is_some_and(|(p, n, _)| (*p, n.as_slice()) == (prefix, short));
            if !replaced {
                xattrs.push((prefix, short.to_vec(), value));
            }
        }
        xattrs.extend(set);
        let meta = Meta {
            mode: inode.perm,
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime,
        };
        self.b
            .add(kind, &meta, xattrs)
            .map_err(|_| Error::Unpackable {
                path: self.out.to_path_buf(),
                what: "more than 65536 distinct owners and groups".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: Found = Found::Dir { opaque: false };
    const OPAQUE_DIR: Found = Found::Dir { opaque: true };
    const OTHER: Found = Found::Other;

    fn dir(layers: &[usize], opaque: bool) -> Merged {
        Merged::Dir {
            layers: layers.to_vec(),
            opaque,
        }
    }

    #[test]
    fn the_top_non_directory_hides_everything_below() {
        assert_eq!(decide(&[OTHER]), Merged::Entry(0));
        assert_eq!(decide(&[OTHER, DIR, OPAQUE_DIR]), Merged::Entry(0));
        assert_eq!(decide(&[OTHER, OTHER]), Merged::Entry(0));
    }

    #[test]
    fn directories_merge_down_to_the_bottom_without_becoming_opaque() {
        assert_eq!(decide(&[DIR]), dir(&[0], false));
        assert_eq!(decide(&[DIR, DIR, DIR]), dir(&[0, 1, 2], false));
    }

    #[test]
    fn an_opaque_directory_is_included_and_stops_the_merge() {
        assert_eq!(decide(&[OPAQUE_DIR, DIR]), dir(&[0], true));
        assert_eq!(decide(&[DIR, OPAQUE_DIR, DIR]), dir(&[0, 1], true));
        assert_eq!(decide(&[DIR, DIR, OPAQUE_DIR]), dir(&[0, 1, 2], true));
    }

    #[test]
    fn a_non_directory_below_stops_the_merge_before_it() {
        assert_eq!(decide(&[DIR, OTHER, DIR]), dir(&[0], true));
        assert_eq!(decide(&[DIR, DIR, OTHER]), dir(&[0, 1], true));
    }
}

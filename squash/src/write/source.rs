//! Where the writer reads a regular file's contents ([`Source`]): a file of
//! the tree being packed, or a file of an input image being merged — and the
//! one sequential reader over both ([`Content`]). It yields the contents in
//! output blocks and tells holes (zeros known without reading them) from
//! data: a file is asked with `SEEK_DATA`/`SEEK_HOLE`, an image has sparse
//! blocks. So a 1 TiB sparse file with one data block costs one block read,
//! in the data pass and in duplicate detection ([`hash`], [`same`]) alike.

use super::tree::{Kind, Tree};
use crate::format::DATA_UNCOMPRESSED;
use crate::read::decompress::Decoder;
use crate::read::fsops::{open_dir, Holes};
use crate::read::image::{read_full_at, FileData, Image, Kind as InodeKind, Scratch};
use crate::{Error, Result};
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Decompressed fragment blocks of input images kept for the next files.
const FRAGMENT_CACHE: usize = 8;

/// Where a regular file's contents are.
pub(crate) enum Source {
    /// A file of the tree being packed: entry `entry` of directory node
    /// `dir` (opened relative to its directory, see [`Inputs`]).
    Tree { dir: usize, entry: usize },
    /// A file of input image `layer`: its inode's metadata reference.
    Image { layer: usize, inode: u64 },
}

/// What one thread reads sources with: the tree (and the directories open
/// from its root down to the last file's), the input images (none for a
/// pack), a decoder for each and the fragment blocks used last.
pub(crate) struct Inputs<'a> {
    tree: &'a Tree,
    /// (directory node, its fd) from the root down, so that a file deeper
    /// than PATH_MAX opens too; consecutive files share most of it.
    dirs: RefCell<Vec<(usize, OwnedFd)>>,
    images: &'a [Image],
    decoders: Vec<RefCell<Decoder>>,
    fragments: RefCell<VecDeque<(FragmentKey, Rc<Vec<u8>>)>>,
}

/// (input image, fragment index).
type FragmentKey = (usize, u32);

/// A piece of contents: `Hole(len)` is `len` zeros not read.
pub(crate) enum Chunk<'b> {
    Hole(usize),
    Data(&'b [u8]),
}

impl Chunk<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Chunk::Hole(n) => *n,
            Chunk::Data(b) => b.len(),
        }
    }
}

/// A file's contents, read front to back in blocks.
pub(crate) struct Content {
    size: u64,
    pos: u64,
    block: usize,
    buf: Vec<u8>,
    from: From,
}

enum From {
    File(FileIn),
    Image(ImageIn),
}

impl<'a> Inputs<'a> {
    pub(crate) fn new(tree: &'a Tree, images: &'a [Image]) -> Self {
        Inputs {
            tree,
            dirs: RefCell::new(Vec::new()),
            images,
            decoders: images
                .iter()
                .map(|i| RefCell::new(Decoder::new(i.codec)))
                .collect(),
            fragments: RefCell::new(VecDeque::new()),
        }
    }

    /// Opens `source` (of `size` bytes) for reading in `block`-byte chunks.
    pub(crate) fn open(&self, source: &Source, size: u64, block: usize) -> Result<Content> {
        let from = match source {
            Source::Tree { dir, entry } => {
                let (file, path) = self.open_file(*dir, *entry)?;
                From::File(FileIn {
                    file,
                    path,
                    holes: Holes::default(),
                })
            }
            Source::Image { layer, inode } => {
                let img = self.image(*layer)?;
                let InodeKind::File(data) = img.inode(*inode)?.kind else {
                    return Err(img.corrupt(format!("inode {inode:#x} is no longer a file")));
                };
                if data.size != size {
                    return Err(img.corrupt(format!("inode {inode:#x} changed size")));
                }
                From::Image(ImageIn {
                    layer: *layer,
                    next_block: 0,
                    next_pos: data.start,
                    data,
                    cached: None,
                    scratch: Scratch::default(),
                })
            }
        };
        Ok(Content {
            size,
            pos: 0,
            block: block.max(1),
            buf: Vec::new(),
            from,
        })
    }

    /// Opens entry `entry` of directory node `dir` (a regular file) without
    /// following a symlink, through the open directories of `dirs`.
    fn open_file(&self, dir: usize, entry: usize) -> Result<(File, PathBuf)> {
        let tree = self.tree;
        let name = match tree.nodes.get(dir).map(|n| &n.kind) {
            Some(Kind::Dir { entries, .. }) => entries.get(entry).map(|(n, _)| n.as_slice()),
            _ => None,
        };
        let (Some(name), Some(root)) = (name, tree.root.as_deref()) else {
            return Err(Error::Codec {
                codec: "writer",
                what: format!("no entry {entry} in directory node {dir}"),
            });
        };
        let path = tree.path_of(dir, name);
        let mut dirs = self.dirs.try_borrow_mut().map_err(|_| Error::Codec {
            codec: "writer",
            what: "directory cursor busy".into(),
        })?;
        let chain = tree.chain(dir);
        let keep = dirs
            .iter()
            .zip(&chain)
            .take_while(|((open, _), want)| open == *want)
            .count();
        dirs.truncate(keep);
        for &d in &chain[keep..] {
            let fd = match (dirs.last(), tree.name_of(d)) {
                (Some((_, parent)), Some(n)) => open_dir(parent.as_fd(), n, &path)?,
                _ => open_dir(AT_FDCWD, root, root)?,
            };
            dirs.push((d, fd));
        }
        let Some((_, parent)) = dirs.last() else {
            return Err(Error::io(
                "open",
                &path,
                std::io::ErrorKind::NotFound.into(),
            ));
        };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = openat(parent.as_fd(), name, flags, Mode::empty())
            .map_err(|e| Error::io("open", &path, e.into()))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        if !meta.is_file() {
            return Err(Error::Changed {
                path,
                what: "no longer a regular file".into(),
            });
        }
        Ok((file, path))
    }

    fn image(&self, layer: usize) -> Result<&Image> {
        self.images.get(layer).ok_or_else(|| Error::Codec {
            codec: "writer",
            what: format!("no input image {layer}"),
        })
    }

    fn decoder(&self, layer: usize) -> Result<std::cell::RefMut<'_, Decoder>> {
        self.decoders
            .get(layer)
            .and_then(|d| d.try_borrow_mut().ok())
            .ok_or_else(|| Error::Codec {
                codec: "writer",
                what: format!("decoder of input image {layer} unavailable"),
            })
    }

    /// A decompressed fragment block of image `layer` (cached).
    fn fragment(&self, layer: usize, index: u32) -> Result<Rc<Vec<u8>>> {
        let cached = self
            .fragments
            .borrow()
            .iter()
            .find(|(key, _)| *key == (layer, index))
            .map(|(_, block)| block.clone());
        if let Some(block) = cached {
            return Ok(block);
        }
        let block = Rc::new(
            self.image(layer)?
                .fragment(&mut *self.decoder(layer)?, index)?,
        );
        let mut cache = self.fragments.borrow_mut();
        cache.push_back(((layer, index), block.clone()));
        if cache.len() > FRAGMENT_CACHE {
            cache.pop_front();
        }
        Ok(block)
    }
}

impl Content {
    /// The next chunk: `block` bytes, the last one shorter; `None` at the end.
    pub(crate) fn next(&mut self, inputs: &Inputs) -> Result<Option<Chunk<'_>>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let at = self.pos;
        let len = (self.size - at).min(self.block as u64) as usize;
        self.pos += len as u64;
        let data = match &mut self.from {
            From::File(f) => f.read(at, len, &mut self.buf, self.size)?,
            From::Image(i) => i.read(inputs, at, len, &mut self.buf)?,
        };
        Ok(Some(if data {
            Chunk::Data(&self.buf[..len])
        } else {
            Chunk::Hole(len)
        }))
    }

    /// After the last chunk: a file of the tree must still have its size.
    pub(crate) fn finish(&self) -> Result<()> {
        if let From::File(f) = &self.from {
            let now = f
                .file
                .metadata()
                .map_err(|e| Error::io("stat", &f.path, e))?
                .len();
            if now != self.size {
                return Err(changed(&f.path, self.size));
            }
        }
        Ok(())
    }
}

/// A file of the tree and where its holes are.
struct FileIn {
    file: File,
    path: PathBuf,
    holes: Holes,
}

impl FileIn {
    /// Reads `[at, at + len)` into `buf`; `false`: a hole, nothing read.
    fn read(&mut self, at: u64, len: usize, buf: &mut Vec<u8>, size: u64) -> Result<bool> {
        if self.holes.is_hole(&self.file, at, len as u64) {
            return Ok(false);
        }
        buf.resize(len, 0);
        let got =
            read_full_at(&self.file, buf, at).map_err(|e| Error::io("read", &self.path, e))?;
        if got != len {
            return Err(changed(&self.path, size));
        }
        Ok(true)
    }
}

/// A file of an input image, read block by block (its blocks may be of
/// another size than the output's).
struct ImageIn {
    layer: usize,
    data: FileData,
    /// Index and image offset of the next stored block not yet passed.
    next_block: usize,
    next_pos: u64,
    /// The input block decompressed in `scratch.out`.
    cached: Option<usize>,
    scratch: Scratch,
}

impl ImageIn {
    /// Reads `[at, at + len)` into `buf`; `false`: all sparse, nothing read.
    fn read(&mut self, inputs: &Inputs, at: u64, len: usize, buf: &mut Vec<u8>) -> Result<bool> {
        let img = inputs.image(self.layer)?;
        let bs = u64::from(img.sb.block_size);
        let end = at + len as u64;
        let (first, last) = (at / bs, (end - 1) / bs);
        let count = self.data.blocks.len();
        let sparse = |blocks: &[u32], i: u64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| blocks.get(i))
                .is_some_and(|w| w & !DATA_UNCOMPRESSED == 0)
        };
        if (first..=last).all(|i| sparse(&self.data.blocks, i)) {
            return Ok(false);
        }
        buf.clear();
        buf.resize(len, 0);
        for i in first..=last {
            let (lo, hi) = (at.max(i * bs), end.min((i + 1) * bs));
            let (from, to) = ((lo - i * bs) as usize, (hi - i * bs) as usize);
            let dst = &mut buf[(lo - at) as usize..(hi - at) as usize];
            if (i as usize) < count {
                if sparse(&self.data.blocks, i) {
                    continue;
                }
                self.load(inputs, img, i as usize)?;
                let src = self.scratch.out.get(from..to);
                dst.copy_from_slice(src.ok_or_else(|| img.corrupt("file block too short"))?);
            } else {
                let Some((index, _)) = self.data.fragment else {
                    return Err(img.corrupt("file data past its blocks"));
                };
                let block = inputs.fragment(self.layer, index)?;
                let src = img.tail(&self.data, &block)?.get(from..to);
                dst.copy_from_slice(src.ok_or_else(|| img.corrupt("file tail too short"))?);
            }
        }
        Ok(true)
    }

    /// Decompresses input block `i` into `scratch.out`.
    fn load(&mut self, inputs: &Inputs, img: &Image, i: usize) -> Result<()> {
        if self.cached == Some(i) {
            return Ok(());
        }
        if i < self.next_block {
            (self.next_block, self.next_pos) = (0, self.data.start);
        }
        while self.next_block < i {
            self.next_pos += u64::from(self.data.blocks[self.next_block] & !DATA_UNCOMPRESSED);
            self.next_block += 1;
        }
        let bs = u64::from(img.sb.block_size);
        let word = self.data.blocks[i];
        self.cached = None;
        img.block(
            &mut *inputs.decoder(self.layer)?,
            self.next_pos,
            word,
            bs as usize,
            &mut self.scratch,
        )?;
        let expect = (self.data.size - i as u64 * bs).min(bs) as usize;
        if self.scratch.out.len() != expect {
            return Err(img.corrupt(format!(
                "data block {i} of a file decompresses to {} bytes, {expect} expected",
                self.scratch.out.len()
            )));
        }
        self.cached = Some(i);
        Ok(())
    }
}

/// Whether all bytes are zero.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// A hash of a file's contents that does not depend on how its zeros are
/// stored (holes or zero bytes): the offsets and bytes of its non-zero
/// blocks.
pub(crate) fn hash(inputs: &Inputs, source: &Source, size: u64, block: usize) -> Result<u64> {
    let mut content = inputs.open(source, size, block)?;
    let mut hasher = DefaultHasher::new();
    let mut offset = 0u64;
    while let Some(chunk) = content.next(inputs)? {
        let len = chunk.len() as u64;
        if let Chunk::Data(bytes) = chunk {
            if !is_zero(bytes) {
                hasher.write_u64(offset);
                hasher.write(bytes);
            }
        }
        offset += len;
    }
    content.finish()?;
    Ok(hasher.finish())
}

/// Whether two sources of `size` bytes have the same contents.
pub(crate) fn same(
    inputs: &Inputs,
    a: &Source,
    b: &Source,
    size: u64,
    block: usize,
) -> Result<bool> {
    let (mut ca, mut cb) = (inputs.open(a, size, block)?, inputs.open(b, size, block)?);
    loop {
        let equal = match (ca.next(inputs)?, cb.next(inputs)?) {
            (None, None) => return Ok(true),
            (Some(Chunk::Hole(_)), Some(Chunk::Hole(_))) => true,
            (Some(Chunk::Hole(_)), Some(Chunk::Data(d)))
            | (Some(Chunk::Data(d)), Some(Chunk::Hole(_))) => is_zero(d),
            (Some(Chunk::Data(x)), Some(Chunk::Data(y))) => x == y,
            _ => false,
        };
        if !equal {
            return Ok(false);
        }
    }
}

fn changed(path: &Path, size: u64) -> Error {
    Error::Changed {
        path: path.to_path_buf(),
        what: format!("its size changed (was {size} bytes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Exclude;
    use std::os::unix::fs::FileExt;

    #[test]
    fn duplicates_are_confirmed_and_zeros_hash_alike_stored_or_not() {
        let dir = std::env::temp_dir().join(format!("ramstick-dup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("a"), &content).unwrap();
        std::fs::write(dir.join("b"), &content).unwrap();
        let mut other = content.clone();
        other[199_999] ^= 1;
        std::fs::write(dir.join("c"), &other).unwrap();
        // Same bytes: zeros written out, and a hole.
        let mut zeros = vec![0u8; 300_000];
        zeros[299_999] = 7;
        std::fs::write(dir.join("d"), &zeros).unwrap();
        let sparse = File::create(dir.join("e")).unwrap();
        sparse.set_len(300_000).unwrap();
        sparse.write_all_at(&[7], 299_999).unwrap();
        let tree = super::super::scan::scan(&dir, &Exclude::none()).unwrap();
        let inputs = Inputs::new(&tree, &[]);
        let source = |name: &[u8]| match &tree.nodes[0].kind {
            Kind::Dir { entries, .. } => {
                let i = entries.iter().position(|(n, _)| n == name).unwrap();
                Source::Tree { dir: 0, entry: i }
            }
            _ => unreachable!(),
        };
        let (a, b, c, d, e) = (
            source(b"a"),
            source(b"b"),
            source(b"c"),
            source(b"d"),
            source(b"e"),
        );
        let hash = |s: &Source, size| hash(&inputs, s, size, 65536).unwrap();
        assert_eq!(hash(&a, 200_000), hash(&b, 200_000));
        assert_ne!(hash(&a, 200_000), hash(&c, 200_000));
        assert_eq!(hash(&d, 300_000), hash(&e, 300_000));
        assert!(same(&inputs, &a, &b, 200_000, 65536).unwrap());
        assert!(!same(&inputs, &a, &c, 200_000, 65536).unwrap());
        assert!(same(&inputs, &d, &e, 300_000, 65536).unwrap());
        // The sparse file's first block is a hole: not read.
        let mut content = inputs.open(&e, 300_000, 65536).unwrap();
        assert!(matches!(
            content.next(&inputs).unwrap(),
            Some(Chunk::Hole(65536))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Where the writer reads a regular file's contents ([`Source`]): a file of
//! the tree being packed, or a file of an input image being merged — and the
//! one sequential reader over both ([`Content`]). It yields the contents in
//! output blocks and tells holes (zeros known without reading them) from
//! data: a file is asked with `SEEK_DATA`/`SEEK_HOLE`, an image has sparse
//! blocks. So a 1 TiB sparse file with one data block costs one block read,
//! in the data pass and in duplicate detection ([`hash`], [`same`]) alike.
//!
//! A file of the tree is held to a [`Stamp`] (size and mtime): the scan's
//! when it is first opened, then checked before every block and at the
//! end, so a file that changes while it is read is an [`Error::Changed`]
//! as soon as it is seen, not a mix of two versions. [`Inputs::reopen`]
//! reads one again as it is now (see [`crate::Changing::Settle`]).

use super::tree::{stored_mtime, Kind, Tree};
use crate::format::DATA_UNCOMPRESSED;
use crate::read::decompress::Decoder;
use crate::read::fsops::{open_dir, Holes};
use crate::read::image::{FileData, Image, Kind as InodeKind, Scratch};
use crate::{Error, Result};
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use ramstick_common::io::read_full_at;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Decompressed fragment blocks of input images kept for the next files.
const FRAGMENT_CACHE: usize = 8;

/// Where a regular file's contents are.
#[derive(Clone, Copy)]
pub(crate) enum Source {
    /// A file of the tree being packed: entry `entry` of directory node
    /// `dir` (opened relative to its directory, see [`Inputs`]) and the
    /// mtime the scan saw (seconds, nanoseconds).
    Tree {
        dir: usize,
        entry: usize,
        mtime: (i64, i64),
    },
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

/// A file of the tree as one `stat` saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub size: u64,
    /// Seconds, nanoseconds.
    pub mtime: (i64, i64),
}

impl Stamp {
    fn of(file: &File, path: &Path) -> Result<Stamp> {
        let m = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        Ok(Stamp::of_meta(&m))
    }

    fn of_meta(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }

    /// The mtime as the image stores it.
    pub(crate) fn stored_mtime(&self) -> u32 {
        stored_mtime(self.mtime.0)
    }
}

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
            Source::Tree { dir, entry, mtime } => {
                let (file, path, now) = self.open_file(*dir, *entry)?;
                let scanned = Stamp {
                    size,
                    mtime: *mtime,
                };
                if now != scanned {
                    return Err(changed(&path, &scanned, &now));
                }
                From::File(FileIn::new(file, path, Some(now)))
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
        Ok(Content::new(size, block, from))
    }

    /// Opens a file of the tree again, as it is now (an image's file as
    /// [`Self::open`] does): a checked read holds it to the size and mtime
    /// it has now; an as-is read (`as_is`) reads what it finds, up to that
    /// size, and stops early where the file ends.
    pub(crate) fn reopen(
        &self,
        source: &Source,
        size: u64,
        block: usize,
        as_is: bool,
    ) -> Result<Content> {
        let Source::Tree { dir, entry, .. } = source else {
            return self.open(source, size, block);
        };
        let (file, path, now) = self.open_file(*dir, *entry)?;
        let check = (!as_is).then_some(now);
        let from = From::File(FileIn::new(file, path, check));
        Ok(Content::new(now.size, block, from))
    }

    /// Opens entry `entry` of directory node `dir` (a regular file) without
    /// following a symlink, through the open directories of `dirs`; with
    /// its stamp now.
    fn open_file(&self, dir: usize, entry: usize) -> Result<(File, PathBuf, Stamp)> {
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
        Ok((file, path, Stamp::of_meta(&meta)))
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
    fn new(size: u64, block: usize, from: From) -> Content {
        Content {
            size,
            pos: 0,
            block: block.max(1),
            buf: Vec::new(),
            from,
        }
    }

    /// The next chunk: `block` bytes, the last one shorter; `None` at the
    /// end (for an as-is read, also where the file ended).
    pub(crate) fn next(&mut self, inputs: &Inputs) -> Result<Option<Chunk<'_>>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let at = self.pos;
        let len = (self.size - at).min(self.block as u64) as usize;
        self.pos += len as u64;
        let got = match &mut self.from {
            From::File(f) => f.read(at, len, &mut self.buf)?,
            From::Image(i) => i.read(inputs, at, len, &mut self.buf)?.then_some(len),
        };
        let Some(got) = got else {
            return Ok(Some(Chunk::Hole(len)));
        };
        if got < len {
            // An as-is read: the file ends here now.
            self.size = at + got as u64;
            self.pos = self.size;
            if got == 0 {
                return Ok(None);
            }
        }
        Ok(Some(Chunk::Data(&self.buf[..got])))
    }

    /// After the last chunk: a file of the tree must still be as its read
    /// began, unless it was read as is. Returns how the read saw it (the
    /// bytes read, the mtime now); `None` for a file of an image.
    pub(crate) fn finish(&self) -> Result<Option<Stamp>> {
        let From::File(f) = &self.from else {
            return Ok(None);
        };
        let now = match &f.check {
            Some(expect) => f.unchanged(expect)?,
            None => Stamp::of(&f.file, &f.path)?,
        };
        Ok(Some(Stamp {
            size: self.size,
            mtime: now.mtime,
        }))
    }
}

/// A file of the tree, where its holes are, and what it must stay while
/// it is read (`None`: read as is).
struct FileIn {
    file: File,
    path: PathBuf,
    holes: Holes,
    check: Option<Stamp>,
}

impl FileIn {
    fn new(file: File, path: PathBuf, check: Option<Stamp>) -> FileIn {
        FileIn {
            file,
            path,
            holes: Holes::default(),
            check,
        }
    }

    /// Reads `[at, at + len)` into `buf`: `None` for a hole (nothing read),
    /// else the bytes read — all of them, unless read as is and the file
    /// ends sooner. A checked read first checks that the file is unchanged
    /// (it was at the open).
    fn read(&mut self, at: u64, len: usize, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        let hole = match &self.check {
            Some(expect) => {
                if at > 0 {
                    self.unchanged(expect)?;
                }
                self.holes.is_hole(&self.file, at, len as u64)
            }
            // Not past the end: the file may have shrunk, and where it
            // ends is what an as-is read stops at.
            None => self.holes.is_inner_hole(&self.file, at, len as u64),
        };
        if hole {
            return Ok(None);
        }
        buf.resize(len, 0);
        let got =
            read_full_at(&self.file, buf, at).map_err(|e| Error::io("read", &self.path, e))?;
        match &self.check {
            Some(expect) if got != len => Err(Error::Changed {
                path: self.path.clone(),
                what: format!(
                    "it ended after {} of {} bytes",
                    at + got as u64,
                    expect.size
                ),
            }),
            _ => Ok(Some(got)),
        }
    }

    /// The file's stamp now, if it is `expect`.
    fn unchanged(&self, expect: &Stamp) -> Result<Stamp> {
        let now = Stamp::of(&self.file, &self.path)?;
        if now != *expect {
            return Err(changed(&self.path, expect, &now));
        }
        Ok(now)
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
            (None, None) => break,
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
    // Both held still while they were compared.
    ca.finish()?;
    cb.finish()?;
    Ok(true)
}

fn changed(path: &Path, was: &Stamp, now: &Stamp) -> Error {
    let what = if was.size != now.size {
        format!("its size changed from {} to {} bytes", was.size, now.size)
    } else {
        "its mtime changed".into()
    };
    Error::Changed {
        path: path.to_path_buf(),
        what,
    }
}

#[cfg(test)]
mod tests;

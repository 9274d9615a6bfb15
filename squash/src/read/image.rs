//! An opened image: superblock, decompressed inode and directory tables, id,
//! fragment and xattr tables, and bounded readers of data blocks (inodes,
//! listings and xattrs are parsed in [`super::inode`]). Every offset, count
//! and size read from the image is checked before use; a failed check is an
//! [`Error::Corrupt`]. No allocation is larger than what the image's own
//! bytes can describe.

use super::decompress::{Codec, Decoder};
pub(crate) use super::inode::{Child, FileData, Inode, Kind};
use crate::format::{
    split_meta_ref, Superblock, DATA_UNCOMPRESSED, METADATA_SIZE, METADATA_UNCOMPRESSED, NONE_U64,
    SUPERBLOCK_SIZE,
};
use crate::{Error, Result};
use ramstick_common::io::read_full_at;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A decompressed metadata table and where each of its blocks starts.
#[derive(Default)]
pub(super) struct Table {
    pub(super) data: Vec<u8>,
    /// Block start relative to the table's start → offset in `data`.
    starts: HashMap<u64, usize>,
}

/// One fragment block: where it is and its stored size word.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fragment {
    pub start: u64,
    pub size: u32,
}

/// A cursor over bytes; errors say which table ended early.
pub(super) struct Cur<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) what: &'static str,
}

impl<'a> Cur<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "{} ends inside a record ({} bytes needed at {} of {})",
                self.what,
                n,
                self.pos,
                self.data.len()
            )),
        }
    }

    pub(super) fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// An opened, checked image.
pub(crate) struct Image {
    pub path: PathBuf,
    file: File,
    pub sb: Superblock,
    pub codec: Codec,
    pub(super) inodes: Table,
    pub(super) dirs: Table,
    ids: Vec<u32>,
    pub(super) fragments: Vec<Fragment>,
    pub(super) xattr_ids: Vec<(u64, u32)>,
    pub(super) xattr_kv: Table,
    /// Table bytes allowed, and what is left of them (while opening).
    limit: u64,
    left: u64,
}

/// Bytes of decompressed tables allowed when /proc/meminfo is unreadable.
const FALLBACK_TABLE_LIMIT: u64 = 512 << 20;

/// Most bytes of decompressed tables an opened image may hold: half of
/// what the system has available (`MemAvailable`), so that a crafted image
/// whose few bytes inflate into huge tables is refused as corrupt before an
/// allocation fails (which would abort the process, PID 1 included).
pub(crate) fn table_limit() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| ramstick_common::meminfo::mem_available(&text))
        .map_or(FALLBACK_TABLE_LIMIT, |bytes| bytes / 2)
}

impl Image {
    /// Opens `path` and reads every table (at most [`table_limit`] bytes).
    pub(crate) fn open(path: &Path) -> Result<Image> {
        Self::open_limited(path, table_limit())
    }

    /// Opens `path`; its decompressed tables may take at most `limit` bytes.
    pub(crate) fn open_limited(path: &Path, limit: u64) -> Result<Image> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let corrupt = |what: String| Error::Corrupt {
            image: path.to_path_buf(),
            what,
        };
        let mut head = [0u8; SUPERBLOCK_SIZE];
        let got = read_full_at(&file, &mut head, 0).map_err(|e| Error::io("read", path, e))?;
        let sb = Superblock::parse(&head[..got]).map_err(corrupt)?;
        if sb.bytes_used > len {
            return Err(corrupt(format!(
                "truncated: {len} bytes, the superblock says {}",
                sb.bytes_used
            )));
        }
        let codec = Codec::from_id(sb.compressor).map_err(|(known, what)| {
            if known {
                Error::Unsupported {
                    image: path.to_path_buf(),
                    what,
                }
            } else {
                Error::Corrupt {
                    image: path.to_path_buf(),
                    what,
                }
            }
        })?;
        let mut img = Image {
            path: path.to_path_buf(),
            file,
            sb,
            codec,
            inodes: Table::default(),
            dirs: Table::default(),
            ids: Vec::new(),
            fragments: Vec::new(),
            xattr_ids: Vec::new(),
            xattr_kv: Table::default(),
            limit,
            left: limit,
        };
        let mut dec = Decoder::new(codec);
        img.read_ids(&mut dec)?;
        img.read_fragments(&mut dec)?;
        let xattr_end = img.read_xattrs(&mut dec)?;
        // The directory table ends where the next table's first block starts.
        let mut ends = vec![sb.bytes_used, sb.id_table, img.index_first(sb.id_table)?];
        for t in [sb.fragment_table, sb.export_table, sb.xattr_id_table] {
            if t != NONE_U64 {
                ends.push(t);
                ends.push(img.index_first(t).unwrap_or(t));
            }
        }
        if let Some(x) = xattr_end {
            ends.push(x);
        }
        let dir_end = ends
            .into_iter()
            .filter(|&e| e > sb.directory_table)
            .min()
            .unwrap_or(sb.bytes_used);
        img.inodes = img.read_table(&mut dec, sb.inode_table, sb.directory_table, "inode table")?;
        img.dirs = img.read_table(&mut dec, sb.directory_table, dir_end, "directory table")?;
        Ok(img)
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::Corrupt {
            image: self.path.clone(),
            what: what.into(),
        }
    }

    /// Reads `buf.len()` bytes at `offset`, which must lie inside the image.
    fn read_at(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.sb.bytes_used) {
            return Err(self.corrupt(format!(
                "{what} at {offset} (+{}) lies past the end ({})",
                buf.len(),
                self.sb.bytes_used
            )));
        }
        let got =
            read_full_at(&self.file, buf, offset).map_err(|e| Error::io("read", &self.path, e))?;
        if got != buf.len() {
            return Err(self.corrupt(format!("{what} at {offset}: image file ends early")));
        }
        Ok(())
    }

    /// The first u64 of an index (a table's first metadata block).
    fn index_first(&self, at: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_at(&mut b, at, "table index")?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads the metadata block at `pos` (which must end by `end`) into
    /// `out`; returns the position after it.
    fn meta_block(
        &self,
        dec: &mut Decoder,
        pos: u64,
        end: u64,
        out: &mut Vec<u8>,
        what: &str,
    ) -> Result<u64> {
        let mut h = [0u8; 2];
        if pos.checked_add(2).is_none_or(|p| p > end) {
            return Err(self.corrupt(format!("{what}: metadata block at {pos} past its end")));
        }
        self.read_at(&mut h, pos, what)?;
        let h = u16::from_le_bytes(h);
        let len = usize::from(h & !METADATA_UNCOMPRESSED);
        let next = pos + 2 + len as u64;
        if len == 0 || len > METADATA_SIZE || next > end {
            return Err(self.corrupt(format!(
                "{what}: metadata block at {pos} has bad length {len}"
            )));
        }
        let mut raw = vec![0u8; len];
        self.read_at(&mut raw, pos + 2, what)?;
        if h & METADATA_UNCOMPRESSED != 0 {
            *out = raw;
        } else {
            dec.decompress(&raw, out, METADATA_SIZE)
                .map_err(|e| self.corrupt(format!("{what}: metadata block at {pos}: {e}")))?;
        }
        Ok(next)
    }

    /// Counts `len` more bytes of tables against the limit and reserves
    /// them in `data`: too many is a corrupt image, not an abort.
    fn reserve(&mut self, data: &mut Vec<u8>, len: usize, what: &str) -> Result<()> {
        let fits = self.left.checked_sub(len as u64);
        match fits.filter(|_| data.try_reserve(len).is_ok()) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(self.corrupt(format!(
                "{what}: the tables inflate past the {} bytes of memory allowed",
                self.limit
            ))),
        }
    }

    /// Reads all metadata blocks in `[start, end)`.
    fn read_table(&mut self, dec: &mut Decoder, start: u64, end: u64, what: &str) -> Result<Table> {
        let mut t = Table::default();
        let mut pos = start;
        let mut block = Vec::new();
        while pos < end {
            t.starts.insert(pos - start, t.data.len());
            pos = self.meta_block(dec, pos, end, &mut block, what)?;
            self.reserve(&mut t.data, block.len(), what)?;
            t.data.extend_from_slice(&block);
        }
        Ok(t)
    }

    /// Reads `len` bytes of a table stored as metadata blocks listed by the
    /// u64 index at `index` (blocks must lie before `index`).
    fn read_indexed(
        &mut self,
        dec: &mut Decoder,
        index: u64,
        len: usize,
        what: &str,
    ) -> Result<Vec<u8>> {
        let n = len.div_ceil(METADATA_SIZE);
        let mut raw = vec![0u8; 8 * n.min(self.sb.bytes_used as usize / 8 + 1)];
        if raw.len() != 8 * n {
            return Err(self.corrupt(format!("{what}: index of {n} blocks cannot fit")));
        }
        self.read_at(&mut raw, index, what)?;
        let mut data = Vec::new();
        self.reserve(&mut data, len, what)?;
        let mut block = Vec::new();
        for (i, p) in raw.chunks_exact(8).enumerate() {
            let mut a = [0u8; 8];
            a.copy_from_slice(p);
            let pos = u64::from_le_bytes(a);
            self.meta_block(dec, pos, index, &mut block, what)?;
            if i + 1 < n && block.len() != METADATA_SIZE {
                return Err(self.corrupt(format!("{what}: short metadata block {i}")));
            }
            data.extend_from_slice(&block);
        }
        if data.len() < len {
            return Err(self.corrupt(format!("{what}: {} bytes, {len} needed", data.len())));
        }
        data.truncate(len);
        Ok(data)
    }

    fn read_ids(&mut self, dec: &mut Decoder) -> Result<()> {
        let n = usize::from(self.sb.id_count);
        if n == 0 {
            return Err(self.corrupt("id table is empty"));
        }
        let raw = self.read_indexed(dec, self.sb.id_table, n * 4, "id table")?;
        self.ids = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(())
    }

    fn read_fragments(&mut self, dec: &mut Decoder) -> Result<()> {
        let n = self.sb.fragment_count as usize;
        if self.sb.fragment_table == NONE_U64 || n == 0 {
            return Ok(());
        }
        // 16 bytes per entry, each needing at least its share of the image.
        if n as u64 > self.sb.bytes_used {
            return Err(self.corrupt(format!("{n} fragments cannot fit")));
        }
        let raw = self.read_indexed(dec, self.sb.fragment_table, n * 16, "fragment table")?;
        let mut c = Cur {
            data: &raw,
            pos: 0,
            what: "fragment table",
        };
        for _ in 0..n {
            let start = c.u64().map_err(|e| self.corrupt(e))?;
            let size = c.u32().map_err(|e| self.corrupt(e))?;
            c.u32().map_err(|e| self.corrupt(e))?;
            self.fragments.push(Fragment { start, size });
        }
        Ok(())
    }

    /// Reads the xattr tables; returns where the key/value blocks start.
    fn read_xattrs(&mut self, dec: &mut Decoder) -> Result<Option<u64>> {
        let at = self.sb.xattr_id_table;
        if at == NONE_U64 {
            return Ok(None);
        }
        let mut h = [0u8; 16];
        self.read_at(&mut h, at, "xattr id table")?;
        let mut c = Cur {
            data: &h,
            pos: 0,
            what: "xattr id table header",
        };
        let kv_start = c.u64().map_err(|e| self.corrupt(e))?;
        let n = c.u32().map_err(|e| self.corrupt(e))? as usize;
        if n == 0 {
            return Ok(Some(kv_start));
        }
        if n as u64 > self.sb.bytes_used {
            return Err(self.corrupt(format!("{n} xattr ids cannot fit")));
        }
        let raw = self.read_indexed(dec, at + 16, n * 16, "xattr id table")?;
        let mut c = Cur {
            data: &raw,
            pos: 0,
            what: "xattr id table",
        };
        for _ in 0..n {
            let r = c.u64().map_err(|e| self.corrupt(e))?;
            let count = c.u32().map_err(|e| self.corrupt(e))?;
            c.u32().map_err(|e| self.corrupt(e))?;
            self.xattr_ids.push((r, count));
        }
        let kv_end = self.index_first(at + 16)?;
        if kv_start >= kv_end || kv_start < self.sb.directory_table {
            return Err(self.corrupt("xattr table offsets out of order"));
        }
        self.xattr_kv = self.read_table(dec, kv_start, kv_end, "xattr table")?;
        Ok(Some(kv_start))
    }

    /// Position in a table's data of a metadata reference.
    pub(super) fn locate_in(&self, t: &Table, r: u64, what: &str) -> Result<usize> {
        locate(t, r, what).map_err(|e| self.corrupt(e))
    }

    /// The root directory's inode.
    pub(crate) fn root(&self) -> Result<Inode> {
        let root = self.inode(self.sb.root_inode)?;
        if !matches!(root.kind, Kind::Dir { .. }) {
            return Err(self.corrupt("the root inode is not a directory"));
        }
        Ok(root)
    }

    pub(super) fn id(&self, index: u16) -> Result<u32, String> {
        self.ids
            .get(usize::from(index))
            .copied()
            .ok_or_else(|| format!("id index {index} out of range"))
    }

    /// Calls `f(offset, piece)` for each block of `range` of a file's
    /// contents in order (`pos`: image offset of the range's first block);
    /// holes are passed as [`Piece::Hole`] with their length.
    pub(crate) fn read_blocks(
        &self,
        dec: &mut Decoder,
        file: &FileData,
        (range, mut pos): (std::ops::Range<usize>, u64),
        scratch: &mut Scratch,
        mut f: impl FnMut(u64, Piece) -> Result<()>,
    ) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        for i in range {
            let w = file.blocks[i];
            let offset = i as u64 * bs;
            let expect = (file.size - offset).min(bs) as usize;
            let len = u64::from(w & !DATA_UNCOMPRESSED);
            if len == 0 {
                f(offset, Piece::Hole(expect as u64))?;
                continue;
            }
            self.block(dec, pos, w, bs as usize, scratch)?;
            pos += len;
            if scratch.out.len() != expect {
                return Err(self.corrupt(format!(
                    "data block at {offset} of a file decompresses to {} bytes, {expect} expected",
                    scratch.out.len()
                )));
            }
            f(offset, Piece::Data(&scratch.out))?;
        }
        Ok(())
    }

    /// Reads and decompresses one data or fragment block into `scratch.out`.
    pub(crate) fn block(
        &self,
        dec: &mut Decoder,
        pos: u64,
        word: u32,
        limit: usize,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let len = (word & !DATA_UNCOMPRESSED) as usize;
        scratch.raw.resize(len, 0);
        self.read_at(&mut scratch.raw, pos, "data block")?;
        if word & DATA_UNCOMPRESSED != 0 {
            std::mem::swap(&mut scratch.raw, &mut scratch.out);
            return Ok(());
        }
        dec.decompress(&scratch.raw, &mut scratch.out, limit)
            .map_err(|e| self.corrupt(format!("data block at {pos}: {e}")))
    }

    /// Decompresses a whole fragment block.
    pub(crate) fn fragment(&self, dec: &mut Decoder, index: u32) -> Result<Vec<u8>> {
        let f = self.fragments[index as usize];
        let mut s = Scratch::default();
        self.block(dec, f.start, f.size, self.sb.block_size as usize, &mut s)?;
        Ok(s.out)
    }

    /// The tail of a file from its fragment block.
    pub(crate) fn tail<'a>(&self, file: &FileData, frag: &'a [u8]) -> Result<&'a [u8]> {
        let bs = u64::from(self.sb.block_size);
        let tail = (file.size % bs) as usize;
        let off = file.fragment.map_or(0, |(_, o)| o as usize);
        frag.get(off..off + tail)
            .ok_or_else(|| self.corrupt(format!("file tail {off}+{tail} past its fragment")))
    }
}

/// A piece of file contents.
pub(crate) enum Piece<'a> {
    Data(&'a [u8]),
    Hole(u64),
}

/// Reusable buffers for block reads.
#[derive(Default)]
pub(crate) struct Scratch {
    raw: Vec<u8>,
    pub out: Vec<u8>,
}

/// Position in a table's data of a metadata reference.
pub(super) fn locate(t: &Table, r: u64, what: &str) -> Result<usize, String> {
    let (block, offset) = split_meta_ref(r);
    let pos = t
        .starts
        .get(&block)
        .map(|&s| s + usize::from(offset))
        .filter(|&p| p < t.data.len());
    pos.ok_or_else(|| format!("{what} reference {block}:{offset} is invalid"))
}

#[cfg(test)]
mod tests;

//! Metadata of the writer: the metadata block stream ([`MetaWriter`]) that
//! holds every table, and the encodings of inodes and directory listings.

use super::codec::Codec;
use crate::format::{
    inode, meta_ref, DIR_HEADER_MAX_ENTRIES, METADATA_SIZE, METADATA_UNCOMPRESSED,
};
use crate::Result;

/// Builds a table of metadata blocks: 8 KiB of uncompressed content each,
/// stored as a u16 header (length, bit 15 = uncompressed) + bytes.
pub(crate) struct MetaWriter {
    /// Finished blocks, headers included.
    out: Vec<u8>,
    /// Content of the block being filled (< 8 KiB).
    buf: Vec<u8>,
    /// Start (in `out`) of each finished block.
    starts: Vec<u64>,
}

impl MetaWriter {
    pub(crate) fn new() -> Self {
        MetaWriter {
            out: Vec::new(),
            buf: Vec::with_capacity(METADATA_SIZE),
            starts: Vec::new(),
        }
    }

    /// Where the next byte goes: (start of its block in the table, offset
    /// inside the block's content).
    pub(crate) fn position(&self) -> (u64, u16) {
        // `buf` is always shorter than a block, so the offset fits.
        (self.out.len() as u64, self.buf.len() as u16)
    }

    /// [`Self::position`] as a metadata reference.
    pub(crate) fn reference(&self) -> u64 {
        let (block, offset) = self.position();
        meta_ref(block, offset)
    }

    /// Appends bytes, finishing (compressing) every block that fills.
    pub(crate) fn push(&mut self, mut bytes: &[u8], codec: &mut Codec) -> Result<()> {
        while !bytes.is_empty() {
            let room = METADATA_SIZE - self.buf.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = rest;
            if self.buf.len() == METADATA_SIZE {
                self.flush(codec)?;
            }
        }
        Ok(())
    }

    /// Finishes the partial block, if any.
    fn flush(&mut self, codec: &mut Codec) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.starts.push(self.out.len() as u64);
        // Blocks hold at most 8 KiB, so lengths fit in 15 bits.
        match codec.compress(&self.buf)? {
            Some(packed) => {
                self.out
                    .extend_from_slice(&(packed.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&packed);
            }
            None => {
                let header = self.buf.len() as u16 | METADATA_UNCOMPRESSED;
                self.out.extend_from_slice(&header.to_le_bytes());
                self.out.extend_from_slice(&self.buf);
            }
        }
        self.buf.clear();
        Ok(())
    }

    /// Finishes the table: its bytes and the start of each block.
    pub(crate) fn finish(mut self, codec: &mut Codec) -> Result<(Vec<u8>, Vec<u64>)> {
        self.flush(codec)?;
        Ok((self.out, self.starts))
    }
}

/// The 16-byte header every inode starts with.
pub(crate) struct InodeHeader {
    pub kind: u16,
    pub mode: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    pub number: u32,
}

impl InodeHeader {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        for v in [self.kind, self.mode, self.uid_idx, self.gid_idx] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.mtime.to_le_bytes());
        b.extend_from_slice(&self.number.to_le_bytes());
        b
    }
}

/// Appends little-endian u32s.
pub(crate) fn put32(b: &mut Vec<u8>, values: &[u32]) {
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
}

/// One entry of a directory listing.
pub(crate) struct DirEntry<'a> {
    pub name: &'a [u8],
    /// Reference of the entry's inode in the inode table.
    pub inode_ref: u64,
    pub number: u32,
    /// Basic inode type (directory entries never use extended types).
    pub kind: u16,
}

/// Encodes a directory listing (entries sorted by name). A new header
/// starts every 256 entries, whenever an entry's inode lies in another
/// metadata block than the header's, and when its inode number is not
/// within an i16 of the header's base.
pub(crate) fn dir_listing(entries: &[DirEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let first = &entries[i];
        let block = first.inode_ref >> 16;
        let base = first.number;
        let run = entries[i..]
            .iter()
            .take(DIR_HEADER_MAX_ENTRIES)
            .take_while(|e| {
                e.inode_ref >> 16 == block
                    && i16::try_from(i64::from(e.number) - i64::from(base)).is_ok()
            })
            .count();
        // The block start is < 4 GiB: the inode table is far smaller.
        put32(&mut out, &[run as u32 - 1, block as u32, base]);
        for e in &entries[i..i + run] {
            let delta = (i64::from(e.number) - i64::from(base)) as i16;
            out.extend_from_slice(&((e.inode_ref & 0xffff) as u16).to_le_bytes());
            out.extend_from_slice(&delta.to_le_bytes());
            out.extend_from_slice(&e.kind.to_le_bytes());
            // Names are 1..=256 bytes (checked by the scan).
            out.extend_from_slice(&(e.name.len() as u16 - 1).to_le_bytes());
            out.extend_from_slice(e.name);
        }
        i += run;
    }
    out
}

/// The basic type of an extended inode type (directory entries use it).
pub(crate) fn basic(kind: u16) -> u16 {
    if kind > inode::SOCKET {
        kind - inode::EXT
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compressor;

    fn codec() -> Codec {
        Codec::new(Compressor::Zstd(3), 131_072).unwrap()
    }

    /// Splits a table into (header, content) of each block (content
    /// decompressed with zstd).
    fn blocks(table: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < table.len() {
            let header = u16::from_le_bytes([table[at], table[at + 1]]);
            let len = usize::from(header & !METADATA_UNCOMPRESSED);
            let body = &table[at + 2..at + 2 + len];
            let content = if header & METADATA_UNCOMPRESSED != 0 {
                body.to_vec()
            } else {
                zstd::bulk::decompress(body, METADATA_SIZE).unwrap()
            };
            out.push((header, content));
            at += 2 + len;
        }
        out
    }

    #[test]
    fn metadata_blocks_hold_8k_each_and_positions_track_them() {
        let mut c = codec();
        let mut m = MetaWriter::new();
        assert_eq!(m.position(), (0, 0));
        let text: Vec<u8> = b"0123456789".repeat(1000);
        m.push(&text, &mut c).unwrap();
        let (block, offset) = m.position();
        assert_eq!(offset as usize, 10_000 - METADATA_SIZE);
        let noise = ramstick_testkit::noise(9000, false);
        m.push(&noise, &mut c).unwrap();
        let (out, starts) = m.finish(&mut c).unwrap();
        assert_eq!(starts.len(), 3);
        // The noise block is stored raw.
        assert_ne!(blocks(&out)[2].0 & METADATA_UNCOMPRESSED, 0);
        assert_eq!(starts[1], block);
        let blocks = blocks(&out);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].0 & METADATA_UNCOMPRESSED, 0, "text compresses");
        let all: Vec<u8> = blocks.iter().flat_map(|b| b.1.clone()).collect();
        assert_eq!(all.len(), 19_000);
        assert_eq!(&all[..10_000], &text[..]);
        assert_eq!(&all[10_000..], &noise[..]);
        assert_eq!(blocks[0].1.len(), METADATA_SIZE);
        assert_eq!(blocks[1].1.len(), METADATA_SIZE);
    }

    /// Decodes a listing into (count, block, base) headers + (offset,
    /// number, kind, name) entries.
    /// (count, block, base) of a header.
    type Header = (u32, u32, u32);
    /// (offset, number, kind, name) of an entry.
    type Entry = (u16, u32, u16, Vec<u8>);

    fn parse(listing: &[u8]) -> Vec<(Header, Vec<Entry>)> {
        let u32_at = |o: usize| u32::from_le_bytes(listing[o..o + 4].try_into().unwrap());
        let u16_at = |o: usize| u16::from_le_bytes(listing[o..o + 2].try_into().unwrap());
        let mut out = Vec::new();
        let mut at = 0;
        while at < listing.len() {
            let header = (u32_at(at) + 1, u32_at(at + 4), u32_at(at + 8));
            at += 12;
            let mut entries = Vec::new();
            for _ in 0..header.0 {
                let number = (header.2 as i64 + i64::from(u16_at(at + 2) as i16)) as u32;
                let size = usize::from(u16_at(at + 6)) + 1;
                let name = listing[at + 8..at + 8 + size].to_vec();
                entries.push((u16_at(at), number, u16_at(at + 4), name));
                at += 8 + size;
            }
            out.push((header, entries));
        }
        out
    }

    #[test]
    fn listing_headers_split_on_count_block_and_number_range() {
        let names: Vec<Vec<u8>> = (0..600).map(|i| format!("f{i:04}").into_bytes()).collect();
        let entries: Vec<DirEntry> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let i = i as u64;
                // Entries 0..400 in block 0, the rest in block 9000; entry
                // 500 and later have far-away numbers.
                let block = if i < 400 { 0 } else { 9000 };
                let number = if i < 500 {
                    10 + i as u32
                } else {
                    70_000 + i as u32
                };
                DirEntry {
                    name,
                    inode_ref: meta_ref(block, (i * 13 % 8192) as u16),
                    number,
                    kind: inode::FILE,
                }
            })
            .collect();
        let parsed = parse(&dir_listing(&entries));
        let counts: Vec<u32> = parsed.iter().map(|(h, _)| h.0).collect();
        assert_eq!(counts, [256, 144, 100, 100]);
        assert_eq!(parsed[2].0 .1, 9000);
        assert_eq!(parsed[3].0 .2, 70_500);
        let flat: Vec<_> = parsed.iter().flat_map(|(_, e)| e.clone()).collect();
        for (got, want) in flat.iter().zip(&entries) {
            assert_eq!(got.0 as u64, want.inode_ref & 0xffff);
            assert_eq!(got.1, want.number);
            assert_eq!(got.3, want.name);
        }
        assert_eq!(flat.len(), 600);
        assert!(dir_listing(&[]).is_empty());
        assert_eq!(basic(inode::EXT_FILE), inode::FILE);
        assert_eq!(basic(inode::SYMLINK), inode::SYMLINK);
    }
}

//! Squashfs 4.0 on-disk constants and the superblock, shared by the writer
//! ([`crate::write`]) and the reader ([`crate::read`]).
//!
//! Layout of an image, in file order (the kernel checks this order):
//! superblock (96 bytes) · compressor options (optional metadata block) ·
//! data blocks and fragment blocks · inode table · directory table ·
//! fragment table (metadata blocks + u64 index) · id table (metadata blocks +
//! u64 index) · xattr key/value metadata blocks · xattr id metadata blocks ·
//! xattr id table header + u64 index. The image is padded to 4 KiB.
//!
//! All integers are little-endian. Reference: the kernel's
//! `fs/squashfs/squashfs_fs.h` and `Documentation/filesystems/squashfs.rst`.

/// "hsqs".
pub const MAGIC: u32 = 0x7371_7368;
/// Size of the superblock.
pub const SUPERBLOCK_SIZE: usize = 96;
/// Uncompressed size of a metadata block.
pub const METADATA_SIZE: usize = 8192;
/// Set in a metadata block's u16 header when the block is stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 0x8000;
/// Set in a data block's u32 size when the block is stored uncompressed.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// "No fragment" / "no xattrs" marker in inodes.
pub const NONE_U32: u32 = 0xFFFF_FFFF;
/// "Table absent" marker in the superblock.
pub const NONE_U64: u64 = 0xFFFF_FFFF_FFFF_FFFF;
/// Default and limits of the data block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 1024 * 1024;
/// Most entries one directory header may cover.
pub const DIR_HEADER_MAX_ENTRIES: usize = 256;
/// Longest entry name.
pub const MAX_NAME: usize = 256;
/// Images are padded to a multiple of this (for loop devices).
pub const PAD: u64 = 4096;

/// Superblock flags.
pub mod flags {
    pub const UNCOMPRESSED_INODES: u16 = 0x0001;
    pub const UNCOMPRESSED_DATA: u16 = 0x0002;
    pub const CHECK: u16 = 0x0004;
    pub const UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
    pub const NO_FRAGMENTS: u16 = 0x0010;
    pub const ALWAYS_FRAGMENTS: u16 = 0x0020;
    pub const DUPLICATES: u16 = 0x0040;
    pub const EXPORTABLE: u16 = 0x0080;
    pub const UNCOMPRESSED_XATTRS: u16 = 0x0100;
    pub const NO_XATTRS: u16 = 0x0200;
    pub const COMPRESSOR_OPTIONS: u16 = 0x0400;
    pub const UNCOMPRESSED_IDS: u16 = 0x0800;
}

/// Compressor ids of the superblock.
pub mod compressor {
    pub const GZIP: u16 = 1;
    pub const LZMA: u16 = 2;
    pub const LZO: u16 = 3;
    pub const XZ: u16 = 4;
    pub const LZ4: u16 = 5;
    pub const ZSTD: u16 = 6;
}

/// Inode types (the extended variant is basic + 7).
pub mod inode {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLOCK_DEV: u16 = 4;
    pub const CHAR_DEV: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const SOCKET: u16 = 7;
    pub const EXT_DIR: u16 = 8;
    pub const EXT_FILE: u16 = 9;
    pub const EXT_SYMLINK: u16 = 10;
    pub const EXT_BLOCK_DEV: u16 = 11;
    pub const EXT_CHAR_DEV: u16 = 12;
    pub const EXT_FIFO: u16 = 13;
    pub const EXT_SOCKET: u16 = 14;
    /// Offset between a basic type and its extended variant.
    pub const EXT: u16 = 7;
}

/// Xattr name prefixes by type id; `VALUE_OOL` marks a value stored once
/// elsewhere and referenced (mksquashfs does this for repeated values).
pub mod xattr {
    pub const USER: u16 = 0;
    pub const TRUSTED: u16 = 1;
    pub const SECURITY: u16 = 2;
    pub const VALUE_OOL: u16 = 0x100;
    /// (type id, prefix) pairs.
    pub const PREFIXES: [(u16, &str); 3] = [
        (USER, "user."),
        (TRUSTED, "trusted."),
        (SECURITY, "security."),
    ];
}

/// Encodes a device number as squashfs stores it (the kernel's old 32-bit
/// `new_encode_dev`).
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Decodes a stored device number into (major, minor).
pub fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// Builds a metadata reference: block start (relative to its table) and
/// offset inside the uncompressed block.
pub fn meta_ref(block: u64, offset: u16) -> u64 {
    (block << 16) | u64::from(offset)
}

/// Splits a metadata reference into (block start, offset).
pub fn split_meta_ref(r: u64) -> (u64, u16) {
    (r >> 16, (r & 0xffff) as u16)
}

/// The 96-byte superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compressor: u16,
    pub block_log: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_id_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
    pub export_table: u64,
}

impl Superblock {
    /// Serializes the superblock (version 4.0).
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = Vec::with_capacity(SUPERBLOCK_SIZE);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&self.inode_count.to_le_bytes());
        b.extend_from_slice(&self.mkfs_time.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.fragment_count.to_le_bytes());
        b.extend_from_slice(&self.compressor.to_le_bytes());
        b.extend_from_slice(&self.block_log.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.id_count.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        for v in [
            self.root_inode,
            self.bytes_used,
            self.id_table,
            self.xattr_id_table,
            self.inode_table,
            self.directory_table,
            self.fragment_table,
            self.export_table,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = [0u8; SUPERBLOCK_SIZE];
        out.copy_from_slice(&b);
        out
    }

    /// Parses a superblock; `Err` says what is wrong (the caller adds the
    /// image path). Checks magic, version, block size/log agreement and
    /// that the table starts lie inside `bytes_used` in the required order.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < SUPERBLOCK_SIZE {
            return Err(format!("only {} bytes, no superblock", b.len()));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(0) != MAGIC {
            return Err("bad magic (not a squashfs image)".into());
        }
        let (major, minor) = (u16_at(28), u16_at(30));
        if (major, minor) != (4, 0) {
            return Err(format!(
                "squashfs version {major}.{minor}, only 4.0 is supported"
            ));
        }
        let sb = Superblock {
            inode_count: u32_at(4),
            mkfs_time: u32_at(8),
            block_size: u32_at(12),
            fragment_count: u32_at(16),
            compressor: u16_at(20),
            block_log: u16_at(22),
            flags: u16_at(24),
            id_count: u16_at(26),
            root_inode: u64_at(32),
            bytes_used: u64_at(40),
            id_table: u64_at(48),
            xattr_id_table: u64_at(56),
            inode_table: u64_at(64),
            directory_table: u64_at(72),
            fragment_table: u64_at(80),
            export_table: u64_at(88),
        };
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&sb.block_size)
            || !sb.block_size.is_power_of_two()
            || u32::from(sb.block_log) != sb.block_size.trailing_zeros()
        {
            return Err(format!(
                "block size {} / log {} invalid",
                sb.block_size, sb.block_log
            ));
        }
        if sb.inode_table < SUPERBLOCK_SIZE as u64
            || sb.inode_table >= sb.directory_table
            || sb.directory_table >= sb.bytes_used
            || sb.id_table >= sb.bytes_used
        {
            return Err("table offsets out of order or past the end".into());
        }
        Ok(sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock {
            inode_count: 3,
            mkfs_time: 1_700_000_000,
            block_size: DEFAULT_BLOCK_SIZE,
            fragment_count: 1,
            compressor: compressor::ZSTD,
            block_log: 17,
            flags: flags::NO_XATTRS,
            id_count: 1,
            root_inode: meta_ref(0, 64),
            bytes_used: 4000,
            id_table: 3990,
            xattr_id_table: NONE_U64,
            inode_table: 200,
            directory_table: 300,
            fragment_table: 3900,
            export_table: NONE_U64,
        };
        assert_eq!(Superblock::parse(&sb.to_bytes()), Ok(sb));
        let mut bad = sb.to_bytes();
        bad[0] = 0;
        assert!(Superblock::parse(&bad).unwrap_err().contains("magic"));
    }

    #[test]
    fn device_numbers_round_trip() {
        for (ma, mi) in [(0, 0), (1, 3), (8, 17), (259, 65536 + 5)] {
            assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
        }
        // The kernel's encoding of 8:1 (sda1).
        assert_eq!(encode_dev(8, 1), 0x801);
    }
}

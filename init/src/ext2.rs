//! A fresh ext2 filesystem for the zram upper, as the few blocks to write.
//!
//! busybox mke2fs writes every inode table (about 8 MiB for a 512 MiB
//! upper), which under emulation took most of the upper's setup time. A new
//! zram device reads as zeros everywhere, and zeros are what an unused
//! inode table is: so only the superblocks, group descriptors, bitmaps, the
//! first inode-table block (inodes 1-16) and the two directory blocks (/ and
//! /lost+found) need writing. [`layout`] computes those blocks; it is only
//! right for a device that reads as zeros.
//!
//! The format is what `mke2fs -b 4096 -I 256 -m 0` makes of it: ext2
//! revision 1 with 4 KiB blocks, 256-byte inodes (the overlay's xattrs stay
//! inside the inode), one inode per 16 KiB, sparse superblock backups, no
//! reserved blocks, no journal (the data lives in RAM anyway); the kernel's
//! ext4 driver mounts it. The tests check layouts from 256 KiB to 25 block
//! groups with `e2fsck -fn`.

use anyhow::{bail, Result};

const BLOCK: u64 = 4096;
const BLOCKS_PER_GROUP: u64 = 8 * BLOCK;
const INODE_SIZE: u64 = 256;
const INODES_PER_BLOCK: u64 = BLOCK / INODE_SIZE;
/// One inode per this many bytes (mke2fs's default ratio).
const BYTES_PER_INODE: u64 = 16384;
const ROOT_INO: u32 = 2;
/// Inodes 1-10 are reserved; lost+found is the first ordinary one.
const LOST_FOUND_INO: u32 = 11;
/// Below this the filesystem is no use as an upper.
const MIN_BLOCKS: u64 = 64;
/// A last group smaller than its metadata plus this many blocks is dropped.
const MIN_LAST_GROUP_DATA: u64 = 50;

/// What the caller supplies that must differ between filesystems.
pub struct Ids {
    pub uuid: [u8; 16],
    /// The seed of the directory-index hash.
    pub hash_seed: [u8; 16],
    /// Seconds since the epoch (creation, write and check times).
    pub now: u32,
}

/// One write: `data` at byte `offset` of the device.
pub type Write = (u64, Vec<u8>);

struct Geometry {
    blocks: u64,
    groups: u64,
    inodes_per_group: u64,
    itable_blocks: u64,
    gdt_blocks: u64,
}

impl Geometry {
    fn of(size_bytes: u64) -> Result<Geometry> {
        let mut blocks = size_bytes / BLOCK;
        if blocks < MIN_BLOCKS {
            bail!(
                "{size_bytes} bytes is too small for the upper's ext2 (at least {} KiB)",
                MIN_BLOCKS * BLOCK / 1024
            );
        }
        loop {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            let wanted = (blocks * BLOCK / BYTES_PER_INODE).div_ceil(groups);
            // Whole inode-table blocks; one bitmap block holds at most 32768.
            let inodes_per_group = (wanted.div_ceil(INODES_PER_BLOCK) * INODES_PER_BLOCK)
                .clamp(INODES_PER_BLOCK, BLOCKS_PER_GROUP);
            let geo = Geometry {
                blocks,
                groups,
                inodes_per_group,
                itable_blocks: inodes_per_group / INODES_PER_BLOCK,
                gdt_blocks: (groups * 32).div_ceil(BLOCK),
            };
            let last = groups - 1;
            if groups > 1 && geo.group_blocks(last) < geo.overhead(last) + MIN_LAST_GROUP_DATA {
                blocks = last * BLOCKS_PER_GROUP;
                continue;
            }
            return Ok(geo);
        }
    }

    fn group_blocks(&self, g: u64) -> u64 {
        (self.blocks - g * BLOCKS_PER_GROUP).min(BLOCKS_PER_GROUP)
    }

    /// Superblock and descriptor copies, bitmaps and inode table of group `g`.
    fn overhead(&self, g: u64) -> u64 {
        let copies = if has_super(g) { 1 + self.gdt_blocks } else { 0 };
        copies + 2 + self.itable_blocks
    }

    fn block_bitmap(&self, g: u64) -> u64 {
        g * BLOCKS_PER_GROUP + self.overhead(g) - 2 - self.itable_blocks
    }

    fn inode_table(&self, g: u64) -> u64 {
        self.block_bitmap(g) + 2
    }

    /// The first block after group 0's metadata: / then /lost+found.
    fn root_dir_block(&self) -> u64 {
        self.overhead(0)
    }
}

/// sparse_super: copies in groups 0, 1 and the powers of 3, 5 and 7.
fn has_super(g: u64) -> bool {
    let power_of = |base: u64| {
        let mut n = base;
        while n < g {
            n *= base;
        }
        n == g
    };
    g <= 1 || power_of(3) || power_of(5) || power_of(7)
}

fn put16(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
}

fn put32(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
}

/// Set bits `from..to` of a bitmap.
fn set_bits(map: &mut [u8], from: u64, to: u64) {
    for bit in from..to {
        map[(bit / 8) as usize] |= 1 << (bit % 8);
    }
}

/// The blocks that make a `size_bytes` device that reads as zeros an empty
/// ext2 filesystem labelled `label` (at most 16 bytes).
pub fn layout(size_bytes: u64, label: &str, ids: &Ids) -> Result<Vec<Write>> {
    let geo = Geometry::of(size_bytes)?;
    let data_blocks_used = 2; // the directory blocks of / and /lost+found
    let mut free_blocks = Vec::new();
    let mut free_inodes = Vec::new();
    let mut writes = Vec::new();
    for g in 0..geo.groups {
        let size = geo.group_blocks(g);
        let used = geo.overhead(g) + if g == 0 { data_blocks_used } else { 0 };
        let mut blocks = vec![0u8; BLOCK as usize];
        // Padding past a short last group counts as used, as e2fsck expects.
        set_bits(&mut blocks, 0, used);
        set_bits(&mut blocks, size, BLOCKS_PER_GROUP);
        let mut inodes = vec![0u8; BLOCK as usize];
        let used_inodes = if g == 0 { u64::from(LOST_FOUND_INO) } else { 0 };
        set_bits(&mut inodes, 0, used_inodes);
        set_bits(&mut inodes, geo.inodes_per_group, BLOCKS_PER_GROUP);
        writes.push((geo.block_bitmap(g) * BLOCK, blocks));
        writes.push(((geo.block_bitmap(g) + 1) * BLOCK, inodes));
        free_blocks.push(size - used);
        free_inodes.push(geo.inodes_per_group - used_inodes);
    }

    let mut gdt = vec![0u8; (geo.gdt_blocks * BLOCK) as usize];
    for g in 0..geo.groups {
        let d = &mut gdt[(g * 32) as usize..];
        put32(d, 0x00, geo.block_bitmap(g));
        put32(d, 0x04, geo.block_bitmap(g) + 1);
        put32(d, 0x08, geo.inode_table(g));
        put16(d, 0x0C, free_blocks[g as usize]);
        put16(d, 0x0E, free_inodes[g as usize]);
        put16(d, 0x10, if g == 0 { 2 } else { 0 });
    }

    let sb = superblock(
        &geo,
        label,
        ids,
        free_blocks.iter().sum(),
        free_inodes.iter().sum(),
    );
    for g in (0..geo.groups).filter(|&g| has_super(g)) {
        let start = g * BLOCKS_PER_GROUP * BLOCK;
        let mut copy = sb.clone();
        put16(&mut copy, 0x5A, g);
        // Group 0's superblock sits 1 KiB into block 0 (the boot sector's room).
        writes.push((if g == 0 { 1024 } else { start }, copy));
        writes.push((start + BLOCK, gdt.clone()));
    }

    let root_block = geo.root_dir_block();
    let lost_found_block = root_block + 1;
    let mut itable = vec![0u8; BLOCK as usize];
    let dir_inode = |itable: &mut [u8], ino: u32, mode: u64, links: u64, block: u64| {
        let i = &mut itable[((u64::from(ino) - 1) * INODE_SIZE) as usize..];
        put16(i, 0x00, mode);
        put32(i, 0x04, BLOCK); // i_size
        for time in [0x08, 0x0C, 0x10] {
            put32(i, time, u64::from(ids.now));
        }
        put16(i, 0x1A, links);
        put32(i, 0x1C, BLOCK / 512); // i_blocks, in 512-byte sectors
        put32(i, 0x28, block); // i_block[0]
        put16(i, 0x80, 32); // i_extra_isize
    };
    // / is linked from itself twice (. and ..) and from lost+found's `..`.
    dir_inode(&mut itable, ROOT_INO, 0o040755, 3, root_block);
    dir_inode(&mut itable, LOST_FOUND_INO, 0o040700, 2, lost_found_block);
    writes.push((geo.inode_table(0) * BLOCK, itable));
    writes.push((
        root_block * BLOCK,
        dir_block(&[
            (ROOT_INO, "."),
            (ROOT_INO, ".."),
            (LOST_FOUND_INO, "lost+found"),
        ]),
    ));
    writes.push((
        lost_found_block * BLOCK,
        dir_block(&[(LOST_FOUND_INO, "."), (ROOT_INO, "..")]),
    ));
    writes.sort_by_key(|w| w.0);
    Ok(writes)
}

fn superblock(
    geo: &Geometry,
    label: &str,
    ids: &Ids,
    free_blocks: u64,
    free_inodes: u64,
) -> Vec<u8> {
    let mut sb = vec![0u8; 1024];
    let now = u64::from(ids.now);
    put32(&mut sb, 0x00, geo.inodes_per_group * geo.groups);
    put32(&mut sb, 0x04, geo.blocks);
    put32(&mut sb, 0x0C, free_blocks);
    put32(&mut sb, 0x10, free_inodes);
    put32(&mut sb, 0x18, 2); // log2(block size / 1024)
    put32(&mut sb, 0x1C, 2);
    put32(&mut sb, 0x20, BLOCKS_PER_GROUP);
    put32(&mut sb, 0x24, BLOCKS_PER_GROUP);
    put32(&mut sb, 0x28, geo.inodes_per_group);
    put32(&mut sb, 0x30, now);
    put16(&mut sb, 0x36, 0xFFFF); // no mount-count checks
    put16(&mut sb, 0x38, 0xEF53);
    put16(&mut sb, 0x3A, 1); // clean
    put16(&mut sb, 0x3C, 1); // on errors: continue
    put32(&mut sb, 0x40, now);
    put32(&mut sb, 0x4C, 1); // revision 1: inode size and features below
    put32(&mut sb, 0x54, u64::from(LOST_FOUND_INO));
    put16(&mut sb, 0x58, INODE_SIZE);
    put32(&mut sb, 0x5C, 0x08 | 0x20); // compat: ext_attr, dir_index
    put32(&mut sb, 0x60, 0x02); // incompat: filetype
    put32(&mut sb, 0x64, 0x01 | 0x02); // ro_compat: sparse_super, large_file
    sb[0x68..0x78].copy_from_slice(&ids.uuid);
    let name = &label.as_bytes()[..label.len().min(16)];
    sb[0x78..0x78 + name.len()].copy_from_slice(name);
    sb[0xEC..0xFC].copy_from_slice(&ids.hash_seed);
    sb[0xFC] = 1; // half_md4, mke2fs's default directory hash
    put32(&mut sb, 0x108, now); // s_mkfs_time
    put16(&mut sb, 0x15C, 32); // s_min_extra_isize
    put16(&mut sb, 0x15E, 32); // s_want_extra_isize
                               // The directory hash follows the signedness of this machine's `char`.
    let signed = std::ffi::c_char::MIN != 0;
    put32(&mut sb, 0x160, if signed { 0x1 } else { 0x2 });
    sb
}

/// A directory block of `entries` (with file types; all are directories).
fn dir_block(entries: &[(u32, &str)]) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK as usize];
    let mut at = 0;
    for (n, (ino, name)) in entries.iter().enumerate() {
        let len = if n + 1 == entries.len() {
            BLOCK as usize - at
        } else {
            (8 + name.len()).div_ceil(4) * 4
        };
        put32(&mut block, at, u64::from(*ino));
        put16(&mut block, at + 4, len as u64);
        block[at + 6] = name.len() as u8;
        block[at + 7] = 2; // EXT2_FT_DIR
        block[at + 8..at + 8 + name.len()].copy_from_slice(name.as_bytes());
        at += len;
    }
    block
}

#[cfg(test)]
mod tests;

//! The squashfs writer (see [`crate::pack`] and [`crate::merge`]): a
//! [`tree::Tree`] of per-entry metadata comes from [`scan`] (a directory)
//! or [`merge`] (a chain of layer images); [`data`] streams file contents
//! from their [`source`] through parallel compression, [`meta`] encodes
//! inodes and directories into metadata blocks, and this module writes the
//! tables and the superblock.
//!
//! Image layout (the order the kernel checks): superblock · compressor
//! options (only when not the default) · data and fragment blocks · inode
//! table · directory table · fragment table + index · id table + index ·
//! xattr key/value blocks · xattr id blocks · xattr id header + index ·
//! padding to 4 KiB.

mod codec;
mod data;
pub(crate) mod merge;
mod meta;
mod scan;
mod source;
mod tree;

use crate::format::{
    flags, inode, Superblock, MAX_BLOCK_SIZE, METADATA_UNCOMPRESSED, MIN_BLOCK_SIZE, NONE_U32,
    NONE_U64, PAD, SUPERBLOCK_SIZE,
};
use crate::read::image::Image;
use crate::{ChangedFile, Error, PackOptions, PackStats, Progress, Result};
use codec::Codec;
use data::{Data, FileData, Out, Settings};
use meta::{basic, dir_listing, put32, DirEntry, InodeHeader, MetaWriter};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};
use tree::{Kind, Tree};

pub(crate) fn pack(dir: &Path, image: &Path, options: &PackOptions) -> Result<PackStats> {
    check_block_size(image, options)?;
    let tree = scan::scan(dir, options.exclude)?;
    write_image(&tree, &[], image, options)
}

/// Refuses a block size the format does not allow (before anything is read).
fn check_block_size(image: &Path, options: &PackOptions) -> Result<()> {
    let block_size = options.block_size;
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(Error::Unpackable {
            path: image.to_path_buf(),
            what: format!("block size {block_size} (a power of two in 4 KiB ..= 1 MiB)"),
        });
    }
    Ok(())
}

/// Writes `tree` as a new image at `image`; its files' contents come from
/// the tree's paths or from `images` (the inputs of a merge).
fn write_image(
    tree: &Tree,
    images: &[Image],
    image: &Path,
    options: &PackOptions,
) -> Result<PackStats> {
    let block_size = options.block_size;
    let file = File::create(image).map_err(|e| Error::io("create", image, e))?;
    let mut out = Out {
        file: BufWriter::with_capacity(1 << 20, file),
        pos: 0,
        path: image.to_path_buf(),
    };
    out.write(&[0u8; SUPERBLOCK_SIZE])?;
    let mut sb_flags = flags::DUPLICATES | flags::ALWAYS_FRAGMENTS;
    if let Some(opts) = codec::options(options.compressor) {
        // A metadata block stored uncompressed (short, so the cast fits).
        out.write(&(opts.len() as u16 | METADATA_UNCOMPRESSED).to_le_bytes())?;
        out.write(&opts)?;
        sb_flags |= flags::COMPRESSOR_OPTIONS;
    }
    let settings = Settings {
        compressor: options.compressor,
        block_size,
        threads: options.threads,
        changing: options.changing,
        progress: options.progress,
    };
    let data = data::write_data(tree, images, &mut out, &settings)?;
    let mut codec = Codec::new(options.compressor, block_size)?;
    let mut sb = Superblock {
        inode_count: u32::try_from(tree.order.len()).unwrap_or(u32::MAX),
        // Whole seconds since the epoch; u32 holds them until 2106.
        mkfs_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32),
        block_size,
        fragment_count: u32::try_from(data.fragments.len()).unwrap_or(u32::MAX),
        compressor: codec::id(options.compressor),
        block_log: block_size.trailing_zeros() as u16,
        flags: sb_flags,
        // At most 65536 ids (checked by the scan); 65536 is stored as 0.
        id_count: tree.ids.len() as u16,
        export_table: NONE_U64,
        xattr_id_table: NONE_U64,
        ..Superblock::default()
    };
    let (inodes, dirs, root_ref) = write_inodes(tree, &data, block_size, &mut codec)?;
    sb.root_inode = root_ref;
    sb.inode_table = out.pos;
    out.write(&inodes)?;
    sb.directory_table = out.pos;
    out.write(&dirs)?;
    let mut fragments = Vec::with_capacity(data.fragments.len() * 16);
    for &(start, size) in &data.fragments {
        fragments.extend_from_slice(&start.to_le_bytes());
        put32(&mut fragments, &[size, 0]);
    }
    sb.fragment_table = write_table(&mut out, &fragments, &mut codec)?;
    let mut ids = Vec::with_capacity(tree.ids.len() * 4);
    put32(&mut ids, &tree.ids);
    sb.id_table = write_table(&mut out, &ids, &mut codec)?;
    if !tree.xattr_sets.is_empty() {
        sb.xattr_id_table = write_xattrs(&mut out, tree, &mut codec)?;
    }
    sb.bytes_used = out.pos;
    let padding = (PAD - out.pos % PAD) % PAD;
    out.write(&vec![0u8; padding as usize])?;
    let image_size = out.pos;
    let mut file = out
        .file
        .into_inner()
        .map_err(|e| Error::io("write", image, e.into_error()))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&sb.to_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", image, e))?;
    let progress = Progress {
        entries: tree.entries,
        bytes: tree.total_bytes,
        total_bytes: Some(tree.total_bytes),
    };
    if let Some(report) = options.progress {
        report(&progress);
    }
    Ok(PackStats {
        entries: tree.entries,
        inodes: sb.inode_count,
        bytes_in: data.bytes_in,
        image_size,
        skipped_xattrs: tree.skipped_xattrs,
        changed: changed_files(tree, &data),
    })
}

/// Every name of the files stored other than as scanned, sorted.
fn changed_files(tree: &Tree, data: &Data) -> Vec<ChangedFile> {
    if data.settled.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (dir, node) in tree.nodes.iter().enumerate() {
        let Kind::Dir { entries, .. } = &node.kind else {
            continue;
        };
        for (name, child) in entries {
            if let Some(seen) = data.settled.get(child) {
                out.push(ChangedFile {
                    path: tree.rel_path(dir, name),
                    size: seen.size,
                    mtime: UNIX_EPOCH + Duration::from_secs(seen.stored_mtime().into()),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Writes a lookup table (fragment or id table): its metadata blocks, then
/// the u64 image offsets of those blocks. Returns the offset of the index
/// (what the superblock points at).
fn write_table(out: &mut Out, content: &[u8], codec: &mut Codec) -> Result<u64> {
    let mut table = MetaWriter::new();
    table.push(content, codec)?;
    let (bytes, starts) = table.finish(codec)?;
    let base = out.pos;
    out.write(&bytes)?;
    let index = out.pos;
    for start in starts {
        out.write(&(base + start).to_le_bytes())?;
    }
    Ok(index)
}

/// Writes the xattr key/value blocks, the xattr id blocks, and the xattr
/// id table header with its index. Returns the header's offset.
fn write_xattrs(out: &mut Out, tree: &Tree, codec: &mut Codec) -> Result<u64> {
    let mut kv = MetaWriter::new();
    let mut ids = Vec::with_capacity(tree.xattr_sets.len() * 16);
    for set in &tree.xattr_sets {
        let reference = kv.reference();
        let mut bytes = Vec::new();
        let mut size = 0u32;
        for (kind, name, value) in set {
            bytes.extend_from_slice(&kind.to_le_bytes());
            // Xattr names are < 256 bytes and values < 64 KiB (VFS limits).
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(name);
            put32(&mut bytes, &[value.len() as u32]);
            bytes.extend_from_slice(value);
            let prefix = crate::format::xattr::PREFIXES
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, p)| p.len());
            size += (prefix + name.len() + 1 + value.len()) as u32;
        }
        kv.push(&bytes, codec)?;
        ids.extend_from_slice(&reference.to_le_bytes());
        put32(&mut ids, &[set.len() as u32, size]);
    }
    let (kv_bytes, _) = kv.finish(codec)?;
    let kv_start = out.pos;
    out.write(&kv_bytes)?;
    let mut id_table = MetaWriter::new();
    id_table.push(&ids, codec)?;
    let (id_bytes, starts) = id_table.finish(codec)?;
    let ids_start = out.pos;
    out.write(&id_bytes)?;
    let header = out.pos;
    out.write(&kv_start.to_le_bytes())?;
    let mut counts = Vec::new();
    put32(&mut counts, &[tree.xattr_sets.len() as u32, 0]);
    out.write(&counts)?;
    for start in starts {
        out.write(&(ids_start + start).to_le_bytes())?;
    }
    Ok(header)
}

/// Encodes every inode (in `tree.order`) and every directory listing.
/// Returns the inode table, the directory table and the root's reference.
fn write_inodes(
    tree: &Tree,
    data: &Data,
    block_size: u32,
    codec: &mut Codec,
) -> Result<(Vec<u8>, Vec<u8>, u64)> {
    let mut inodes = MetaWriter::new();
    let mut dirs = MetaWriter::new();
    let mut refs = vec![0u64; tree.nodes.len()];
    let mut kinds = vec![0u16; tree.nodes.len()];
    let no_data = FileData {
        fragment: NONE_U32,
        ..FileData::default()
    };
    let root_parent = tree.order.len() as u32 + 1;
    for &n in &tree.order {
        let node = &tree.nodes[n];
        // A file that changed while it was read: as the read stored saw it.
        let settled = data.settled.get(&n);
        let mtime = settled.map_or(node.mtime, |s| s.stored_mtime());
        let has_xattr = node.xattr != NONE_U32;
        let linked = node.nlink > 1;
        let mut body = Vec::new();
        let kind = match &node.kind {
            Kind::Dir { entries, parent } => {
                let listing: Vec<DirEntry> = entries
                    .iter()
                    .map(|(name, child)| DirEntry {
                        name,
                        inode_ref: refs[*child],
                        number: tree.nodes[*child].number,
                        kind: basic(kinds[*child]),
                    })
                    .collect();
                let bytes = dir_listing(&listing);
                let (block, offset) = dirs.position();
                dirs.push(&bytes, codec)?;
                let size = bytes.len() as u64 + 3;
                let parent = if n == 0 {
                    root_parent
                } else {
                    tree.nodes[*parent].number
                };
                // Directory tables stay far below 4 GiB.
                let block = block as u32;
                if has_xattr || size > 0xffff {
                    put32(&mut body, &[node.nlink, size as u32, block, parent]);
                    body.extend_from_slice(&0u16.to_le_bytes()); // no index
                    body.extend_from_slice(&offset.to_le_bytes());
                    put32(&mut body, &[node.xattr]);
                    inode::EXT_DIR
                } else {
                    put32(&mut body, &[block, node.nlink]);
                    body.extend_from_slice(&(size as u16).to_le_bytes());
                    body.extend_from_slice(&offset.to_le_bytes());
                    put32(&mut body, &[parent]);
                    inode::DIR
                }
            }
            Kind::File { size, .. } => {
                let size = settled.map_or(*size, |s| s.size);
                let f = data.files.get(&n).unwrap_or(&no_data);
                let full_blocks = if f.fragment == NONE_U32 {
                    size.div_ceil(u64::from(block_size))
                } else {
                    size / u64::from(block_size)
                };
                if f.sizes.len() as u64 != full_blocks {
                    return Err(Error::Codec {
                        codec: "writer",
                        what: format!("{} blocks for a file of {size} bytes", f.sizes.len()),
                    });
                }
                let small = size < 1 << 32 && f.start < 1 << 32;
                let kind = if has_xattr || linked || f.sparse > 0 || !small {
                    body.extend_from_slice(&f.start.to_le_bytes());
                    body.extend_from_slice(&size.to_le_bytes());
                    body.extend_from_slice(&f.sparse.to_le_bytes());
                    put32(&mut body, &[node.nlink, f.fragment, f.offset, node.xattr]);
                    inode::EXT_FILE
                } else {
                    put32(
                        &mut body,
                        &[f.start as u32, f.fragment, f.offset, size as u32],
                    );
                    inode::FILE
                };
                put32(&mut body, &f.sizes);
                kind
            }
            Kind::Symlink(target) => {
                // Targets are < 4 KiB (PATH_MAX).
                put32(&mut body, &[node.nlink, target.len() as u32]);
                body.extend_from_slice(target);
                if has_xattr {
                    put32(&mut body, &[node.xattr]);
                    inode::EXT_SYMLINK
                } else {
                    inode::SYMLINK
                }
            }
            Kind::CharDev(rdev) | Kind::BlockDev(rdev) => {
                put32(&mut body, &[node.nlink, *rdev]);
                let basic_kind = if matches!(node.kind, Kind::CharDev(_)) {
                    inode::CHAR_DEV
                } else {
                    inode::BLOCK_DEV
                };
                extended_if(has_xattr || linked, basic_kind, node.xattr, &mut body)
            }
            Kind::Fifo | Kind::Socket => {
                put32(&mut body, &[node.nlink]);
                let basic_kind = if matches!(node.kind, Kind::Fifo) {
                    inode::FIFO
                } else {
                    inode::SOCKET
                };
                extended_if(has_xattr || linked, basic_kind, node.xattr, &mut body)
            }
        };
        let header = InodeHeader {
            kind,
            mode: node.mode,
            uid_idx: node.uid_idx,
            gid_idx: node.gid_idx,
            mtime,
            number: node.number,
        };
        refs[n] = inodes.reference();
        kinds[n] = kind;
        let mut bytes = header.bytes();
        bytes.extend_from_slice(&body);
        inodes.push(&bytes, codec)?;
    }
    let (inode_bytes, _) = inodes.finish(codec)?;
    let (dir_bytes, _) = dirs.finish(codec)?;
    Ok((inode_bytes, dir_bytes, refs[0]))
}

/// Device and ipc inodes: the extended variant adds the xattr index.
fn extended_if(extended: bool, basic_kind: u16, xattr: u32, body: &mut Vec<u8>) -> u16 {
    if extended {
        put32(body, &[xattr]);
        basic_kind + inode::EXT
    } else {
        basic_kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{compressor, flags, Superblock};
    use crate::{Compressor, PackOptions};

    #[test]
    fn tables_follow_each_other_in_the_order_the_kernel_checks() {
        let root = ramstick_testkit::TempDir::new("packunit");
        root.mkdir("src/d");
        std::fs::write(root.join("src/d/f"), vec![7u8; 300_000]).unwrap();
        std::fs::write(root.join("src/g"), vec![7u8; 300_000]).unwrap();
        std::fs::write(root.join("src/zeros"), vec![0u8; 262_144]).unwrap();
        let image = root.join("img");
        let options = PackOptions {
            compressor: Compressor::Zstd(3),
            ..PackOptions::default()
        };
        let stats = pack(&root.join("src"), &image, &options).unwrap();
        let bytes = std::fs::read(&image).unwrap();
        drop(root);
        let sb = Superblock::parse(&bytes).unwrap();
        assert_eq!((stats.entries, stats.inodes), (5, 5));
        assert_eq!(bytes.len() as u64, stats.image_size);
        assert_eq!(stats.image_size % PAD, 0);
        assert!(sb.bytes_used <= stats.image_size && sb.bytes_used + PAD > stats.image_size);
        assert_eq!(sb.compressor, compressor::ZSTD);
        assert_ne!(
            sb.flags & flags::COMPRESSOR_OPTIONS,
            0,
            "level 3 is not the default"
        );
        assert_eq!(
            &bytes[96..98],
            &(4u16 | METADATA_UNCOMPRESSED).to_le_bytes()
        );
        assert_eq!(&bytes[98..102], &3i32.to_le_bytes());
        assert!(sb.inode_table < sb.directory_table);
        assert!(sb.directory_table < sb.fragment_table);
        assert!(sb.fragment_table < sb.id_table);
        // The id index (one u64) ends the image: no xattrs.
        assert_eq!(sb.id_table + 8, sb.bytes_used);
        assert_eq!(sb.xattr_id_table, NONE_U64);
        assert_eq!((sb.inode_count, sb.id_count, sb.fragment_count), (5, 1, 1));
        // d/f and g share their data (duplicates); the zeros are holes: the
        // data is two compressed blocks of sevens and one fragment.
        assert!(
            sb.inode_table < 102 + 2000,
            "data takes {} bytes",
            sb.inode_table
        );
    }
}

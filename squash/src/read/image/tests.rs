//! Tests of the image's table limit.

use super::*;
use crate::format::{compressor, flags};
use ramstick_testkit::TempDir;

fn scratch(tag: &str) -> TempDir {
    TempDir::new(&format!("squash-image-{tag}"))
}

#[test]
fn the_table_limit_is_set() {
    assert!(table_limit() > 0);
}

#[test]
fn tables_past_the_limit_are_a_corrupt_image() {
    let dir = scratch("limit");
    std::fs::create_dir(dir.join("src")).unwrap();
    for i in 0..3000 {
        std::fs::write(dir.join(format!("src/file-with-a-long-name-{i:05}")), b"x").unwrap();
    }
    let image = dir.join("img");
    crate::pack(&dir.join("src"), &image, &crate::PackOptions::default()).unwrap();
    let img = Image::open_limited(&image, 1 << 30).unwrap();
    let tables = (img.inodes.data.len() + img.dirs.data.len()) as u64;
    assert!(tables > 100_000, "{tables} bytes of tables");
    let err = Image::open_limited(&image, tables / 2).err().unwrap();
    assert!(
        matches!(&err, Error::Corrupt { what, .. } if what.contains("memory allowed")),
        "{err}"
    );
}

/// An image of a few hundred KiB whose inode table inflates to 160 MiB
/// (20 000 metadata blocks of compressed zeros) is refused cleanly.
#[test]
fn a_crafted_inflating_table_is_refused() {
    let dir = scratch("inflate");
    let zeros = zstd::bulk::compress(&[0u8; METADATA_SIZE], 19).unwrap();
    let mut b = vec![0u8; SUPERBLOCK_SIZE];
    let inode_table = b.len() as u64;
    for _ in 0..20_000 {
        b.extend_from_slice(&(zeros.len() as u16).to_le_bytes());
        b.extend_from_slice(&zeros);
    }
    let directory_table = b.len() as u64;
    b.extend_from_slice(&(4 | METADATA_UNCOMPRESSED).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let id_block = b.len() as u64;
    b.extend_from_slice(&(4 | METADATA_UNCOMPRESSED).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let id_table = b.len() as u64;
    b.extend_from_slice(&id_block.to_le_bytes());
    let sb = Superblock {
        inode_count: 1,
        block_size: 1 << 17,
        compressor: compressor::ZSTD,
        block_log: 17,
        flags: flags::NO_XATTRS,
        id_count: 1,
        bytes_used: b.len() as u64,
        id_table,
        xattr_id_table: NONE_U64,
        inode_table,
        directory_table,
        fragment_table: NONE_U64,
        export_table: NONE_U64,
        ..Superblock::default()
    };
    b[..SUPERBLOCK_SIZE].copy_from_slice(&sb.to_bytes());
    let image = dir.join("img");
    std::fs::write(&image, &b).unwrap();
    assert!(b.len() < 1 << 20, "{} bytes", b.len());
    let err = Image::open_limited(&image, 64 << 20).err().unwrap();
    assert!(
        matches!(&err, Error::Corrupt { what, .. } if what.contains("inode table")),
        "{err}"
    );
    // The same bytes under a limit they fit in do open (so the crafted
    // image is well formed and only its size was refused).
    assert!(Image::open_limited(&image, 1 << 30).is_ok());
}

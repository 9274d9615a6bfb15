use super::*;
use ramstick_testkit::TempDir;
use std::os::unix::fs::FileExt;
use std::process::Command;

const IDS: Ids = Ids {
    uuid: *b"0123456789abcdef",
    hash_seed: *b"fedcba9876543210",
    now: 1_700_000_000,
};

/// Format a sparse (all-zero) file of `size` bytes; return e2fsck -fn's
/// exit status and output, and dumpe2fs -h's output.
fn format_and_check(size: u64) -> (i32, String, String) {
    let dir = TempDir::new("ext2");
    let image = dir.path().join("upper.img");
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(size).unwrap();
    for (offset, data) in layout(size, "ramstick-upper", &IDS).unwrap() {
        file.write_all_at(&data, offset).unwrap();
    }
    drop(file);
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&image)
        .output()
        .unwrap();
    let dump = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&image)
        .output()
        .unwrap();
    (
        fsck.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&fsck.stdout).to_string() + &String::from_utf8_lossy(&fsck.stderr),
        String::from_utf8_lossy(&dump.stdout).to_string(),
    )
}

fn field<'a>(dump: &'a str, name: &str) -> &'a str {
    dump.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {dump}"))
        .trim()
}

#[test]
fn every_size_formats_to_a_filesystem_e2fsck_finds_clean() {
    // The smallest; one group of 4 MiB; the boot's 512 MiB-ish upper (4 groups, the
    // last short); a last group too small to keep; 25 groups (backups in
    // 0, 1, 3, 5, 7, 9 and 25).
    for size in [
        256 << 10,
        4 << 20,
        500_391_936,
        (1 << 30) + 20 * 4096,
        (25 * 32768 - 1000) * 4096 + 123,
    ] {
        let (status, out, dump) = format_and_check(size);
        assert_eq!(status, 0, "size {size}: e2fsck -fn said:\n{out}");
        assert_eq!(field(&dump, "Filesystem volume name"), "ramstick-upper");
        assert_eq!(field(&dump, "Inode size"), "256");
        assert_eq!(field(&dump, "Reserved block count"), "0");
        assert_eq!(field(&dump, "Filesystem magic number"), "0xEF53");
        let blocks: u64 = field(&dump, "Block count").parse().unwrap();
        let inodes: u64 = field(&dump, "Inode count").parse().unwrap();
        // One inode per 16 KiB, rounded up to whole inode-table blocks.
        let wanted = blocks * 4096 / 16384;
        assert!(
            inodes >= wanted && inodes < wanted + 16 * 25,
            "size {size}: {inodes} inodes for {blocks} blocks"
        );
        assert!(
            field(&dump, "Filesystem features").contains("filetype"),
            "{dump}"
        );
    }
}

#[test]
fn a_short_last_group_is_dropped() {
    let (_, _, dump) = format_and_check((1 << 30) + 20 * 4096);
    assert_eq!(field(&dump, "Block count"), (1u64 << 30 >> 12).to_string());
}

#[test]
fn only_metadata_is_written() {
    let writes = layout(500_391_936, "ramstick-upper", &IDS).unwrap();
    let bytes: usize = writes.iter().map(|w| w.1.len()).sum();
    // 3 superblocks and descriptor tables, 4x2 bitmaps, one inode-table
    // block, 2 directory blocks: not the 7.5 MiB of inode tables.
    assert!(bytes <= 15 * 4096, "{bytes} bytes written");
}

#[test]
fn a_device_too_small_is_an_error() {
    let err = layout(255 << 10, "x", &IDS).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("too small")));
}

#[test]
fn superblock_backups_follow_sparse_super() {
    let with: Vec<u64> = (0..60).filter(|&g| has_super(g)).collect();
    assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
}

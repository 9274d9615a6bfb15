//! Unit tests of the listing, on trees an unprivileged user can make (the
//! privileged test `common/tests/privileged_tree.rs` adds devices, owners
//! and trusted xattrs, and a squashfs mount).

use super::*;
use crate::tree::tree_listing;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use ramstick_testkit::TempDir;
use std::fs::File;
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};

fn set_times(path: &Path, atime: i64, mtime: i64) {
    utimensat(
        AT_FDCWD,
        path,
        &TimeSpec::new(atime, 123_456_789),
        &TimeSpec::new(mtime, 987_654_321),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn set_user_xattr(path: &Path, name: &CStr, value: &[u8]) {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    XTarget::Path(path).set(name, value).unwrap();
}

/// Builds a tree with every kind of entry an unprivileged user can make.
fn build_source(src: &Path) {
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::create_dir(src.join("sticky")).unwrap();
    std::fs::write(src.join("a/f"), b"hello\n").unwrap();
    std::fs::write(src.join("a/big"), ramstick_testkit::noise(3 << 20, false)).unwrap();
    std::fs::hard_link(src.join("a/f"), src.join("a/b/link")).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    symlink("a/f", src.join("rel")).unwrap();
    symlink("nope/nothing", src.join("dangling")).unwrap();
    symlink("/etc/passwd", src.join("abs")).unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    nix::sys::stat::mknod(
        &src.join("sock"),
        SFlag::S_IFSOCK,
        Mode::from_bits_truncate(0o755),
        0,
    )
    .unwrap();
    let sparse = File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    sparse.write_all_at(&[7u8; 4096], 32 << 20).unwrap();
    drop(sparse);
    set_user_xattr(&src.join("a/f"), c"user.comment", b"hi there");
    set_user_xattr(&src.join("a"), c"user.dir", b"\x00\x01binary");
    let chmod = |path: &str, mode| {
        std::fs::set_permissions(src.join(path), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod("empty", 0o4755);
    chmod("sticky", 0o1777);
    chmod("a/b", 0o2750);
    for (i, path) in [
        "a/f", "a/big", "empty", "rel", "dangling", "abs", "fifo", "sock", "sparse", "a/b",
        "sticky", "a", "",
    ]
    .iter()
    .enumerate()
    {
        let i = i as i64;
        set_times(&src.join(path), 1_500_000_000 + i, 1_400_000_000 + i);
    }
}

#[test]
fn tree_listing_describes_every_entry_kind() {
    let tmp = TempDir::new("tree-listing");
    let src = tmp.mkdir("src");
    build_source(&src);

    let want = tree_listing(&src).unwrap();
    assert_eq!(want.len(), 14);
    // The root comes first, with its times.
    assert!(
        want[0].starts_with("/ dir ") && want[0].contains(" 1400000012987654321 "),
        "{}",
        want[0]
    );
    assert!(
        want.iter().any(|l| l == "/a/f hardlink-of:/a/b/link"),
        "{want:#?}"
    );
    assert!(want.iter().any(|l| l.starts_with("/empty file 4755 ")));
    assert!(want.iter().any(|l| l.starts_with("/sticky dir 1777 ")));
    assert!(want.iter().any(|l| l.starts_with("/sock socket 0755 ")));
    assert!(want.iter().any(|l| l.contains(" /etc/passwd ")));
    assert!(want
        .iter()
        .any(|l| l.starts_with("/a dir ") && l.contains(" user.dir=000162696e617279 ")));
    assert!(want
        .iter()
        .any(|l| l.starts_with("/sparse file ") && l.contains(" 67108864 1400000008987654321 ")));
    // Listing twice gives the same lines (reading does not change a tree).
    assert_eq!(tree_listing(&src).unwrap(), want);

    // The listing does see a changed byte (size and mtime kept).
    let file = File::options().write(true).open(src.join("a/big")).unwrap();
    file.write_all_at(b"!", 1 << 20).unwrap();
    set_times(&src.join("a/big"), 1_500_000_001, 1_400_000_001);
    let got = tree_listing(&src).unwrap();
    let differ: Vec<_> = want.iter().zip(&got).filter(|(a, b)| a != b).collect();
    assert_eq!(differ.len(), 1, "{differ:#?}");
    assert!(differ[0].0.starts_with("/a/big file "), "{differ:#?}");
}

#[test]
fn tree_listing_escapes_names() {
    assert_eq!(escape(b"a b\\\n\xff/c"), "a\\x20b\\x5c\\x0a\\xff/c");
    let tmp = TempDir::new("tree-escape");
    std::fs::write(tmp.join("a b"), b"").unwrap();
    let listing = tree_listing(&tmp).unwrap();
    assert!(listing[1].starts_with("/a\\x20b file "), "{listing:#?}");
}

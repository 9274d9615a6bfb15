//! Unit tests of the reader (round trips through our writer, damaged
//! images, names).

use super::*;
use crate::{pack, verify, Exclude, PackOptions};
use nix::sys::stat::mkdirat;
use ramstick_testkit::TempDir;
use std::os::unix::fs::MetadataExt;

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 7) as u8 + b'a'
        })
        .collect()
}

/// Files (fragment tail, several blocks, sparse, empty), a symlink, a
/// hardlink and a nested directory.
fn build(src: &Path) {
    std::fs::create_dir_all(src.join("dir/deeper")).unwrap();
    std::fs::write(src.join("small"), b"small file\n").unwrap();
    std::fs::write(src.join("dir/multi"), bytes(300_000, 7)).unwrap();
    std::fs::write(src.join("dir/deeper/empty"), b"").unwrap();
    let sparse = File::create(src.join("sparse")).unwrap();
    sparse.set_len(4 << 20).unwrap();
    sparse.write_all_at(&bytes(5000, 3), 2 << 20).unwrap();
    std::os::unix::fs::symlink("../small", src.join("dir/link")).unwrap();
    std::fs::hard_link(src.join("small"), src.join("dir/hard")).unwrap();
}

#[test]
fn round_trip_through_our_writer() {
    let t = TempDir::new("roundtrip");
    let (src, image, out) = (t.join("src"), t.join("img"), t.join("out"));
    build(&src);
    pack(&src, &image, &PackOptions::default()).unwrap();
    std::fs::create_dir(&out).unwrap();
    let progress = AtomicU64::new(0);
    let count = |_: &Progress| {
        progress.fetch_add(1, Ordering::Relaxed);
    };
    let options = UnpackOptions {
        threads: 3,
        progress: Some(&count),
    };
    let stats = unpack(&image, &out, &options).unwrap();
    assert_eq!(stats.entries, 8);
    // The sparse file's one data block is written whole.
    assert_eq!(stats.bytes, 11 + 300_000 + (128 << 10));
    assert!(progress.load(Ordering::Relaxed) >= 1);
    for f in [
        "small",
        "dir/multi",
        "dir/deeper/empty",
        "sparse",
        "dir/hard",
    ] {
        assert_eq!(
            std::fs::read(src.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f}"
        );
    }
    let sparse = std::fs::metadata(out.join("sparse")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "holes were written");
    let (a, b) = (
        std::fs::metadata(out.join("small")).unwrap(),
        std::fs::metadata(out.join("dir/hard")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    let link = std::fs::read_link(out.join("dir/link")).unwrap();
    assert_eq!(link, Path::new("../small"));
    assert_eq!(verify(&image, &out, &Exclude::none()).unwrap(), vec![]);
    assert_eq!(verify(&image, &src, &Exclude::none()).unwrap(), vec![]);
}

#[test]
fn damaged_images_fail_without_writing_outside() {
    let t = TempDir::new("damaged");
    let (src, image) = (t.join("src"), t.join("img"));
    build(&src);
    std::fs::remove_file(src.join("sparse")).unwrap();
    pack(&src, &image, &PackOptions::default()).unwrap();
    let good = std::fs::read(&image).unwrap();
    let used = crate::format::Superblock::parse(&good).unwrap().bytes_used as usize;
    let bad = t.join("bad");
    let sandbox = t.join("sandbox");
    let try_unpack = |bytes: &[u8]| {
        std::fs::write(&bad, bytes).unwrap();
        let target = sandbox.join("target");
        std::fs::create_dir_all(&target).unwrap();
        let result = unpack(&bad, &target, &UnpackOptions::default());
        let names: Vec<_> = std::fs::read_dir(&sandbox).unwrap().collect();
        assert_eq!(names.len(), 1, "wrote outside the target");
        std::fs::remove_dir_all(&sandbox).unwrap();
        result
    };
    for cut in (0..used).step_by(used / 50 + 1) {
        assert!(try_unpack(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut refused = 0;
    for i in 0..300u64 {
        let mut b = good.clone();
        let at = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7) as usize % used;
        b[at] ^= 1 << (i % 8);
        refused += usize::from(try_unpack(&b).is_err());
    }
    assert!(refused > 0);
}

#[test]
fn names_must_stay_in_their_directory() {
    // The rule itself is common's `is_plain_name` (tested there).
    let err = check_name(b"../x").unwrap_err();
    assert!(err.contains("not a plain file name"), "{err}");
    assert!(check_name(b"x").is_ok());
}

/// 1 TiB with 4 KiB of data: pack reads one block (holes found with
/// SEEK_DATA), the image stores sparse blocks, verify compares without
/// reading the holes, unpack writes one block and leaves the rest holes.
#[test]
fn a_terabyte_sparse_file_stays_sparse() {
    let t = TempDir::new("sparse");
    let (src, image, out) = (t.join("src"), t.join("img"), t.join("out"));
    std::fs::create_dir(&src).unwrap();
    let f = File::create(src.join("tera")).unwrap();
    f.set_len(1 << 40).unwrap();
    let data = bytes(4096, 9);
    f.write_all_at(&data, 512 << 30).unwrap();
    drop(f);
    let options = PackOptions {
        block_size: 1 << 20,
        ..PackOptions::default()
    };
    let stats = pack(&src, &image, &options).unwrap();
    assert!(
        stats.image_size < 1 << 20,
        "image of {} bytes",
        stats.image_size
    );
    assert_eq!(verify(&image, &src, &Exclude::none()).unwrap(), vec![]);
    std::fs::create_dir(&out).unwrap();
    let unpacked = unpack(&image, &out, &UnpackOptions::default()).unwrap();
    assert_eq!(unpacked.bytes, 1 << 20, "one block written");
    let meta = std::fs::metadata(out.join("tera")).unwrap();
    assert_eq!(meta.len(), 1 << 40);
    assert!(meta.blocks() * 512 <= 2 << 20, "{} blocks", meta.blocks());
    let mut back = vec![0u8; 4096];
    File::open(out.join("tera"))
        .unwrap()
        .read_exact_at(&mut back, 512 << 30)
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(verify(&image, &out, &Exclude::none()).unwrap(), vec![]);
    // Data where the image has a hole is found, not skipped.
    let f = File::options().write(true).open(out.join("tera")).unwrap();
    f.write_all_at(b"x", 100 << 30).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    let diffs = verify(&image, &out, &Exclude::none()).unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].what, "content differs");
}

/// Creates `levels` nested directories of `name_len`-byte names below
/// `root` (with `*at` calls: the path outgrows PATH_MAX) and a file at the
/// bottom; returns the deepest directory's name.
fn nest(root: &Path, levels: usize, name_len: usize) -> String {
    let mut fd = open_dir(AT_FDCWD, root, root).unwrap();
    let mut name = String::new();
    for i in 0..levels {
        name = format!("{i:0>name_len$}");
        mkdirat(&fd, name.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
        fd = open_dir(&fd, name.as_str(), root).unwrap();
    }
    let flags = OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let file = openat(&fd, "bottom", flags, Mode::from_bits_truncate(0o644)).unwrap();
    File::from(file)
        .write_all_at(b"at the bottom\n", 0)
        .unwrap();
    name
}

#[test]
fn a_tree_deeper_than_path_max_round_trips() {
    let t = TempDir::new("deep");
    let (src, image, out) = (t.join("src"), t.join("img"), t.join("out"));
    std::fs::create_dir(&src).unwrap();
    nest(&src, 200, 30);
    let stats = pack(&src, &image, &PackOptions::default()).unwrap();
    assert_eq!(stats.entries, 202, "root, 200 directories, the file");
    std::fs::create_dir(&out).unwrap();
    unpack(&image, &out, &UnpackOptions::default()).unwrap();
    assert_eq!(verify(&image, &src, &Exclude::none()).unwrap(), vec![]);
    assert_eq!(verify(&image, &out, &Exclude::none()).unwrap(), vec![]);
}

#[test]
fn a_tree_deeper_than_the_reader_allows_is_refused_before_writing() {
    let t = TempDir::new("toodeep");
    let ok = t.join("ok");
    std::fs::create_dir(&ok).unwrap();
    // The reader takes 255 nested directories (listings up to depth 256).
    nest(&ok, MAX_DEPTH - 1, 3);
    let ok_image = t.join("ok.img");
    pack(&ok, &ok_image, &PackOptions::default()).unwrap();
    std::fs::create_dir(t.join("ok.out")).unwrap();
    unpack(&ok_image, &t.join("ok.out"), &UnpackOptions::default()).unwrap();
    let deep = t.join("deep");
    std::fs::create_dir(&deep).unwrap();
    let last = nest(&deep, MAX_DEPTH, 3);
    let image = t.join("deep.img");
    let err = pack(&deep, &image, &PackOptions::default()).unwrap_err();
    match &err {
        Error::Unpackable { path, what } => {
            assert!(path.ends_with(&last), "{}", path.display());
            assert!(path.starts_with(&deep), "{}", path.display());
            assert!(what.contains("the reader's limit"), "{what}");
        }
        other => panic!("{other}"),
    }
    assert!(!image.exists(), "the image was written");
}

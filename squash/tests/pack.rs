//! Privileged tests of `ramstick_squash::pack`: trees holding every kind of
//! overlayfs entry are packed, and the images are checked by the Linux
//! kernel (loop mount) and by `unsquashfs` against the source, entry by
//! entry (`tree_listing`: types, modes, owners, mtimes, xattrs, targets,
//! devices, hardlinks, content hashes) and xattr by xattr (`getfattr`).
//!
//! Needs root (every image is loop-mounted; the harness says why each case
//! is skipped otherwise); runs in a private mount namespace on a scratch
//! tmpfs (testkit's harness). Sources live on a loop-mounted ext4, which
//! holds `user.*` xattrs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ramstick_common::tree::tree_listing;
use ramstick_squash::{
    pack, unpack, verify, Compressor, Exclude, PackOptions, PackStats, UnpackOptions,
};
use ramstick_testkit::{
    build_every_kind, build_full_tree, chmod, ensure, ensure_same, getfattr, lchown, main_with,
    run, set_mtimes, Case, CaseResult, Ctx, Mounted, Outcome, Root, Tool, GETFATTR, MKFS_EXT4,
    MKSQUASHFS, UNSQUASHFS,
};

/// Images are loop-mounted; the trees of every kind hold devices, foreign
/// owners and `trusted.*` xattrs.
const EVERY_KIND: &[Root] = &[
    Root::LoopDevices,
    Root::DeviceNodes,
    Root::ForeignOwners,
    Root::TrustedXattrs,
];
/// Sources on ext4 checked against unsquashfs and getfattr.
const ON_EXT4: &[Tool] = &[MKFS_EXT4, UNSQUASHFS, GETFATTR];

fn main() -> ExitCode {
    main_with(
        "squash_pack",
        &[
            Case::new("full_tree", full_tree)
                .root(EVERY_KIND)
                .tools(&[MKFS_EXT4, UNSQUASHFS, GETFATTR, MKSQUASHFS]),
            Case::new(
                "round_trip_through_the_reader",
                round_trip_through_the_reader,
            )
            .root(EVERY_KIND)
            .tools(ON_EXT4),
            Case::new("every_compressor", every_compressor)
                .root(EVERY_KIND)
                .tools(ON_EXT4),
            Case::new("exclusion", exclusion)
                .root(EVERY_KIND)
                .tools(ON_EXT4),
            Case::new("root_only", root_only)
                .root(&[Root::LoopDevices, Root::ForeignOwners])
                .tools(&[UNSQUASHFS]),
            Case::new("empty_dirs_only", empty_dirs_only)
                .root(&[Root::LoopDevices])
                .tools(&[UNSQUASHFS]),
        ],
    )
}

/// Mounts a fresh ext4 of `size` bytes at `dir/ext4` with an empty `src`
/// directory in it (the ext4 root holds lost+found).
fn ext4_source(dir: &Path, size: u64) -> Result<(Mounted, PathBuf), String> {
    let mounted = Mounted::ext4(&dir.join("ext4.img"), size, &dir.join("ext4"))?;
    let src = dir.join("ext4/src");
    std::fs::create_dir(&src).ctx("mkdir src")?;
    Ok((mounted, src))
}

/// Packs `src` into `dir/<name>.squashfs` with `options`.
fn pack_into(
    src: &Path,
    dir: &Path,
    name: &str,
    options: &PackOptions,
) -> Result<(PathBuf, PackStats), String> {
    let image = dir.join(format!("{name}.squashfs"));
    let started = Instant::now();
    let stats = pack(src, &image, options).ctx(format!("pack {name}"))?;
    println!(
        "note: {name}: {stats:?} in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let size = std::fs::metadata(&image).ctx("stat image")?.len();
    ensure(
        size == stats.image_size && size % 4096 == 0,
        format!("image is {size} bytes, stats say {}", stats.image_size),
    )?;
    Ok((image, stats))
}

/// Checks `image` against the expected listing (and xattrs): kernel mount
/// and `unsquashfs`. Returns the mount guard (at `dir/<name>.mnt`).
fn check_image(
    image: &Path,
    dir: &Path,
    name: &str,
    want: &[String],
    want_attrs: Option<&[String]>,
) -> Result<Mounted, String> {
    let mnt = dir.join(format!("{name}.mnt"));
    std::fs::create_dir(&mnt).ctx("mkdir mnt")?;
    let mounted = Mounted::image(image, "squashfs", &mnt, true)?;
    let got = tree_listing(&mnt).ctx("listing of the mount")?;
    ensure_same(&format!("{name}: kernel mount"), want, &got)?;
    if let Some(want_attrs) = want_attrs {
        ensure_same(
            &format!("{name}: xattrs in the mount"),
            want_attrs,
            &getfattr(&mnt)?,
        )?;
    }
    let out = dir.join(format!("{name}.unsquashfs"));
    run(Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&out)
        .arg(image))?;
    let got = tree_listing(&out).ctx("listing of unsquashfs' output")?;
    ensure_same(&format!("{name}: unsquashfs"), want, &got)?;
    if let Some(want_attrs) = want_attrs {
        let got = getfattr(&out)?;
        ensure_same(&format!("{name}: xattrs by unsquashfs"), want_attrs, &got)?;
    }
    std::fs::remove_dir_all(&out).ctx("remove unsquashfs output")?;
    Ok(mounted)
}

/// Inode number and link count of `path`.
fn ino(path: &Path) -> Result<(u64, u64), String> {
    let meta = std::fs::symlink_metadata(path).ctx(format!("stat {}", path.display()))?;
    Ok((meta.ino(), meta.nlink()))
}

/// (a, b, e) The acceptance tree with a 200 MB file.
fn full_tree(dir: &Path) -> CaseResult {
    let (_ext4, src) = ext4_source(dir, 2 << 30)?;
    build_full_tree(&src, true)?;
    let want = tree_listing(&src).ctx("listing of source")?;
    let want_attrs = getfattr(&src)?;
    for name in [
        "trusted.overlay.opaque",
        "security.capability",
        "user.origin",
    ] {
        ensure(
            want_attrs.iter().any(|l| l.contains(name)),
            format!("source lacks {name}"),
        )?;
    }
    let reports = AtomicU64::new(0);
    let last = std::sync::Mutex::new(None);
    let progress = |p: &ramstick_squash::Progress| {
        reports.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = last.lock() {
            *last = Some(*p);
        }
    };
    let options = PackOptions {
        progress: Some(&progress),
        ..PackOptions::default()
    };
    let (image, stats) = pack_into(&src, dir, "full", &options)?;
    ensure(
        stats.entries == want.len() as u64,
        format!(
            "{} entries packed, listing has {}",
            stats.entries,
            want.len()
        ),
    )?;
    let last = last.lock().ctx("progress lock")?.take();
    let last = last.ok_or("progress never reported")?;
    ensure(
        last.entries == stats.entries && last.total_bytes == Some(last.bytes),
        format!("last progress {last:?}"),
    )?;
    ensure(
        last.bytes > (200 << 20) + (1 << 30),
        format!("total bytes {last:?}"),
    )?;
    let mnt = dir.join("full.mnt");
    let _mounted = check_image(&image, dir, "full", &want, Some(&want_attrs))?;
    // (e) Hardlinks are one inode with the right link count.
    let (a, b, c) = (
        ino(&mnt.join("many/three"))?,
        ino(&mnt.join("many/a/three2"))?,
        ino(&mnt.join("sub/three3"))?,
    );
    ensure(
        a == b && b == c && a.1 == 3,
        format!("three names: {a:?} {b:?} {c:?}"),
    )?;
    let (h1, h2) = (ino(&mnt.join("hl1"))?, ino(&mnt.join("sub/hl2"))?);
    ensure(h1 == h2 && h1.1 == 2, format!("hl1/hl2: {h1:?} {h2:?}"))?;
    // Directories link 2 + subdirectories, as on the source.
    for d in ["", "many", "sub", "emptydir"] {
        let (got, src_n) = (ino(&mnt.join(d))?.1, ino(&src.join(d))?.1);
        ensure(got == src_n, format!("/{d}: nlink {got}, source {src_n}"))?;
    }
    // Holes, duplicates and fragments make it about as small as
    // mksquashfs' image (zstd 15 as well).
    let theirs = dir.join("mksquashfs.squashfs");
    run(Command::new("mksquashfs").arg(&src).arg(&theirs).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-comp",
        "zstd",
    ]))?;
    let ours = stats.image_size as f64;
    let theirs = std::fs::metadata(&theirs).ctx("stat")?.len() as f64;
    println!("note: image size {:.4} × mksquashfs'", ours / theirs);
    ensure(
        ours <= theirs * 1.03,
        format!("image of {ours} bytes, mksquashfs' {theirs}"),
    )?;
    Ok(Outcome::Passed)
}

/// Our image read back by our reader: `unpack` recreates the source
/// exactly (on ext4, for `user.*` xattrs) and `verify` finds no difference.
fn round_trip_through_the_reader(dir: &Path) -> CaseResult {
    let (_ext4, src) = ext4_source(dir, 512 << 20)?;
    build_full_tree(&src, false)?;
    let want = tree_listing(&src).ctx("listing of source")?;
    let want_attrs = getfattr(&src)?;
    let (image, _) = pack_into(&src, dir, "round", &PackOptions::default())?;
    let differences = verify(&image, &src, &Exclude::none()).ctx("verify")?;
    ensure(
        differences.is_empty(),
        format!("verify found differences: {differences:#?}"),
    )?;
    let out = dir.join("ext4/out");
    std::fs::create_dir(&out).ctx("mkdir out")?;
    unpack(&image, &out, &UnpackOptions::default()).ctx("unpack")?;
    let got = tree_listing(&out).ctx("listing of the unpacked tree")?;
    ensure_same("unpacked tree", &want, &got)?;
    ensure_same("unpacked xattrs", &want_attrs, &getfattr(&out)?)?;
    Ok(Outcome::Passed)
}

/// (c) Each compressor, at default and non-default levels.
fn every_compressor(dir: &Path) -> CaseResult {
    let (_ext4, src) = ext4_source(dir, 256 << 20)?;
    build_every_kind(&src)?;
    let want = tree_listing(&src).ctx("listing of source")?;
    let want_attrs = getfattr(&src)?;
    let compressors = [
        ("zstd15", Compressor::Zstd(15)),
        ("zstd3", Compressor::Zstd(3)),
        ("gzip9", Compressor::Gzip(9)),
        ("gzip4", Compressor::Gzip(4)),
        ("xz", Compressor::Xz),
        ("lz4", Compressor::Lz4),
    ];
    for (name, compressor) in compressors {
        let options = PackOptions {
            compressor,
            block_size: 64 << 10,
            threads: 3,
            ..PackOptions::default()
        };
        let (image, _) = pack_into(&src, dir, name, &options)?;
        check_image(&image, dir, name, &want, Some(&want_attrs))?;
    }
    Ok(Outcome::Passed)
}

/// (d) Excluded entries (and everything below an excluded dir) are left
/// out; the rest is intact.
fn exclusion(dir: &Path) -> CaseResult {
    let (_ext4, src) = ext4_source(dir, 256 << 20)?;
    build_every_kind(&src)?;
    let patterns = ["/sub", "/opaque/whiteout", "big", "/sticky/*"];
    let exclude = Exclude::new(patterns).ctx("exclude")?;
    let dropped = |line: &String| {
        let path = line.split(' ').next().unwrap_or("");
        path == "/sub" || path.starts_with("/sub/") || path == "/opaque/whiteout" || path == "/big"
    };
    let all = tree_listing(&src).ctx("listing of source")?;
    let want: Vec<String> = all.iter().filter(|l| !dropped(l)).cloned().collect();
    ensure(
        all.len() == want.len() + 4,
        format!("{} of {} lines dropped", all.len() - want.len(), all.len()),
    )?;
    let options = PackOptions {
        exclude: &exclude,
        ..PackOptions::default()
    };
    let (image, stats) = pack_into(&src, dir, "excluded", &options)?;
    ensure(
        stats.entries == want.len() as u64,
        format!("{} entries packed, want {}", stats.entries, want.len()),
    )?;
    let mnt = dir.join("excluded.mnt");
    let _mounted = check_image(&image, dir, "excluded", &want, None)?;
    // hl1 lost its second name.
    let hl1 = ino(&mnt.join("hl1"))?;
    ensure(hl1.1 == 1, format!("hl1 nlink {}", hl1.1))?;
    Ok(Outcome::Passed)
}

/// (f) A tree that is only its root directory (odd owner, mode, mtime).
fn root_only(dir: &Path) -> CaseResult {
    let src = dir.join("root");
    std::fs::create_dir(&src).ctx("mkdir root")?;
    lchown(&src, 1000, 1000)?;
    chmod(&src, 0o1750)?;
    set_mtimes(&src)?;
    let want = tree_listing(&src).ctx("listing of source")?;
    let (image, stats) = pack_into(&src, dir, "root", &PackOptions::default())?;
    ensure(
        stats.entries == 1 && stats.inodes == 1,
        format!("{stats:?}"),
    )?;
    check_image(&image, dir, "root", &want, None)?;
    Ok(Outcome::Passed)
}

/// (f) Nested empty directories only: no data, no fragments.
fn empty_dirs_only(dir: &Path) -> CaseResult {
    let src = dir.join("dirs");
    for d in ["a/b/c", "a/d", "e"] {
        std::fs::create_dir_all(src.join(d)).ctx(format!("mkdir {d}"))?;
    }
    chmod(&src.join("a/d"), 0o2711)?;
    set_mtimes(&src)?;
    let want = tree_listing(&src).ctx("listing of source")?;
    let (image, stats) = pack_into(&src, dir, "dirs", &PackOptions::default())?;
    ensure(stats.inodes == 6, format!("{stats:?}"))?;
    let mnt = dir.join("dirs.mnt");
    let _mounted = check_image(&image, dir, "dirs", &want, None)?;
    let root = ino(&mnt)?;
    ensure(root.1 == 4, format!("root nlink {}", root.1))?;
    Ok(Outcome::Passed)
}

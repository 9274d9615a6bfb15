//! The save sequence on real files, as root in a private mount namespace
//! (testkit's harness): real packing, the kernel test mount over a loop
//! device, the rotation, the unchanged skip, the fallback case, a stale tmp
//! image, a clean boot, and full sticks (small tmpfs mounts as /persist).
//! Skipped (with the reason printed) when not root.

use nix::sys::stat::SFlag;
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::cmdline::BootType;
use ramstick_saver::save::{save, Outcome};
use ramstick_saver::session::{changes, Paths};
use ramstick_squash::Exclude;
use ramstick_testkit::{ensure, lsetxattr, main_with, make_node, noise, CaseResult, Ctx, Mounted};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    main_with(
        "privileged_save",
        &[
            ("sessions", sessions),
            ("full-stick", full_stick),
            ("no-room", no_room),
        ],
    )
}

/// VFS_CAP_REVISION_2 + effective, CAP_NET_RAW permitted.
const CAP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// user::rw-, group::r--, group 4: r--, mask::r--, other::---.
const ACL: [u8; 44] = [
    2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 8, 0, 4, 0, 4, 0,
    0, 0, 16, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255, 255,
];

/// Paths under `root`, with an upper holding every overlay kind and an
/// exclusion list, as after a first boot (nothing on the stick).
fn scratch(root: &Path) -> Result<Paths, String> {
    let paths = Paths {
        persist: root.join("persist"),
        upper_mount: root.join("upper"),
        upperdir: root.join("upper/upper"),
        exclude: root.join("exclude"),
        boot_json: root.join("boot.json"),
        state: root.join("state"),
    };
    let u = &paths.upperdir;
    for d in ["etc/opaque", "tmp", "bin", "root"] {
        fs::create_dir_all(u.join(d)).ctx(d)?;
    }
    fs::create_dir_all(&paths.persist).ctx("persist")?;
    fs::write(u.join("etc/hostname"), "one\n").ctx("hostname")?;
    fs::write(u.join("root/a"), "linked\n").ctx("root/a")?;
    fs::hard_link(u.join("root/a"), u.join("root/b")).ctx("hardlink")?;
    fs::write(u.join("tmp/junk"), "not saved\n").ctx("tmp/junk")?;
    make_node(&u.join("bin/rev"), SFlag::S_IFCHR, 0, (0, 0))?;
    lsetxattr(&u.join("etc/opaque"), "trusted.overlay.opaque", b"y")?;
    lsetxattr(&u.join("root/a"), "security.capability", &CAP)?;
    // A POSIX ACL (squashfs cannot store it: never a difference).
    lsetxattr(&u.join("etc/hostname"), "system.posix_acl_access", &ACL)?;
    fs::write(&paths.exclude, "# test\n/tmp/*\n").ctx("exclude")?;
    boot_json(&paths, BootType::Default, BootType::Clean, None)?;
    Ok(paths)
}

fn boot_json(
    paths: &Paths,
    asked: BootType,
    used: BootType,
    image: Option<&str>,
) -> Result<(), String> {
    let info = BootInfo {
        asked,
        used,
        image: image.map(String::from),
        image_size: None,
        reasons: vec![],
        timings_ms: BTreeMap::new(),
        kernel: "test".into(),
        upper: "tmpfs".into(),
        problems: vec![],
    };
    fs::write(&paths.boot_json, info.to_json()).ctx("boot.json")
}

fn image(paths: &Paths, name: &str) -> PathBuf {
    paths.persist.join(name)
}

/// A save that must succeed.
fn saved(paths: &Paths) -> Result<Outcome, String> {
    save(paths, false).map_err(|e| format!("save: {e:#}"))
}

/// The number of differences between an image and the upper.
fn diffs(paths: &Paths, name: &str, exclude: &str) -> Result<usize, String> {
    let ex = Exclude::parse(exclude).ctx("exclude")?;
    Ok(changes(paths, name, &ex).ctx(name)?.len())
}

fn names(paths: &Paths) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for e in fs::read_dir(&paths.persist).ctx("list persist")? {
        v.push(
            e.ctx("list persist")?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    v.sort();
    Ok(v)
}

fn ino(paths: &Paths, name: &str) -> Result<u64, String> {
    Ok(fs::metadata(image(paths, name)).ctx(name)?.ino())
}

fn sessions(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let hostname = paths.upperdir.join("etc/hostname");
    // First boot (no image): saved, /tmp contents left out.
    let first = saved(paths)?;
    ensure(
        matches!(first, Outcome::Saved(n) if n > 0),
        format!("{first:?}"),
    )?;
    ensure(names(paths)? == ["upperfs.squashfs"], "first save")?;
    ensure(
        diffs(paths, "upperfs.squashfs", "/tmp/*")? == 0,
        "image != upper",
    )?;
    ensure(
        diffs(paths, "upperfs.squashfs", "")? == 1,
        "/tmp/junk was saved",
    )?;

    // Saved already and unchanged: nothing written.
    let first_ino = ino(paths, "upperfs.squashfs")?;
    ensure(saved(paths)? == Outcome::Unchanged, "unchanged but saved")?;
    ensure(
        ino(paths, "upperfs.squashfs")? == first_ino,
        "image rewritten",
    )?;

    // A change: rotated.
    fs::write(&hostname, "two\n").ctx("hostname")?;
    ensure(matches!(saved(paths)?, Outcome::Saved(_)), "not saved")?;
    ensure(
        names(paths)? == ["upperfs-backup.squashfs", "upperfs.squashfs"],
        format!("{:?}", names(paths)?),
    )?;
    ensure(
        ino(paths, "upperfs-backup.squashfs")? == first_ino,
        "backup is not the previous",
    )?;
    ensure(
        diffs(paths, "upperfs.squashfs", "/tmp/*")? == 0,
        "image != upper",
    )?;
    ensure(
        diffs(paths, "upperfs-backup.squashfs", "/tmp/*")? > 0,
        "backup == upper",
    )?;

    // The next boot fell back (default unreadable, backup used): the backup
    // stays, the corrupt image is kept aside.
    fs::remove_file(paths.saved_marker()).ctx("marker")?;
    boot_json(
        paths,
        BootType::Default,
        BootType::Backup,
        Some("upperfs-backup.squashfs"),
    )?;
    fs::write(image(paths, "upperfs.squashfs"), "garbage").ctx("corrupt")?;
    let backup_ino = ino(paths, "upperfs-backup.squashfs")?;
    fs::write(&hostname, "three\n").ctx("hostname")?;
    ensure(matches!(saved(paths)?, Outcome::Saved(_)), "not saved")?;
    let n = names(paths)?;
    let aside = n.iter().find(|x| x.starts_with("upperfs-corrupt-"));
    let aside = aside.ok_or(format!("no corrupt image kept: {n:?}"))?;
    ensure(
        fs::read(image(paths, aside)).ctx(aside)? == b"garbage",
        "aside content",
    )?;
    ensure(
        ino(paths, "upperfs-backup.squashfs")? == backup_ino,
        "good backup replaced",
    )?;
    ensure(
        diffs(paths, "upperfs.squashfs", "/tmp/*")? == 0,
        "image != upper",
    )?;

    // A stale tmp image is removed even when nothing else is written.
    fs::write(image(paths, "upperfs-tmp.squashfs"), "partial").ctx("tmp")?;
    ensure(saved(paths)? == Outcome::Unchanged, "unchanged but saved")?;
    ensure(
        !image(paths, "upperfs-tmp.squashfs").exists(),
        "stale tmp kept",
    )?;

    // A clean boot writes nothing, even with changes.
    fs::remove_file(paths.saved_marker()).ctx("marker")?;
    boot_json(paths, BootType::Clean, BootType::Clean, None)?;
    fs::write(&hostname, "four\n").ctx("hostname")?;
    let before = names(paths)?;
    ensure(saved(paths)? == Outcome::CleanBoot, "clean boot saved")?;
    ensure(names(paths)? == before, "clean boot changed /persist")?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// A first save, then a tmpfs of `size` as /persist holding that image,
/// and 3 MiB that do not compress in the upper. Returns the image's bytes.
fn small_persist(paths: &Paths, size: &str) -> Result<(Mounted, Vec<u8>), String> {
    ensure(matches!(saved(paths)?, Outcome::Saved(_)), "first save")?;
    let first = fs::read(image(paths, "upperfs.squashfs")).ctx("image")?;
    let mounted = Mounted::tmpfs_sized(&paths.persist, size)?;
    fs::write(image(paths, "upperfs.squashfs"), &first).ctx("image")?;
    fs::write(paths.upperdir.join("root/big"), noise(3 << 20, false)).ctx("big")?;
    Ok((mounted, first))
}

/// The save fails with `message`, and /persist holds only `first`, intact.
fn refused(paths: &Paths, first: &[u8], message: &str) -> CaseResult {
    let err = match save(paths, false) {
        Ok(o) => return Err(format!("saved on a full stick: {o:?}")),
        Err(e) => format!("{e:#}"),
    };
    ensure(err.contains(message), format!("unclear error: {err}"))?;
    ensure(
        names(paths)? == ["upperfs.squashfs"],
        format!("{:?}", names(paths)?),
    )?;
    ensure(
        fs::read(image(paths, "upperfs.squashfs")).ctx("image")? == first,
        "image changed",
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// Room above the floor: tried, the stick fills up, nothing is left behind.
fn full_stick(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let (_mounted, first) = small_persist(paths, "1m")?;
    refused(paths, &first, "the stick is full")
}

/// Room below the floor: refused before writing, with the numbers.
fn no_room(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let (_mounted, first) = small_persist(paths, "200k")?;
    refused(paths, &first, "is free")
}

//! Privileged tests of `ramstick_common::tree` on real mounts: the listing
//! of a tree holding every kind of entry an overlay upper can hold is
//! checked against `getfattr` and against the same tree in a loop-mounted
//! squashfs image; `remove_contents` is run around mount points; listing a
//! damaged image fails cleanly (the saver lists every image it writes).
//!
//! Everything happens in a private mount namespace on a scratch tmpfs
//! (testkit's harness); loop devices are detached and mounts unmounted by
//! guards even when a case fails. Not as root, only the case that needs no
//! more than a user namespace runs; the others say that they are skipped.

use std::fs::File;
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::stat::SFlag;
use ramstick_common::tree::{remove_contents, tree_listing, TreeError};
use ramstick_testkit::{
    build_every_kind, ensure, ensure_same, getfattr, main_with, make_node, noise, run, Case,
    CaseResult, Ctx, Mounted, Outcome, Root, GETFATTR, MKSQUASHFS,
};

fn main() -> ExitCode {
    use Root::{DeviceNodes, ForeignOwners, LoopDevices, TrustedXattrs};
    main_with(
        "privileged_tree",
        &[
            Case::new(
                "listing_of_every_entry_kind_and_its_squashfs",
                listing_of_every_entry_kind_and_its_squashfs,
            )
            .root(&[DeviceNodes, ForeignOwners, TrustedXattrs, LoopDevices])
            .tools(&[MKSQUASHFS, GETFATTR]),
            Case::new("remove_contents_keeps_mounts", remove_contents_keeps_mounts),
            Case::new(
                "truncated_squashfs_fails_cleanly",
                truncated_squashfs_fails_cleanly,
            )
            .root(&[LoopDevices])
            .tools(&[MKSQUASHFS]),
            Case::new(
                "corrupted_squashfs_fails_cleanly",
                corrupted_squashfs_fails_cleanly,
            )
            .root(&[LoopDevices])
            .tools(&[MKSQUASHFS]),
        ],
    )
}

/// The xattrs of a listing as `getfattr` shows them, sorted: `path:
/// name=0xhex` with the path relative to the root (`.` for the root) and
/// a hardlink's xattrs under each of its names.
fn listing_xattrs(listing: &[String]) -> Result<Vec<String>, String> {
    let mut by_path = std::collections::HashMap::new();
    let mut lines = Vec::new();
    for row in listing {
        let fields: Vec<&str> = row.split(' ').collect();
        let xattrs = match fields.as_slice() {
            [_, link] if link.starts_with("hardlink-of:") => {
                let first = &link["hardlink-of:".len()..];
                by_path
                    .get(first)
                    .copied()
                    .ok_or_else(|| format!("no row of {first}"))?
            }
            [path, _, _, _, _, _, _, _, xattrs, _] => {
                by_path.insert(*path, *xattrs);
                *xattrs
            }
            _ => return Err(format!("not a listing row: {row}")),
        };
        let path = match &fields[0][1..] {
            "" => ".",
            rel => rel,
        };
        for pair in xattrs.split(',').filter(|p| *p != "-") {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("not an xattr: {pair}"))?;
            lines.push(format!("{path}: {name}=0x{value}"));
        }
    }
    lines.sort();
    Ok(lines)
}

/// Case 1: a tree of every entry kind: its listing agrees with getfattr,
/// and the squashfs image mksquashfs makes of it lists the same.
fn listing_of_every_entry_kind_and_its_squashfs(dir: &Path) -> CaseResult {
    let src = dir.join("src");
    std::fs::create_dir(&src).ctx("mkdir src")?;
    build_every_kind(&src)?;
    let want = tree_listing(&src).ctx("listing of source")?;
    ensure(
        want.len() == 21,
        format!("source has {} entries", want.len()),
    )?;
    ensure(
        want.iter().any(|l| l == "/sub/hl2 hardlink-of:/hl1"),
        "hardlink missing in listing",
    )?;
    let attrs = getfattr(&src)?;
    ensure(
        attrs.iter().any(|l| l.contains("security.capability=0x")),
        format!("getfattr shows no capability: {attrs:#?}"),
    )?;
    ensure_same(
        "xattrs (getfattr, listing)",
        &attrs,
        &listing_xattrs(&want)?,
    )?;

    let image = dir.join("upper.squashfs");
    run(Command::new("mksquashfs")
        .arg(&src)
        .arg(&image)
        .args(["-noappend", "-quiet"]))?;
    let squash = dir.join("squash");
    std::fs::create_dir(&squash).ctx("mkdir squash")?;
    let _squash_mount = Mounted::image(&image, "squashfs", &squash, true)?;
    let in_image = tree_listing(&squash).ctx("listing of squashfs")?;
    ensure_same("listing (source, squashfs)", &want, &in_image)?;
    Ok(Outcome::Passed)
}

/// Case 2: remove_contents leaves mount points (and what leads to them).
fn remove_contents_keeps_mounts(dir: &Path) -> CaseResult {
    let (wipe, outside) = (dir.join("wipe"), dir.join("outside"));
    for d in [
        &outside,
        &wipe.join("a/b/mnt"),
        &wipe.join("m2"),
        &wipe.join("c/d"),
    ] {
        std::fs::create_dir_all(d).ctx(format!("mkdir {}", d.display()))?;
    }
    std::fs::write(outside.join("precious"), b"keep").ctx("write precious")?;
    let deep = Mounted::tmpfs(&wipe.join("a/b/mnt"))?;
    let top = Mounted::tmpfs(&wipe.join("m2"))?;
    std::fs::write(wipe.join("a/b/mnt/keep"), b"on another fs").ctx("write keep")?;
    std::fs::write(wipe.join("m2/keep2"), b"on another fs").ctx("write keep2")?;
    for file in ["top", "a/f", "a/b/f", "c/d/f"] {
        std::fs::write(wipe.join(file), b"x").ctx(format!("write {file}"))?;
    }
    symlink(&outside, wipe.join("a/to-outside")).ctx("symlink")?;
    symlink(outside.join("precious"), wipe.join("c/precious")).ctx("symlink")?;
    make_node(&wipe.join("a/b/fifo"), SFlag::S_IFIFO, 0o600, (0, 0))?;

    let removed = remove_contents(&wipe, true).ctx("remove_contents")?;
    // top, a/f, a/b/f, c/d/f, a/to-outside, c/precious, a/b/fifo, c/d, c.
    ensure(removed == 9, format!("removed {removed}, want 9"))?;
    let left = tree_listing(&wipe).ctx("listing")?;
    let left: Vec<&str> = left.iter().filter_map(|l| l.split(' ').next()).collect();
    // The listing stays on one filesystem: mount points are not in it.
    let want = ["/", "/a", "/a/b"];
    ensure(left == want, format!("left {left:?}, want {want:?}"))?;
    for kept in ["a/b/mnt/keep", "m2/keep2"] {
        ensure(wipe.join(kept).exists(), format!("{kept} was removed"))?;
    }
    ensure(outside.join("precious").exists(), "symlink target removed")?;
    drop(deep);
    drop(top);
    let removed = remove_contents(&wipe, true).ctx("remove_contents after umount")?;
    ensure(
        removed == 4,
        format!("removed {removed} after umount, want 4"),
    )?;
    let left = std::fs::read_dir(&wipe).ctx("read wipe")?.count();
    ensure(left == 0, format!("{left} entries left"))?;
    Ok(Outcome::Passed)
}

/// Makes a squashfs image of one 4 MiB file; returns the image path.
fn four_mib_image(dir: &Path, letters: bool) -> Result<PathBuf, String> {
    let src = dir.join("src");
    std::fs::create_dir(&src).ctx("mkdir src")?;
    std::fs::write(src.join("data"), noise(4 << 20, letters)).ctx("write data")?;
    let image = dir.join("image.squashfs");
    run(Command::new("mksquashfs")
        .arg(&src)
        .arg(&image)
        .args(["-noappend", "-quiet"]))?;
    Ok(image)
}

/// Lists `image`'s contents (which reads every file), expecting the mount
/// or the listing to fail within a minute (the listing runs on a thread so
/// a hang is reported).
fn list_broken_image(dir: &Path, image: &Path) -> CaseResult {
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).ctx("mkdir mnt")?;
    let _mounted = match Mounted::image(image, "squashfs", &mnt, true) {
        Ok(mounted) => mounted,
        Err(e) => {
            println!("note: mount refused the broken image ({e})");
            return Ok(Outcome::Passed);
        }
    };
    let (tx, rx) = mpsc::channel();
    let root = mnt.clone();
    std::thread::spawn(move || {
        let result: Result<_, TreeError> = tree_listing(&root);
        let _ = tx.send(result);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(e)) => {
            println!("note: listing failed as expected: {e}");
            Ok(Outcome::Passed)
        }
        Ok(Ok(rows)) => Err(format!("listing of a broken image succeeded: {rows:?}")),
        Err(e) => Err(format!("listing did not finish: {e}")),
    }
}

/// Case 3: an image truncated to half its size.
fn truncated_squashfs_fails_cleanly(dir: &Path) -> CaseResult {
    let image = four_mib_image(dir, false)?;
    let file = File::options().write(true).open(&image).ctx("open image")?;
    let size = file.metadata().ctx("stat image")?.len();
    file.set_len(size / 2).ctx("truncate image")?;
    drop(file);
    list_broken_image(dir, &image)
}

/// Case 3b: intact metadata, but compressed data blocks overwritten, so the
/// mount succeeds and reading the file fails.
fn corrupted_squashfs_fails_cleanly(dir: &Path) -> CaseResult {
    let image = four_mib_image(dir, true)?;
    let file = File::options().write(true).open(&image).ctx("open image")?;
    file.write_all_at(&[0xaa; 512 << 10], 64 << 10)
        .ctx("corrupt image")?;
    drop(file);
    list_broken_image(dir, &image)
}

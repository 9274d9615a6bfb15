//! Privileged tests of `ramstick_common::tree` on real mounts: a squashfs
//! image (the format of upperfs.squashfs) is loop-mounted and copied into a
//! fresh tmpfs and a fresh ext4 (the zram upper's filesystem), and
//! `remove_contents` is run around mount points.
//!
//! Needs root (skips with a message otherwise). Everything happens in a
//! private mount namespace on a scratch tmpfs; loop devices are detached
//! and mounts unmounted by guards even when a case fails.

use std::ffi::CString;
use std::fmt::Display;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::Duration;

use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};
use ramstick_common::tree::{copy_tree, remove_contents, tree_listing, TreeError};

const CASES: usize = 4;

/// How a case ended when it did not fail.
enum Outcome {
    Passed,
    Skipped(String),
}

type CaseResult = Result<Outcome, String>;

/// A named test case run on its own scratch directory.
type Case = (&'static str, fn(&Path) -> CaseResult);

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        println!("privileged_tree: skipped: needs root (run as root to test real mounts)");
        println!("0 passed, 0 failed, {CASES} skipped");
        return ExitCode::SUCCESS;
    }
    // Still single-threaded here, as unshare(CLONE_NEWNS) requires.
    let scratch = match isolate() {
        Ok(scratch) => scratch,
        Err(e) => {
            println!("FAIL setup: {e}");
            println!("0 passed, 1 failed, 0 skipped");
            return ExitCode::FAILURE;
        }
    };
    let cases: [Case; CASES] = [
        (
            "every_entry_kind_via_squashfs",
            every_entry_kind_via_squashfs,
        ),
        ("remove_contents_keeps_mounts", remove_contents_keeps_mounts),
        (
            "truncated_squashfs_fails_cleanly",
            truncated_squashfs_fails_cleanly,
        ),
        (
            "corrupted_squashfs_fails_cleanly",
            corrupted_squashfs_fails_cleanly,
        ),
    ];
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, case) in cases {
        let dir = scratch.target.join(name);
        let result = std::fs::create_dir(&dir)
            .ctx("create case dir")
            .and_then(|()| case(&dir));
        match result {
            Ok(Outcome::Passed) => {
                passed += 1;
                println!("ok {name}");
            }
            Ok(Outcome::Skipped(reason)) => {
                skipped += 1;
                println!("skip {name}: {reason}");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
    drop(scratch);
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Enters a private mount namespace and mounts the scratch tmpfs.
fn isolate() -> Result<Mounted, String> {
    unshare(CloneFlags::CLONE_NEWNS).ctx("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx("make / rprivate")?;
    let dir = std::env::temp_dir().join(format!("ramstick-privtree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ctx("create scratch dir")?;
    let mut scratch = Mounted::tmpfs(&dir)?;
    scratch.rmdir = true;
    Ok(scratch)
}

/// A mount (optionally on a loop device) undone on drop.
struct Mounted {
    target: PathBuf,
    loop_dev: Option<String>,
    /// Remove `target` after unmounting.
    rmdir: bool,
}

impl Mounted {
    fn tmpfs(target: &Path) -> Result<Mounted, String> {
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=2g,mode=0755"),
        )
        .ctx(format!("mount tmpfs on {}", target.display()))?;
        Ok(Mounted {
            target: target.to_path_buf(),
            loop_dev: None,
            rmdir: false,
        })
    }

    /// Attaches `image` to a loop device and mounts it on `target`.
    fn image(image: &Path, fstype: &str, target: &Path, ro: bool) -> Result<Mounted, String> {
        let mut losetup = Command::new("losetup");
        losetup.args(["--find", "--show"]);
        if ro {
            losetup.arg("--read-only");
        }
        let dev = run(losetup.arg(image))?.trim().to_string();
        let mut guard = Mounted {
            target: target.to_path_buf(),
            loop_dev: Some(dev.clone()),
            rmdir: false,
        };
        let flags = if ro {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        if let Err(e) = mount(
            Some(dev.as_str()),
            target,
            Some(fstype),
            flags,
            None::<&str>,
        ) {
            // Not mounted: only detach.
            guard.target = PathBuf::new();
            return Err(format!(
                "mount {dev} ({fstype}) on {}: {e}",
                target.display()
            ));
        }
        Ok(guard)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.target.as_os_str().is_empty() && umount2(&self.target, MntFlags::empty()).is_err()
        {
            let _ = umount2(&self.target, MntFlags::MNT_DETACH);
        }
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        if self.rmdir {
            let _ = std::fs::remove_dir(&self.target);
        }
    }
}

/// `.ctx("what")`: turns any error into a message.
trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Result<T, String>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

fn ensure(ok: bool, what: impl Display) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

/// Runs `cmd`, returning its stdout, or its stderr as the error.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().ctx(format!("run {cmd:?}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `tool` is an executable on PATH.
fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), String> {
    let what = format!("lsetxattr {} {name}", path.display());
    let c_path = CString::new(path.as_os_str().as_bytes()).ctx(&what)?;
    let c_name = CString::new(name).ctx(&what)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `value`
    // is valid for reads of `value.len()` bytes.
    let ret = unsafe {
        nix::libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    ensure(
        ret == 0,
        format!("{what}: {}", std::io::Error::last_os_error()),
    )
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    fchownat(
        AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(format!("lchown {}", path.display()))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(format!("chmod {}", path.display()))
}

fn make_node(path: &Path, kind: SFlag, mode: u32, dev: (u64, u64)) -> Result<(), String> {
    mknod(path, kind, Mode::empty(), makedev(dev.0, dev.1))
        .ctx(format!("mknod {}", path.display()))?;
    chmod(path, mode)
}

/// Deterministic pseudo-random bytes (`letters`: lowercase text, which compresses).
fn noise(len: usize, letters: bool) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if letters {
                b'a' + (x % 26) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

/// All paths under `root` (incl. `root`), children before their parents.
fn paths_bottom_up(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut all = vec![root.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        let path = all[i].clone();
        i += 1;
        let meta = std::fs::symlink_metadata(&path).ctx(format!("lstat {}", path.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).ctx(format!("read {}", path.display()))? {
                all.push(entry.ctx("read_dir")?.path());
            }
        }
    }
    all.reverse();
    Ok(all)
}

/// Builds a tree with every kind of entry an overlay upper can hold.
fn build_every_kind(src: &Path) -> Result<(), String> {
    let p = |rel: &str| src.join(rel);
    for dir in ["opaque", "redirected", "sub", "sticky"] {
        std::fs::create_dir(p(dir)).ctx(format!("mkdir {dir}"))?;
    }
    lsetxattr(&p("opaque"), "trusted.overlay.opaque", b"y")?;
    lsetxattr(&p("redirected"), "trusted.overlay.redirect", b"/old/name")?;
    std::fs::write(p("opaque/inner"), b"inside an opaque dir\n").ctx("write inner")?;
    make_node(&p("opaque/whiteout"), SFlag::S_IFCHR, 0o000, (0, 0))?;
    make_node(&p("whiteout"), SFlag::S_IFCHR, 0o000, (0, 0))?;
    make_node(&p("null"), SFlag::S_IFCHR, 0o620, (1, 3))?;
    lchown(&p("null"), 0, 5)?;
    make_node(&p("loopdev"), SFlag::S_IFBLK, 0o660, (7, 250))?;
    make_node(&p("fifo"), SFlag::S_IFIFO, 0o640, (0, 0))?;
    lsetxattr(&p("fifo"), "trusted.note", b"fifo xattr")?;
    make_node(&p("sock"), SFlag::S_IFSOCK, 0o777, (0, 0))?;
    std::fs::write(p("hl1"), b"linked twice\n").ctx("write hl1")?;
    std::fs::hard_link(p("hl1"), p("sub/hl2")).ctx("link hl2")?;
    let sparse = File::create(p("sparse")).ctx("create sparse")?;
    sparse.set_len(1 << 30).ctx("extend sparse")?;
    sparse
        .write_all_at(&noise(4096, false), 512 << 20)
        .ctx("write sparse")?;
    drop(sparse);
    std::fs::write(p("big"), noise(3 << 20, false)).ctx("write big")?;
    std::fs::write(p("suid"), b"#!/bin/sh\n").ctx("write suid")?;
    lchown(&p("suid"), 1000, 1000)?;
    chmod(&p("suid"), 0o4755)?;
    std::fs::write(p("empty"), b"").ctx("write empty")?;
    std::fs::write(p("capfile"), b"\x7fELF pretend").ctx("write capfile")?;
    chmod(&p("capfile"), 0o755)?;
    // VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13).
    let cap_net_raw_ep = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    lsetxattr(&p("capfile"), "security.capability", &cap_net_raw_ep)?;
    lsetxattr(&p("capfile"), "user.origin", b"downloaded")?;
    lsetxattr(&p("hl1"), "trusted.overlay.origin", b"\x00\xfb\x21binary")?;
    symlink("does/not/exist", p("dangling")).ctx("symlink dangling")?;
    symlink("/etc/passwd", p("abs")).ctx("symlink abs")?;
    lsetxattr(&p("abs"), "trusted.overlay.origin", b"link origin")?;
    lchown(&p("abs"), 1000, 100)?;
    chmod(&p("sticky"), 0o1777)?;
    chmod(&p("sub"), 0o2750)?;
    lchown(&p("sub"), 1000, 1000)?;
    for (i, path) in paths_bottom_up(src)?.iter().enumerate() {
        let secs = 1_300_000_000 + i64::try_from(i).ctx("index")? * 1000;
        utimensat(
            AT_FDCWD,
            path,
            &TimeSpec::new(secs + 1, 0),
            &TimeSpec::new(secs, 0),
            UtimensatFlags::NoFollowSymlink,
        )
        .ctx(format!("utimensat {}", path.display()))?;
    }
    Ok(())
}

/// `getfattr -d -R` of `root` as sorted `path: name=value` lines.
fn getfattr(root: &Path) -> Result<Vec<String>, String> {
    let out = run(Command::new("getfattr")
        .args(["-d", "-m", "-", "-e", "hex", "-h", "-P", "-R", "."])
        .current_dir(root))?;
    let mut lines = Vec::new();
    for block in out.split("\n\n") {
        let mut block_lines = block.lines();
        let Some(file) = block_lines.next().and_then(|l| l.strip_prefix("# file: ")) else {
            continue;
        };
        lines.extend(block_lines.map(|l| format!("{file}: {l}")));
    }
    lines.sort();
    Ok(lines)
}

/// Copies `from` into the fresh dir `to` and checks it against `want`.
fn copy_and_compare(
    from: &Path,
    to: &Path,
    want: &[String],
    want_attrs: Option<&[String]>,
) -> Result<(), String> {
    let mut reports = 0;
    let stats = copy_tree(from, to, &mut |_| reports += 1).ctx("copy_tree")?;
    ensure(reports >= 1, "progress was never reported")?;
    println!("note: {}: {stats:?}", to.display());
    let expect = (7, 4, 2, 1, 6);
    let got = (
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.hardlinks,
        stats.specials,
    );
    ensure(got == expect, format!("stats {stats:?}, want {expect:?}"))?;
    ensure(
        stats.xattrs == 7,
        format!("{} xattrs copied, want 7", stats.xattrs),
    )?;
    let got = tree_listing(to).ctx("listing of copy")?;
    if got != want {
        let diff: Vec<String> = want
            .iter()
            .filter(|l| !got.contains(l))
            .map(|l| format!("- {l}"))
            .chain(
                got.iter()
                    .filter(|l| !want.contains(l))
                    .map(|l| format!("+ {l}")),
            )
            .collect();
        return Err(format!("listing differs:\n{}", diff.join("\n")));
    }
    let blocks = std::fs::metadata(to.join("sparse"))
        .ctx("stat sparse")?
        .blocks();
    ensure(
        blocks * 512 <= 256 << 10,
        format!("sparse file got {blocks} blocks"),
    )?;
    if let Some(want_attrs) = want_attrs {
        let got = getfattr(to)?;
        ensure(
            got == want_attrs,
            format!("getfattr differs: {got:#?} vs {want_attrs:#?}"),
        )?;
    }
    Ok(())
}

/// Case 1: source tree → mksquashfs → loop mount → copy into tmpfs and ext4.
fn every_entry_kind_via_squashfs(dir: &Path) -> CaseResult {
    if !have("mksquashfs") {
        return Ok(Outcome::Skipped(
            "mksquashfs missing (squashfs-tools)".into(),
        ));
    }
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

    let image = dir.join("upper.squashfs");
    run(Command::new("mksquashfs")
        .arg(&src)
        .arg(&image)
        .args(["-noappend", "-quiet"]))?;
    let squash = dir.join("squash");
    std::fs::create_dir(&squash).ctx("mkdir squash")?;
    let _squash_mount = Mounted::image(&image, "squashfs", &squash, true)?;
    let in_image = tree_listing(&squash).ctx("listing of squashfs")?;
    ensure(
        in_image == want,
        format!("squashfs image differs from source: {in_image:#?}"),
    )?;
    let want_attrs = if have("getfattr") {
        let attrs = getfattr(&src)?;
        ensure(
            attrs.iter().any(|l| l.contains("security.capability=0x")),
            format!("getfattr shows no capability: {attrs:#?}"),
        )?;
        Some(attrs)
    } else {
        println!("note: getfattr missing (package attr): xattr cross-check skipped");
        None
    };

    let on_tmpfs = dir.join("tmpfs");
    std::fs::create_dir(&on_tmpfs).ctx("mkdir tmpfs")?;
    let _tmpfs = Mounted::tmpfs(&on_tmpfs)?;
    copy_and_compare(&squash, &on_tmpfs, &want, want_attrs.as_deref()).ctx("into tmpfs")?;

    let ext4_image = dir.join("ext4.img");
    File::create(&ext4_image)
        .and_then(|f| f.set_len(64 << 20))
        .ctx("create ext4 image")?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal"])
        .arg(&ext4_image))?;
    let ext4 = dir.join("ext4");
    std::fs::create_dir(&ext4).ctx("mkdir ext4")?;
    let _ext4_mount = Mounted::image(&ext4_image, "ext4", &ext4, false)?;
    let upper = ext4.join("upper");
    std::fs::create_dir(&upper).ctx("mkdir upper")?;
    copy_and_compare(&squash, &upper, &want, want_attrs.as_deref()).ctx("into ext4")?;
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
fn four_mib_image(dir: &Path, letters: bool) -> Result<Option<PathBuf>, String> {
    if !have("mksquashfs") {
        return Ok(None);
    }
    let src = dir.join("src");
    std::fs::create_dir(&src).ctx("mkdir src")?;
    std::fs::write(src.join("data"), noise(4 << 20, letters)).ctx("write data")?;
    let image = dir.join("image.squashfs");
    run(Command::new("mksquashfs")
        .arg(&src)
        .arg(&image)
        .args(["-noappend", "-quiet"]))?;
    Ok(Some(image))
}

/// Copies `image`'s contents, expecting the mount or the copy to fail
/// within a minute (the copy runs on a thread so a hang is reported).
fn copy_broken_image(dir: &Path, image: &Path) -> CaseResult {
    let mnt = dir.join("mnt");
    let dst = dir.join("dst");
    std::fs::create_dir(&mnt).ctx("mkdir mnt")?;
    std::fs::create_dir(&dst).ctx("mkdir dst")?;
    let _mounted = match Mounted::image(image, "squashfs", &mnt, true) {
        Ok(mounted) => mounted,
        Err(e) => {
            println!("note: mount refused the broken image ({e})");
            return Ok(Outcome::Passed);
        }
    };
    let (tx, rx) = mpsc::channel();
    let (from, to) = (mnt.clone(), dst.clone());
    std::thread::spawn(move || {
        let result: Result<_, TreeError> = copy_tree(&from, &to, &mut |_| {});
        let _ = tx.send(result);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(e)) => {
            println!("note: copy failed as expected: {e}");
            Ok(Outcome::Passed)
        }
        Ok(Ok(stats)) => Err(format!("copy of a broken image succeeded: {stats:?}")),
        Err(e) => Err(format!("copy did not finish: {e}")),
    }
}

/// Case 3: an image truncated to half its size.
fn truncated_squashfs_fails_cleanly(dir: &Path) -> CaseResult {
    let Some(image) = four_mib_image(dir, false)? else {
        return Ok(Outcome::Skipped("mksquashfs missing".into()));
    };
    let file = File::options().write(true).open(&image).ctx("open image")?;
    let size = file.metadata().ctx("stat image")?.len();
    file.set_len(size / 2).ctx("truncate image")?;
    drop(file);
    copy_broken_image(dir, &image)
}

/// Case 3b: intact metadata, but compressed data blocks overwritten, so the
/// mount succeeds and reading the file fails.
fn corrupted_squashfs_fails_cleanly(dir: &Path) -> CaseResult {
    let Some(image) = four_mib_image(dir, true)? else {
        return Ok(Outcome::Skipped("mksquashfs missing".into()));
    };
    let file = File::options().write(true).open(&image).ctx("open image")?;
    file.write_all_at(&[0xaa; 512 << 10], 64 << 10)
        .ctx("corrupt image")?;
    drop(file);
    copy_broken_image(dir, &image)
}

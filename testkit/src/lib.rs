//! Helpers shared by ramstick's tests (dev-only, never shipped): for the privileged
//! ones a harness that runs named cases in a private mount namespace on a
//! scratch tmpfs, as root or else in an unprivileged user namespace, and
//! reports every skip ([`main_with`]); the commands tests run, with their
//! Debian packages ([`TOOLS`]); mount guards ([`Mounted`]), small
//! command and syscall wrappers, and builders of test trees holding every
//! kind of entry an overlayfs upper can hold ([`build_every_kind`],
//! [`build_full_tree`]); and the temporary directory (or small tree) of
//! every test that needs one ([`TempDir`], removed on drop).
//!
//! Errors are plain `String`s: a failed case prints its message.

mod harness;
mod tempdir;
mod tools;

pub use harness::{main_with, no_skip, skip, Case, CaseResult, Outcome, Root, NO_SKIP};
pub use tempdir::TempDir;
pub use tools::{
    have, tool, Tool, BLKID, CRYPTSETUP, DEBUGFS, DUMPE2FS, E2FSCK, GETFATTR, GRUB_CHECK,
    GRUB_EDITENV, LDD, LOSETUP, MKFS_EXT4, MKFS_FAT, MKSQUASHFS, SETFATTR, SFDISK, SH, TOOLS,
    UNSQUASHFS,
};

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt::Display;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

/// A mount (optionally on a loop device) undone on drop.
pub struct Mounted {
    pub target: PathBuf,
    loop_dev: Option<String>,
}

impl Mounted {
    /// Mounts a 2 GiB tmpfs on `target`.
    pub fn tmpfs(target: &Path) -> Result<Mounted, String> {
        Self::tmpfs_sized(target, "2g")
    }

    /// Mounts a tmpfs of at most `size` (tmpfs' `size=` syntax) on `target`.
    pub fn tmpfs_sized(target: &Path, size: &str) -> Result<Mounted, String> {
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .ctx(format!("mount tmpfs on {}", target.display()))?;
        Ok(Mounted {
            target: target.to_path_buf(),
            loop_dev: None,
        })
    }

    /// Attaches `image` to a loop device and mounts it on `target`.
    pub fn image(image: &Path, fstype: &str, target: &Path, ro: bool) -> Result<Mounted, String> {
        let mut losetup = Command::new("losetup");
        losetup.args(["--find", "--show"]);
        if ro {
            losetup.arg("--read-only");
        }
        let dev = run(losetup.arg(image))?.trim().to_string();
        let mut guard = Mounted {
            target: target.to_path_buf(),
            loop_dev: Some(dev.clone()),
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

    /// Creates a sparse ext4 image `image` of `size` bytes (no journal) and
    /// mounts it read-write on `target` (created if missing).
    pub fn ext4(image: &Path, size: u64, target: &Path) -> Result<Mounted, String> {
        File::create(image)
            .and_then(|f| f.set_len(size))
            .ctx(format!("create {}", image.display()))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal"])
            .arg(image))?;
        std::fs::create_dir_all(target).ctx(format!("mkdir {}", target.display()))?;
        Mounted::image(image, "ext4", target, false)
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
    }
}

/// `.ctx("what")`: turns any error into a message.
pub trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Result<T, String>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// `Err(what)` unless `ok`.
pub fn ensure(ok: bool, what: impl Display) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

/// Runs `cmd`, returning its stdout, or its stderr as the error.
pub fn run(cmd: &mut Command) -> Result<String, String> {
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

/// Sets the xattr `name` of `path` (not following a symlink).
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), String> {
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

/// Changes the owner of `path` (not following a symlink).
pub fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    fchownat(
        AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(format!("lchown {}", path.display()))
}

/// Sets the mode bits of `path` (incl. setuid/setgid/sticky).
pub fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(format!("chmod {}", path.display()))
}

/// Creates a device node, fifo or socket with exactly `mode`.
pub fn make_node(path: &Path, kind: SFlag, mode: u32, dev: (u64, u64)) -> Result<(), String> {
    mknod(path, kind, Mode::empty(), makedev(dev.0, dev.1))
        .ctx(format!("mknod {}", path.display()))?;
    chmod(path, mode)
}

/// Deterministic pseudo-random bytes (`letters`: lowercase text, which compresses).
pub fn noise(len: usize, letters: bool) -> Vec<u8> {
    noise_seeded(len, letters, 0)
}

/// [`noise`] from another seed (different seeds give different bytes).
pub fn noise_seeded(len: usize, letters: bool, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
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
pub fn paths_bottom_up(root: &Path) -> Result<Vec<PathBuf>, String> {
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

/// Gives every entry under `root` (incl. `root`) its own whole-second
/// mtime (squashfs stores seconds), set without following symlinks.
pub fn set_mtimes(root: &Path) -> Result<(), String> {
    for (i, path) in paths_bottom_up(root)?.iter().enumerate() {
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

/// Builds a tree with every kind of entry an overlay upper can hold
/// (21 entries: 7 files, 4 dirs, 2 symlinks, 1 extra hardlink name,
/// 6 specials; 7 xattrs), with whole-second mtimes. `user.*` xattrs need a
/// filesystem that supports them (ext4, not tmpfs).
pub fn build_every_kind(src: &Path) -> Result<(), String> {
    every_kind_entries(src)?;
    set_mtimes(src)
}

/// [`build_every_kind`] plus the rest of the squashfs acceptance tree:
/// 10 000 small files in 4 dirs (every 7th with content shared with
/// another), files of exactly 128 KiB and 128 KiB + 1, a three-name
/// hardlink group across dirs, a 255-byte name, a 300-byte symlink target,
/// owners 65534:100, an empty dir, and — when `big` — a 200 MB file
/// (half text, half noise).
pub fn build_full_tree(src: &Path, big: bool) -> Result<(), String> {
    every_kind_entries(src)?;
    let p = |rel: &str| src.join(rel);
    for dir in ["many", "many/a", "many/b", "many/c", "many/d", "emptydir"] {
        std::fs::create_dir(p(dir)).ctx(format!("mkdir {dir}"))?;
    }
    for i in 0..10_000u64 {
        let sub = ["a", "b", "c", "d"][(i % 4) as usize];
        let content = if i % 7 == 0 {
            format!("shared content {}\n", i % 3).into_bytes()
        } else {
            noise_seeded((i % 3000) as usize + 1, i % 2 == 0, i)
        };
        let path = p(&format!("many/{sub}/file{i:05}"));
        std::fs::write(&path, content).ctx(format!("write {}", path.display()))?;
    }
    lsetxattr(&p("many/a/file00004"), "user.note", b"small file xattr")?;
    lsetxattr(&p("many/b/file00005"), "user.note", b"small file xattr")?;
    std::fs::write(p("block"), noise(128 << 10, true)).ctx("write block")?;
    std::fs::write(p("block+1"), noise((128 << 10) + 1, false)).ctx("write block+1")?;
    std::fs::write(p("many/three"), b"three names\n").ctx("write three")?;
    std::fs::hard_link(p("many/three"), p("many/a/three2")).ctx("link three2")?;
    std::fs::hard_link(p("many/three"), p("sub/three3")).ctx("link three3")?;
    let long_name = "n".repeat(255);
    std::fs::write(p(&long_name), b"long name\n").ctx("write long name")?;
    symlink("t".repeat(300), p("longlink")).ctx("symlink longlink")?;
    std::fs::write(p("nobody"), b"owned by nobody:users\n").ctx("write nobody")?;
    lchown(&p("nobody"), 65534, 100)?;
    lchown(&p("emptydir"), 65534, 100)?;
    chmod(&p("emptydir"), 0o700)?;
    if big {
        let file = File::create(p("huge")).ctx("create huge")?;
        let chunk = 10 << 20;
        for i in 0..20u64 {
            let data = noise_seeded(chunk, i % 2 == 0, i);
            file.write_all_at(&data, i * chunk as u64)
                .ctx("write huge")?;
        }
    }
    set_mtimes(src)
}

/// The entries of [`build_every_kind`], without the mtimes.
fn every_kind_entries(src: &Path) -> Result<(), String> {
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
    Ok(())
}

/// `getfattr -d -R` of `root` as sorted `path: name=value` lines.
pub fn getfattr(root: &Path) -> Result<Vec<String>, String> {
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

/// The lines only in `want` (`- `) and only in `got` (`+ `), one per line.
pub fn listing_diff(want: &[String], got: &[String]) -> String {
    let (want_set, got_set): (HashSet<&String>, HashSet<&String>) =
        (want.iter().collect(), got.iter().collect());
    let diff: Vec<String> = want
        .iter()
        .filter(|l| !got_set.contains(l))
        .map(|l| format!("- {l}"))
        .chain(
            got.iter()
                .filter(|l| !want_set.contains(l))
                .map(|l| format!("+ {l}")),
        )
        .collect();
    diff.join("\n")
}

/// `Err` with a diff unless the listings `want` and `got` are equal.
pub fn ensure_same(what: &str, want: &[String], got: &[String]) -> Result<(), String> {
    if want == got {
        return Ok(());
    }
    Err(format!("{what} differs:\n{}", listing_diff(want, got)))
}

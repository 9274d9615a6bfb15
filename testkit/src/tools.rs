//! The commands tests run, each with the Debian package that provides it,
//! and where to find them.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A command a test runs (a name looked up like [`tool`] does, or an
/// absolute path) and the Debian package that provides it.
pub type Tool = (&'static str, &'static str);

pub const MKSQUASHFS: Tool = ("mksquashfs", "squashfs-tools");
pub const UNSQUASHFS: Tool = ("unsquashfs", "squashfs-tools");
pub const GETFATTR: Tool = ("getfattr", "attr");
pub const SETFATTR: Tool = ("setfattr", "attr");
pub const MKFS_EXT4: Tool = ("mkfs.ext4", "e2fsprogs");
pub const E2FSCK: Tool = ("e2fsck", "e2fsprogs");
pub const DEBUGFS: Tool = ("debugfs", "e2fsprogs");
pub const DUMPE2FS: Tool = ("dumpe2fs", "e2fsprogs");
pub const MKFS_FAT: Tool = ("mkfs.fat", "dosfstools");
pub const CRYPTSETUP: Tool = ("cryptsetup", "cryptsetup-bin");
pub const SFDISK: Tool = ("sfdisk", "fdisk");
pub const BLKID: Tool = ("blkid", "util-linux");
pub const LOSETUP: Tool = ("losetup", "mount");
pub const LDD: Tool = ("ldd", "libc-bin");
/// GRUB's own reader and writer of its environment block.
pub const GRUB_EDITENV: Tool = ("grub-editenv", "grub-common");
/// GRUB's syntax check of a script (the menu `grub.cfg`).
pub const GRUB_CHECK: Tool = ("grub-script-check", "grub-common");
/// A dynamically linked program every Debian has (dash).
pub const SH: Tool = ("/bin/sh", "dash");

/// Every command the workspace's tests run: `cargo xtask test` installs
/// their packages first, so that no test skips for a missing tool in CI.
pub const TOOLS: &[Tool] = &[
    MKSQUASHFS,
    UNSQUASHFS,
    GETFATTR,
    SETFATTR,
    MKFS_EXT4,
    E2FSCK,
    DEBUGFS,
    DUMPE2FS,
    MKFS_FAT,
    CRYPTSETUP,
    SFDISK,
    BLKID,
    LOSETUP,
    LDD,
    SH,
    GRUB_EDITENV,
    GRUB_CHECK,
];

/// Where a non-root `$PATH` often lacks tools that root's has.
pub(crate) const SBIN: &[&str] = &["/usr/sbin", "/sbin"];

/// The path of `name` (absolute, or looked up on `$PATH` and then the sbin
/// directories), if it is an executable file.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// Whether `name` is installed ([`tool`]).
pub fn have(name: &str) -> bool {
    tool(name).is_some()
}

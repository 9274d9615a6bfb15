//! Root filesystem trees for the stick.
//!
//! * `busybox` (no root needed): Debian's static busybox with a symlink per
//!   applet, busybox init with a shell on ttyS0 and tty1. Its files live in
//!   `rootfs-skel/busybox/`.
//! * `debian`, `debian-openrc`, `debian-sysvinit` (root needed):
//!   `mmdebstrap --variant=minbase` of bookworm with systemd, with sysvinit
//!   and OpenRC (Debian's OpenRC, standing in for Alpine's, whose
//!   repositories these machines cannot reach), or with sysvinit; Debian's
//!   kernel, the recovery and filesystem tools of [`TOOLS`], a `user`
//!   account, root auto-logged in on ttyS0 with an empty password.
//!   initramfs-tools stays installed but does not run in the stick (its
//!   kernel hook is diverted, its updates are off): the stick boots
//!   ramstick's initramfs, which the kernel hook `zz-ramstick` builds.
//!   `--minimal` leaves out the kernel (the stick then boots xtask's
//!   Debian kernel) and the tools: the e2e suite's small trees.
//!
//! Every kind gets `rootfs-skel/common/` (hostname, the default exclusion
//! list) and the ramstick files of [`crate::hooks`] (the saver hook of its
//! init system, the kernel hooks), which `cargo xtask image` would add
//! anyway. A tree built here carries a marker file so that a rebuild may
//! replace it; any other non-empty `--out` is refused.

use crate::deps;
use crate::hooks::{self, Saver};
use crate::initramfs::partial_path;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Marks a tree built by `cargo xtask rootfs` (left out of the images).
pub const MARKER: &str = ".ramstick-rootfs";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Busybox,
    /// Debian with systemd.
    Debian,
    /// Debian with sysvinit and OpenRC.
    DebianOpenrc,
    /// Debian with sysvinit.
    DebianSysvinit,
}

/// The recovery and filesystem tools of the Debian kinds (see README for
/// their size on the stick). Not xfsprogs: it pulls in ICU and Python
/// (60 MB, three times the rest together).
pub const TOOLS: &[&str] = &[
    "e2fsprogs",
    "dosfstools",
    "exfatprogs",
    "ntfs-3g",
    "btrfs-progs",
    "cryptsetup-bin",
    "parted",
    "fdisk",
    "gdisk",
    "gddrescue",
    "testdisk",
    "smartmontools",
    "hdparm",
    "nvme-cli",
    "rsync",
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to build.
    #[arg(long, value_enum, default_value = "busybox")]
    pub kind: Kind,
    /// The directory to create (replaced if it is an earlier ramstick rootfs).
    #[arg(long)]
    pub out: PathBuf,
    /// Debian kinds: no kernel of their own and no tools (smaller and faster
    /// to build; the stick boots xtask's Debian kernel).
    #[arg(long)]
    pub minimal: bool,
}

pub fn run(a: &Args) -> Result<()> {
    build_with(a.kind, a.minimal, &a.out)?;
    println!("rootfs ({:?}) at {}", a.kind, a.out.display());
    Ok(())
}

/// Builds a full `kind` tree at `out`.
pub fn build(kind: Kind, out: &Path) -> Result<()> {
    build_with(kind, false, out)
}

/// Builds a `kind` tree at `out` (via `<out>.partial`, renamed at the end),
/// `minimal` as `--minimal` says.
pub fn build_with(kind: Kind, minimal: bool, out: &Path) -> Result<()> {
    check_out(out)?;
    let partial = partial_path(out);
    deps::remove_if_exists(&partial)?;
    let skel = crate::workspace_root().join("rootfs-skel");
    let result = match kind {
        Kind::Busybox => busybox(&partial, &skel),
        _ => debian(kind, minimal, &partial, &skel),
    }
    .and_then(|()| ramstick_files(&partial))
    .and_then(|()| {
        std::fs::write(partial.join(MARKER), format!("{kind:?}\n"))
            .with_context(|| format!("cannot write {}", partial.join(MARKER).display()))
    });
    if let Err(e) = result {
        // Best effort: the build error is the one to report.
        let _ = deps::remove_if_exists(&partial);
        return Err(e);
    }
    deps::remove_if_exists(out)?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))
}

/// `out` must be missing, empty, or a tree of ours.
fn check_out(out: &Path) -> Result<()> {
    let Ok(meta) = out.symlink_metadata() else {
        return Ok(());
    };
    if !meta.is_dir() {
        bail!("--out {} exists and is not a directory", out.display());
    }
    let mut entries =
        std::fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?;
    if entries.next().is_some() && !out.join(MARKER).is_file() {
        bail!(
            "--out {} is a non-empty directory that is not a ramstick rootfs (no {MARKER}); \
             refusing to replace it",
            out.display()
        );
    }
    Ok(())
}

/// Creates `dir` (and parents) with permission bits `mode`.
fn mkdir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", dir.display()))
}

fn busybox(root: &Path, skel: &Path) -> Result<()> {
    let busybox = deps::busybox_static()?;
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "persist",
        "home/user",
        "lib/modules",
        "lib/firmware",
        "var/log",
        "mnt",
        "boot",
    ] {
        mkdir(&root.join(dir), 0o755)?;
    }
    mkdir(&root.join("root"), 0o700)?;
    mkdir(&root.join("tmp"), 0o1777)?;
    mkdir(&root.join("var/tmp"), 0o1777)?;
    let target = root.join("bin/busybox");
    std::fs::copy(&busybox, &target)
        .with_context(|| format!("cannot copy {} to {}", busybox.display(), target.display()))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", target.display()))?;
    let applets = deps::output(std::process::Command::new(&busybox).arg("--list-full"))?;
    let mut links: Vec<&str> = applets.lines().map(str::trim).collect();
    links.push("sbin/init");
    for link in links {
        if link.is_empty() || link == "bin/busybox" {
            continue;
        }
        let path = root.join(link);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::os::unix::fs::symlink(applet_link_target(link), &path)
            .with_context(|| format!("cannot create symlink {}", path.display()))?;
    }
    copy_over(&skel.join("common"), root)?;
    copy_over(&skel.join("busybox"), root)?;
    std::fs::set_permissions(
        root.join("etc/shadow"),
        std::fs::Permissions::from_mode(0o600),
    )
    .context("cannot chmod etc/shadow")?;
    if deps::is_root() {
        let home = root.join("home/user");
        std::os::unix::fs::lchown(&home, Some(1000), Some(1000))
            .with_context(|| format!("cannot chown {}", home.display()))?;
    }
    Ok(())
}

/// The relative symlink target from applet path `link` (e.g. `usr/bin/wc`)
/// to `bin/busybox`.
fn applet_link_target(link: &str) -> String {
    let depth = link.matches('/').count();
    if link.starts_with("bin/") && depth == 1 {
        return "busybox".to_string();
    }
    format!("{}bin/busybox", "../".repeat(depth))
}

/// The ramstick files of [`crate::hooks`], written into the tree.
fn ramstick_files(root: &Path) -> Result<()> {
    let plan = hooks::plan(root, Saver::Required)?;
    plan.apply(root)
}

/// The packages of a Debian kind besides minbase.
pub fn debian_packages(kind: Kind, minimal: bool) -> Vec<&'static str> {
    let mut packages = match kind {
        Kind::DebianOpenrc => vec!["sysvinit-core", "openrc"],
        Kind::DebianSysvinit => vec!["sysvinit-core"],
        _ => vec!["systemd-sysv", "udev"],
    };
    packages.extend(["kmod", "procps"]);
    if !minimal {
        if kind != Kind::Debian {
            packages.push("udev");
        }
        packages.extend(["iproute2", "less", "linux-image-amd64"]);
        packages.extend(TOOLS);
    }
    packages
}

/// The serial console's autologin on sysvinit's inittab (the systemd kind
/// has a getty drop-in in `rootfs-skel/debian/`).
const SERIAL_AUTOLOGIN: &str = "# ramstick: root logged in on the serial console\n\
    T0:2345:respawn:/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 ttyS0 vt100\n";

/// In the chroot after the packages: initramfs-tools kept (mkinitramfs
/// works, e.g. for the bench's reference boot) but idle in the stick,
/// where its initrd would never be used: its kernel hook diverted away,
/// its trigger's updates off.
const QUIET_INITRAMFS_TOOLS: &str = "if [ -e \"$1/etc/kernel/postinst.d/initramfs-tools\" ]; then \
    chroot \"$1\" dpkg-divert --quiet --local --rename \
      --divert /etc/kernel/postinst.d/initramfs-tools.ramstick-off \
      --add /etc/kernel/postinst.d/initramfs-tools && \
    sed -i 's/^update_initramfs=.*/update_initramfs=no/' \
      \"$1/etc/initramfs-tools/update-initramfs.conf\"; fi";

fn debian(kind: Kind, minimal: bool, root: &Path, skel: &Path) -> Result<()> {
    if !deps::is_root() {
        bail!("the Debian rootfs kinds are built with mmdebstrap in root mode: run xtask as root");
    }
    deps::ensure(&[("mmdebstrap", "mmdebstrap")])?;
    deps::run(
        deps::cmd("mmdebstrap")
            .arg("--variant=minbase")
            .arg(format!(
                "--include={}",
                debian_packages(kind, minimal).join(",")
            ))
            // The user whose home gets the links to /persist/user.
            .arg("--customize-hook=chroot \"$1\" useradd -m -u 1000 -U -s /bin/bash user")
            .arg(format!("--customize-hook={QUIET_INITRAMFS_TOOLS}"))
            .arg("bookworm")
            .arg(root),
    )?;
    copy_over(&skel.join("common"), root)?;
    if kind == Kind::Debian {
        copy_over(&skel.join("debian"), root)?;
    } else {
        let inittab = root.join("etc/inittab");
        let text = std::fs::read_to_string(&inittab)
            .with_context(|| format!("cannot read {}", inittab.display()))?;
        std::fs::write(&inittab, format!("{text}{SERIAL_AUTOLOGIN}"))
            .with_context(|| format!("cannot write {}", inittab.display()))?;
    }
    let shadow = root.join("etc/shadow");
    let text = std::fs::read_to_string(&shadow)
        .with_context(|| format!("cannot read {}", shadow.display()))?;
    std::fs::write(&shadow, empty_root_password(&text))
        .with_context(|| format!("cannot write {}", shadow.display()))?;
    let kernel_img = root.join("etc/kernel-img.conf");
    if !kernel_img.exists() {
        std::fs::write(&kernel_img, KERNEL_IMG_CONF)
            .with_context(|| format!("cannot write {}", kernel_img.display()))?;
    }
    mkdir(&root.join("persist"), 0o755)
}

/// A kernel package installed in the stick makes no /vmlinuz links in /:
/// they would point into /boot, which the saver never saves.
const KERNEL_IMG_CONF: &str =
    "# ramstick: no /vmlinuz or /initrd.img links (they would point into\n\
    # /boot, which is not saved with the session)\ndo_symlinks = no\n";

/// `/etc/shadow` text with root's password field emptied.
fn empty_root_password(shadow: &str) -> String {
    shadow
        .lines()
        .map(|line| match line.strip_prefix("root:") {
            Some(rest) => {
                let after = rest.split_once(':').map_or("", |(_, after)| after);
                format!("root::{after}\n")
            }
            None => format!("{line}\n"),
        })
        .collect()
}

/// Copies the tree `src` over `dst` (files keep their mode, symlinks are
/// recreated, existing files are overwritten).
fn copy_over(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let entries =
        std::fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = from
            .symlink_metadata()
            .with_context(|| format!("cannot stat {}", from.display()))?;
        if meta.is_dir() {
            copy_over(&from, &to)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from)
                .with_context(|| format!("cannot read {}", from.display()))?;
            deps::remove_if_exists(&to)?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("cannot create {}", to.display()))?;
        } else {
            // Replace rather than write through a symlink that may point outside.
            if to
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                deps::remove_if_exists(&to)?;
            }
            std::fs::copy(&from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_links_are_relative() {
        assert_eq!(applet_link_target("bin/ls"), "busybox");
        assert_eq!(applet_link_target("sbin/init"), "../bin/busybox");
        assert_eq!(applet_link_target("usr/bin/wc"), "../../bin/busybox");
    }

    #[test]
    fn root_password_emptied() {
        let shadow = "root:*:19000:0:99999:7:::\nuser:!:1::::::\n";
        assert_eq!(
            empty_root_password(shadow),
            "root::19000:0:99999:7:::\nuser:!:1::::::\n"
        );
    }

    #[test]
    fn debian_kinds_pick_their_init_and_the_tools_unless_minimal() {
        let systemd = debian_packages(Kind::Debian, false);
        assert!(systemd.contains(&"systemd-sysv") && systemd.contains(&"linux-image-amd64"));
        assert!(TOOLS.iter().all(|t| systemd.contains(t)));
        assert_eq!(
            debian_packages(Kind::DebianOpenrc, true),
            ["sysvinit-core", "openrc", "kmod", "procps"]
        );
        assert_eq!(
            debian_packages(Kind::DebianSysvinit, true),
            ["sysvinit-core", "kmod", "procps"]
        );
        let sysv = debian_packages(Kind::DebianSysvinit, false);
        assert!(sysv.contains(&"udev") && !sysv.contains(&"systemd-sysv"));
    }

    #[test]
    fn out_must_be_empty_or_ours() {
        let dir = ramstick_testkit::TempDir::new("rootfs-out");
        let out = dir.join("tree");
        check_out(&out).unwrap();
        std::fs::create_dir(&out).unwrap();
        check_out(&out).unwrap();
        std::fs::write(out.join("precious"), "x").unwrap();
        let err = check_out(&out).unwrap_err().to_string();
        assert!(err.contains("not a ramstick rootfs"), "{err}");
        std::fs::write(out.join(MARKER), "Busybox\n").unwrap();
        check_out(&out).unwrap();
    }
}

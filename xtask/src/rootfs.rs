//! Root filesystem trees for the stick.
//!
//! * `busybox` (no root needed): Debian's static busybox with a symlink per
//!   applet, busybox init with a shell on ttyS0 and tty1, and the saver
//!   hook in `/etc/inittab`. Its files live in `rootfs-skel/busybox/`.
//! * `debian` (root needed): `mmdebstrap` of bookworm with systemd and
//!   Debian's kernel, root auto-logged in on ttyS0, the saver unit enabled.
//!
//! Both get `rootfs-skel/common/` (hostname, the systemd unit and OpenRC
//! script that run the saver). A tree built here carries a marker file so
//! that a rebuild may replace it; any other non-empty `--out` is refused.

use crate::deps;
use crate::initramfs::partial_path;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Marks a tree built by `cargo xtask rootfs` (left out of the images).
pub const MARKER: &str = ".ramstick-rootfs";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Busybox,
    Debian,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to build.
    #[arg(long, value_enum, default_value = "busybox")]
    pub kind: Kind,
    /// The directory to create (replaced if it is an earlier ramstick rootfs).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    build(a.kind, &a.out)?;
    println!("rootfs ({:?}) at {}", a.kind, a.out.display());
    Ok(())
}

/// Builds a `kind` tree at `out` (via `<out>.partial`, renamed at the end).
pub fn build(kind: Kind, out: &Path) -> Result<()> {
    check_out(out)?;
    let partial = partial_path(out);
    deps::remove_if_exists(&partial)?;
    let skel = crate::workspace_root().join("rootfs-skel");
    let result = match kind {
        Kind::Busybox => busybox(&partial, &skel),
        Kind::Debian => debian(&partial, &skel),
    }
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
    copy_tree(&skel.join("common"), root)?;
    copy_tree(&skel.join("busybox"), root)?;
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

fn debian(root: &Path, skel: &Path) -> Result<()> {
    if !deps::is_root() {
        bail!("the debian rootfs is built with mmdebstrap in root mode: run xtask as root");
    }
    deps::ensure(&[("mmdebstrap", "mmdebstrap")])?;
    deps::run(
        deps::cmd("mmdebstrap")
            .args([
                "--variant=minbase",
                "--include=systemd-sysv,linux-image-amd64,udev,kmod,iproute2,procps,less",
                // The user whose home gets the links to /persist/user.
                "--customize-hook=chroot \"$1\" useradd -m -u 1000 -U -s /bin/bash user",
                "bookworm",
            ])
            .arg(root),
    )?;
    copy_tree(&skel.join("common"), root)?;
    copy_tree(&skel.join("debian"), root)?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)
        .with_context(|| format!("cannot create {}", wants.display()))?;
    let link = wants.join("ramstick-saver.service");
    deps::remove_if_exists(&link)?;
    std::os::unix::fs::symlink("/etc/systemd/system/ramstick-saver.service", &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    let shadow = root.join("etc/shadow");
    let text = std::fs::read_to_string(&shadow)
        .with_context(|| format!("cannot read {}", shadow.display()))?;
    std::fs::write(&shadow, empty_root_password(&text))
        .with_context(|| format!("cannot write {}", shadow.display()))?;
    mkdir(&root.join("persist"), 0o755)
}

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

/// Copies the tree `src` into `dst` (files keep their mode, symlinks are
/// recreated, existing files are overwritten).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
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
            copy_tree(&from, &to)?;
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

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ramstick-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

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
    fn out_must_be_empty_or_ours() {
        let dir = scratch("rootfs-out");
        let out = dir.join("tree");
        check_out(&out).unwrap();
        std::fs::create_dir(&out).unwrap();
        check_out(&out).unwrap();
        std::fs::write(out.join("precious"), "x").unwrap();
        let err = check_out(&out).unwrap_err().to_string();
        assert!(err.contains("not a ramstick rootfs"), "{err}");
        std::fs::write(out.join(MARKER), "Busybox\n").unwrap();
        check_out(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

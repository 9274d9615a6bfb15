//! switch_root: check the real init exists, free the initramfs (without
//! crossing into other mounts), move the new root onto /, chroot, exec.

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use ramstick_common::tree::resolve_in_root;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where a real init usually lives, for the "not found" message.
const CANDIDATES: &[&str] = &[
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
    "/sbin/openrc-init",
    "/bin/busybox",
    "/bin/sh",
];

/// The init program inside `newroot`, or an error listing what is there.
pub fn find_init(newroot: &Path, init: &str) -> Result<PathBuf> {
    if let Some(host) = resolve_in_root(newroot, Path::new(init)) {
        let meta =
            std::fs::metadata(&host).with_context(|| format!("cannot stat {}", host.display()))?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(host);
        }
        bail!("{init} exists in the new root but is not an executable file");
    }
    let found: Vec<&str> = CANDIDATES
        .iter()
        .copied()
        .filter(|c| resolve_in_root(newroot, Path::new(c)).is_some())
        .collect();
    bail!(
        "{init} does not exist in the new root. Candidates present: {}. Boot with ramstick.init=<one of them>",
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    )
}

/// Whether `/` is the initramfs (ramfs or tmpfs) — the only root we may wipe.
fn root_is_initramfs() -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    match statfs("/") {
        Ok(s) => s.filesystem_type() == RAMFS_MAGIC || s.filesystem_type() == TMPFS_MAGIC,
        Err(_) => false,
    }
}

/// Replace the initramfs by `newroot` and exec `init` there. Only returns on error.
pub fn switch_root(newroot: &Path, init: &str) -> Result<Infallible> {
    find_init(newroot, init)?;
    if std::process::id() != 1 || !root_is_initramfs() {
        bail!("refusing to switch root: not PID 1 running from an initramfs");
    }
    std::env::set_current_dir(newroot)
        .with_context(|| format!("cannot chdir to {}", newroot.display()))?;
    match ramstick_common::tree::remove_contents(Path::new("/"), true) {
        Ok(n) => log::debug!("freed the initramfs ({n} entries)"),
        Err(e) => log::warn!("cannot free all of the initramfs: {e}"),
    }
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("cannot move the new root onto /")?;
    nix::unistd::chroot(".").context("cannot chroot into the new root")?;
    std::env::set_current_dir("/").context("cannot chdir to / in the new root")?;
    let prog = CString::new(init).context("init path contains a NUL byte")?;
    log::info!("switching root to {init}");
    let err = nix::unistd::execv(&prog, &[&prog]);
    Err(anyhow::anyhow!("cannot execute {init}: {err:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fixture(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ramstick-sr-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::create_dir_all(d.join("sbin")).unwrap();
        std::fs::write(d.join("bin/busybox"), "x").unwrap();
        std::fs::set_permissions(
            d.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        d
    }

    #[test]
    fn relative_and_absolute_links_resolve_inside_the_root() {
        let d = fixture("links");
        symlink("../bin/busybox", d.join("sbin/init")).unwrap();
        symlink("/bin/busybox", d.join("sbin/abs")).unwrap();
        symlink("../../../../../bin/busybox", d.join("sbin/deep")).unwrap();
        for p in ["/sbin/init", "/sbin/abs", "/sbin/deep"] {
            assert_eq!(find_init(&d, p).ok(), Some(d.join("bin/busybox")), "{p}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_init_lists_candidates() {
        let d = fixture("missing");
        let err = find_init(&d, "/sbin/init")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/sbin/init does not exist"), "{err}");
        assert!(err.contains("Candidates present: /bin/busybox"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn symlink_loops_do_not_hang() {
        let d = fixture("loop");
        symlink("/sbin/b", d.join("sbin/a")).unwrap();
        symlink("/sbin/a", d.join("sbin/b")).unwrap();
        assert!(find_init(&d, "/sbin/a").is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_non_executable_init_is_refused() {
        let d = fixture("noexec");
        std::fs::write(d.join("sbin/init"), "x").unwrap();
        assert!(find_init(&d, "/sbin/init").is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! What the running system needs from this initramfs: the saver, and for a
//! kernel installed during the session (`saver kernel add`) everything to
//! build an initramfs for it — this initramfs without its kernel modules:
//! init, the saver, busybox, e2fsck, `etc/`, and on an encrypted stick
//! `ramstick-unlock` with its libraries and key file. It is copied to
//! /run/ramstick/initramfs (about 5 MiB of RAM, 10 more with LUKS) before
//! the initramfs is freed; /run/ramstick/bin/saver is a hard link into it,
//! so the saver that saves is always the one that matches this init.
//!
//! The copy (~8 MiB, ~0.2 s under TCG) runs on a thread of its own from
//! the start of the boot, beside the modules and the wait for the stick.
//! What init mounts meanwhile lies below /sysroot (see
//! `ramstick_common::plan::SYSROOT`) or /run, so the copy never enters
//! /sysroot: it is made empty in the kit, as it is in a fresh initramfs.

use anyhow::{Context, Result};
use ramstick_common::bootinfo::INITRAMFS_KIT;
use ramstick_common::plan::SYSROOT;
use ramstick_common::tree::copy_contents;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::background::{self, Background};
use crate::stopwatch::timed;

/// The saver inside the initramfs (and the kit).
const SAVER: &str = "bin/saver";

/// [`install`] on a thread of its own; its result at [`Background::wait`].
pub fn install_in_background(root: &Path, run: &Path) -> Background<()> {
    let (root, run): (PathBuf, PathBuf) = (root.into(), run.into());
    background::spawn("kit", move || timed("kit: copy", || install(&root, &run)))
}

/// Copies the initramfs at `root` (mount points are not crossed: /run, /dev,
/// /proc and /sys stay out) to `<run>/initramfs` minus its `lib/modules`
/// and the contents of /sysroot, and links `<run>/bin/saver` to the saver
/// in it. `run` is /run/ramstick at boot.
pub fn install(root: &Path, run: &Path) -> Result<()> {
    let kit = run.join(kit_name());
    std::fs::create_dir_all(&kit).with_context(|| format!("cannot create {}", kit.display()))?;
    // Not lib/modules: the running kernel's; the next kernel brings its own.
    // Nor `run` itself when it lies inside `root` (at boot /run/ramstick is a
    // mount the copy does not cross anyway; in a test it is a directory).
    let sysroot = Path::new(SYSROOT.trim_start_matches('/'));
    let mut leave_out = vec![Path::new("lib/modules"), sysroot];
    leave_out.extend(run.strip_prefix(root).ok());
    copy_contents(root, &kit, &leave_out)
        .with_context(|| format!("cannot copy the initramfs to {}", kit.display()))?;
    if let Ok(meta) = std::fs::metadata(root.join(sysroot)) {
        std::fs::DirBuilder::new()
            .mode(meta.permissions().mode() & 0o7777)
            .create(kit.join(sysroot))
            .with_context(|| format!("cannot create {}", kit.join(sysroot).display()))?;
    }
    let bin = run.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let link = bin.join("saver");
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(kit.join(SAVER), &link)
        .with_context(|| format!("cannot link {} into {}", SAVER, bin.display()))
}

/// `initramfs` (the last component of [`INITRAMFS_KIT`]).
fn kit_name() -> &'static str {
    INITRAMFS_KIT.rsplit('/').next().unwrap_or("initramfs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_kit_is_the_initramfs_without_its_modules() {
        let base = ramstick_testkit::TempDir::new("kit");
        let root = base.join("initramfs");
        let run = base.join("run");
        for (path, body, mode) in [
            ("init", "init", 0o755),
            ("bin/saver", "saver", 0o755),
            ("bin/busybox", "busybox", 0o755),
            ("etc/ramstick/luks.key", "key", 0o400),
            ("lib/x86_64-linux-gnu/libc.so.6", "libc", 0o755),
            ("lib/modules/6.1.0-1-amd64/kernel/ext4.ko", "ko", 0o644),
        ] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        // What init mounts meanwhile, below /sysroot: never entered.
        std::fs::create_dir_all(root.join("sysroot/persist/layers")).unwrap();
        std::fs::write(root.join("sysroot/persist/rootfs.squashfs"), "big").unwrap();
        install_in_background(&root, &run).wait().unwrap();
        let kit = run.join("initramfs");
        assert_eq!(std::fs::read_to_string(kit.join("init")).unwrap(), "init");
        assert_eq!(
            std::fs::read_link(kit.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let key = std::fs::metadata(kit.join("etc/ramstick/luks.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o7777, 0o400);
        assert!(kit.join("lib/x86_64-linux-gnu/libc.so.6").is_file());
        assert!(!kit.join("lib/modules").exists());
        assert_eq!(std::fs::read_dir(kit.join("sysroot")).unwrap().count(), 0);
        let saver = std::fs::metadata(run.join("bin/saver")).unwrap();
        assert_eq!(
            saver.ino(),
            std::fs::metadata(kit.join("bin/saver")).unwrap().ino()
        );
    }
}

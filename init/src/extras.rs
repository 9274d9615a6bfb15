//! The small things the new root finds ready: the swapfile on the stick and
//! the user's files from /persist/user linked into their home.

use anyhow::{Context, Result};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::mounts::at;
use crate::sys::Sys;

/// Make sure `swapfile` is a complete swap area of `size` bytes, then
/// enable it with the given swappiness (in the /proc under `root`).
pub fn enable_swap(
    sys: &dyn Sys,
    root: &Path,
    swapfile: &Path,
    size: u64,
    swappiness: u8,
) -> Result<()> {
    prepare_swapfile(sys, swapfile, size)?;
    std::fs::set_permissions(swapfile, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", swapfile.display()))?;
    sys.swapon(swapfile)
        .with_context(|| format!("cannot swapon {}", swapfile.display()))?;
    sys.write_file(
        &at(root, "/proc/sys/vm/swappiness"),
        &swappiness.to_string(),
    )
    .context("cannot set vm.swappiness")?;
    log::info!(
        "swap on {} with swappiness {swappiness}",
        swapfile.display()
    );
    Ok(())
}

/// What [`prepare_swapfile`] calls the swapfile until it is complete.
fn swap_temp_name(swapfile: &Path) -> std::path::PathBuf {
    let mut name = swapfile.as_os_str().to_owned();
    name.push("-tmp");
    name.into()
}

/// Whether `path` holds a swap signature (`SWAPSPACE2` at the end of the
/// first page, as mkswap writes it).
fn has_swap_signature(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    let mut magic = [0u8; 10];
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut magic, page - 10))
        .is_ok()
        && &magic == b"SWAPSPACE2"
}

/// Leave `swapfile` a complete swap area of `size` bytes: kept when it is
/// one, else built under a temporary name (allocated, mkswap'd, synced)
/// and renamed into place only when complete, so a power cut at any moment
/// leaves either no swapfile or a usable one; a temporary left by an
/// interrupted build is removed. A swapfile of another size or without
/// the swap signature (e.g. cut off by a power cut before mkswap by an
/// older init) is rebuilt.
pub fn prepare_swapfile(sys: &dyn Sys, swapfile: &Path, size: u64) -> Result<()> {
    let temp = swap_temp_name(swapfile);
    if temp.symlink_metadata().is_ok() {
        log::info!(
            "removing {}, left by an interrupted swapfile creation",
            temp.display()
        );
        std::fs::remove_file(&temp).with_context(|| format!("cannot remove {}", temp.display()))?;
    }
    let current = std::fs::symlink_metadata(swapfile).ok();
    match current.as_ref().map(|m| (m.is_file(), m.len())) {
        Some((true, len)) if len == size && has_swap_signature(swapfile) => return Ok(()),
        Some((true, len)) if len == size => log::info!(
            "{} has no swap signature (an interrupted creation); recreating it",
            swapfile.display()
        ),
        Some(_) => log::info!("resizing {} to {size} bytes", swapfile.display()),
        None => log::info!("creating {} ({size} bytes, once)", swapfile.display()),
    }
    if current.is_some() {
        std::fs::remove_file(swapfile)
            .with_context(|| format!("cannot remove {}", swapfile.display()))?;
    }
    let built = build_swapfile(sys, &temp, size).and_then(|()| {
        std::fs::rename(&temp, swapfile)
            .with_context(|| format!("cannot rename {} to {}", temp.display(), swapfile.display()))
    });
    if let Err(e) = built {
        // Best effort: the next boot removes it anyway.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    if let Some(dir) = swapfile.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

/// Allocate `size` bytes at `path` (a new file), format it as swap and sync it.
fn build_swapfile(sys: &dyn Sys, path: &Path, size: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let len = i64::try_from(size).context("swap size too large")?;
    nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, len).with_context(
        || {
            format!(
                "cannot allocate {size} bytes for {} (is the stick full?)",
                path.display()
            )
        },
    )?;
    let text = path.to_string_lossy();
    sys.run(&["/bin/busybox", "mkswap", &text])
        .with_context(|| format!("cannot format {} as swap", path.display()))?;
    // After mkswap, so its header is on the stick before the rename.
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// uid and gid of `user` in a passwd file's text.
pub fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == user {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Link every entry of `persist_user` into `newroot/home/<user>/` as a
/// symlink to `/persist/user/<name>`, owned by the user. Never follows or
/// replaces an existing file. Returns how many links were made.
pub fn link_user_files(persist_user: &Path, newroot: &Path, user: &str) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(persist_user) else {
        return Ok(0);
    };
    let passwd = std::fs::read_to_string(newroot.join("etc/passwd")).unwrap_or_default();
    let Some((uid, gid)) = passwd_ids(&passwd, user) else {
        log::warn!("user `{user}` is not in the rootfs's /etc/passwd; not linking /persist/user");
        return Ok(0);
    };
    let home = newroot.join("home").join(user);
    if home.symlink_metadata().is_err() {
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        nix::unistd::chown(&home, Some(uid.into()), Some(gid.into()))
            .with_context(|| format!("cannot chown {}", home.display()))?;
    } else if !home.is_dir()
        || home
            .symlink_metadata()
            .map(|m| m.is_symlink())
            .unwrap_or(true)
    {
        log::warn!(
            "{} is not a directory; not linking /persist/user",
            home.display()
        );
        return Ok(0);
    }
    let mut made = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let link = home.join(&name);
        let target = Path::new("/persist/user").join(&name);
        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            log::warn!(
                "{} exists; not replacing it with a link to {}",
                link.display(),
                target.display()
            );
            continue;
        }
        symlink(&target, &link).with_context(|| format!("cannot create {}", link.display()))?;
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &link,
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("cannot chown {}", link.display()))?;
        made += 1;
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let pw = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1001::/home/user:/bin/sh\n";
        assert_eq!(passwd_ids(pw, "user"), Some((1000, 1001)));
        assert_eq!(passwd_ids(pw, "nobody"), None);
        assert_eq!(passwd_ids("user:x:abc:1\n", "user"), None);
    }

    /// A scratch directory standing in for /persist.
    fn persist_dir(tag: &str) -> ramstick_testkit::TempDir {
        ramstick_testkit::TempDir::new(&format!("swap-{tag}"))
    }

    /// A file of `size` bytes that mkswap has formatted (its signature).
    fn formatted(path: &Path, size: u64) {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(size).unwrap();
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .unwrap()
            .unwrap() as u64;
        std::os::unix::fs::FileExt::write_all_at(&f, b"SWAPSPACE2", page - 10).unwrap();
    }

    const SIZE: u64 = 1 << 20;

    #[test]
    fn swap_is_prepared_then_enabled_then_tuned() {
        let d = persist_dir("enable");
        let swapfile = d.join("swapfile");
        let sys = crate::sys::RecordingSys::new();
        enable_swap(&sys, &d, &swapfile, SIZE, 10).unwrap();
        let root = d.to_string_lossy().to_string();
        let calls: Vec<String> = sys.calls().iter().map(|c| c.replace(&root, "")).collect();
        assert_eq!(
            calls,
            [
                "run /bin/busybox mkswap /swapfile-tmp",
                "swapon /swapfile",
                "write /proc/sys/vm/swappiness 10",
            ]
        );
    }

    #[test]
    fn a_new_swapfile_is_built_under_a_temporary_name() {
        let d = persist_dir("new");
        let swapfile = d.join("swapfile");
        let sys = crate::sys::RecordingSys::new();
        prepare_swapfile(&sys, &swapfile, SIZE).unwrap();
        assert_eq!(
            sys.calls(),
            [format!(
                "run /bin/busybox mkswap {}/swapfile-tmp",
                d.display()
            )]
        );
        let meta = std::fs::metadata(&swapfile).unwrap();
        assert_eq!(meta.len(), SIZE);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!d.join("swapfile-tmp").exists());
    }

    #[test]
    fn a_complete_swapfile_is_kept() {
        let d = persist_dir("keep");
        let swapfile = d.join("swapfile");
        formatted(&swapfile, SIZE);
        let sys = crate::sys::RecordingSys::new();
        prepare_swapfile(&sys, &swapfile, SIZE).unwrap();
        assert!(sys.calls().is_empty(), "{:?}", sys.calls());
        assert!(has_swap_signature(&swapfile));
    }

    /// The power cut between creating and mkswap (older init): the right
    /// size but no signature must not be kept for ever.
    #[test]
    fn a_swapfile_without_signature_is_rebuilt() {
        let d = persist_dir("nosig");
        let swapfile = d.join("swapfile");
        std::fs::File::create(&swapfile)
            .unwrap()
            .set_len(SIZE)
            .unwrap();
        let sys = crate::sys::RecordingSys::new();
        prepare_swapfile(&sys, &swapfile, SIZE).unwrap();
        assert_eq!(
            sys.calls(),
            [format!(
                "run /bin/busybox mkswap {}/swapfile-tmp",
                d.display()
            )]
        );
    }

    #[test]
    fn a_leftover_temporary_is_removed_and_a_resize_rebuilds() {
        let d = persist_dir("leftover");
        let swapfile = d.join("swapfile");
        formatted(&swapfile, SIZE / 2);
        std::fs::write(d.join("swapfile-tmp"), "cut short").unwrap();
        let sys = crate::sys::RecordingSys::new();
        prepare_swapfile(&sys, &swapfile, SIZE).unwrap();
        assert_eq!(sys.calls().len(), 1);
        assert_eq!(std::fs::metadata(&swapfile).unwrap().len(), SIZE);
        assert!(!d.join("swapfile-tmp").exists());
        // The same with a complete swapfile: only the leftover goes.
        formatted(&swapfile, SIZE);
        std::fs::write(d.join("swapfile-tmp"), "cut short").unwrap();
        let sys = crate::sys::RecordingSys::new();
        prepare_swapfile(&sys, &swapfile, SIZE).unwrap();
        assert!(sys.calls().is_empty());
        assert!(!d.join("swapfile-tmp").exists());
        assert!(has_swap_signature(&swapfile));
    }

    #[test]
    fn a_failed_mkswap_leaves_no_swapfile() {
        let d = persist_dir("fail");
        let swapfile = d.join("swapfile");
        let mut sys = crate::sys::RecordingSys::new();
        sys.fail_on.push("run /bin/busybox mkswap".into());
        let err = prepare_swapfile(&sys, &swapfile, SIZE).unwrap_err();
        assert!(format!("{err:#}").contains("cannot format"), "{err:#}");
        assert!(!swapfile.exists());
        assert!(!d.join("swapfile-tmp").exists());
    }

    #[test]
    fn user_files_are_linked_without_clobbering() {
        let base = ramstick_testkit::TempDir::new("links");
        let persist_user = base.join("persist/user");
        let newroot = base.join("newroot");
        std::fs::create_dir_all(persist_user.join("Documents")).unwrap();
        std::fs::write(persist_user.join("notes.txt"), "n").unwrap();
        std::fs::create_dir_all(newroot.join("etc")).unwrap();
        std::fs::create_dir_all(newroot.join("home/user")).unwrap();
        // An existing file of the same name must survive.
        std::fs::write(newroot.join("home/user/notes.txt"), "mine").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        std::fs::write(
            newroot.join("etc/passwd"),
            format!("user:x:{me}:{gid}::/home/user:/bin/sh\n"),
        )
        .unwrap();
        let made = link_user_files(&persist_user, &newroot, "user").unwrap();
        assert_eq!(made, 1);
        assert_eq!(
            std::fs::read_link(newroot.join("home/user/Documents")).unwrap(),
            Path::new("/persist/user/Documents")
        );
        assert_eq!(
            std::fs::read_to_string(newroot.join("home/user/notes.txt")).unwrap(),
            "mine"
        );
        // Running again changes nothing.
        assert_eq!(link_user_files(&persist_user, &newroot, "user").unwrap(), 0);
    }
}

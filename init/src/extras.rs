//! The small things the new root finds ready: the swapfile on the stick and
//! the user's files from /persist/user linked into their home.

use anyhow::{Context, Result};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::sys::Sys;

/// Create `swapfile` once at `size` bytes (recreated if the size changed),
/// then enable it with the given swappiness.
pub fn enable_swap(sys: &dyn Sys, swapfile: &Path, size: u64, swappiness: u8) -> Result<()> {
    let current = std::fs::metadata(swapfile).map(|m| m.len()).ok();
    if current != Some(size) {
        if current.is_some() {
            log::info!("resizing {} to {size} bytes", swapfile.display());
            std::fs::remove_file(swapfile)
                .with_context(|| format!("cannot remove {}", swapfile.display()))?;
        } else {
            log::info!("creating {} ({size} bytes, once)", swapfile.display());
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(swapfile)
            .with_context(|| format!("cannot create {}", swapfile.display()))?;
        let len = i64::try_from(size).context("swap size too large")?;
        nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, len).with_context(
            || {
                format!(
                    "cannot allocate {size} bytes for {} (is the stick full?)",
                    swapfile.display()
                )
            },
        )?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", swapfile.display()))?;
        let path = swapfile.to_string_lossy();
        sys.run(&["/bin/busybox", "mkswap", &path])
            .with_context(|| format!("cannot format {} as swap", swapfile.display()))?;
    }
    std::fs::set_permissions(swapfile, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", swapfile.display()))?;
    let path = std::ffi::CString::new(swapfile.as_os_str().as_encoded_bytes())
        .context("swapfile path contains a NUL byte")?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call;
    // swapon(2) only reads it.
    let rc = unsafe { nix::libc::swapon(path.as_ptr(), 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot swapon {}", swapfile.display()));
    }
    sys.write_file(
        Path::new("/proc/sys/vm/swappiness"),
        &swappiness.to_string(),
    )
    .context("cannot set vm.swappiness")?;
    log::info!(
        "swap on {} with swappiness {swappiness}",
        swapfile.display()
    );
    Ok(())
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

    #[test]
    fn user_files_are_linked_without_clobbering() {
        let base = std::env::temp_dir().join(format!("ramstick-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
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
        let _ = std::fs::remove_dir_all(&base);
    }
}

//! Resolving a path inside a tree as a chroot would: init checks the new
//! root's init before switch_root, xtask finds what a rootfs links to.

use std::path::{Component, Path, PathBuf};

/// Most symlinks followed in one resolution (the kernel's limit).
const MAX_LINKS: u32 = 40;

/// Resolves `rel` inside the tree `root` as a chroot would: absolute
/// symlinks point into `root`, `..` stops at it. Returns the host path of
/// the final target, or `None` when a component is missing or there are
/// too many links.
pub fn resolve_in_root(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![rel.to_path_buf()];
    let mut resolved = PathBuf::new(); // relative to root, symlink-free
    let mut links = 0;
    while let Some(path) = pending.pop() {
        let mut components = path.components();
        let Some(first) = components.next() else {
            continue;
        };
        let rest: PathBuf = components.collect();
        if !rest.as_os_str().is_empty() {
            pending.push(rest);
        }
        match first {
            Component::RootDir => resolved = PathBuf::new(),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                let candidate = resolved.join(name);
                let host = root.join(&candidate);
                let meta = host.symlink_metadata().ok()?;
                if meta.file_type().is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    pending.push(std::fs::read_link(&host).ok()?);
                } else {
                    resolved = candidate;
                }
            }
        }
    }
    Some(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let tmp = ramstick_testkit::TempDir::new("resolve");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), "").unwrap();
        symlink("usr/sbin", root.join("sbin")).unwrap();
        symlink("../lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
        symlink("/usr/lib/systemd/systemd", root.join("abs")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let target = root.join("usr/lib/systemd/systemd");
        assert_eq!(
            resolve_in_root(root, Path::new("sbin/init")),
            Some(target.clone())
        );
        assert_eq!(resolve_in_root(root, Path::new("abs")), Some(target));
        assert_eq!(resolve_in_root(root, Path::new("loop")), None);
        assert_eq!(resolve_in_root(root, Path::new("sbin/missing")), None);
        // `..` cannot leave the root.
        assert_eq!(
            resolve_in_root(root, Path::new("../../usr/sbin")),
            Some(root.join("usr/sbin"))
        );
    }
}

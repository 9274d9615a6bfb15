//! Mount points the rootfs lacks: the hand-over's targets in the new root
//! that the rootfs image does not have, made below it (see
//! [`missing_mount_points`]).

use anyhow::{Context, Result};
use ramstick_common::plan::{Landing, Plan};
use ramstick_common::tree::resolve_in_root;
use std::path::{Path, PathBuf};

use crate::mounts::at;

/// Where init makes the mount points the rootfs lacks (see [`missing_mount_points`]).
pub const MOUNT_POINTS: &str = "/run/ramstick/mountpoints";

/// The hand-over's mount points in the new root that the rootfs image does
/// not have — the modules directory of a kernel installed after the stick
/// was built (`saver kernel add`) — made as empty directories (at their
/// real paths: `/lib/modules` may be a link to `usr/lib/modules`) in a tree
/// the overlay stacks below the rootfs. The new root then shows them
/// without the upper holding anything: made there, they and their copied-up
/// parents would count as a change of every session. Returns that tree
/// when one was needed. (Plain file operations: it runs before the
/// overlay, on the mounted rootfs.)
pub fn missing_mount_points(
    root: &Path,
    plan: &Plan,
    skipped: &[String],
) -> Result<Option<PathBuf>> {
    let rootfs = at(root, &plan.rootfs);
    let tree = at(root, MOUNT_POINTS);
    let mut made = false;
    let moved = plan
        .moves
        .iter()
        .filter(|m| m.landing == Landing::NewRoot && !skipped.contains(&m.from))
        .map(|m| m.to.as_str());
    for to in moved {
        let rel = Path::new(to.trim_start_matches('/'));
        if resolve_in_root(&rootfs, rel).is_some() {
            continue;
        }
        let real = real_path(&rootfs, rel);
        let dir = tree.join(&real);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create mount point {}", dir.display()))?;
        log::debug!("mount point /{} made below the rootfs", real.display());
        made = true;
    }
    Ok(made.then_some(tree))
}

/// `rel` with its longest prefix that exists in `rootfs` resolved there.
fn real_path(rootfs: &Path, rel: &Path) -> PathBuf {
    let parts: Vec<_> = rel.components().collect();
    for keep in (1..parts.len()).rev() {
        let prefix: PathBuf = parts[..keep].iter().collect();
        if let Some(found) = resolve_in_root(rootfs, &prefix) {
            if let Ok(inside) = found.strip_prefix(rootfs) {
                return inside.join(parts[keep..].iter().collect::<PathBuf>());
            }
        }
    }
    rel.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::mount_overlay;
    use crate::sys::RecordingSys;
    use crate::testplan::plan_for;

    #[test]
    fn a_mount_point_the_rootfs_lacks_is_made_below_it() {
        let root = ramstick_testkit::TempDir::new("mountpoints");
        let rootfs = root.join("sysroot/rootfs");
        std::fs::create_dir_all(rootfs.join("usr/lib/modules/6.1.0-1-amd64")).unwrap();
        std::fs::create_dir_all(rootfs.join("usr/lib/firmware")).unwrap();
        for dir in ["persist", "dev", "proc", "sys", "run"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::os::unix::fs::symlink("usr/lib", rootfs.join("lib")).unwrap();
        let plan = plan_for("");
        let tree = missing_mount_points(&root, &plan, &[]).unwrap().unwrap();
        assert_eq!(tree, root.join("run/ramstick/mountpoints"));
        // At its real path (lib is a link), and only what is missing.
        assert!(tree.join("usr/lib/modules/6.1.0-56-amd64").is_dir());
        assert!(!tree.join("lib").exists() && !tree.join("usr/lib/firmware").exists());
        assert!(!tree.join("persist").exists());
        std::fs::remove_dir_all(root.path()).unwrap();
        for dir in [
            "persist",
            "dev",
            "proc",
            "sys",
            "run",
            "lib/modules/6.1.0-56-amd64",
        ] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::fs::create_dir_all(rootfs.join("lib/firmware")).unwrap();
        assert_eq!(missing_mount_points(&root, &plan, &[]).unwrap(), None);
        // A skipped lower needs no mount point.
        std::fs::remove_dir(rootfs.join("lib/firmware")).unwrap();
        let skipped = ["/sysroot/firmware".to_string()];
        assert_eq!(missing_mount_points(&root, &plan, &skipped).unwrap(), None);
        let sys = RecordingSys::new();
        mount_overlay(&sys, Path::new("/"), &plan, &[], Some(Path::new("/run/m")))
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        assert!(sys.calls()[1].contains("lowerdir=/sysroot/rootfs:/run/m,"));
    }
}

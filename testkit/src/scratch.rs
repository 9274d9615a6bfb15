//! A scratch root filesystem tree for unit tests that look at trees (init
//! system detection, hook selection): files with modes and symlinks made
//! in one line each, removed on drop.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under the system temp dir, unique per process and call.
pub struct ScratchTree(pub PathBuf);

impl ScratchTree {
    pub fn new(tag: &str) -> ScratchTree {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ramstick-scratch-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create the scratch tree");
        ScratchTree(dir)
    }

    /// Writes `rel` (parents made, a file or link there replaced) with `mode`.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>, mode: u32) -> &ScratchTree {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("cannot create a directory");
        }
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, content).expect("cannot write a file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("cannot chmod a file");
        self
    }

    /// Makes `rel` a symlink to `target` (parents made, a file there replaced).
    pub fn link(&self, rel: &str, target: &str) -> &ScratchTree {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("cannot create a directory");
        }
        let _ = std::fs::remove_file(&path);
        symlink(target, &path).expect("cannot create a symlink");
        self
    }
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

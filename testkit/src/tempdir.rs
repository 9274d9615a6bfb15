//! A temporary directory for one test, removed with everything in it when
//! it drops — also when the test fails, since a failed assertion unwinds
//! through it (a path built by hand and removed at the end of the test
//! stays behind on every failure). Its builder methods make the small trees
//! unit tests look at (init system detection, hook selection) a line per
//! entry.

use std::ops::Deref;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh empty directory under the system temp dir, removed on drop.
/// It derefs to its [`Path`]: `dir.join("a")`, `&dir` where a `&Path` goes.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<temp>/ramstick-<tag>-<pid>-<n>`: unique among the tests of
    /// one process (they run in parallel threads) and of processes running
    /// at once. Panics when it cannot: no test can go on without it.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ramstick-{tag}-{}-{n}", std::process::id()));
        // Left over by a killed run of a process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create temporary directory {}: {e}", path.display());
        }
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates the directory `rel` inside (with its parents); returns its path.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.0.join(rel);
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create directory {}: {e}", path.display());
        }
        path
    }

    /// Writes the file `rel` (parents made, a file or link there replaced)
    /// with `mode`.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>, mode: u32) -> &TempDir {
        let path = self.parent_made(rel);
        let _ = std::fs::remove_file(&path);
        if let Err(e) = std::fs::write(&path, content)
            .and_then(|()| std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)))
        {
            panic!("cannot write {}: {e}", path.display());
        }
        self
    }

    /// Makes `rel` a symlink to `target` (parents made, a file there replaced).
    pub fn link(&self, rel: &str, target: &str) -> &TempDir {
        let path = self.parent_made(rel);
        let _ = std::fs::remove_file(&path);
        if let Err(e) = symlink(target, &path) {
            panic!("cannot create the symlink {}: {e}", path.display());
        }
        self
    }

    /// The path of `rel`, its parent directory made.
    fn parent_made(&self, rel: &str) -> PathBuf {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                panic!("cannot create directory {}: {e}", parent.display());
            }
        }
        path
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_fresh_unique_and_removed_on_drop_even_by_a_panic() {
        let (a, b) = (TempDir::new("t"), TempDir::new("t"));
        assert_ne!(a.path(), b.path());
        assert_eq!(std::fs::read_dir(&*a).map(|d| d.count()).ok(), Some(0));
        let sub = a.mkdir("x/y");
        std::fs::write(sub.join("f"), b"x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        let path = std::thread::spawn(|| {
            let dir = TempDir::new("panics");
            let path = dir.path().to_path_buf();
            std::fs::write(dir.join("f"), b"x").unwrap();
            std::panic::panic_any(path)
        })
        .join()
        .err()
        .and_then(|p| p.downcast::<PathBuf>().ok())
        .unwrap();
        assert!(!path.exists(), "{}", path.display());
    }

    #[test]
    fn file_and_link_make_parents_and_replace_what_is_there() {
        use std::os::unix::fs::MetadataExt;
        let t = TempDir::new("tree");
        t.file("a/b/f", "one", 0o750).link("a/l", "b/f");
        let meta = std::fs::metadata(t.join("a/b/f")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o750);
        assert_eq!(std::fs::read_to_string(t.join("a/l")).unwrap(), "one");
        // A file replaces the link (not writing through it), and back.
        t.file("a/l", "two", 0o644);
        assert!(!std::fs::symlink_metadata(t.join("a/l"))
            .unwrap()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(t.join("a/b/f")).unwrap(), "one");
        t.link("a/l", "elsewhere");
        assert_eq!(
            std::fs::read_link(t.join("a/l")).unwrap(),
            Path::new("elsewhere")
        );
    }
}

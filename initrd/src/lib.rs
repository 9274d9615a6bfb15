//! ramstick's initramfs archive: a zstd-compressed newc cpio archive
//! (written with the `cpio` crate's newc builder). Built by `cargo xtask
//! initramfs`/`image` from the host's files, and by the saver inside a
//! running stick for a kernel installed there (`saver kernel add`), from the
//! copy of the booted initramfs that init leaves in /run/ramstick/initramfs.
//!
//! [`Archive`] collects members: the skeleton every archive has (the
//! directories init mounts on, `/dev/console` and `/dev/null` for before
//! devtmpfs, `/bin/sh`), host files and trees, `lib/modules/<kver>/` with
//! the closure of [`initramfs_modules`] and module-index files restricted to it
//! ([`Archive::modules`]), and for a LUKS stick the unlock program with its
//! shared-library closure ([`Archive::luks`]: the `DT_NEEDED` entries of the
//! binary and of every library, resolved in [`LIBRARY_DIRS`] like the
//! dynamic loader does, and the loader at its `PT_INTERP` path).
//!
//! [`Archive::to_bytes`] is reproducible: members sorted by path, every
//! missing parent directory added, uid/gid 0, a given mtime, sequential
//! inode numbers, a given zstd level with a 16 MiB window and long-distance
//! matching (the kernel needs that window in RAM while unpacking).

use anyhow::{bail, Context, Result};
use ramstick_common::elf;
use ramstick_common::modules::{initramfs_modules, ModDb};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the host's libraries are looked up, in order.
pub use ramstick_common::elf::LIBRARY_DIRS;
/// Where the unlock program's libraries go in the archive (init points
/// `LD_LIBRARY_PATH` there).
const LIBRARY_DIR_IN_ARCHIVE: &str = "lib/x86_64-linux-gnu";
/// Where the unlock program goes in the archive (init runs it from there;
/// its presence makes an initramfs an encrypted stick's).
pub const UNLOCK_IN_ARCHIVE: &str = "bin/ramstick-unlock";

/// Where a LUKS key file goes in the archive (`ramstick.luks.keyfile=/` this).
pub const KEYFILE_IN_ARCHIVE: &str = "etc/ramstick/luks.key";
/// log2 of the zstd window (16 MiB).
const ZSTD_WINDOW_LOG: u32 = 24;

/// What an archive member is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Dir,
    /// A host file copied in.
    File(PathBuf),
    /// Generated content.
    Data(Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    /// Permission bits (incl. sticky), without the file type.
    perm: u32,
    body: Body,
}

/// How [`Archive::host_tree`] sets the members' permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perms {
    /// 0755 for directories and executables, 0644 for other files (sources
    /// checked out with any umask give the same archive).
    Normalize,
    /// The files' own permission bits (a copy of an archive, whose key file
    /// is 0400).
    Keep,
}

/// Archive members by path (relative, no leading `/`).
#[derive(Debug, Clone, Default)]
pub struct Archive {
    members: BTreeMap<String, Member>,
}

impl Archive {
    /// The skeleton every initramfs has.
    pub fn new() -> Archive {
        let mut a = Archive::default();
        for dir in [
            "dev",
            "proc",
            "sys",
            "run",
            "sysroot",
            "etc",
            "lib/modules",
            "bin",
        ] {
            a.add(dir, 0o755, Body::Dir);
        }
        a.add("tmp", 0o1777, Body::Dir);
        a.add("dev/console", 0o600, Body::CharDev(5, 1));
        a.add("dev/null", 0o666, Body::CharDev(1, 3));
        a.symlink("bin/sh", "busybox");
        a
    }

    fn add(&mut self, path: &str, perm: u32, body: Body) {
        self.members.insert(
            path.trim_start_matches('/').to_string(),
            Member { perm, body },
        );
    }

    /// The host file `host` as `path`.
    pub fn file(&mut self, path: &str, perm: u32, host: &Path) {
        self.add(path, perm, Body::File(host.to_path_buf()));
    }

    /// `bytes` as the file `path`.
    pub fn data(&mut self, path: &str, perm: u32, bytes: Vec<u8>) {
        self.add(path, perm, Body::Data(bytes));
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, 0o777, Body::Symlink(target.to_string()));
    }

    /// Whether the archive has a member `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.members.contains_key(path)
    }

    /// The files, directories and symlinks below `dir` under archive prefix
    /// `prefix` (e.g. `""` or `"etc/"`).
    pub fn host_tree(&mut self, dir: &Path, prefix: &str, perms: Perms) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let member = format!("{prefix}{name}");
            let meta = path
                .symlink_metadata()
                .with_context(|| format!("cannot stat {}", path.display()))?;
            let mode = meta.permissions().mode();
            let perm = match perms {
                Perms::Keep => mode & 0o7777,
                Perms::Normalize if meta.is_dir() || mode & 0o111 != 0 => 0o755,
                Perms::Normalize => 0o644,
            };
            if meta.is_dir() {
                self.add(&member, perm, Body::Dir);
                self.host_tree(&path, &format!("{member}/"), perms)?;
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)
                    .with_context(|| format!("cannot read link {}", path.display()))?;
                self.symlink(&member, &target.to_string_lossy());
            } else if meta.is_file() {
                self.add(&member, perm, Body::File(path));
            } else {
                bail!("{} is not a file, directory or symlink", path.display());
            }
        }
        Ok(())
    }

    /// `lib/modules/<kver>/`: the closure of [`initramfs_modules`] (with
    /// the LUKS ones when `luks`) in `modules_dir` and index files
    /// restricted to it. Returns a warning per boot module the kernel has
    /// neither as a module nor built in.
    pub fn modules(&mut self, modules_dir: &Path, kver: &str, luks: bool) -> Result<Vec<String>> {
        let db = ModDb::load(modules_dir).with_context(|| {
            format!("cannot read the module index of {}", modules_dir.display())
        })?;
        let mut warnings = Vec::new();
        let wanted: Vec<&str> = initramfs_modules(luks)
            .into_iter()
            .filter(|m| {
                let known = db.contains(m) || db.is_builtin(m);
                if !known {
                    warnings.push(format!(
                        "boot module {m} is not in {}",
                        modules_dir.display()
                    ));
                }
                known
            })
            .collect();
        let keep = db
            .load_order(&wanted)
            .with_context(|| format!("resolving boot modules in {}", modules_dir.display()))?;
        let prefix = format!("lib/modules/{kver}/");
        for entry in &keep {
            let src = modules_dir.join(&entry.path);
            if !src.is_file() {
                bail!("{} (listed in modules.dep) is missing", src.display());
            }
            self.add(&format!("{prefix}{}", entry.path), 0o644, Body::File(src));
        }
        let (dep, softdep, alias) = db.filtered_files(&keep);
        for (name, text) in [
            ("modules.dep", dep),
            ("modules.softdep", softdep),
            ("modules.alias", alias),
        ] {
            self.data(&format!("{prefix}{name}"), 0o644, text.into_bytes());
        }
        // modules.order (every module of the kernel, 160 KB) is not carried:
        // only depmod reads it, and neither init nor busybox's modprobe runs depmod.
        let builtin = modules_dir.join("modules.builtin");
        if builtin.is_file() {
            self.add(
                &format!("{prefix}modules.builtin"),
                0o644,
                Body::File(builtin),
            );
        }
        Ok(warnings)
    }

    /// The unlock program, the dynamic loader, the library closure (looked
    /// up in `dirs`) and an optional key file.
    pub fn luks(&mut self, unlock: &Path, keyfile: Option<&Path>, dirs: &[&str]) -> Result<()> {
        let bytes =
            std::fs::read(unlock).with_context(|| format!("cannot read {}", unlock.display()))?;
        let interp = elf::interpreter(&bytes)
            .with_context(|| format!("{} is not a valid ELF", unlock.display()))?
            .with_context(|| format!("{} has no dynamic loader", unlock.display()))?;
        let interp_host = Path::new(&interp)
            .canonicalize()
            .with_context(|| format!("cannot resolve the dynamic loader {interp}"))?;
        self.file(&interp, 0o755, &interp_host);
        self.file(UNLOCK_IN_ARCHIVE, 0o755, unlock);
        for (soname, host) in library_closure(unlock, dirs, &interp)? {
            self.file(&format!("{LIBRARY_DIR_IN_ARCHIVE}/{soname}"), 0o755, &host);
        }
        if let Some(keyfile) = keyfile {
            self.file(KEYFILE_IN_ARCHIVE, 0o400, keyfile);
        }
        Ok(())
    }

    /// The zstd-compressed newc archive at `level`, every member's mtime
    /// `mtime`.
    pub fn to_bytes(&self, level: i32, mtime: u32) -> Result<Vec<u8>> {
        use cpio::newc::Builder;
        const S_IFDIR: u32 = 0o040000;
        const S_IFREG: u32 = 0o100000;
        const S_IFLNK: u32 = 0o120000;
        const S_IFCHR: u32 = 0o020000;
        let tree = self.with_parents();
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level)
            .context("cannot start the zstd encoder")?;
        encoder
            .window_log(ZSTD_WINDOW_LOG)
            .and_then(|()| encoder.long_distance_matching(true))
            .context("cannot set the zstd window")?;
        for (ino, (path, member)) in (1u32..).zip(&tree) {
            let (kind, data, rdev) = match &member.body {
                Body::Dir => (S_IFDIR, Vec::new(), (0, 0)),
                Body::File(src) => (
                    S_IFREG,
                    std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?,
                    (0, 0),
                ),
                Body::Data(bytes) => (S_IFREG, bytes.clone(), (0, 0)),
                Body::Symlink(target) => (S_IFLNK, target.clone().into_bytes(), (0, 0)),
                Body::CharDev(major, minor) => (S_IFCHR, Vec::new(), (*major, *minor)),
            };
            let size = u32::try_from(data.len())
                .with_context(|| format!("{path} is too big for a newc archive"))?;
            let mut writer = Builder::new(path)
                .ino(ino)
                .mode(kind | member.perm)
                .uid(0)
                .gid(0)
                .nlink(if kind == S_IFDIR { 2 } else { 1 })
                .mtime(mtime)
                .rdev_major(rdev.0)
                .rdev_minor(rdev.1)
                .write(&mut encoder, size);
            writer
                .write_all(&data)
                .with_context(|| format!("cannot archive {path}"))?;
            writer
                .finish()
                .with_context(|| format!("cannot archive {path}"))?;
        }
        cpio::newc::trailer(&mut encoder).context("cannot write the cpio trailer")?;
        encoder.finish().context("cannot finish the zstd stream")
    }

    /// The members plus a 0755 directory for every missing ancestor.
    fn with_parents(&self) -> BTreeMap<String, Member> {
        let mut tree = self.members.clone();
        for path in self.members.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                tree.entry(parent.to_string()).or_insert(Member {
                    perm: 0o755,
                    body: Body::Dir,
                });
                p = parent;
            }
        }
        tree
    }
}

/// Every shared library `binary` needs, directly or through other libraries:
/// `(soname, resolved host file)`, sorted by soname. Each soname is looked up
/// in `dirs` in order (the first existing file wins, symlinks resolved). The
/// dynamic loader `interp` (which libc lists too) is left out: it is carried
/// at its own path.
pub fn library_closure(
    binary: &Path,
    dirs: &[&str],
    interp: &str,
) -> Result<BTreeMap<String, PathBuf>> {
    let loader = Path::new(interp).file_name();
    let mut found = BTreeMap::new();
    let mut queue = vec![binary.to_path_buf()];
    while let Some(file) = queue.pop() {
        let bytes =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let needed = elf::needed_libraries(&bytes)
            .with_context(|| format!("cannot read the dynamic section of {}", file.display()))?;
        for soname in needed {
            if found.contains_key(&soname) || loader == Some(std::ffi::OsStr::new(&soname)) {
                continue;
            }
            let host = dirs
                .iter()
                .map(|d| Path::new(d).join(&soname))
                .find(|p| p.is_file())
                .with_context(|| {
                    format!(
                        "{} needs {soname}, which is in none of {}",
                        file.display(),
                        dirs.join(", ")
                    )
                })?
                .canonicalize()
                .with_context(|| format!("cannot resolve {soname}"))?;
            queue.push(host.clone());
            found.insert(soname, host);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;

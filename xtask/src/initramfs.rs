//! The initramfs: a zstd-compressed newc cpio archive (written with the
//! `cpio` crate's newc builder) holding `/init` (our static PID 1),
//! `/bin/saver`, a static busybox with `/bin/sh`, Debian's static e2fsck as
//! `/bin/e2fsck`, the device nodes the
//! kernel needs before devtmpfs, everything in `initramfs-skel/`, and
//! `lib/modules/<kver>/` with the closure of
//! [`BOOT_MODULES`](ramstick_common::modules::BOOT_MODULES) plus
//! module-index files restricted to it.
//!
//! For a LUKS image ([`Luks`]) it also holds `/bin/ramstick-unlock` (glibc,
//! dynamically linked), its shared-library closure in
//! `lib/x86_64-linux-gnu/` (found by following the `DT_NEEDED` entries of
//! the binary and of every library, resolved in [`LIBRARY_DIRS`] like the
//! dynamic loader does), the loader itself at its `PT_INTERP` path, and an
//! optional key file.
//!
//! The archive is reproducible: members sorted by path, uid/gid 0, mtime 0
//! (or `$SOURCE_DATE_EPOCH`), sequential inode numbers, a fixed zstd level.

use crate::build::{self, Binaries};
use crate::{deps, kernel};
use anyhow::{bail, Context, Result};
use ramstick_common::modules::{ModDb, BOOT_MODULES};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the host's libraries are looked up, in order (Debian multiarch).
const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
/// Where the unlock program's libraries go in the archive (init points
/// `LD_LIBRARY_PATH` there).
const LIBRARY_DIR_IN_ARCHIVE: &str = "lib/x86_64-linux-gnu";
/// Where a LUKS key file goes in the archive (`ramstick.luks.keyfile=/` this).
pub const KEYFILE_IN_ARCHIVE: &str = "etc/ramstick/luks.key";

/// What a LUKS initramfs carries besides the usual.
#[derive(Debug, Clone)]
pub struct Luks {
    /// The glibc `ramstick-unlock` binary.
    pub unlock: PathBuf,
    /// A key file to carry at [`KEYFILE_IN_ARCHIVE`] (readable by anyone who
    /// reads the ESP: for setups where the ESP is protected otherwise).
    pub keyfile: Option<PathBuf>,
}

/// zstd level of the archive (fixed for reproducibility). The kernel
/// decompresses any level at the same speed; 19 and a 16 MiB window with
/// long-distance matching (which finds the code init, the saver, busybox and
/// e2fsck share) keep the archive near 4 MiB with e2fsck in it, where level
/// 12 made it 4.8 MiB. The kernel needs the window in RAM while unpacking.
const ZSTD_LEVEL: i32 = 19;
/// log2 of the zstd window (see [`ZSTD_LEVEL`]).
const ZSTD_WINDOW_LOG: u32 = 24;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Fail unless the fetched kernel has this version (or: the version of `--modules`).
    #[arg(long)]
    pub kernel_version: Option<String>,
    /// A `lib/modules/<kver>` directory to take the modules from (default: the fetched kernel's).
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Output file (default: target/ramstick/initramfs-<kver>.img).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `cargo xtask initramfs`: builds the binaries and the archive; returns its path.
pub fn run(a: &Args) -> Result<PathBuf> {
    let (modules_dir, kver) = match &a.modules {
        Some(dir) => {
            let kver = match &a.kernel_version {
                Some(v) => v.clone(),
                None => dir_name(dir)?,
            };
            (dir.clone(), kver)
        }
        None => {
            let k = kernel::fetch_debian()?;
            if let Some(v) = a.kernel_version.as_ref().filter(|v| **v != k.version) {
                bail!(
                    "--kernel-version {v} does not match the fetched kernel {}",
                    k.version
                );
            }
            (k.modules_dir, k.version)
        }
    };
    let out = a.out.clone().unwrap_or_else(|| {
        crate::target_dir()
            .join("ramstick")
            .join(format!("initramfs-{kver}.img"))
    });
    let bins = build::static_binaries()?;
    build(&bins, &modules_dir, &kver, &out)?;
    println!("{}", out.display());
    Ok(out)
}

/// The last component of `dir` after resolving symlinks.
fn dir_name(dir: &Path) -> Result<String> {
    let real = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no directory name", dir.display()))
}

/// Writes the initramfs for kernel `kver` with modules from `modules_dir` to `out`.
pub fn build(bins: &Binaries, modules_dir: &Path, kver: &str, out: &Path) -> Result<()> {
    build_with(bins, modules_dir, kver, out, None)
}

/// [`build`], plus the LUKS unlock program and its libraries when `luks` is given.
pub fn build_with(
    bins: &Binaries,
    modules_dir: &Path,
    kver: &str,
    out: &Path,
    luks: Option<&Luks>,
) -> Result<()> {
    let programs = HostPrograms {
        busybox: deps::busybox_static()?,
        e2fsck: deps::e2fsck_static()?,
    };
    let skel = crate::workspace_root().join("initramfs-skel");
    let mut tree = contents(bins, &programs, &skel, modules_dir, kver)?;
    if let Some(luks) = luks {
        add_luks(&mut tree, luks, LIBRARY_DIRS)?;
        add_parents(&mut tree);
    }
    let bytes = archive(&tree, mtime())?;
    write_atomically(out, &bytes)
}

/// The unlock program, the dynamic loader, the library closure and the key file.
fn add_luks(tree: &mut Tree, luks: &Luks, dirs: &[&str]) -> Result<()> {
    let bytes = std::fs::read(&luks.unlock)
        .with_context(|| format!("cannot read {}", luks.unlock.display()))?;
    let interp = build::interpreter(&bytes)
        .with_context(|| format!("{} is not a valid ELF", luks.unlock.display()))?
        .with_context(|| format!("{} has no dynamic loader", luks.unlock.display()))?;
    let interp_host = Path::new(&interp)
        .canonicalize()
        .with_context(|| format!("cannot resolve the dynamic loader {interp}"))?;
    add(
        tree,
        interp.trim_start_matches('/'),
        0o755,
        Body::File(interp_host),
    );
    add(
        tree,
        "bin/ramstick-unlock",
        0o755,
        Body::File(luks.unlock.clone()),
    );
    for (soname, host) in library_closure(&luks.unlock, dirs, &interp)? {
        add(
            tree,
            &format!("{LIBRARY_DIR_IN_ARCHIVE}/{soname}"),
            0o755,
            Body::File(host),
        );
    }
    if let Some(keyfile) = &luks.keyfile {
        add(tree, KEYFILE_IN_ARCHIVE, 0o400, Body::File(keyfile.clone()));
    }
    Ok(())
}

/// Every shared library `binary` needs, directly or through other libraries:
/// `(soname, resolved host file)`, sorted by soname. Each soname is looked up
/// in `dirs` in order (the first existing file wins, symlinks resolved). The
/// dynamic loader `interp` (which libc lists too) is left out: it is carried
/// at its own path.
fn library_closure(
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
        let needed = build::needed_libraries(&bytes)
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

/// Writes `bytes` to `<out>.partial`, then renames it to `out`.
pub fn write_atomically(out: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let partial = partial_path(out);
    std::fs::write(&partial, bytes)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))
}

/// `<path>.partial`
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// `$SOURCE_DATE_EPOCH`, else 0.
fn mtime() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

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

/// Archive members by path (relative, no leading `/`), sorted.
type Tree = BTreeMap<String, Member>;

fn add(tree: &mut Tree, path: &str, perm: u32, body: Body) {
    tree.insert(path.to_string(), Member { perm, body });
}

/// The static programs from Debian packages the archive carries.
struct HostPrograms {
    busybox: PathBuf,
    e2fsck: PathBuf,
}

/// Everything the archive holds.
fn contents(
    bins: &Binaries,
    programs: &HostPrograms,
    skel: &Path,
    modules_dir: &Path,
    kver: &str,
) -> Result<Tree> {
    let mut tree = Tree::new();
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
        add(&mut tree, dir, 0o755, Body::Dir);
    }
    add(&mut tree, "tmp", 0o1777, Body::Dir);
    add(&mut tree, "dev/console", 0o600, Body::CharDev(5, 1));
    add(&mut tree, "dev/null", 0o666, Body::CharDev(1, 3));
    add(&mut tree, "init", 0o755, Body::File(bins.init.clone()));
    add(
        &mut tree,
        "bin/saver",
        0o755,
        Body::File(bins.saver.clone()),
    );
    add(
        &mut tree,
        "bin/busybox",
        0o755,
        Body::File(programs.busybox.clone()),
    );
    add(
        &mut tree,
        "bin/e2fsck",
        0o755,
        Body::File(programs.e2fsck.clone()),
    );
    add(&mut tree, "bin/sh", 0o777, Body::Symlink("busybox".into()));
    add_host_tree(&mut tree, skel, "")?;
    add_modules(&mut tree, modules_dir, kver)?;
    add_parents(&mut tree);
    Ok(tree)
}

/// Adds the files below `dir` under archive prefix `prefix` (files 0644, or
/// 0755 when executable; directories 0755; symlinks kept).
fn add_host_tree(tree: &mut Tree, dir: &Path, prefix: &str) -> Result<()> {
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
        if meta.is_dir() {
            add(tree, &member, 0o755, Body::Dir);
            add_host_tree(tree, &path, &format!("{member}/"))?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .with_context(|| format!("cannot read link {}", path.display()))?;
            let target = target.to_string_lossy().into_owned();
            add(tree, &member, 0o777, Body::Symlink(target));
        } else if meta.is_file() {
            let perm = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            add(tree, &member, perm, Body::File(path));
        } else {
            bail!("{} is not a file, directory or symlink", path.display());
        }
    }
    Ok(())
}

/// `lib/modules/<kver>/`: the boot module closure and filtered index files.
fn add_modules(tree: &mut Tree, modules_dir: &Path, kver: &str) -> Result<()> {
    let db = ModDb::load(modules_dir)?;
    let wanted: Vec<&str> = BOOT_MODULES
        .iter()
        .copied()
        .filter(|m| {
            let known = db.contains(m) || db.is_builtin(m);
            if !known {
                println!(
                    "warning: boot module {m} is not in {}",
                    modules_dir.display()
                );
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
        add(
            tree,
            &format!("{prefix}{}", entry.path),
            0o644,
            Body::File(src),
        );
    }
    let (dep, softdep, alias) = db.filtered_files(&keep);
    for (name, text) in [
        ("modules.dep", dep),
        ("modules.softdep", softdep),
        ("modules.alias", alias),
    ] {
        add(
            tree,
            &format!("{prefix}{name}"),
            0o644,
            Body::Data(text.into_bytes()),
        );
    }
    // modules.order (every module of the kernel, 160 KB) is not carried:
    // only depmod reads it, and neither init nor busybox's modprobe runs depmod.
    let builtin = modules_dir.join("modules.builtin");
    if builtin.is_file() {
        add(
            tree,
            &format!("{prefix}modules.builtin"),
            0o644,
            Body::File(builtin),
        );
    }
    Ok(())
}

/// Adds a 0755 directory for every missing ancestor of a member.
fn add_parents(tree: &mut Tree) {
    let mut parents = Vec::new();
    for path in tree.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !tree.contains_key(parent) {
                parents.push(parent.to_string());
            }
            p = parent;
        }
    }
    for parent in parents {
        add(tree, &parent, 0o755, Body::Dir);
    }
}

/// The zstd-compressed newc archive of `tree`.
fn archive(tree: &Tree, mtime: u32) -> Result<Vec<u8>> {
    use cpio::newc::Builder;
    const S_IFDIR: u32 = 0o040000;
    const S_IFREG: u32 = 0o100000;
    const S_IFLNK: u32 = 0o120000;
    const S_IFCHR: u32 = 0o020000;
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)
        .context("cannot start the zstd encoder")?;
    encoder
        .window_log(ZSTD_WINDOW_LOG)
        .and_then(|()| encoder.long_distance_matching(true))
        .context("cannot set the zstd window")?;
    for (ino, (path, member)) in (1u32..).zip(tree) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A scratch directory with fake binaries, skel and a tiny modules dir.
    struct Fixture {
        root: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let root = std::env::temp_dir().join(format!("ramstick-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            let m = root.join("modules/6.1.0-test");
            for dir in [
                "kernel/fs/ext4",
                "kernel/lib",
                "kernel/crypto",
                "kernel/fs/squashfs",
            ] {
                fs::create_dir_all(m.join(dir)).unwrap();
            }
            for ko in [
                "kernel/fs/ext4/ext4.ko",
                "kernel/lib/crc16.ko",
                "kernel/crypto/crc32c_generic.ko",
                "kernel/lib/unrelated.ko",
            ] {
                fs::write(m.join(ko), format!("module {ko}")).unwrap();
            }
            fs::write(
                m.join("modules.dep"),
                "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko\nkernel/lib/crc16.ko:\n\
                 kernel/crypto/crc32c_generic.ko:\nkernel/lib/unrelated.ko:\n",
            )
            .unwrap();
            fs::write(
                m.join("modules.softdep"),
                "softdep ext4 pre: crypto-crc32c\n",
            )
            .unwrap();
            fs::write(
                m.join("modules.alias"),
                "alias crypto-crc32c crc32c_generic\nalias fs-unrelated unrelated\n",
            )
            .unwrap();
            fs::write(
                m.join("modules.builtin"),
                "kernel/fs/squashfs/squashfs.ko\n",
            )
            .unwrap();
            fs::write(m.join("modules.order"), "kernel/lib/unrelated.ko\n").unwrap();
            fs::create_dir_all(root.join("skel/etc")).unwrap();
            fs::write(root.join("skel/etc/initrd-release"), "NAME=test\n").unwrap();
            for bin in ["init", "saver", "busybox", "e2fsck"] {
                fs::write(root.join(bin), format!("binary {bin}")).unwrap();
            }
            Fixture { root }
        }

        fn build(&self) -> Vec<u8> {
            let bins = Binaries {
                init: self.root.join("init"),
                saver: self.root.join("saver"),
            };
            let programs = HostPrograms {
                busybox: self.root.join("busybox"),
                e2fsck: self.root.join("e2fsck"),
            };
            let tree = contents(
                &bins,
                &programs,
                &self.root.join("skel"),
                &self.root.join("modules/6.1.0-test"),
                "6.1.0-test",
            )
            .unwrap();
            archive(&tree, 0).unwrap()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    /// One member read back: (name, mode, ino, rdev, content).
    type Archived = (String, u32, u32, (u32, u32), Vec<u8>);

    fn members(archive: &[u8]) -> Vec<Archived> {
        let cpio = zstd::stream::decode_all(archive).unwrap();
        let mut rest: &[u8] = &cpio[..];
        let mut out = Vec::new();
        loop {
            let mut reader = cpio::newc::Reader::new(rest).unwrap();
            let e = reader.entry();
            if e.is_trailer() {
                break;
            }
            let meta = (
                e.name().to_string(),
                e.mode(),
                e.ino(),
                (e.rdev_major(), e.rdev_minor()),
            );
            assert_eq!((e.uid(), e.gid(), e.mtime()), (0, 0, 0));
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
            out.push((meta.0, meta.1, meta.2, meta.3, data));
            rest = reader.finish().unwrap();
        }
        out
    }

    #[test]
    fn two_builds_are_byte_identical() {
        let fixture = Fixture::new("initramfs-repro");
        assert_eq!(fixture.build(), fixture.build());
    }

    #[test]
    fn archive_holds_binaries_nodes_skel_and_the_module_closure() {
        let fixture = Fixture::new("initramfs-content");
        let members = members(&fixture.build());
        let find = |name: &str| {
            members
                .iter()
                .find(|m| m.0 == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(find("init").1, 0o100755);
        assert_eq!(find("init").4, b"binary init");
        assert_eq!(find("bin/saver").4, b"binary saver");
        assert_eq!(find("bin/busybox").4, b"binary busybox");
        assert_eq!(
            (find("bin/e2fsck").1, &find("bin/e2fsck").4[..]),
            (0o100755, &b"binary e2fsck"[..])
        );
        assert_eq!(
            (find("bin/sh").1, &find("bin/sh").4[..]),
            (0o120777, &b"busybox"[..])
        );
        assert_eq!(
            (find("dev/console").1, find("dev/console").3),
            (0o020600, (5, 1))
        );
        assert_eq!(find("dev/null").3, (1, 3));
        assert_eq!(find("tmp").1, 0o041777);
        assert_eq!(find("sysroot").1, 0o040755);
        assert_eq!(find("etc/initrd-release").4, b"NAME=test\n");
        let m = "lib/modules/6.1.0-test/";
        for ko in [
            "kernel/fs/ext4/ext4.ko",
            "kernel/lib/crc16.ko",
            "kernel/crypto/crc32c_generic.ko",
        ] {
            assert_eq!(
                find(&format!("{m}{ko}")).4,
                format!("module {ko}").as_bytes()
            );
        }
        assert!(members.iter().all(|x| !x.0.contains("unrelated.ko")));
        assert!(members.iter().all(|x| !x.0.ends_with("modules.order")));
        let dep = String::from_utf8(find(&format!("{m}modules.dep")).4.clone()).unwrap();
        assert!(!dep.contains("unrelated"));
        let alias = String::from_utf8(find(&format!("{m}modules.alias")).4.clone()).unwrap();
        assert_eq!(alias, "alias crypto-crc32c crc32c_generic\n");
        assert_eq!(
            find(&format!("{m}modules.builtin")).4,
            b"kernel/fs/squashfs/squashfs.ko\n"
        );
        // The archived index resolves to the same closure.
        let db = ModDb::parse(
            &dep,
            &String::from_utf8_lossy(&find(&format!("{m}modules.softdep")).4),
            &alias,
            "",
        );
        let order: Vec<String> = db
            .load_order(&["ext4"])
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(order, ["crc16", "crc32c_generic", "ext4"]);
        // Sorted, parents first, sequential inodes.
        let names: Vec<&String> = members.iter().map(|m| &m.0).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names
            .iter()
            .any(|n| *n == "lib/modules/6.1.0-test/kernel/fs"));
        let inos: Vec<u32> = members.iter().map(|m| m.2).collect();
        assert_eq!(inos, (1..=members.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn library_closure_matches_ldd() {
        // A glibc program of the host stands in for ramstick-unlock.
        let bin = Path::new("/usr/sbin/cryptsetup");
        let Ok(out) = std::process::Command::new("ldd").arg(bin).output() else {
            println!("skipped: no ldd");
            return;
        };
        if !bin.is_file() {
            println!("skipped: no {}", bin.display());
            return;
        }
        let ldd = String::from_utf8_lossy(&out.stdout).into_owned();
        // ldd lists every library of the closure as `soname => path (addr)`.
        let mut expected: Vec<String> = ldd
            .lines()
            .filter_map(|l| {
                l.trim()
                    .split_once(" => ")
                    .map(|(name, _)| name.to_string())
            })
            .collect();
        expected.sort();
        let interp = "/lib64/ld-linux-x86-64.so.2";
        let closure = library_closure(bin, LIBRARY_DIRS, interp).unwrap();
        let got: Vec<String> = closure.keys().cloned().collect();
        assert_eq!(got, expected);
        assert!(closure.values().all(|p| p.is_file() && p.is_absolute()));
        // A library in no directory is an error naming it.
        let err = library_closure(bin, &["/nonexistent"], interp).unwrap_err();
        assert!(format!("{err:#}").contains("which is in none of /nonexistent"));
    }

    #[test]
    fn luks_members_are_added() {
        let bin = Path::new("/usr/sbin/cryptsetup");
        if !bin.is_file() {
            println!("skipped: no {}", bin.display());
            return;
        }
        let fixture = Fixture::new("initramfs-luks");
        let key = fixture.root.join("key");
        fs::write(&key, "k").unwrap();
        let luks = Luks {
            unlock: bin.to_path_buf(),
            keyfile: Some(key.clone()),
        };
        let mut tree = Tree::new();
        add_luks(&mut tree, &luks, LIBRARY_DIRS).unwrap();
        assert_eq!(
            tree["bin/ramstick-unlock"].body,
            Body::File(bin.to_path_buf())
        );
        assert_eq!(tree[KEYFILE_IN_ARCHIVE].perm, 0o400);
        assert!(tree.contains_key("lib64/ld-linux-x86-64.so.2"));
        assert!(tree.contains_key("lib/x86_64-linux-gnu/libc.so.6"));
        assert!(tree.contains_key("lib/x86_64-linux-gnu/libcryptsetup.so.12"));
    }

    #[test]
    fn partial_path_appends_suffix() {
        assert_eq!(
            partial_path(Path::new("a/b.img")),
            Path::new("a/b.img.partial")
        );
    }
}

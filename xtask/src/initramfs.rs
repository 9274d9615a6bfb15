//! `cargo xtask initramfs`: ramstick's initramfs (see [`ramstick_initrd`]
//! for the archive) built from this host: `/init` (our static PID 1),
//! `/bin/saver`, busybox (`/bin/sh`, built from Debian's source with the
//! applets ramstick needs: [`crate::busybox`]) and Debian's static e2fsck
//! (`/bin/e2fsck`), everything in `initramfs-skel/`, the boot modules of
//! the kernel; for a LUKS image ([`Luks`]) also `/bin/ramstick-unlock`
//! (glibc) with its libraries and an optional key file.
//!
//! Reproducible: mtime 0 (or `$SOURCE_DATE_EPOCH`) and zstd level
//! [`ZSTD_LEVEL`]; two builds are byte-identical.

use crate::build::{self, Binaries};
use crate::{deps, kernel};
use anyhow::{bail, Context, Result};
use ramstick_initrd::{Archive, Perms, LIBRARY_DIRS};
use std::path::{Path, PathBuf};

pub use ramstick_initrd::KEYFILE_IN_ARCHIVE;

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
        busybox: crate::busybox::busybox()?,
        e2fsck: deps::e2fsck_static()?,
    };
    let skel = crate::workspace_root().join("initramfs-skel");
    let mut archive = contents(bins, &programs, &skel, modules_dir, kver, luks.is_some())?;
    if let Some(luks) = luks {
        archive.luks(&luks.unlock, luks.keyfile.as_deref(), LIBRARY_DIRS)?;
    }
    let bytes = archive.to_bytes(ZSTD_LEVEL, mtime())?;
    write_atomically(out, &bytes)
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

/// The static programs not built by cargo that the archive carries.
struct HostPrograms {
    busybox: PathBuf,
    e2fsck: PathBuf,
}

/// Everything the archive holds but the LUKS members (the LUKS modules
/// when `luks`).
fn contents(
    bins: &Binaries,
    programs: &HostPrograms,
    skel: &Path,
    modules_dir: &Path,
    kver: &str,
    luks: bool,
) -> Result<Archive> {
    let mut archive = Archive::new();
    archive.file("init", 0o755, &bins.init);
    archive.file("bin/saver", 0o755, &bins.saver);
    archive.file("bin/busybox", 0o755, &programs.busybox);
    archive.file("bin/e2fsck", 0o755, &programs.e2fsck);
    archive.host_tree(skel, "", Perms::Normalize)?;
    for warning in archive.modules(modules_dir, kver, luks)? {
        println!("warning: {warning}");
    }
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_path_appends_suffix() {
        assert_eq!(
            partial_path(Path::new("a/b.img")),
            Path::new("a/b.img.partial")
        );
    }

    #[test]
    fn the_host_archive_has_the_programs_and_the_skel() {
        let dir = ramstick_testkit::TempDir::new("xtask-initrd");
        let modules = dir.join("modules/6.1.0-test");
        dir.file("modules/6.1.0-test/modules.dep", "", 0o644).file(
            "skel/etc/e2fsck.conf",
            "x",
            0o644,
        );
        for f in ["init", "saver", "busybox", "e2fsck"] {
            dir.file(f, f, 0o755);
        }
        let bins = Binaries {
            init: dir.join("init"),
            saver: dir.join("saver"),
        };
        let programs = HostPrograms {
            busybox: dir.join("busybox"),
            e2fsck: dir.join("e2fsck"),
        };
        let a = contents(
            &bins,
            &programs,
            &dir.join("skel"),
            &modules,
            "6.1.0-test",
            false,
        )
        .unwrap();
        for member in [
            "init",
            "bin/saver",
            "bin/busybox",
            "bin/e2fsck",
            "bin/sh",
            "etc/e2fsck.conf",
            "lib/modules/6.1.0-test/modules.dep",
        ] {
            assert!(a.contains(member), "{member}");
        }
    }
}

//! The kernel to boot: Debian's current `linux-image-amd64` fetched into
//! `target/kernel/` (no root needed), one given on the command line, or the
//! one a rootfs ships in `boot/` + `lib/modules/`.

use crate::deps;
use crate::KernelArgs;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A kernel image with its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// e.g. `6.1.0-56-amd64`
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `.../lib/modules/<version>` (with `modules.dep`).
    pub modules_dir: PathBuf,
}

/// Fetches Debian's current kernel package into `target/kernel/<package>/`
/// and runs `depmod` on it. Reuses a previous extraction without network.
pub fn fetch_debian() -> Result<Kernel> {
    deps::ensure(&[
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
        ("depmod", "kmod"),
    ])?;
    let package = current_image_package()?;
    let into = crate::target_dir().join("kernel");
    let root = deps::fetch_deb(&package, &into)?;
    let kernel = kernel_in_tree(&root)?;
    if !kernel.modules_dir.join("modules.dep").is_file() {
        println!("running depmod for {}", kernel.version);
        deps::run(
            deps::cmd("depmod")
                .arg("-b")
                .arg(&root)
                .arg(&kernel.version),
        )?;
    }
    Ok(kernel)
}

/// The package `linux-image-amd64` depends on, e.g. `linux-image-6.1.0-56-amd64`.
fn current_image_package() -> Result<String> {
    image_package_of("linux-image-amd64")
}

/// The `linux-image-<kver>` package the metapackage `meta` depends on.
fn image_package_of(meta: &str) -> Result<String> {
    let query = || {
        deps::output(deps::cmd("apt-cache").args(["depends", meta]))
            .ok()
            .and_then(|text| parse_depends(&text))
    };
    if let Some(package) = query() {
        return Ok(package);
    }
    deps::apt_update()?;
    query().with_context(|| format!("apt-cache depends {meta} names no linux-image-* package"))
}

/// A kernel package of another version than [`fetch_debian`]'s, for the
/// kernel update test: Debian's cloud kernel (`linux-image-cloud-amd64`'s,
/// e.g. `6.1.0-57-cloud-amd64`: another `uname -r`, and a quarter of the
/// size). Returns its version and the `.deb`, kept in `target/kernel/debs/`.
pub fn fetch_other_deb() -> Result<(String, PathBuf)> {
    let package = image_package_of("linux-image-cloud-amd64")?;
    let version = package
        .strip_prefix("linux-image-")
        .context("not a linux-image package")?
        .to_string();
    let deb = deps::download_deb(&package, &crate::target_dir().join("kernel/debs"))?;
    Ok((version, deb))
}

/// The first `Depends: linux-image-…` of `apt-cache depends` output.
fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
}

/// The kernel inside an extracted package or rootfs: `boot/vmlinuz-<kver>`
/// with `lib/modules/<kver>` (the newest version when several).
fn kernel_in_tree(root: &Path) -> Result<Kernel> {
    let boot = root.join("boot");
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("cannot list {}", boot.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-").map(str::to_string)
        })
        .filter(|v| modules_dir_in(root, v).is_some())
        .collect();
    versions.sort();
    let Some(version) = versions.pop() else {
        bail!(
            "{} has no boot/vmlinuz-<kver> with a matching lib/modules/<kver>",
            root.display()
        );
    };
    let modules_dir = modules_dir_in(root, &version).context("modules dir vanished")?;
    Ok(Kernel {
        vmlinuz: boot.join(format!("vmlinuz-{version}")),
        modules_dir,
        version,
    })
}

fn modules_dir_in(root: &Path, version: &str) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(version))
        .find(|d| d.is_dir())
}

/// The kernel selected by `--kernel`/`--modules`, else Debian's.
pub fn resolve(args: &KernelArgs) -> Result<Kernel> {
    let (vmlinuz, modules_dir) = match (&args.kernel, &args.modules) {
        (None, None) => return fetch_debian(),
        (Some(k), Some(m)) => (k, m),
        _ => bail!("--kernel and --modules must be given together"),
    };
    if !vmlinuz.is_file() {
        bail!("kernel image {} does not exist", vmlinuz.display());
    }
    if !modules_dir.join("modules.dep").is_file() {
        bail!(
            "{} has no modules.dep (run depmod for it first)",
            modules_dir.display()
        );
    }
    let version = modules_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", modules_dir.display()))?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("--modules has no directory name")?;
    Ok(Kernel {
        version,
        vmlinuz: vmlinuz.clone(),
        modules_dir: modules_dir.clone(),
    })
}

/// The kernel a rootfs ships (`boot/vmlinuz-<kver>` + `lib/modules/<kver>`),
/// running `depmod -b` on the rootfs when `modules.dep` is missing.
pub fn from_rootfs(rootfs: &Path) -> Option<Kernel> {
    let kernel = kernel_in_tree(rootfs).ok()?;
    if kernel.modules_dir.join("modules.dep").is_file() {
        return Some(kernel);
    }
    println!("running depmod for the rootfs kernel {}", kernel.version);
    let depmod = deps::run(
        deps::cmd("depmod")
            .arg("-b")
            .arg(rootfs)
            .arg(&kernel.version),
    );
    match depmod {
        Ok(()) if kernel.modules_dir.join("modules.dep").is_file() => Some(kernel),
        _ => {
            println!(
                "warning: ignoring the kernel in {}: depmod failed",
                rootfs.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let alt = "linux-image-amd64\n |Depends: <linux-image-6.1.0-9-amd64>\n  Depends: x\n";
        assert_eq!(
            parse_depends(alt).as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n  Depends: foo\n"), None);
    }

    #[test]
    fn finds_the_kernel_in_a_tree() {
        let root = ramstick_testkit::TempDir::new("ktree");
        // A vmlinuz without modules does not count.
        root.file("boot/vmlinuz-6.1.0-1-amd64", "k", 0o644).file(
            "boot/vmlinuz-6.9.0-1-amd64",
            "k",
            0o644,
        );
        assert!(kernel_in_tree(&root).is_err());
        root.mkdir("lib/modules/6.1.0-1-amd64");
        let k = kernel_in_tree(&root).unwrap();
        assert_eq!(k.version, "6.1.0-1-amd64");
        assert_eq!(k.vmlinuz, root.join("boot/vmlinuz-6.1.0-1-amd64"));
        assert_eq!(k.modules_dir, root.join("lib/modules/6.1.0-1-amd64"));
    }
}

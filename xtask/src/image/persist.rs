//! The persist partition's content, staged in a directory: the rootfs as
//! `rootfs.squashfs` (without modules, firmware and `boot/`, with the saver
//! hooks), the kernel's modules and the firmware as their own squashfs
//! images (the modules one cached per kernel), `user/` and the extra files.

use super::{unique_partial, Spec};
use crate::cache::Hasher;
use crate::hooks;
use crate::kernel::Kernel;
use crate::{deps, rootfs};
use anyhow::{Context, Result};
use ramstick_common::tree::resolve_in_root;
use std::fs;
use std::path::{Path, PathBuf};

/// The persist filesystem's content: the squashfs images, `user/` and the
/// extra files, minus `spec.omit`.
pub(super) fn stage_persist(
    spec: &Spec,
    kernel: &Kernel,
    hooks: &hooks::Plan,
    work: &Path,
    persist: &Path,
) -> Result<()> {
    fs::create_dir_all(persist).with_context(|| format!("cannot create {}", persist.display()))?;
    let wanted = |name: &str| !spec.omit.iter().any(|o| o == name);
    let rootfs = &spec.rootfs;
    if wanted("rootfs.squashfs") {
        pack_rootfs(
            rootfs,
            &kernel.version,
            hooks,
            work,
            &persist.join("rootfs.squashfs"),
        )?;
    }
    let modules_image = format!("modules-{}.squashfs", kernel.version);
    if wanted(&modules_image) {
        let cached = modules_squashfs(kernel)?;
        let dest = persist.join(&modules_image);
        if fs::hard_link(&cached, &dest).is_err() {
            fs::copy(&cached, &dest).with_context(|| {
                format!("cannot copy {} to {}", cached.display(), dest.display())
            })?;
        }
    }
    if wanted("firmware.squashfs") {
        pack_firmware(rootfs, work, &persist.join("firmware.squashfs"))?;
    }
    if wanted("user") {
        let user = persist.join("user");
        // Its owner on the stick is set by make_persist_ext4 (crate::owners).
        fs::create_dir_all(&user).with_context(|| format!("cannot create {}", user.display()))?;
    }
    for (host, name) in &spec.persist_extra {
        if !wanted(name) {
            continue;
        }
        let dest = persist.join(name);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::copy(host, &dest)
            .with_context(|| format!("cannot copy {} to {}", host.display(), dest.display()))?;
    }
    Ok(())
}

/// The base image of `rootfs` at `out`: the tree without its kernels,
/// modules and firmware (their directories kept empty), with an empty
/// mount point for kernel `kver`'s modules image and the saver hooks of
/// `hooks` (also `cargo xtask update-stick`'s new base).
pub(crate) fn pack_rootfs(
    rootfs: &Path,
    kver: &str,
    hooks: &hooks::Plan,
    work: &Path,
    out: &Path,
) -> Result<()> {
    let modules_rel = resolve_in_root(rootfs, Path::new("lib/modules"))
        .and_then(|p| p.strip_prefix(rootfs).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("lib/modules"));
    // The empty mountpoint for the modules image, whatever the tree has there.
    let pseudo = format!("{}/{kver} d 755 0 0", modules_rel.display());
    let (hook_files, replaced) = hooks.mksquashfs_args(work)?;
    let mut options = vec!["-p".to_string(), pseudo];
    for p in hook_files {
        options.extend(["-p".to_string(), p]);
    }
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let mut excludes = vec![rootfs::MARKER.to_string()];
    excludes.extend(replaced);
    for dir in [
        "lib/modules",
        "lib/firmware",
        "usr/lib/modules",
        "usr/lib/firmware",
        "boot",
    ] {
        excludes.push(format!("{dir}/*"));
    }
    squashfs(rootfs, out, &options, &excludes)
}

/// The firmware image of `rootfs` (its `lib/firmware`, empty when it has
/// none) at `out`.
pub(crate) fn pack_firmware(rootfs: &Path, work: &Path, out: &Path) -> Result<()> {
    let firmware = resolve_in_root(rootfs, Path::new("lib/firmware"))
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| work.join("empty"));
    fs::create_dir_all(work.join("empty")).context("cannot create the empty firmware dir")?;
    squashfs(&firmware, out, &[], &[])
}

/// `modules-<kver>.squashfs` for `kernel`, cached in `target/ramstick/cache/`
/// (keyed by version, modules.dep and the squashfs options): it is the
/// biggest image and the same for every disk built with that kernel.
pub(crate) fn modules_squashfs(kernel: &Kernel) -> Result<PathBuf> {
    let dep_path = kernel.modules_dir.join("modules.dep");
    let dep = fs::read(&dep_path).with_context(|| format!("cannot read {}", dep_path.display()))?;
    let mut h = Hasher::default();
    h.field(&dep);
    h.field(kernel.modules_dir.as_os_str().as_encoded_bytes());
    h.str(&SQUASHFS_OPTIONS.join(" "));
    h.field(&[u8::from(deps::is_root())]);
    let hash = h.finish();
    let dir = crate::target_dir().join("ramstick/cache");
    let image = dir.join(format!("modules-{}-{hash:016x}.squashfs", kernel.version));
    if image.is_file() {
        return Ok(image);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let partial = unique_partial(&image);
    squashfs(&kernel.modules_dir, &partial, &[], &[])?;
    fs::rename(&partial, &image)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), image.display()))?;
    Ok(image)
}

/// zstd at a moderate level: level 15 (the default) takes 8× longer on the
/// kernel modules for 15% less size.
const SQUASHFS_OPTIONS: &[&str] = &[
    "-comp",
    "zstd",
    "-Xcompression-level",
    "9",
    "-noappend",
    "-quiet",
    "-no-progress",
];

/// `mksquashfs src out` with [`SQUASHFS_OPTIONS`], extra options and `-e` excludes.
fn squashfs(src: &Path, out: &Path, extra: &[&str], excludes: &[String]) -> Result<()> {
    let mut cmd = deps::cmd("mksquashfs");
    cmd.arg(src).arg(out).args(SQUASHFS_OPTIONS).args(extra);
    if !deps::is_root() {
        cmd.arg("-all-root");
    }
    if !excludes.is_empty() {
        cmd.args(["-wildcards", "-e"]).args(excludes);
    }
    deps::run(&mut cmd)
}

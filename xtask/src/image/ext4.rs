//! The ext4 filesystem images: `mkfs.ext4 -d` of a staged tree into an
//! image file, and the stick's data filesystem with its owners normalised.

use crate::{deps, owners};
use anyhow::{Context, Result};
use std::fs::File;
use std::path::Path;

/// `mkfs.ext4 -d content` into a new `size`-byte image file (owners as in `content`).
pub(crate) fn make_ext4(image: &Path, size: u64, content: &Path) -> Result<()> {
    mkfs_ext4(image, size, content, &[])
}

/// The stick's data filesystem: [`make_ext4`] with `errors=remount-ro` in
/// the superblock (an error found while running stops writes instead of
/// spreading damage; the kernel's default is to go on) and every owner and
/// mode set by [`owners::normalize`], whoever runs the build.
pub(crate) fn make_persist_ext4(image: &Path, size: u64, content: &Path) -> Result<()> {
    mkfs_ext4(
        image,
        size,
        content,
        &["-e", "remount-ro", "-E", "root_owner=0:0"],
    )?;
    owners::normalize(image, content)
}

fn mkfs_ext4(image: &Path, size: u64, content: &Path, extra: &[&str]) -> Result<()> {
    File::create(image)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("cannot create {}", image.display()))?;
    deps::run(
        deps::cmd("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-L", "RAMSTICK"])
            .args(extra)
            .arg("-d")
            .arg(content)
            .arg(image),
    )
}

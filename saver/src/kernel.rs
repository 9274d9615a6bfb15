//! `saver kernel add|remove`: a kernel installed or removed inside the
//! running stick (Debian's `/etc/kernel/postinst.d` and `postrm.d` hooks
//! call it; see README "Kernel updates"). Adding packs the kernel's modules
//! into `/persist/modules-<kver>.squashfs`, builds its initramfs from init's
//! kit, copies both to the ESP and makes it GRUB's default, the previous
//! kernels staying in the menu as fallbacks; removing takes it out of the
//! menu, then deletes its files. The steps and their order: [`plan`].

pub mod esp;
pub mod onstick;
pub mod plan;

use crate::stick::say;
use anyhow::{bail, Result};
use ramstick_common::bootinfo::INITRAMFS_KIT;
use ramstick_common::bootmenu::check_version;
use std::path::{Path, PathBuf};

/// What the kernel hooks ask.
#[derive(clap::Subcommand, Debug)]
pub enum KernelCmd {
    /// A kernel package was installed: put the kernel on the stick and
    /// make it GRUB's default.
    ///
    /// Example: `saver kernel add 6.1.0-57-amd64 /boot/vmlinuz-6.1.0-57-amd64`
    Add {
        /// The kernel version (`uname -r` once it runs).
        version: String,
        /// Its image (default: /boot/vmlinuz-<version>).
        image: Option<PathBuf>,
    },
    /// A kernel package was removed: take the kernel off the stick (never
    /// the last one).
    ///
    /// Example: `saver kernel remove 6.1.0-56-amd64`
    Remove {
        /// The kernel version.
        version: String,
    },
}

/// The persist partition.
const PERSIST: &str = "/persist";

pub fn kernel(cmd: &KernelCmd) -> Result<()> {
    let (version, adding) = match cmd {
        KernelCmd::Add { version, .. } => (version, true),
        KernelCmd::Remove { version } => (version, false),
    };
    check_version(version)?;
    let image = match cmd {
        KernelCmd::Add {
            image: Some(image), ..
        } => image.clone(),
        _ => PathBuf::from(format!("/boot/vmlinuz-{version}")),
    };
    if adding && !image.is_file() {
        bail!("the kernel image {} does not exist", image.display());
    }
    let esp = esp::mount_esp(Path::new(PERSIST))?;
    let menu = onstick::read_menu(&esp.dir)?;
    let steps = if adding {
        plan::plan_add(&menu, version)?
    } else {
        plan::plan_remove(&menu, version)?
    };
    let mut stick = onstick::OnStick {
        persist: PathBuf::from(PERSIST),
        esp: esp.dir.clone(),
        modules_root: PathBuf::from("/lib/modules"),
        kit: PathBuf::from(INITRAMFS_KIT),
        image,
        initramfs: None,
    };
    plan::run(&mut stick, version, &steps)?;
    let next = onstick::read_menu(&esp.dir)?;
    let fallbacks = next.kernels[1..].join(", ");
    say(&format!(
        "kernel {version} {}; GRUB boots {} by default{}",
        if adding {
            "is on the stick"
        } else {
            "is off the stick"
        },
        next.kernels[0],
        if fallbacks.is_empty() {
            String::new()
        } else {
            format!(" (fallback entries: {fallbacks})")
        }
    ));
    Ok(())
}

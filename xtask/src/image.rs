//! A bootable GPT disk image from a rootfs tree, built without root:
//!
//! * partition 1 `ESP`: FAT32 (`mkfs.vfat` + mtools) with a standalone GRUB
//!   as `EFI/BOOT/BOOTX64.EFI`, `/vmlinuz-<kver>`, `/initramfs-<kver>.img`,
//!   the boot menu record `/grub/ramstick-menu.json` with `/grub/grub.cfg`
//!   made from it (see [`ramstick_common::bootmenu`]), and the
//!   `/ramstick-esp.id` marker GRUB searches for;
//! * partition 2 `RAMSTICK`: ext4 (`mkfs.ext4 -d`) holding
//!   `rootfs.squashfs` (the tree without kernel modules, firmware and
//!   `boot/`, plus the saver hook for its init system and the other files
//!   of [`crate::hooks`], which the tree itself never gets),
//!   `modules-<kver>.squashfs` (the content of
//!   `lib/modules/<kver>`), `firmware.squashfs` (the content of
//!   `lib/firmware`) and an empty `user/`; everything root:root 0644/0755
//!   but `user/` (uid 1000), whoever builds (see [`crate::owners`]), and
//!   `errors=remount-ro` in the superblock.
//!
//! With `--luks-passphrase-file` partition 2 is a LUKS2 container (label
//! `RAMSTICK`, argon2id) holding that ext4: the ext4 is made 16 MiB smaller
//! than the partition and `cryptsetup reencrypt --encrypt
//! --reduce-device-size 16M` encrypts the file in place, in user space (no
//! device-mapper, no root). The initramfs then carries the unlock program
//! (see [`initramfs::Luks`]); init finds the container by its label.
//!
//! The partition table is written by `sfdisk` on the image file and the two
//! filesystems are copied in at their offsets. Everything is built in a
//! scratch directory under `target/` and `<out>.partial`; only a complete
//! image is renamed to `out`.
//!
//! This file runs the build in that order; each part is a module:
//! [`persist`] stages the persist partition's content, [`ext4`] makes its
//! filesystem, [`luks`] encrypts it, [`esp`] makes the ESP with GRUB, and
//! [`layout`] sizes the disk and writes the GPT and the partitions.

mod esp;
mod ext4;
mod layout;
mod luks;
mod persist;

pub(crate) use esp::make_esp;
pub(crate) use ext4::{make_ext4, make_persist_ext4};
pub(crate) use layout::{dir_size, round_up_mib, write_disk, Layout, GPT_GAP, MIB};
pub use luks::{LuksSpec, LUKS_TEST_ITERATIONS, LUKS_TEST_MEMORY_KIB};

use crate::build::{self, Binaries};
use crate::deps;
use crate::hooks::{self, Saver};
use crate::initramfs::{self, partial_path};
use crate::kernel::{self, Kernel};
use anyhow::{bail, Context, Result};
use esp::GRUB_DIR;
use layout::parse_image_size;
use luks::LUKS_HEADER;
use persist::stage_persist;
pub(crate) use persist::{modules_squashfs, pack_firmware, pack_rootfs};
use ramstick_common::tree::resolve_in_root;
use std::fs;
use std::path::{Path, PathBuf};

const TOOLS: &[(&str, &str)] = &[
    ("mksquashfs", "squashfs-tools"),
    ("mkfs.vfat", "dosfstools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
    ("mkfs.ext4", "e2fsprogs"),
    ("sfdisk", "fdisk"),
    ("grub-mkstandalone", "grub-common"),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The root filesystem tree (needs sbin/init).
    #[arg(long)]
    pub rootfs: PathBuf,
    /// The disk image to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Total image size, e.g. 512M or 2G (default: just what is needed).
    #[arg(long)]
    pub size: Option<String>,
    /// Encrypt the persist partition (LUKS2) with the passphrase in this
    /// file (one trailing newline is not part of it).
    #[arg(long)]
    pub luks_passphrase_file: Option<PathBuf>,
    /// Also unlock with this key file, carried in the initramfs at
    /// /etc/ramstick/luks.key (whoever can read the ESP can read it).
    #[arg(long, requires = "luks_passphrase_file")]
    pub luks_keyfile_in_initramfs: Option<PathBuf>,
    /// argon2id memory cost of the key slots in KiB.
    #[arg(long, default_value_t = LUKS_TEST_MEMORY_KIB, requires = "luks_passphrase_file")]
    pub luks_pbkdf_memory: u32,
    /// argon2id time cost (passes) of the key slots; ignored with --luks-iter-time.
    #[arg(long, default_value_t = LUKS_TEST_ITERATIONS, requires = "luks_passphrase_file")]
    pub luks_pbkdf_iterations: u32,
    /// Let cryptsetup benchmark this machine for a key derivation of this
    /// many ms instead of a fixed time cost (e.g. 2000 for a real stick).
    #[arg(long, requires = "luks_passphrase_file")]
    pub luks_iter_time: Option<u32>,
    /// Build the stick although nothing will save its sessions: no saver
    /// hook is added (e.g. a tree whose init system is not recognised);
    /// every boot says so.
    #[arg(long)]
    pub no_saver: bool,
    #[command(flatten)]
    pub kernel: crate::KernelArgs,
}

/// Everything [`build()`] needs (the e2e harness fills it directly).
#[derive(Debug, Clone)]
pub struct Spec {
    pub rootfs: PathBuf,
    pub out: PathBuf,
    /// Total size in bytes (rounded down to MiB); `None`: what is needed.
    pub size: Option<u64>,
    /// Used unless the rootfs ships its own kernel (`boot/vmlinuz-<kver>`).
    pub kernel: Kernel,
    pub bins: Binaries,
    /// Appended to every GRUB entry's `linux` line.
    pub extra_cmdline: String,
    /// Host file → name in the persist filesystem (e.g. an `upperfs.squashfs`).
    pub persist_extra: Vec<(PathBuf, String)>,
    /// Names to leave out of the persist filesystem (e.g. `rootfs.squashfs`).
    pub omit: Vec<String>,
}

/// `cargo xtask image`.
pub fn run(a: &Args) -> Result<()> {
    let luks = match &a.luks_passphrase_file {
        None => None,
        Some(file) => Some(LuksSpec {
            passphrase_file: file.clone(),
            keyfile_in_initramfs: a.luks_keyfile_in_initramfs.clone(),
            pbkdf_memory_kib: a.luks_pbkdf_memory,
            iter_time_ms: a.luks_iter_time,
            iterations: a.luks_pbkdf_iterations,
            unlock: build::unlock_binary()?,
        }),
    };
    let size = a.size.as_deref().map(parse_image_size).transpose()?;
    check_rootfs(&a.rootfs)?;
    let kernel = match kernel::from_rootfs(&a.rootfs) {
        Some(k) => {
            if a.kernel.kernel.is_some() {
                println!(
                    "note: {} ships kernel {}; it is used instead of --kernel",
                    a.rootfs.display(),
                    k.version
                );
            }
            k
        }
        None => kernel::resolve(&a.kernel)?,
    };
    let bins = build::static_binaries()?;
    let spec = Spec {
        rootfs: a.rootfs.clone(),
        out: a.out.clone(),
        size,
        kernel,
        bins,
        extra_cmdline: String::new(),
        persist_extra: Vec::new(),
        omit: Vec::new(),
    };
    let saver = if a.no_saver {
        Saver::None
    } else {
        Saver::Required
    };
    build_full(&spec, luks.as_ref(), saver)?;
    println!("disk image: {}", a.out.display());
    Ok(())
}

/// The rootfs must be a directory with an `sbin/init` (possibly a symlink,
/// resolved inside the tree).
pub fn check_rootfs(rootfs: &Path) -> Result<()> {
    let meta = rootfs
        .metadata()
        .with_context(|| format!("rootfs {} does not exist", rootfs.display()))?;
    if !meta.is_dir() {
        bail!("rootfs {} is not a directory", rootfs.display());
    }
    let init = resolve_in_root(rootfs, Path::new("sbin/init"));
    if !init.is_some_and(|p| p.is_file()) {
        bail!(
            "rootfs {} has no sbin/init (or it is a dangling symlink): not a root filesystem",
            rootfs.display()
        );
    }
    Ok(())
}

/// Removes the scratch directory, and the partial image unless committed.
struct Scratch {
    dir: PathBuf,
    partial: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort cleanup; errors here cannot be reported usefully.
        let _ = deps::remove_if_exists(&self.dir);
        let _ = deps::remove_if_exists(&self.partial);
        // The parent `tmp/` goes too once no other build uses it.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Builds the disk image described by `spec`.
pub fn build(spec: &Spec) -> Result<()> {
    build_encrypted(spec, None)
}

/// Builds the disk image described by `spec`, with the persist partition
/// encrypted when `luks` is given.
pub fn build_encrypted(spec: &Spec, luks: Option<&LuksSpec>) -> Result<()> {
    build_full(spec, luks, Saver::Required)
}

/// [`build_encrypted`], with the saver hook as `saver` says.
pub fn build_full(spec: &Spec, luks: Option<&LuksSpec>, saver: Saver) -> Result<()> {
    check_rootfs(&spec.rootfs)?;
    let hooks = hooks::plan(&spec.rootfs, saver)?;
    for line in hooks.describe() {
        println!("rootfs.squashfs: {line}");
    }
    if luks.is_some() {
        deps::ensure(&[("cryptsetup", "cryptsetup-bin")])?;
    }
    deps::ensure(TOOLS)?;
    deps::ensure_files(&[(GRUB_DIR, "grub-efi-amd64-bin")])?;
    let kernel = kernel::from_rootfs(&spec.rootfs).unwrap_or_else(|| spec.kernel.clone());
    let name = spec
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("--out has no file name")?;
    let scratch = Scratch {
        dir: crate::target_dir()
            .join("ramstick/tmp")
            .join(format!("{name}-{}", std::process::id())),
        partial: partial_path(&spec.out),
    };
    deps::remove_if_exists(&scratch.dir)?;
    fs::create_dir_all(&scratch.dir)
        .with_context(|| format!("cannot create {}", scratch.dir.display()))?;
    if let Some(parent) = spec.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let work = &scratch.dir;

    let initrd = work.join("initramfs.img");
    let initramfs_luks = luks.map(|l| initramfs::Luks {
        unlock: l.unlock.clone(),
        keyfile: l.keyfile_in_initramfs.clone(),
    });
    initramfs::build_with(
        &spec.bins,
        &kernel.modules_dir,
        &kernel.version,
        &initrd,
        initramfs_luks.as_ref(),
    )?;
    let persist = work.join("persist");
    stage_persist(spec, &kernel, &hooks, work, &persist)?;
    let esp = work.join("esp.img");
    let mut cmdline = spec.extra_cmdline.clone();
    if luks.is_some_and(|l| l.keyfile_in_initramfs.is_some()) {
        cmdline = format!(
            "ramstick.luks.keyfile=/{} {cmdline}",
            initramfs::KEYFILE_IN_ARCHIVE
        );
    }
    let esp_size = make_esp(&esp, work, &kernel, &initrd, &cmdline)?;

    let header = if luks.is_some() { LUKS_HEADER } else { 0 };
    let persist_min = round_up_mib(dir_size(&persist)? * 13 / 10) + 64 * MIB + header;
    let needed = GPT_GAP + esp_size + persist_min + GPT_GAP;
    let total = match spec.size {
        None => needed,
        Some(given) if given / MIB * MIB < needed => bail!(
            "image size {} MiB is too small: this rootfs needs at least {} MiB",
            given / MIB,
            needed / MIB
        ),
        Some(given) => given / MIB * MIB,
    };
    let persist_size = total - 2 * GPT_GAP - esp_size;
    let ext4 = work.join("persist.img");
    make_persist_ext4(&ext4, persist_size - header, &persist)?;
    if let Some(luks) = luks {
        luks::encrypt(&ext4, persist_size, luks, work)?;
    }

    let layout = Layout {
        total,
        esp_size,
        persist_size,
    };
    write_disk(&scratch.partial, &layout, &esp, &ext4)?;
    fs::rename(&scratch.partial, &spec.out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            scratch.partial.display(),
            spec.out.display()
        )
    })?;
    println!(
        "{}: {} MiB (ESP {} MiB, RAMSTICK {} MiB), kernel {}",
        spec.out.display(),
        total / MIB,
        esp_size / MIB,
        persist_size / MIB,
        kernel.version
    );
    Ok(())
}

/// `<path>.partial-<pid>`: a temporary name no concurrent xtask shares.
pub(crate) fn unique_partial(path: &Path) -> PathBuf {
    let mut name = partial_path(path).into_os_string();
    name.push(format!("-{}", std::process::id()));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_checks_name_the_path() {
        let t = ramstick_testkit::TempDir::new("imgroot");
        let dir = t.join("root");
        let err = check_rootfs(&dir).unwrap_err().to_string();
        assert!(err.contains(&dir.display().to_string()) && err.contains("does not exist"));
        t.mkdir("root/bin");
        let err = check_rootfs(&dir).unwrap_err().to_string();
        assert!(err.contains("no sbin/init"), "{err}");
        t.link("root/sbin/init", "/bin/busybox");
        // Dangling inside the tree, even if the host has /bin/busybox.
        assert!(check_rootfs(&dir).is_err());
        t.file("root/bin/busybox", "", 0o755);
        check_rootfs(&dir).unwrap();
        let file = dir.join("bin/busybox");
        assert!(check_rootfs(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
    }
}

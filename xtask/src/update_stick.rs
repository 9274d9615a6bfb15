//! `cargo xtask update-stick`: a root filesystem built on this host (and
//! optionally a kernel) written as the new base of the inactive slot of an
//! existing stick or stick image, then offered to GRUB for one trial boot.
//!
//! The stick's two partitions are attached to loop devices (by their
//! offsets in the GPT, as `sfdisk --json` lists them: an image file or a
//! whole device alike); the persist partition is mounted under `target/`,
//! the ESP is read and written with mtools ([`esp`]). The committed slot is
//! GRUB's `ramstick_slot` (absent: `a`); the other one is written with the
//! saver's slot write plan ([`ramstick_saver::slotwrite`], the code `saver
//! fold` runs): its record, base and chains removed, the new base (packed
//! like `cargo xtask image` packs one, with the saver hooks) written under a
//! temporary name, synced, read back from the device and compared with what
//! was packed, renamed, and `slot.json` written last. A kernel, its
//! initramfs and its modules image are added beside the others (named by
//! release, shared by both slots: an existing release is left as it is) and
//! made GRUB's default. Only then is `ramstick_trial` set to the slot in
//! `grub/grubenv`. The committed slot's base, its saved states and `user/`
//! are never written.

mod attach;
mod esp;

#[cfg(test)]
use attach::parse_sfdisk;
use attach::refuse_mounted;
pub(crate) use attach::{partitions, Attached};

#[cfg(test)]
use esp::DirEsp;
pub(crate) use esp::Esp;

use crate::build;
use crate::deps;
use crate::hooks::{self, Saver};
use crate::image::{self, modules_squashfs, pack_firmware, pack_rootfs};
use crate::initramfs;
use crate::kernel::{self, Kernel};
use anyhow::{bail, Context, Result};
use ramstick_common::bootmenu::slots::GRUBENV;
use ramstick_common::bootmenu::{self, Menu, GRUB_CFG, MENU_RECORD};
use ramstick_common::grubenv::Env;
use ramstick_common::place::Slot;
use ramstick_common::tree::resolve_in_root;
use ramstick_saver::slot::plan as slotplan;
use ramstick_saver::slot::state::SlotVars;
use ramstick_saver::slotwrite::onstick::{self, ImageSource, OnStick};
use ramstick_saver::slotwrite::plan::{self, Payload, RecordSeed, Target};
use ramstick_saver::slotwrite::record::SlotOrigin;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The persist partition's label.
pub(super) const PERSIST_LABEL: &str = "RAMSTICK";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A stick image (from `cargo xtask image`), updated in place.
    #[arg(long, required_unless_present = "device", conflicts_with = "device")]
    pub image: Option<PathBuf>,
    /// A real stick, e.g. /dev/sdb (not mounted).
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// The new root filesystem tree (needs sbin/init).
    #[arg(long)]
    pub rootfs: PathBuf,
    /// Replace what the inactive slot holds (the previous system, the
    /// rollback target, with its saved states); without it, a slot that
    /// holds something is only described.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub kernel: crate::KernelArgs,
}

/// The files of a kernel to add to the stick.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    pub version: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub modules_image: PathBuf,
}

/// What to write into a mounted stick.
#[derive(Debug, Clone)]
pub struct Update {
    pub rootfs: PathBuf,
    pub kernel: Option<KernelFiles>,
    pub yes: bool,
    /// Scratch space for the images.
    pub work: PathBuf,
    /// Have the kernel read the written images back too (needs root).
    pub kernel_check: bool,
}

/// `cargo xtask update-stick`.
pub fn run(a: &Args) -> Result<()> {
    if !deps::is_root() {
        bail!("update-stick needs root: it attaches the stick's partitions to loop devices and mounts them");
    }
    image::check_rootfs(&a.rootfs)?;
    deps::ensure(&[
        ("mksquashfs", "squashfs-tools"),
        ("sfdisk", "fdisk"),
        ("losetup", "mount"),
        ("mtype", "mtools"),
        ("mshowfat", "mtools"),
    ])?;
    let disk = match (&a.image, &a.device) {
        (Some(image), None) => image.clone(),
        (None, Some(device)) => {
            refuse_mounted(device)?;
            device.clone()
        }
        _ => bail!("give --image FILE or --device /dev/sdX"),
    };
    let work = crate::target_dir()
        .join("ramstick/tmp")
        .join(format!("update-stick-{}", std::process::id()));
    deps::remove_if_exists(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let _cleanup = RemoveDir(work.clone());
    let kernel = match (kernel::from_rootfs(&a.rootfs), &a.kernel.kernel) {
        (Some(k), _) => Some(k),
        (None, Some(_)) => Some(kernel::resolve(&a.kernel)?),
        (None, None) => None,
    };
    let kernel = match kernel {
        Some(k) => Some(kernel_files(&k, &work)?),
        None => None,
    };
    let stick = Attached::attach(&disk, &work)?;
    let update = Update {
        rootfs: a.rootfs.clone(),
        kernel,
        yes: a.yes,
        work: work.join("images"),
        kernel_check: true,
    };
    let mut esp = stick.esp();
    let slot = update_mounted(&mut esp, &stick.persist, &update)?;
    drop(stick);
    println!(
        "{}: slot {slot} holds the new system; GRUB boots it once at the next boot \
         (ramstick_trial={slot}); it becomes the stick's slot when that boot's health check \
         commits it, else the next boot is the committed slot again",
        disk.display()
    );
    Ok(())
}

/// The kernel's image, a new initramfs for it and its modules image.
fn kernel_files(k: &Kernel, work: &Path) -> Result<KernelFiles> {
    let bins = build::static_binaries()?;
    let initrd = work.join(format!("initramfs-{}.img", k.version));
    initramfs::build_with(&bins, &k.modules_dir, &k.version, &initrd, None)?;
    Ok(KernelFiles {
        version: k.version.clone(),
        vmlinuz: k.vmlinuz.clone(),
        initramfs: initrd,
        modules_image: modules_squashfs(k)?,
    })
}

/// Removes a scratch directory on drop — unless something is still
/// mounted in it (the stick's partition, had its unmount failed): its files
/// are never removed with the scratch.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let dir = self.0.to_string_lossy();
        let busy = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .any(|target| target.starts_with(dir.as_ref()));
        if busy || mounts.is_empty() {
            eprintln!(
                "warning: {} is left in place: something may still be mounted in it",
                self.0.display()
            );
            return;
        }
        // Best effort: a leftover scratch directory is only space.
        let _ = deps::remove_if_exists(&self.0);
    }
}

/// The images packed on the host, copied onto the stick and compared.
struct HostImages {
    base: PathBuf,
    firmware: PathBuf,
    /// Where the kernel mounts each image to read it whole (none in the
    /// unit tests, which may run without loop devices).
    mnt: Option<PathBuf>,
}

impl HostImages {
    fn of(&self, payload: Payload) -> &Path {
        match payload {
            Payload::Base => &self.base,
            Payload::Firmware => &self.firmware,
        }
    }
}

impl ImageSource for HostImages {
    fn write(&mut self, payload: Payload, image: &Path) -> Result<()> {
        let from = self.of(payload);
        println!("writing {} to {}", from.display(), image.display());
        fs::copy(from, image)
            .with_context(|| format!("cannot copy {} to {}", from.display(), image.display()))?;
        Ok(())
    }

    fn verify(&mut self, payload: Payload, image: &Path) -> Result<()> {
        let want = ramstick_squash::digests(self.of(payload))
            .with_context(|| format!("cannot read {}", self.of(payload).display()))?;
        let got = ramstick_squash::digests(image)
            .with_context(|| format!("cannot read back {}", image.display()))?;
        if got != want {
            bail!(
                "{} reads back different from what was packed ({} bytes, digest {} instead of {})",
                image.display(),
                got.size,
                got.full,
                want.full
            );
        }
        // Our reader walks its whole directory tree; the kernel, which
        // mounts it at every boot, reads it whole and must agree with it.
        let summary = ramstick_squash::summary(image)
            .with_context(|| format!("our reader cannot read {}", image.display()))?;
        if let Some(mnt) = &self.mnt {
            ramstick_saver::verifymount::read_whole(image, mnt)?;
        }
        println!(
            "{} read back identical to what was packed ({} entries)",
            image.display(),
            summary.entries
        );
        Ok(())
    }
}

/// Writes `u` into the inactive slot of the stick whose ESP is `esp` and
/// whose persist partition is mounted at `persist`; returns the slot.
pub fn update_mounted(esp: &mut dyn Esp, persist: &Path, u: &Update) -> Result<Slot> {
    let Some(block) = esp.read(GRUBENV)? else {
        bail!(
            "the stick's ESP has no {GRUBENV}: a stick made before slots, whose GRUB cannot \
             try a slot. Nothing was written (rebuild the stick with `cargo xtask image`)"
        );
    };
    let env = Env::parse(&block).with_context(|| format!("cannot read the ESP's {GRUBENV}"))?;
    let committed = SlotVars::of(&env).committed;
    let slot = committed.other();
    let firmware_dir = resolve_in_root(&u.rootfs, Path::new("lib/firmware")).filter(|p| p.is_dir());
    let target = Target {
        slot,
        running: None,
        committed,
        firmware: firmware_dir.is_some(),
        b_has_own_firmware: onstick::b_has_own_firmware(persist),
    };
    let plan = plan::plan(&target)?;
    let contents = onstick::inspect(persist, slot);
    if !contents.is_empty() {
        println!(
            "slot {slot} holds the previous system (the rollback target); the update replaces:"
        );
        for line in contents.lines(slot) {
            println!("  {line}");
        }
        if !u.yes {
            bail!("nothing was written: run again with --yes to replace it");
        }
    }
    for note in &plan.notes {
        println!("note: {note}");
    }
    let menu_text = esp
        .read(MENU_RECORD)?
        .with_context(|| format!("the stick's ESP has no {MENU_RECORD}"))?;
    let menu = Menu::from_json(&String::from_utf8_lossy(&menu_text))
        .with_context(|| format!("cannot parse the ESP's {MENU_RECORD}"))?;
    let kver = match &u.kernel {
        Some(k) => k.version.clone(),
        None => menu
            .kernels
            .first()
            .cloned()
            .context("the stick's menu names no kernel")?,
    };

    // The images, packed on the host first: nothing is written before they exist.
    fs::create_dir_all(&u.work).with_context(|| format!("cannot create {}", u.work.display()))?;
    let hooks = hooks::plan(&u.rootfs, Saver::Required)?;
    for line in hooks.describe() {
        println!("rootfs.squashfs: {line}");
    }
    let images = HostImages {
        base: u.work.join("rootfs.squashfs"),
        firmware: u.work.join("firmware.squashfs"),
        mnt: u.kernel_check.then(|| u.work.join("verify")),
    };
    pack_rootfs(&u.rootfs, &kver, &hooks, &u.work, &images.base)?;
    let mut needed = size_of(&images.base)?;
    if target.firmware {
        pack_firmware(&u.rootfs, &u.work, &images.firmware)?;
        needed += size_of(&images.firmware)?;
    }
    let free = free_bytes(persist)? + contents.bytes();
    if free < needed {
        bail!(
            "not enough space on the stick: the new slot needs {needed} bytes and {free} are \
             free (counting what it replaces); nothing was written"
        );
    }
    if let Some(k) = &u.kernel {
        add_kernel(esp, persist, &menu, k, &u.work)?;
    }
    let mut source = images;
    let mut stick = OnStick {
        persist: persist.to_path_buf(),
        source: &mut source,
    };
    let seed = RecordSeed {
        origin: SlotOrigin::Update,
        date: ramstick_saver::clock::display(SystemTime::now()),
        source: None,
        note: format!("{}, kernel {kver}", u.rootfs.display()),
    };
    let record = plan::run(&mut stick, &plan.steps, &seed).with_context(|| {
        format!("the update did not complete: slot {slot} is incomplete (never booted); slot {committed} is untouched")
    })?;
    println!("slot {slot}: {}", record.describe());
    // Then and only then: GRUB boots it once (as `saver slot try` sets it).
    let steps = slotplan::plan_try(&env, slot, true)?;
    slotplan::run(&mut EnvOnEsp(esp), &steps)?;
    Ok(slot)
}

/// GRUB's environment block on an ESP reached through [`Esp`].
struct EnvOnEsp<'a>(&'a mut dyn Esp);

impl slotplan::SlotFs for EnvOnEsp<'_> {
    fn write_env(&mut self, env: &Env) -> Result<()> {
        self.0.write_env(GRUBENV, env)
    }

    fn disarm_watchdog(&mut self) -> Result<()> {
        bail!("a stick on a host has no watchdog to disarm")
    }
}

fn size_of(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len())
}

fn free_bytes(path: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)
        .with_context(|| format!("cannot get the free space of {}", path.display()))?;
    Ok(st.blocks_available() * st.fragment_size())
}

/// Copies `from` to `to` under a temporary name, synced, renamed into place.
fn write_file(from: &Path, to: &Path) -> Result<()> {
    let tmp = initramfs::partial_path(to);
    fs::copy(from, &tmp)
        .with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    fs::rename(&tmp, to)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), to.display()))
}

/// Adds kernel `k`'s files (a release already on the stick keeps its own:
/// both slots may boot it), then makes it GRUB's default.
fn add_kernel(
    esp: &mut dyn Esp,
    persist: &Path,
    menu: &Menu,
    k: &KernelFiles,
    work: &Path,
) -> Result<()> {
    let modules = persist.join(format!("modules-{}.squashfs", k.version));
    if modules.exists() {
        println!(
            "{} is on the stick already: kept (shared by both slots)",
            modules.display()
        );
    } else {
        write_file(&k.modules_image, &modules)?;
    }
    for (from, name) in [
        (&k.vmlinuz, bootmenu::vmlinuz(&k.version)),
        (&k.initramfs, bootmenu::initramfs(&k.version)),
    ] {
        if esp.read(&name)?.is_some() {
            println!("{name} is on the ESP already: kept (shared by both slots)");
        } else {
            esp.write(&name, from)?;
        }
    }
    nix::unistd::sync();
    if menu.kernels.first() == Some(&k.version) {
        return Ok(());
    }
    let next = menu.with_default(&k.version)?;
    for (name, text) in [(MENU_RECORD, next.to_json()), (GRUB_CFG, next.render())] {
        let local = work.join(name.replace('/', "-"));
        fs::write(&local, text).with_context(|| format!("cannot write {}", local.display()))?;
        esp.write(name, &local)?;
    }
    println!(
        "kernel {} is GRUB's default now (for both slots)",
        k.version
    );
    Ok(())
}

#[cfg(test)]
mod tests;

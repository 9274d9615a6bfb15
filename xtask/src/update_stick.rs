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

mod esp;

#[cfg(test)]
use esp::DirEsp;
pub(crate) use esp::{Esp, MtoolsEsp};

use crate::build;
use crate::deps;
use crate::hooks::{self, Saver};
use crate::image::{self, modules_squashfs, pack_firmware, pack_rootfs};
use crate::initramfs;
use crate::kernel::{self, Kernel};
use anyhow::{bail, Context, Result};
use ramstick_common::blkid::{self, FsKind};
use ramstick_common::bootmenu::{self, Menu, ESP_LABEL, GRUB_CFG, MENU_RECORD};
use ramstick_common::grubenv::Env;
use ramstick_common::place::Slot;
use ramstick_common::tree::resolve_in_root;
use ramstick_saver::slotwrite::onstick::{self, ImageSource, OnStick, GRUBENV, TRIAL_VAR};
use ramstick_saver::slotwrite::plan::{self, Payload, RecordSeed, Target};
use ramstick_saver::slotwrite::record::SlotOrigin;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The persist partition's label.
const PERSIST_LABEL: &str = "RAMSTICK";

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

/// Refuses a device that is mounted, or one of whose partitions is.
fn refuse_mounted(device: &Path) -> Result<()> {
    let dev = device
        .canonicalize()
        .with_context(|| format!("device {} does not exist", device.display()))?;
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let name = dev.to_string_lossy();
    if let Some(line) = mounts.lines().find(|l| l.starts_with(name.as_ref())) {
        bail!(
            "{} is in use (mounted: {line}): unmount it first",
            dev.display()
        );
    }
    Ok(())
}

/// Removes a scratch directory on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        // Best effort: a leftover scratch directory is only space.
        let _ = deps::remove_if_exists(&self.0);
    }
}

/// A partition on a loop device, mounted; unmounted and detached on drop.
struct Mount {
    dir: PathBuf,
    loop_dev: String,
    mounted: bool,
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = deps::run(deps::cmd("umount").arg(&self.dir)) {
                eprintln!("warning: {e:#}");
            }
        }
        if self.loop_dev.is_empty() {
            return; // taken over by another Mount
        }
        if let Err(e) = deps::run(deps::cmd("losetup").args(["-d", &self.loop_dev])) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// The stick's ESP and persist partition, mounted.
pub(crate) struct Attached {
    /// The ESP's loop device (not mounted: see [`esp`]).
    pub esp_dev: String,
    pub persist: PathBuf,
    /// Unmounted in reverse order (persist first).
    mounts: Vec<Mount>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Everything written reaches the stick before it is unmounted.
        nix::unistd::sync();
        while let Some(m) = self.mounts.pop() {
            drop(m);
        }
    }
}

/// (start, size) in bytes of each partition of `disk`.
fn partitions(disk: &Path) -> Result<Vec<(u64, u64)>> {
    let text = deps::output(deps::cmd("sfdisk").arg("--json").arg(disk))?;
    parse_sfdisk(&text).with_context(|| format!("cannot read the partitions of {}", disk.display()))
}

/// `sfdisk --json` output → (start, size) in bytes of each partition.
fn parse_sfdisk(text: &str) -> Result<Vec<(u64, u64)>> {
    let v: serde_json::Value = serde_json::from_str(text).context("sfdisk printed no JSON")?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = table["partitions"]
        .as_array()
        .context("no partition table")?;
    parts
        .iter()
        .map(|p| {
            let start = p["start"].as_u64().context("a partition without start")?;
            let size = p["size"].as_u64().context("a partition without size")?;
            Ok((start * sector, size * sector))
        })
        .collect()
}

impl Attached {
    pub(crate) fn attach(disk: &Path, work: &Path) -> Result<Attached> {
        let (mut esp, mut persist) = (None, None);
        // Every loop device made is detached on any error (dropped).
        let mut all = Vec::new();
        for (start, size) in partitions(disk)? {
            let dev = deps::output(
                deps::cmd("losetup")
                    .args(["--find", "--show"])
                    .arg(format!("--offset={start}"))
                    .arg(format!("--sizelimit={size}"))
                    .arg(disk),
            )?
            .trim()
            .to_string();
            all.push(Mount {
                dir: PathBuf::new(),
                loop_dev: dev.clone(),
                mounted: false,
            });
            let fs = fs::File::open(&dev)
                .and_then(|mut f| blkid::probe(&mut f))
                .with_context(|| format!("cannot read {dev}"))?;
            let Some(fs) = fs else { continue };
            let label = fs.label.as_deref();
            match fs.kind {
                FsKind::Vfat if label == Some(ESP_LABEL) && esp.is_none() => {
                    esp = Some(all.len() - 1);
                }
                FsKind::Ext4 if label == Some(PERSIST_LABEL) && persist.is_none() => {
                    persist = Some(all.len() - 1);
                }
                FsKind::Luks => bail!(
                    "{}: the persist partition is encrypted (LUKS); update-stick does not \
                     unlock it (yet): nothing was written",
                    disk.display()
                ),
                _ => {}
            }
        }
        let (Some(e), Some(p)) = (esp, persist) else {
            bail!(
                "{} is not a ramstick stick: no FAT partition labelled {ESP_LABEL} and ext4 \
                 partition labelled {PERSIST_LABEL}",
                disk.display()
            );
        };
        let mut take = |i: usize, name: &str| Mount {
            dir: work.join(name),
            loop_dev: std::mem::take(&mut all[i].loop_dev),
            mounted: false,
        };
        let mounts = vec![take(e, "esp"), take(p, "persist")];
        // The other partitions' loop devices are detached now.
        drop(all);
        let mut attached = Attached {
            esp_dev: mounts[0].loop_dev.clone(),
            persist: work.join("persist"),
            mounts,
        };
        let m = &mut attached.mounts[1];
        fs::create_dir_all(&m.dir).with_context(|| format!("cannot create {}", m.dir.display()))?;
        deps::run(
            deps::cmd("mount")
                .args(["-t", "ext4"])
                .arg(&m.loop_dev)
                .arg(&m.dir),
        )?;
        m.mounted = true;
        if attached.esp().read(bootmenu::ESP_ID)?.is_none() {
            bail!(
                "{}'s ESP has no {}: not a ramstick stick",
                disk.display(),
                bootmenu::ESP_ID
            );
        }
        Ok(attached)
    }

    /// The ESP, through mtools.
    pub(crate) fn esp(&self) -> MtoolsEsp {
        MtoolsEsp {
            dev: self.esp_dev.clone(),
        }
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
    let mut env = Env::parse(&block).with_context(|| format!("cannot read the ESP's {GRUBENV}"))?;
    let committed = onstick::committed_slot(&env)?;
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
    // Then and only then: GRUB boots it once.
    env.set(TRIAL_VAR, slot.name());
    esp.write_env(GRUBENV, &env)?;
    Ok(slot)
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

//! Finding the persist device: scan /sys/class/block, read each device's
//! superblock (and its disk's GPT for PARTUUID/PARTLABEL), match the spec,
//! retry (loading drivers for hardware that appears meanwhile) until the
//! timeout.
//!
//! Two devices matching (a cloned backup stick plugged in too) is refused:
//! saving to whichever was found first could overwrite the newer session
//! with an older one. A LUKS container and the opened mapping on it both
//! carry the label; they are one stick, and the mapping is the one used.

use ramstick_common::blkid::{self, Identity};
use ramstick_common::cmdline::DeviceSpec;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::failure::Failure;
use crate::modload::Loader;
use crate::settle;

/// A block device as seen in sysfs, for matching and for messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub id: Identity,
    /// Size in bytes (sysfs `size` is in 512-byte sectors).
    pub size_bytes: Option<u64>,
    /// Vendor and model of the disk (USB and SCSI disks have them).
    pub model: Option<String>,
    /// Device nodes of the devices stacked on this one (e.g. the dm-crypt
    /// mapping on a LUKS container), from sysfs `holders/`.
    pub holders: Vec<String>,
}

/// Identify every block device under `sys_root/class/block`, with nodes in `dev_root`.
pub fn scan(sys_root: &Path, dev_root: &Path) -> Vec<Device> {
    let mut ids = Vec::new();
    let mut gpt_cache: HashMap<String, Vec<blkid::GptPart>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(sys_root.join("class/block")) else {
        return ids;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| is_scanned(n))
        .collect();
    names.sort();
    for name in names {
        let sysdir = sys_root.join("class/block").join(&name);
        let node = dev_root.join(&name);
        let fs = File::open(&node)
            .ok()
            .and_then(|mut f| blkid::probe(&mut f).ok().flatten());
        let (mut partuuid, mut partlabel) = (None, None);
        if let Some((disk, number)) = partition_of(&sysdir) {
            let parts = gpt_cache
                .entry(disk.clone())
                .or_insert_with(|| disk_gpt(sys_root, dev_root, &disk).unwrap_or_default());
            if let Some(p) = parts.iter().find(|p| p.number == number) {
                partuuid = Some(p.partuuid.clone());
                partlabel = Some(p.partlabel.clone());
            }
        }
        let holders = std::fs::read_dir(sysdir.join("holders"))
            .map(|d| {
                d.flatten()
                    .map(|e| dev_root.join(e.file_name()).to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.push(Device {
            id: Identity {
                path: node.to_string_lossy().to_string(),
                fs,
                partuuid,
                partlabel,
            },
            size_bytes: read_trimmed(&sysdir.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .map(|sectors| sectors * 512),
            model: model_of(&sysdir),
            holders,
        });
    }
    ids
}

/// The GPT partitions of the whole disk `disk` (read with its logical block
/// size; none without a GPT); an error when the disk cannot be opened or
/// read (no medium, gone, or not ready: the kernel creates its node before
/// the disk can be opened).
pub fn disk_gpt(sys_root: &Path, dev_root: &Path, disk: &str) -> io::Result<Vec<blkid::GptPart>> {
    let sector = read_trimmed(
        &sys_root
            .join("class/block")
            .join(disk)
            .join("queue/logical_block_size"),
    )
    .and_then(|s| s.parse().ok())
    .unwrap_or(512);
    let mut file = File::open(dev_root.join(disk))?;
    blkid::gpt_partitions(&mut file, sector)
}

/// Whether a block device (by name) can be a stick: not a loop, ram or
/// zram device.
pub fn is_scanned(name: &str) -> bool {
    !name.starts_with("loop") && !name.starts_with("ram") && !name.starts_with("zram")
}

pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// "vendor model" of the disk a sysfs block dir is (or is a partition of).
fn model_of(sysdir: &Path) -> Option<String> {
    let real = std::fs::canonicalize(sysdir).ok()?;
    let disk = if real.join("partition").exists() {
        real.parent()?.to_path_buf()
    } else {
        real
    };
    let words: Vec<String> = ["device/vendor", "device/model"]
        .iter()
        .filter_map(|f| read_trimmed(&disk.join(f)))
        // virtio and PCI devices have a numeric vendor id there, no name.
        .filter(|w| !w.starts_with("0x"))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// What matching a spec against the devices present gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice<'a> {
    None,
    One(&'a Device),
    /// More than one different device matches.
    Several(Vec<&'a Device>),
}

/// The devices matching `spec`, where a device that another match is
/// stacked on (a LUKS container under its opened mapping) is the same
/// stick as that match and gives way to it.
pub fn choose<'a>(spec: &DeviceSpec, devices: &'a [Device]) -> Choice<'a> {
    let matching: Vec<&Device> = devices
        .iter()
        .filter(|d| blkid::matches(spec, &d.id))
        .collect();
    let distinct: Vec<&Device> = matching
        .iter()
        .copied()
        .filter(|d| !matching.iter().any(|m| d.holders.contains(&m.id.path)))
        .collect();
    match distinct.as_slice() {
        [] => Choice::None,
        [one] => Choice::One(one),
        _ => Choice::Several(distinct),
    }
}

/// `1.9 GiB`-style size.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Why no single device could be taken.
#[derive(Debug)]
pub enum NotFound {
    /// Nothing matched before the timeout.
    Timeout(String),
    /// Several different devices match: which one holds the real data is
    /// not for init to guess.
    Ambiguous { message: String, hint: String },
}

impl NotFound {
    /// The boot failure for this, with `timeout_hint` for a timeout.
    pub fn into_failure(self, what: &str, timeout_hint: &str) -> Failure {
        let (cause, hint) = match self {
            NotFound::Timeout(m) => (m, timeout_hint.to_string()),
            NotFound::Ambiguous { message, hint } => (message, hint),
        };
        Failure {
            what: what.to_string(),
            cause: anyhow::anyhow!("{cause}"),
            hint,
        }
    }
}

/// The refusal for several matches of `param=spec`: each device listed,
/// and how to pick one (by PARTUUID when theirs differ, else by path).
pub fn ambiguous(param: &str, spec: &DeviceSpec, found: &[&Device]) -> NotFound {
    let listed: Vec<String> = found
        .iter()
        .map(|d| {
            let mut s = describe(&d.id);
            if let Some(size) = d.size_bytes {
                s.push_str(&format!(", {}", human(size)));
            }
            if let Some(model) = &d.model {
                s.push_str(&format!(", {model}"));
            }
            s
        })
        .collect();
    let message = format!(
        "{} devices match {param}={spec}, refusing to guess which one holds your data: {}",
        found.len(),
        listed.join("; ")
    );
    let mut partuuids: Vec<Option<&String>> =
        found.iter().map(|d| d.id.partuuid.as_ref()).collect();
    let all = partuuids.len();
    partuuids.sort();
    partuuids.dedup();
    let by = if partuuids.len() == all && partuuids.iter().all(Option::is_some) {
        let first = found[0].id.partuuid.as_deref().unwrap_or_default();
        format!("{param}=PARTUUID={first} (or {param}={})", found[0].id.path)
    } else {
        // A byte-for-byte copy shares its PARTUUID: only the path tells them apart.
        format!(
            "{param}={} (they share their identifiers: a copy of the stick)",
            found[0].id.path
        )
    };
    NotFound::Ambiguous {
        message,
        hint: format!(
            "unplug all but the stick you want to use (e.g. the backup copy) and reboot, or boot with {by} naming the one to use"
        ),
    }
}

/// For a partition's sysfs dir: its disk's name and partition number.
fn partition_of(sysdir: &Path) -> Option<(String, u32)> {
    let number = std::fs::read_to_string(sysdir.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let real = std::fs::canonicalize(sysdir).ok()?;
    let disk = real.parent()?.file_name()?.to_string_lossy().to_string();
    Some((disk, number))
}

/// One line describing what a device is, for the timeout message.
pub fn describe(id: &Identity) -> String {
    let mut s = id.path.clone();
    match &id.fs {
        Some(fs) => {
            s.push_str(&format!(" {}", fs.kind.name()));
            if let Some(l) = &fs.label {
                s.push_str(&format!(" LABEL={l}"));
            }
            if let Some(u) = &fs.uuid {
                s.push_str(&format!(" UUID={u}"));
            }
        }
        None => s.push_str(" (no filesystem recognised)"),
    }
    if let Some(p) = &id.partuuid {
        s.push_str(&format!(" PARTUUID={p}"));
    }
    if let Some(p) = &id.partlabel {
        if !p.is_empty() {
            s.push_str(&format!(" PARTLABEL={p}"));
        }
    }
    s
}

/// How often init looks for the device again. Drivers probe in the
/// background (`modload`'s `async_probe`), so the stick usually appears a
/// few tens of ms after its driver loaded: a short poll finds it then. One
/// look (the bus walk and the block-device scan) costs ~50 ms under TCG,
/// a few ms on hardware.
const POLL: Duration = Duration::from_millis(50);

/// The longest init waits, after a device matched, for disks still on
/// their way (see [`settle::pending`]).
const SETTLE_MAX: Duration = Duration::from_secs(3);

/// Wait until a device matching `param=spec` appears (and disks still on
/// their way have appeared too, so a second matching stick is seen). On timeout the error lists what was seen; several different
/// matches are refused with each of them listed.
pub fn wait_for(
    param: &str,
    spec: &DeviceSpec,
    timeout: Duration,
    loader: &mut Loader,
    sys_root: &Path,
    dev_root: &Path,
) -> Result<(PathBuf, Identity), NotFound> {
    let start = Instant::now();
    let mut announced = false;
    let mut first_match: Option<Instant> = None;
    loop {
        loader.autoload_hardware();
        // Looked at before the scan: a disk complete when `pending` looks is
        // complete in the scan that follows, so a choice counts only from a
        // scan made after nothing was on its way (a disk whose partitions
        // were being added during the scan is complete a moment later). On
        // every round, not from the first match on: that took one more scan
        // after the match, and the boot waited ~40 ms longer (A/B, 5 boots).
        let coming = settle::pending(sys_root, dev_root, &|a| loader.modules_for(a));
        let devices = scan(sys_root, dev_root);
        match choose(spec, &devices) {
            Choice::Several(found) => return Err(ambiguous(param, spec, &found)),
            Choice::One(d) => {
                let since = *first_match.get_or_insert_with(Instant::now);
                if coming.is_empty() {
                    return Ok((PathBuf::from(&d.id.path), d.id.clone()));
                }
                if since.elapsed() >= SETTLE_MAX || start.elapsed() >= timeout {
                    log::warn!(
                        "taking {} although disks are still on their way: {} (a second stick there would not be seen)",
                        d.id.path,
                        coming.join("; ")
                    );
                    return Ok((PathBuf::from(&d.id.path), d.id.clone()));
                }
                log::debug!("{} matches; waiting for {}", d.id.path, coming.join("; "));
            }
            Choice::None => {}
        }
        // (A device that matched and went away again counts as not found.)
        if start.elapsed() >= timeout {
            let seen = if devices.is_empty() {
                "no block devices at all (is the storage driver in the initramfs?)".to_string()
            } else {
                devices
                    .iter()
                    .map(|d| describe(&d.id))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(NotFound::Timeout(format!(
                "no device matches {param}={spec} after {} s. Seen: {seen}. Check the stick is plugged in and {param} names its data partition (default LABEL=RAMSTICK)",
                timeout.as_secs()
            )));
        }
        if !announced && start.elapsed() > Duration::from_secs(1) {
            log::info!("waiting up to {} s for {spec} …", timeout.as_secs());
            announced = true;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_common::blkid::{FsInfo, FsKind};

    fn dev(path: &str, kind: FsKind, partuuid: Option<&str>, holders: &[&str]) -> Device {
        Device {
            id: Identity {
                path: path.into(),
                fs: Some(FsInfo {
                    kind,
                    uuid: Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
                    label: Some("RAMSTICK".into()),
                }),
                partuuid: partuuid.map(str::to_string),
                partlabel: Some("RAMSTICK".into()),
            },
            size_bytes: Some(15_931_539_456),
            model: Some("SanDisk Cruzer".into()),
            holders: holders.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn label() -> DeviceSpec {
        DeviceSpec::Label("RAMSTICK".into())
    }

    #[test]
    fn two_sticks_are_refused_with_both_listed() {
        let devices = [
            dev(
                "/dev/sda2",
                FsKind::Ext4,
                Some("11111111-0000-0000-0000-000000000001"),
                &[],
            ),
            dev(
                "/dev/sdb2",
                FsKind::Ext4,
                Some("22222222-0000-0000-0000-000000000002"),
                &[],
            ),
            Device::default(),
        ];
        let Choice::Several(found) = choose(&label(), &devices) else {
            panic!("two sticks were not refused");
        };
        assert_eq!(found.len(), 2);
        let NotFound::Ambiguous { message, hint } = ambiguous("ramstick.persist", &label(), &found)
        else {
            panic!("not an ambiguity");
        };
        assert!(
            message.starts_with("2 devices match ramstick.persist=LABEL=RAMSTICK"),
            "{message}"
        );
        for part in [
            "/dev/sda2 ext4 LABEL=RAMSTICK",
            "PARTUUID=11111111-0000-0000-0000-000000000001 PARTLABEL=RAMSTICK, 14.8 GiB, SanDisk Cruzer",
            "/dev/sdb2 ext4",
        ] {
            assert!(message.contains(part), "{part} not in {message}");
        }
        assert!(hint.contains("unplug all but"), "{hint}");
        assert!(
            hint.contains(
                "ramstick.persist=PARTUUID=11111111-0000-0000-0000-000000000001 (or ramstick.persist=/dev/sda2)"
            ),
            "{hint}"
        );
        // A PARTUUID names one of them: no ambiguity.
        let spec = DeviceSpec::PartUuid("22222222-0000-0000-0000-000000000002".into());
        assert_eq!(choose(&spec, &devices), Choice::One(&devices[1]));
    }

    #[test]
    fn a_byte_for_byte_copy_is_told_apart_by_path() {
        let same = "11111111-0000-0000-0000-000000000001";
        let devices = [
            dev("/dev/vda2", FsKind::Ext4, Some(same), &[]),
            dev("/dev/vdb2", FsKind::Ext4, Some(same), &[]),
        ];
        let spec = DeviceSpec::PartUuid(same.to_uppercase());
        let Choice::Several(found) = choose(&spec, &devices) else {
            panic!("two copies were not refused");
        };
        let NotFound::Ambiguous { hint, .. } = ambiguous("ramstick.persist", &spec, &found) else {
            panic!("not an ambiguity");
        };
        assert!(
            hint.contains("ramstick.persist=/dev/vda2 (they share"),
            "{hint}"
        );
        assert!(!hint.contains("PARTUUID="), "{hint}");
        let path = DeviceSpec::Path("/dev/vdb2".into());
        assert_eq!(choose(&path, &devices), Choice::One(&devices[1]));
    }

    #[test]
    fn a_luks_container_and_its_mapping_are_one_stick() {
        let devices = [
            dev("/dev/dm-0", FsKind::Ext4, None, &[]),
            dev(
                "/dev/vda2",
                FsKind::Luks,
                Some("11111111-0000-0000-0000-000000000001"),
                &["/dev/dm-0"],
            ),
        ];
        assert_eq!(choose(&label(), &devices), Choice::One(&devices[0]));
        // Before it is opened, the container alone.
        assert_eq!(choose(&label(), &devices[1..]), Choice::One(&devices[1]));
        // A second, unopened container is another stick.
        let mut more = devices.to_vec();
        more.push(dev("/dev/vdb2", FsKind::Luks, Some("3"), &[]));
        assert!(matches!(choose(&label(), &more), Choice::Several(f) if f.len() == 2));
        assert_eq!(
            choose(&DeviceSpec::Label("NOPE".into()), &devices),
            Choice::None
        );
    }

    fn mkfile(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// A fake sysfs and /dev: vda (model "QEMU HARDDISK") with vda2 (ext4
    /// RAMSTICK, 2048 sectors, held by dm-0), and dm-0 (ext4 RAMSTICK).
    #[test]
    fn scan_reads_size_model_and_holders_from_sysfs() {
        let base = ramstick_testkit::TempDir::new("scan");
        let (sys, devdir) = (base.join("sys"), base.join("dev"));
        let vda = sys.join("devices/pci0000:00/virtio1/block/vda");
        mkfile(&vda.join("size"), b"4096\n");
        mkfile(&vda.join("device/vendor"), b"ATA     \n");
        mkfile(&vda.join("device/model"), b"QEMU HARDDISK\n");
        mkfile(&vda.join("vda2/size"), b"2048\n");
        mkfile(&vda.join("vda2/partition"), b"2\n");
        std::fs::create_dir_all(vda.join("vda2/holders/dm-0")).unwrap();
        let dm = sys.join("devices/virtual/block/dm-0");
        mkfile(&dm.join("size"), b"1024\n");
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        for (name, target) in [
            ("vda", vda.clone()),
            ("vda2", vda.join("vda2")),
            ("dm-0", dm),
        ] {
            std::os::unix::fs::symlink(target, sys.join("class/block").join(name)).unwrap();
        }
        let mut sb = vec![0u8; 4096];
        sb[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[1024 + 120..1024 + 128].copy_from_slice(b"RAMSTICK");
        mkfile(&devdir.join("vda"), &[0u8; 4096]);
        mkfile(&devdir.join("vda2"), &sb);
        mkfile(&devdir.join("dm-0"), &sb);
        let found = scan(&sys, &devdir);
        let by = |n: &str| {
            found
                .iter()
                .find(|d| d.id.path == devdir.join(n).to_string_lossy())
                .unwrap()
        };
        let vda2 = by("vda2");
        assert_eq!(vda2.size_bytes, Some(2048 * 512));
        assert_eq!(vda2.model.as_deref(), Some("ATA QEMU HARDDISK"));
        assert_eq!(vda2.holders, [devdir.join("dm-0").to_string_lossy()]);
        assert_eq!(by("vda").model.as_deref(), Some("ATA QEMU HARDDISK"));
        assert_eq!(by("dm-0").model, None);
        assert_eq!(
            choose(&label(), &found),
            Choice::One(by("dm-0")),
            "the mapping and its container are one stick"
        );
    }
}

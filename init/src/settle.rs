//! Disks still on their way. Once a device matches the spec, init must not
//! take it while a second matching stick may still appear (two sticks are
//! refused, see `devices::choose`). Drivers probe in the background
//! (`modload`'s `async_probe`; usb-storage waits a moment before scanning a
//! stick), a disk appears some time after its driver loaded, and its
//! partitions a moment after the disk. From sysfs, a disk is on its way when:
//! - a device is bound to a disk driver but has no disk below it yet (its
//!   probe or scan is running);
//! - a device is not bound yet but its modalias names a disk driver (its
//!   probe has not started, or the driver is still to be loaded);
//! - a virtio block device on PCI has no virtio device yet (`virtio_pci`
//!   probes in the background too);
//! - a disk with a size cannot be opened yet (the kernel adds it to sysfs
//!   and /dev first, then makes it openable and adds its partitions);
//! - a disk's GPT lists partitions the kernel has not added yet.
//!
//! Not seen: SATA links ahci is still probing (no device exists for them
//! yet) and sticks not plugged in at all.

use crate::devices::read_trimmed;
use std::path::Path;

/// A driver whose devices end in a disk: its bus, its name in sysfs, its
/// module's name and how deep below the device the `block/` directory is.
struct DiskDriver {
    bus: &'static str,
    driver: &'static str,
    module: &'static str,
    depth: u32,
}

const DISK_DRIVERS: &[DiskDriver] = &[
    DiskDriver {
        bus: "virtio",
        driver: "virtio_blk",
        module: "virtio_blk",
        depth: 0,
    },
    // interface → hostN → targetN:0:0 → N:0:0:0 → block
    DiskDriver {
        bus: "usb",
        driver: "usb-storage",
        module: "usb_storage",
        depth: 4,
    },
    DiskDriver {
        bus: "usb",
        driver: "uas",
        module: "uas",
        depth: 4,
    },
    DiskDriver {
        bus: "scsi",
        driver: "sd",
        module: "sd_mod",
        depth: 0,
    },
    DiskDriver {
        bus: "mmc",
        driver: "mmcblk",
        module: "mmc_block",
        depth: 0,
    },
];

/// What is still on its way, one description each (empty: nothing).
/// `modules_for` gives the module(s) a modalias names (`ModDb::resolve`).
pub fn pending(
    sys_root: &Path,
    dev_root: &Path,
    modules_for: &dyn Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let mut found = virtio_pci_pending(sys_root);
    found.extend(devices_pending(sys_root, modules_for));
    found.extend(partitions_pending(sys_root, dev_root));
    found
}

/// PCI ids of virtio block devices (legacy and modern), vendor 0x1af4.
const VIRTIO_PCI_BLK: &[&str] = &["0x1001", "0x1042"];

/// Virtio block devices on PCI whose virtio device `virtio_pci` has not
/// added yet (it probes them one by one, in the background): the device
/// that `devices_pending` would wait for does not exist yet.
fn virtio_pci_pending(sys_root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_root.join("bus/pci/devices")) else {
        return Vec::new();
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    let read = |dev: &Path, file: &str| read_trimmed(&dev.join(file)).unwrap_or_default();
    let mut found = Vec::new();
    for dev in names {
        if read(&dev, "vendor") != "0x1af4"
            || !VIRTIO_PCI_BLK.contains(&read(&dev, "device").as_str())
        {
            continue;
        }
        let has_virtio = std::fs::read_dir(&dev).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        });
        if !has_virtio {
            let name = dev.file_name().unwrap_or_default().to_string_lossy();
            found.push(format!("{name} (virtio block device: not added yet)"));
        }
    }
    found
}

/// Devices of a disk driver without their disk yet.
fn devices_pending(sys_root: &Path, modules_for: &dyn Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut buses: Vec<&str> = DISK_DRIVERS.iter().map(|d| d.bus).collect();
    buses.dedup();
    for bus in buses {
        let Ok(entries) = std::fs::read_dir(sys_root.join("bus").join(bus).join("devices")) else {
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for dev in names {
            let name = dev
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let bound = std::fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().to_string()));
            match bound {
                Some(driver) => {
                    let Some(d) = DISK_DRIVERS
                        .iter()
                        .find(|d| d.bus == bus && d.driver == driver)
                    else {
                        continue;
                    };
                    if !has_block_below(&dev, d.depth) {
                        found.push(format!("{name} ({driver}: no disk yet)"));
                    }
                }
                None => {
                    let Ok(alias) = std::fs::read_to_string(dev.join("modalias")) else {
                        continue;
                    };
                    let modules = modules_for(alias.trim());
                    if let Some(d) = DISK_DRIVERS
                        .iter()
                        .find(|d| d.bus == bus && modules.iter().any(|m| m == d.module))
                    {
                        found.push(format!("{name} (waiting for {})", d.module));
                    }
                }
            }
        }
    }
    found
}

/// Whether a `block/` directory is at most `depth` levels below `dir`
/// (through host, target and `H:C:T:L` directories).
fn has_block_below(dir: &Path, depth: u32) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        // `driver` and `subsystem` link back up: never followed.
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if name == "block" && is_dir {
            return true;
        }
        depth > 0
            && is_dir
            && (name.starts_with("host") || name.starts_with("target") || name.contains(':'))
            && has_block_below(&e.path(), depth - 1)
    })
}

/// Block devices whose partitions init does not wait for: CD/DVD drives
/// (`sr*`: one minor, the kernel adds none, though a hybrid ISO carries a
/// GPT), device-mapper devices (none either: a LUKS mapping is the stick
/// itself), md arrays (init assembles none, so none holds the stick).
const UNPARTITIONED: &[&str] = &["sr", "dm-", "md"];

/// Disks whose GPT lists more partitions than the kernel has added.
fn partitions_pending(sys_root: &Path, dev_root: &Path) -> Vec<String> {
    let class = sys_root.join("class/block");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut disks: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| crate::devices::is_scanned(n))
        .filter(|n| !class.join(n).join("partition").exists())
        .filter(|n| !UNPARTITIONED.iter().any(|p| n.starts_with(p)))
        .collect();
    disks.sort();
    let mut found = Vec::new();
    for disk in disks {
        let sysdir = class.join(&disk);
        // A disk without medium has nothing coming.
        let sectors: u64 = read_trimmed(&sysdir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        // The kernel shows a disk in sysfs, and creates its node, before it
        // can be opened and before its partitions are added: a disk with a
        // size that cannot be opened yet is on its way.
        let listed = match crate::devices::disk_gpt(sys_root, dev_root, &disk) {
            Ok(parts) => parts.len(),
            Err(e) => {
                found.push(format!("{disk} (cannot be opened yet: {e})"));
                continue;
            }
        };
        // A partition, too, is in sysfs and /dev a moment before it can be
        // opened (and so probed): it counts once it opens.
        let added = std::fs::read_dir(&sysdir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("partition").exists())
                    .filter(|e| std::fs::File::open(dev_root.join(e.file_name())).is_ok())
                    .count()
            })
            .unwrap_or(0);
        if listed > added {
            found.push(format!(
                "{disk} (its GPT lists {listed} partitions, {added} added yet)"
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_common::blkid::testdata::gpt_disk;
    use std::os::unix::fs::symlink;

    fn bind(sys: &Path, bus: &str, dev: &Path, driver: &str) {
        let drv = sys.join("bus").join(bus).join("drivers").join(driver);
        std::fs::create_dir_all(&drv).unwrap();
        symlink(&drv, dev.join("driver")).unwrap();
    }

    /// A device dir under /sys/devices, listed in /sys/bus/<bus>/devices.
    fn device(sys: &Path, bus: &str, name: &str, modalias: &str) -> std::path::PathBuf {
        let dev = sys.join("devices/pci0000:00").join(name);
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("modalias"), format!("{modalias}\n")).unwrap();
        let list = sys.join("bus").join(bus).join("devices");
        std::fs::create_dir_all(&list).unwrap();
        symlink(&dev, list.join(name)).unwrap();
        dev
    }

    fn blk_module(alias: &str) -> Vec<String> {
        match alias {
            "virtio:d00000002v00001AF4" => vec!["virtio_blk".into()],
            "usb:v0781p5567ic08isc06ip50in00" => vec!["usb_storage".into(), "uas".into()],
            _ => Vec::new(),
        }
    }

    #[test]
    fn disk_devices_without_their_disk_are_pending() {
        let base = ramstick_testkit::TempDir::new("settle");
        let (sys, dev) = (base.join("sys"), base.join("dev"));
        let none = |sys: &Path| pending(sys, &dev, &blk_module);
        assert!(none(&sys).is_empty());
        // A virtio disk bound, its disk there: nothing pending.
        let v1 = device(&sys, "virtio", "virtio1", "virtio:d00000002v00001AF4");
        bind(&sys, "virtio", &v1, "virtio_blk");
        std::fs::create_dir_all(v1.join("block/vda")).unwrap();
        // A network device bound to its driver: not a disk.
        let v0 = device(&sys, "virtio", "virtio0", "virtio:d00000001v00001AF4");
        bind(&sys, "virtio", &v0, "virtio_net");
        assert_eq!(none(&sys), Vec::<String>::new());
        // A second one bound, probing: pending.
        let v2 = device(&sys, "virtio", "virtio2", "virtio:d00000002v00001AF4");
        bind(&sys, "virtio", &v2, "virtio_blk");
        assert_eq!(none(&sys), ["virtio2 (virtio_blk: no disk yet)"]);
        std::fs::create_dir_all(v2.join("block/vdb")).unwrap();
        // A third not bound yet (its probe not started): pending.
        device(&sys, "virtio", "virtio3", "virtio:d00000002v00001AF4");
        assert_eq!(none(&sys), ["virtio3 (waiting for virtio_blk)"]);
        // A USB stick's interface, its SCSI scan not done: pending.
        let u = device(&sys, "usb", "1-1:1.0", "usb:v0781p5567ic08isc06ip50in00");
        bind(&sys, "usb", &u, "usb-storage");
        std::fs::create_dir_all(u.join("host0/target0:0:0")).unwrap();
        assert_eq!(
            none(&sys),
            [
                "virtio3 (waiting for virtio_blk)",
                "1-1:1.0 (usb-storage: no disk yet)"
            ]
        );
        std::fs::create_dir_all(u.join("host0/target0:0:0/0:0:0:0/block/sda")).unwrap();
        std::fs::remove_file(sys.join("bus/virtio/devices/virtio3")).unwrap();
        assert!(none(&sys).is_empty());
    }

    #[test]
    fn a_disk_whose_partitions_are_not_all_added_is_pending() {
        let base = ramstick_testkit::TempDir::new("settle-gpt");
        let (sys, dev) = (base.join("sys"), base.join("dev"));
        let vda = sys.join("devices/virtio1/block/vda");
        std::fs::create_dir_all(&vda).unwrap();
        std::fs::write(vda.join("size"), "100\n").unwrap();
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        symlink(&vda, sys.join("class/block/vda")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let nothing = |_: &str| Vec::new();
        // In sysfs with a size, not openable yet (here: no node).
        let pending_now = pending(&sys, &dev, &nothing);
        assert_eq!(pending_now.len(), 1, "{pending_now:?}");
        assert!(
            pending_now[0].starts_with("vda (cannot be opened yet: "),
            "{pending_now:?}"
        );
        let guid = |b: u8| [b; 16];
        let disk = gpt_disk(512, 100, &[(1, guid(1), "ESP"), (2, guid(2), "RAMSTICK")]);
        std::fs::write(dev.join("vda"), disk).unwrap();
        assert_eq!(
            pending(&sys, &dev, &nothing),
            ["vda (its GPT lists 2 partitions, 0 added yet)"]
        );
        for (n, part) in [(1, "vda1"), (2, "vda2")] {
            std::fs::create_dir_all(vda.join(part)).unwrap();
            std::fs::write(vda.join(part).join("partition"), format!("{n}\n")).unwrap();
        }
        // In sysfs, not openable yet (no nodes here).
        assert_eq!(
            pending(&sys, &dev, &nothing),
            ["vda (its GPT lists 2 partitions, 0 added yet)"]
        );
        std::fs::write(dev.join("vda1"), "").unwrap();
        std::fs::write(dev.join("vda2"), "").unwrap();
        assert!(pending(&sys, &dev, &nothing).is_empty());
        // A DVD holding a hybrid ISO: its GPT's partitions never come.
        let sr0 = sys.join("devices/ata3/block/sr0");
        std::fs::create_dir_all(&sr0).unwrap();
        std::fs::write(sr0.join("size"), "100\n").unwrap();
        symlink(&sr0, sys.join("class/block/sr0")).unwrap();
        std::fs::write(dev.join("sr0"), gpt_disk(512, 100, &[(1, guid(3), "ISO")])).unwrap();
        assert!(pending(&sys, &dev, &nothing).is_empty());
        // A disk without a partition table has nothing coming.
        std::fs::write(dev.join("vda"), vec![0u8; 512 * 100]).unwrap();
        std::fs::remove_dir_all(vda.join("vda1")).unwrap();
        std::fs::remove_dir_all(vda.join("vda2")).unwrap();
        assert!(pending(&sys, &dev, &nothing).is_empty());
        // A card reader without a card: size 0, no node, nothing coming.
        let sdb = sys.join("devices/usb1/block/sdb");
        std::fs::create_dir_all(&sdb).unwrap();
        std::fs::write(sdb.join("size"), "0\n").unwrap();
        symlink(&sdb, sys.join("class/block/sdb")).unwrap();
        assert!(pending(&sys, &dev, &nothing).is_empty());
    }

    #[test]
    fn a_virtio_pci_disk_without_its_virtio_device_is_pending() {
        let base = ramstick_testkit::TempDir::new("settle-pci");
        let sys = base.join("sys");
        let dev = base.join("dev");
        let pci = |name: &str, id: &str| {
            let d = device(&sys, "pci", name, "pci:v00001AF4d0000xxxx");
            std::fs::write(d.join("vendor"), "0x1af4\n").unwrap();
            std::fs::write(d.join("device"), format!("{id}\n")).unwrap();
            d
        };
        let nothing = |_: &str| Vec::new();
        // A network card (0x1000) never gets a disk; a disk (legacy id) with
        // its virtio device, and one (modern id) without it yet.
        pci("0000:00:03.0", "0x1000");
        let disk = pci("0000:00:04.0", "0x1001");
        std::fs::create_dir_all(disk.join("virtio1")).unwrap();
        let second = pci("0000:00:05.0", "0x1042");
        assert_eq!(
            pending(&sys, &dev, &nothing),
            ["0000:00:05.0 (virtio block device: not added yet)"]
        );
        std::fs::create_dir_all(second.join("virtio2")).unwrap();
        assert!(pending(&sys, &dev, &nothing).is_empty());
    }
}

//! The stick's ESP in the running system: the FAT partition labelled
//! `RAMSTICKESP` on the disk that holds /persist (through the LUKS mapping
//! to its partition on an encrypted stick), mounted at /run/ramstick/esp
//! while a kernel hook works on it and unmounted after. Its marker file
//! must be there, so another disk's ESP is never written.

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount, MsFlags};
use ramstick_common::blkid::{self, FsKind};
use ramstick_common::bootmenu::{ESP_ID, ESP_LABEL};
use std::path::{Path, PathBuf};

/// Where the ESP is mounted while a kernel hook runs.
pub const ESP_MOUNT: &str = "/run/ramstick/esp";
/// Where it is mounted read-only to be read (`saver status`, the daemon's
/// look at GRUB's environment block at every boot: a read-write vfat mount
/// writes the boot sector's dirty flag, twice).
pub const ESP_READ_MOUNT: &str = "/run/ramstick/esp-read";
/// How long a mount of the ESP waits while another mount of it is busy.
const ESP_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The ESP, mounted; unmounted on drop.
pub struct MountedEsp {
    pub dir: PathBuf,
    pub device: PathBuf,
}

impl Drop for MountedEsp {
    fn drop(&mut self) {
        if let Err(e) = umount(&self.dir) {
            eprintln!(
                "saver: cannot unmount the ESP at {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Finds the ESP of the stick mounted at `persist` and mounts it at
/// [`ESP_MOUNT`].
pub fn mount_esp(persist: &Path) -> Result<MountedEsp> {
    mount_esp_at(persist, Path::new(ESP_MOUNT), MsFlags::empty())
}

/// The ESP mounted read-only at [`ESP_READ_MOUNT`], or read-write at
/// [`ESP_MOUNT`] when it is already mounted read-write (the kernel refuses
/// a read-only mount of a file system mounted read-write).
pub fn mount_esp_to_read(persist: &Path) -> Result<MountedEsp> {
    mount_esp_at(persist, Path::new(ESP_READ_MOUNT), MsFlags::MS_RDONLY)
        .or_else(|_| mount_esp(persist))
}

fn mount_esp_at(persist: &Path, dir: &Path, flags: MsFlags) -> Result<MountedEsp> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    let devno = device_of(&mountinfo, &persist.to_string_lossy())
        .with_context(|| format!("{} is not mounted", persist.display()))?;
    let partitions = disk_partitions(Path::new("/sys"), devno)?;
    let mut found = Vec::new();
    for name in &partitions {
        let device = Path::new("/dev").join(name);
        let Ok(mut file) = std::fs::File::open(&device) else {
            continue;
        };
        if let Ok(Some(fs)) = blkid::probe(&mut file) {
            if fs.kind == FsKind::Vfat && fs.label.as_deref() == Some(ESP_LABEL) {
                found.push(device);
            }
        }
    }
    let device = match found.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "no FAT partition labelled {ESP_LABEL} on the disk that holds {} (partitions: {})",
            persist.display(),
            partitions.join(", ")
        ),
        more => bail!(
            "several FAT partitions labelled {ESP_LABEL} on the disk that holds {}: {}",
            persist.display(),
            more.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Another saver process may hold the ESP for a moment (the daemon reads
    // GRUB's environment block read-only at its start, and the kernel
    // refuses a read-write mount of a FAT mounted read-only elsewhere, and
    // the reverse, with EBUSY): wait for it rather than fail.
    let started = std::time::Instant::now();
    let mounted = loop {
        let r = mount(
            Some(&device),
            &dir,
            Some("vfat"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | flags,
            None::<&str>,
        );
        match r {
            Err(nix::errno::Errno::EBUSY) if started.elapsed() < ESP_BUSY_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(200))
            }
            r => break r,
        }
    };
    mounted.with_context(|| {
        format!(
            "cannot mount {} (vfat) at {}",
            device.display(),
            dir.display()
        )
    })?;
    let esp = MountedEsp { dir, device };
    if !esp.dir.join(ESP_ID).is_file() {
        bail!(
            "{} has no /{ESP_ID}: not a ramstick ESP, left alone",
            esp.device.display()
        );
    }
    Ok(esp)
}

/// The device number (major, minor) mounted at `mountpoint`, from
/// `/proc/self/mountinfo` text (the last such mount wins).
pub fn device_of(mountinfo: &str, mountpoint: &str) -> Option<(u32, u32)> {
    mountinfo
        .lines()
        .rev()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&mountpoint)).then(|| f.get(2).copied())?
        })
        .filter_map(|devno| {
            let (major, minor) = devno.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .next()
}

/// The partitions (names under /dev) of the disk that holds the block
/// device `devno`, following a device-mapper device to the partition below
/// it. `sys` is /sys.
pub fn disk_partitions(sys: &Path, devno: (u32, u32)) -> Result<Vec<String>> {
    let link = sys.join(format!("dev/block/{}:{}", devno.0, devno.1));
    let mut dir = link
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", link.display()))?;
    // A LUKS mapping: the partition it is opened from.
    if let Some(slave) = first_entry(&dir.join("slaves")) {
        let class = sys.join("class/block").join(&slave);
        dir = class
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", class.display()))?;
    }
    let disk = if dir.join("partition").is_file() {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    };
    let mut parts: Vec<String> = std::fs::read_dir(&disk)
        .with_context(|| format!("cannot list {}", disk.display()))?
        .flatten()
        .filter(|e| e.path().join("partition").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    Ok(parts)
}

fn first_entry(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_persist_mount_is_found_in_mountinfo() {
        let text = "22 1 0:21 / / rw - overlay overlay rw\n\
                    30 22 254:0 / /persist rw,noatime - ext4 /dev/mapper/ramstick rw\n\
                    31 22 253:1 / /persistx rw - ext4 /dev/vda1 rw\n";
        assert_eq!(device_of(text, "/persist"), Some((254, 0)));
        assert_eq!(device_of(text, "/boot"), None);
    }

    /// A sysfs with a virtio disk `vda` (two partitions) and `dm-0` opened
    /// from `vda2`.
    #[test]
    fn partitions_of_the_disk_below_a_partition_or_a_mapping() {
        let sys = ramstick_testkit::TempDir::new("saver-sysfs");
        let vda = "devices/pci0/virtio1/block/vda";
        for part in ["vda1", "vda2"] {
            sys.file(&format!("{vda}/{part}/partition"), "1\n", 0o644);
        }
        sys.mkdir(format!("{vda}/queue"));
        sys.link(
            "devices/virtual/block/dm-0/slaves/vda2",
            "../../../../pci0/virtio1/block/vda/vda2",
        )
        .link(
            "class/block/vda2",
            "../../devices/pci0/virtio1/block/vda/vda2",
        )
        .link("dev/block/254:0", "../../devices/virtual/block/dm-0")
        .link(
            "dev/block/253:2",
            "../../devices/pci0/virtio1/block/vda/vda2",
        )
        .link("dev/block/253:0", "../../devices/pci0/virtio1/block/vda");
        for devno in [(254, 0), (253, 2), (253, 0)] {
            assert_eq!(
                disk_partitions(&sys, devno).unwrap(),
                ["vda1", "vda2"],
                "{devno:?}"
            );
        }
        assert!(disk_partitions(&sys, (8, 0)).is_err());
    }
}

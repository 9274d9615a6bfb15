//! Reaching a stick's partitions from the host: its GPT read with
//! `sfdisk --json`, each partition attached to a loop device at its offset
//! (an image file or a whole device alike), the persist partition mounted
//! and the ESP left to mtools ([`super::esp`]). Everything is unmounted and
//! detached on drop, after a sync.

use super::esp::{Esp, MtoolsEsp};
use super::PERSIST_LABEL;
use crate::deps;
use anyhow::{bail, Context, Result};
use ramstick_common::blkid::{self, FsKind};
use ramstick_common::bootmenu::{self, ESP_LABEL};
use std::fs;
use std::path::{Path, PathBuf};

/// Refuses a device that is mounted, or one of whose partitions is.
pub(super) fn refuse_mounted(device: &Path) -> Result<()> {
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
pub(crate) fn partitions(disk: &Path) -> Result<Vec<(u64, u64)>> {
    let text = deps::output(deps::cmd("sfdisk").arg("--json").arg(disk))?;
    parse_sfdisk(&text).with_context(|| format!("cannot read the partitions of {}", disk.display()))
}

/// `sfdisk --json` output → (start, size) in bytes of each partition.
pub(super) fn parse_sfdisk(text: &str) -> Result<Vec<(u64, u64)>> {
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

//! Finding the persist device: scan /sys/class/block, read each device's
//! superblock (and its disk's GPT for PARTUUID/PARTLABEL), match the spec,
//! retry (loading drivers for hardware that appears meanwhile) until the
//! timeout.

use ramstick_common::blkid::{self, Identity};
use ramstick_common::cmdline::DeviceSpec;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::modload::Loader;

/// Identify every block device under `sys_root/class/block`, with nodes in `dev_root`.
pub fn scan(sys_root: &Path, dev_root: &Path) -> Vec<Identity> {
    let mut ids = Vec::new();
    let mut gpt_cache: HashMap<String, Vec<blkid::GptPart>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(sys_root.join("class/block")) else {
        return ids;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
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
            let parts = gpt_cache.entry(disk.clone()).or_insert_with(|| {
                let sector = std::fs::read_to_string(
                    sys_root
                        .join("class/block")
                        .join(&disk)
                        .join("queue/logical_block_size"),
                )
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(512);
                File::open(dev_root.join(&disk))
                    .ok()
                    .and_then(|mut f| blkid::gpt_partitions(&mut f, sector).ok())
                    .unwrap_or_default()
            });
            if let Some(p) = parts.iter().find(|p| p.number == number) {
                partuuid = Some(p.partuuid.clone());
                partlabel = Some(p.partlabel.clone());
            }
        }
        ids.push(Identity {
            path: node.to_string_lossy().to_string(),
            fs,
            partuuid,
            partlabel,
        });
    }
    ids
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

/// Wait until a device matching `spec` appears. On timeout, the error lists
/// what was seen and what was looked for.
pub fn wait_for(
    spec: &DeviceSpec,
    timeout: Duration,
    loader: &mut Loader,
    sys_root: &Path,
    dev_root: &Path,
) -> anyhow::Result<(PathBuf, Identity)> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        loader.autoload_hardware();
        let ids = scan(sys_root, dev_root);
        if let Some(id) = ids.iter().find(|id| blkid::matches(spec, id)) {
            return Ok((PathBuf::from(&id.path), id.clone()));
        }
        if start.elapsed() >= timeout {
            let seen = if ids.is_empty() {
                "no block devices at all (is the storage driver in the initramfs?)".to_string()
            } else {
                ids.iter().map(describe).collect::<Vec<_>>().join("; ")
            };
            anyhow::bail!(
                "no device matches ramstick.persist={spec} after {} s. Seen: {seen}. Check the stick is plugged in and ramstick.persist names its data partition (default LABEL=RAMSTICK)",
                timeout.as_secs()
            );
        }
        if !announced && start.elapsed() > Duration::from_secs(1) {
            log::info!("waiting up to {} s for {spec} …", timeout.as_secs());
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

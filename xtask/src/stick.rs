//! `cargo xtask write-stick`: copies a disk image onto a real USB stick.
//!
//! Refuses anything but a whole block device that is not in use: not
//! mounted (nor any of its partitions), not holding `/`, not under
//! device-mapper/RAID. Shows what the device is and asks for `YES` before
//! overwriting it (unless `--yes`).

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The disk image to write (from `cargo xtask image`).
    #[arg(long)]
    pub image: PathBuf,
    /// The whole target device, e.g. /dev/sdb. ALL ITS DATA IS LOST.
    #[arg(long)]
    pub device: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// A block device: kernel name and (major, minor).
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockDev {
    name: String,
    dev: (u64, u64),
}

fn split_dev(dev: u64) -> (u64, u64) {
    (
        nix::sys::stat::major(dev as nix::libc::dev_t),
        nix::sys::stat::minor(dev as nix::libc::dev_t),
    )
}

/// Reads a `/sys` attribute, trimmed; empty when absent.
fn sys_attr(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `"8:17"` → `(8, 17)`.
fn parse_dev(text: &str) -> Option<(u64, u64)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

pub fn run(a: &Args) -> Result<()> {
    let image_len = a
        .image
        .metadata()
        .with_context(|| format!("cannot read image {}", a.image.display()))?
        .len();
    let device = a
        .device
        .canonicalize()
        .with_context(|| format!("device {} does not exist", a.device.display()))?;
    let meta =
        fs::metadata(&device).with_context(|| format!("cannot stat {}", device.display()))?;
    if !meta.file_type().is_block_device() {
        bail!("{} is not a block device", device.display());
    }
    let name = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("device path has no name")?;
    if Path::new("/sys/class/block")
        .join(&name)
        .join("partition")
        .exists()
    {
        bail!(
            "{} is a partition; give the whole device (e.g. /dev/sdb, not /dev/sdb1)",
            device.display()
        );
    }
    let sys = Path::new("/sys/block").join(&name);
    if !sys.is_dir() {
        bail!(
            "{} is not a whole disk ({} is missing)",
            device.display(),
            sys.display()
        );
    }
    let whole = BlockDev {
        name: name.clone(),
        dev: split_dev(meta.rdev()),
    };
    let parts = partitions(&sys)?;
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let root_dev = split_dev(fs::metadata("/").context("cannot stat /")?.dev());
    let mut holders = Vec::new();
    for dev in std::iter::once(&whole).chain(&parts) {
        let dir = Path::new("/sys/class/block")
            .join(&dev.name)
            .join("holders");
        for holder in fs::read_dir(&dir).into_iter().flatten().flatten() {
            holders.push((
                dev.name.clone(),
                holder.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    let source_dev = |source: &str| {
        fs::metadata(source)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .map(|m| split_dev(m.rdev()))
    };
    let reasons = refusal_reasons(&whole, &parts, &mounts, root_dev, &holders, &source_dev);
    if !reasons.is_empty() {
        bail!(
            "refusing to write {}: {}",
            device.display(),
            reasons.join("; ")
        );
    }

    let size = sys_attr(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
    let describe = format!(
        "{} {} {}, {:.1} GiB{}",
        device.display(),
        sys_attr(&sys.join("device/vendor")),
        sys_attr(&sys.join("device/model")),
        size as f64 / f64::from(1u32 << 30),
        if sys_attr(&sys.join("removable")) == "1" {
            ", removable"
        } else {
            ", NOT removable"
        }
    );
    println!("target: {describe}");
    if image_len > size {
        bail!(
            "image {} ({image_len} bytes) is bigger than {} ({size} bytes)",
            a.image.display(),
            device.display()
        );
    }
    if !a.yes {
        print!(
            "all data on {} will be lost; type YES to overwrite: ",
            device.display()
        );
        std::io::stdout()
            .flush()
            .context("cannot write to stdout")?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if answer.trim() != "YES" {
            bail!("not confirmed; nothing written");
        }
    }
    write_image(&a.image, &device, image_len)
}

/// The partitions of the disk whose sysfs directory is `sys`.
fn partitions(sys: &Path) -> Result<Vec<BlockDev>> {
    let mut parts = Vec::new();
    for entry in fs::read_dir(sys).with_context(|| format!("cannot list {}", sys.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", sys.display()))?;
        if !entry.path().join("partition").exists() {
            continue;
        }
        if let Some(dev) = parse_dev(&sys_attr(&entry.path().join("dev"))) {
            parts.push(BlockDev {
                name: entry.file_name().to_string_lossy().into_owned(),
                dev,
            });
        }
    }
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(parts)
}

/// Why the disk `whole` with partitions `parts` must not be overwritten:
/// mounted (matched by device number via `source_dev`, or by name), holding
/// the filesystem whose st_dev is `root_dev`, or held by another device.
fn refusal_reasons(
    whole: &BlockDev,
    parts: &[BlockDev],
    mounts: &str,
    root_dev: (u64, u64),
    holders: &[(String, String)],
    source_dev: &dyn Fn(&str) -> Option<(u64, u64)>,
) -> Vec<String> {
    let devs: Vec<&BlockDev> = std::iter::once(whole).chain(parts).collect();
    let mut reasons = Vec::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(mountpoint)) = (fields.next(), fields.next()) else {
            continue;
        };
        let number = source_dev(source);
        let base = source.strip_prefix("/dev/");
        let hit = devs
            .iter()
            .find(|d| number == Some(d.dev) || base == Some(d.name.as_str()));
        if let Some(d) = hit {
            reasons.push(format!(
                "{} is mounted at {}",
                d.name,
                mountpoint.replace("\\040", " ")
            ));
        }
    }
    if let Some(d) = devs.iter().find(|d| d.dev == root_dev) {
        reasons.push(format!("{} holds the running system's /", d.name));
    }
    for (dev, holder) in holders {
        reasons.push(format!("{dev} is in use by {holder}"));
    }
    reasons
}

/// Copies `image` to `device` with buffered writes, showing progress, then fsyncs.
fn write_image(image: &Path, device: &Path, len: u64) -> Result<()> {
    let mut input =
        fs::File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("cannot open {} for writing", device.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut written: u64 = 0;
    let mut last = Instant::now();
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", image.display()))?;
        if n == 0 {
            break;
        }
        output
            .write_all(&buf[..n])
            .with_context(|| format!("cannot write {} at byte {written}", device.display()))?;
        written += n as u64;
        if last.elapsed() > Duration::from_secs(1) {
            print!("\rwritten {} / {} MiB", written >> 20, len >> 20);
            std::io::stdout()
                .flush()
                .context("cannot write to stdout")?;
            last = Instant::now();
        }
    }
    println!("\rwritten {} / {} MiB; syncing…", written >> 20, len >> 20);
    output
        .sync_all()
        .with_context(|| format!("cannot sync {}", device.display()))?;
    println!("done: {} now holds {}", device.display(), image.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, major: u64, minor: u64) -> BlockDev {
        BlockDev {
            name: name.to_string(),
            dev: (major, minor),
        }
    }

    const MOUNTS: &str = "\
/dev/nvme0n1p2 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
/dev/mapper/stick /mnt/my\\040stick vfat rw 0 0
";

    fn lookup(source: &str) -> Option<(u64, u64)> {
        match source {
            "/dev/nvme0n1p2" => Some((259, 2)),
            "/dev/mapper/stick" => Some((8, 17)),
            _ => None,
        }
    }

    #[test]
    fn idle_stick_is_accepted() {
        let whole = dev("sdc", 8, 32);
        let parts = [dev("sdc1", 8, 33), dev("sdc2", 8, 34)];
        let reasons = refusal_reasons(&whole, &parts, MOUNTS, (259, 2), &[], &lookup);
        assert!(reasons.is_empty(), "{reasons:?}");
    }

    #[test]
    fn mounted_partition_is_refused_by_number_or_name() {
        let whole = dev("sdb", 8, 16);
        let parts = [dev("sdb1", 8, 17), dev("sdb2", 8, 18)];
        let reasons = refusal_reasons(&whole, &parts, MOUNTS, (259, 2), &[], &lookup);
        assert_eq!(reasons, ["sdb1 is mounted at /mnt/my stick"]);
        let by_name = "/dev/sdb2 /media/x ext4 rw 0 0\n";
        let reasons = refusal_reasons(&whole, &parts, by_name, (259, 2), &[], &|_| None);
        assert_eq!(reasons, ["sdb2 is mounted at /media/x"]);
    }

    #[test]
    fn disk_holding_root_is_refused() {
        let whole = dev("nvme0n1", 259, 0);
        let parts = [dev("nvme0n1p1", 259, 1), dev("nvme0n1p2", 259, 2)];
        let reasons = refusal_reasons(&whole, &parts, "", (259, 2), &[], &lookup);
        assert_eq!(reasons, ["nvme0n1p2 holds the running system's /"]);
        let reasons = refusal_reasons(&whole, &parts, MOUNTS, (259, 2), &[], &lookup);
        assert_eq!(
            reasons,
            [
                "nvme0n1p2 is mounted at /",
                "nvme0n1p2 holds the running system's /"
            ]
        );
    }

    #[test]
    fn held_disk_is_refused() {
        let whole = dev("sdd", 8, 48);
        let holders = [("sdd1".to_string(), "dm-0".to_string())];
        let reasons = refusal_reasons(&whole, &[], "", (259, 2), &holders, &|_| None);
        assert_eq!(reasons, ["sdd1 is in use by dm-0"]);
    }

    #[test]
    fn dev_numbers_parse() {
        assert_eq!(parse_dev("8:17\n"), Some((8, 17)));
        assert_eq!(parse_dev("x"), None);
        assert_eq!(split_dev(nix::sys::stat::makedev(259, 3)), (259, 3));
    }
}

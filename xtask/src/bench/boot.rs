//! Boot rows, in QEMU under TCG with the Debian rootfs and its own kernel:
//!
//! * ramstick: our initramfs, the rootfs as squashfs on the stick (GRUB's
//!   "clean" entry: no upper image to unpack), and again with a 200 MB
//!   `upperfs.squashfs` to unpack (the default entry);
//! * reference: Debian's initramfs-tools initrd (`boot/initrd.img-<kver>` of
//!   the rootfs, made by `mkinitramfs` in a chroot if missing) mounting the
//!   same tree from a plain ext4 partition (`root=LABEL=RAMSTICK`), on a GPT
//!   disk with the same standalone GRUB ESP.
//!
//! Measured per boot: "Run /init as init process" → systemd's first kernel
//! log line ("systemd[1]: systemd <version> running…"), both read from `dmesg`
//! in the guest; and the host's wall clock from starting QEMU (firmware) to
//! the autologin shell prompt. Every boot starts from a fresh copy of the disk.

use super::table::{Row, Series, Unit};
use crate::build::Binaries;
use crate::kernel::{self, Kernel};
use crate::qemu::{Machine, Vm};
use crate::{deps, image, rootfs, target_dir};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The Debian rootfs's autologin prompt on ttyS0.
const DEBIAN_PROMPT: &str = "root@ramstick:~# ";
/// The kernel's line when it starts the initramfs's /init.
const RUN_INIT: &str = "Run /init as init process";
/// systemd's first kernel log line (its version banner) starts with this.
const SYSTEMD_START: &str = "systemd[1]: systemd ";
/// The GRUB entries used (see grub/grub.cfg).
const ENTRY_DEFAULT: usize = 0;
const ENTRY_CLEAN: usize = 2;
/// Same for every boot: a kernel log big enough to keep the early lines.
const CMDLINE: &str = "log_buf_len=4M";
/// From QEMU start to the prompt, under TCG.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// One shell command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);
/// Guest memory (MiB).
pub const MEM: u32 = 1536;

const NAMES: [&str; 4] = [
    "boot (Debian rootfs): Run /init → exec of the real init (systemd)",
    "boot (Debian rootfs): firmware → login shell (host wall clock)",
    "boot, ramstick with a 200 MB upper to unpack: Run /init → systemd",
    "boot, ramstick with a 200 MB upper to unpack: firmware → login shell",
];

/// The four boot rows (skipped in `--quick`).
pub fn rows(quick: bool, bins: Result<&Binaries, &str>, work: &Path, runs: usize) -> Vec<Row> {
    if quick {
        let why = "skipped in --quick (Debian rootfs; see the busybox boot row)";
        return NAMES.iter().map(|n| Row::skipped(n, why)).collect();
    }
    let measured = bins
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|b| measure(b, work, runs));
    let (clean, upper, debian) = match measured {
        Ok(m) => m,
        Err(e) => return NAMES.iter().map(|n| Row::failed(n, &e)).collect(),
    };
    let debian = ("initramfs-tools + ext4", &debian);
    vec![
        Row::compare(NAMES[0], Unit::Seconds, 0, &clean, debian),
        Row::compare(NAMES[1], Unit::Seconds, 1, &clean, debian),
        Row::compare(NAMES[2], Unit::Seconds, 0, &upper, debian),
        Row::compare(NAMES[3], Unit::Seconds, 1, &upper, debian),
    ]
}

/// [init, login] series of: ramstick clean, ramstick with the upper, Debian.
fn measure(bins: &Binaries, work: &Path, runs: usize) -> Result<(Series<2>, Series<2>, Series<2>)> {
    let rootfs = debian_rootfs(true)?;
    let kernel = kernel::from_rootfs(&rootfs)
        .with_context(|| format!("{} ships no usable kernel", rootfs.display()))?;
    let initrd = debian_initrd(&rootfs, &kernel)?;
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;

    let plain = work.join("debian-ext4.img");
    println!(
        "bench: building {} (initramfs-tools + ext4)",
        plain.display()
    );
    plain_disk(&rootfs, &kernel, &initrd, &plain, work)?;
    let upper = upper_image(work)?;
    let stick = work.join("ramstick-debian.img");
    println!(
        "bench: building {} (ramstick + 200 MB upper)",
        stick.display()
    );
    image::build(&image::Spec {
        rootfs: rootfs.clone(),
        out: stick.clone(),
        size: None,
        kernel: kernel.clone(),
        bins: bins.clone(),
        extra_cmdline: CMDLINE.to_string(),
        persist_extra: vec![(upper, "upperfs.squashfs".to_string())],
        omit: Vec::new(),
    })?;

    let (mut clean, mut with_upper, mut debian) = Default::default();
    for run in 1..=runs {
        println!("bench: Debian boots, round {run}/{runs}");
        boot_series(&mut debian, &plain, ENTRY_DEFAULT, work, "debian-initrd");
        boot_series(&mut clean, &stick, ENTRY_CLEAN, work, "ramstick-clean");
        boot_series(
            &mut with_upper,
            &stick,
            ENTRY_DEFAULT,
            work,
            "ramstick-upper",
        );
    }
    for disk in [&plain, &stick] {
        deps::remove_if_exists(disk)?;
    }
    Ok((clean, with_upper, debian))
}

/// Boot a fresh copy of `master` once more into `series`.
fn boot_series(series: &mut Series<2>, master: &Path, entry: usize, work: &Path, name: &str) {
    series.record(|| {
        let disk = work.join(format!("{name}.run.img"));
        deps::run(
            deps::cmd("cp")
                .args(["--sparse=always", "--reflink=auto"])
                .arg(master)
                .arg(&disk),
        )?;
        let booted = boot(
            &machine(&disk, work, name),
            &work.join(format!("{name}.log")),
            entry,
            DEBIAN_PROMPT,
        );
        let figures = booted.and_then(|mut b| {
            let init = init_time(&mut b.vm, SYSTEMD_START)?;
            Ok([init, b.login])
        });
        deps::remove_if_exists(&disk)?;
        figures
    });
}

/// How QEMU runs every bench boot (TCG, virtio disk, `cache=unsafe`).
pub fn machine(disk: &Path, work: &Path, name: &str) -> Machine {
    Machine {
        disk: disk.to_path_buf(),
        kvm: false,
        mem: MEM,
        usb: false,
        vars: work.join(format!("{name}-OVMF_VARS.fd")),
        unsafe_cache: true,
        extra_disks: Vec::new(),
    }
}

/// A guest at its shell prompt and the host wall time that took.
pub struct Booted {
    pub vm: Vm,
    /// Seconds from starting QEMU to the prompt.
    pub login: f64,
}

/// Start `machine` (console log in `log`, replaced), choose GRUB `entry`, wait for `prompt`.
pub fn boot(machine: &Machine, log: &Path, entry: usize, prompt: &str) -> Result<Booted> {
    fs::write(log, "").with_context(|| format!("creating {}", log.display()))?;
    let started = Instant::now();
    let mut vm = Vm::spawn(machine, log)?;
    vm.select_entry(entry)?;
    // "(initramfs)": the emergency shell of initramfs-tools (and of our init).
    let failures = ["BOOT FAILED", "Kernel panic", "(initramfs)"];
    let seen = vm.expect_any(&[&[prompt][..], &failures].concat(), BOOT_TIMEOUT)?;
    if seen != 0 {
        bail!("the boot failed; console log {}", log.display());
    }
    let login = started.elapsed().as_secs_f64();
    Ok(Booted { vm, login })
}

/// Seconds from the kernel's "Run /init" to the first kernel log line containing `end`.
pub fn init_time(vm: &mut Vm, end: &str) -> Result<f64> {
    let cmd = format!("dmesg | grep -F -e '{RUN_INIT}' -e '{end}'");
    let out = vm.run_kernel_log(&cmd, CMD_TIMEOUT)?;
    kmsg_interval(&out, RUN_INIT, end)
}

/// Seconds between the timestamps of the first lines holding `from` and `to`.
fn kmsg_interval(dmesg: &str, from: &str, to: &str) -> Result<f64> {
    let stamp = |needle: &str| -> Result<f64> {
        let line = dmesg
            .lines()
            .find(|l| l.contains(needle))
            .with_context(|| format!("no kernel log line with {needle:?} in:\n{dmesg}"))?;
        let open = line.find('[').context("no timestamp")?;
        let close = line[open..].find(']').context("no timestamp")? + open;
        line[open + 1..close]
            .trim()
            .parse()
            .with_context(|| format!("bad timestamp in {line:?}"))
    };
    let (a, b) = (stamp(from)?, stamp(to)?);
    if b < a {
        bail!("{to:?} is logged before {from:?}");
    }
    Ok(b - a)
}

/// target/rootfs-debian; with `build`, built (as root, with mmdebstrap) if missing.
pub fn debian_rootfs(build: bool) -> Result<PathBuf> {
    let dir = target_dir().join("rootfs-debian");
    if dir.join(rootfs::MARKER).is_file() {
        return Ok(dir);
    }
    if !build {
        bail!("{} is not built", dir.display());
    }
    if !deps::is_root() {
        bail!(
            "{} is missing and building it (mmdebstrap) needs root",
            dir.display()
        );
    }
    println!("bench: building the Debian rootfs (mmdebstrap, about a minute)");
    rootfs::build(rootfs::Kind::Debian, &dir)?;
    Ok(dir)
}

/// The rootfs's initramfs-tools initrd for `kernel`, made with `mkinitramfs`
/// in a chroot if it is not there.
pub fn debian_initrd(rootfs: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let name = format!("boot/initrd.img-{}", kernel.version);
    let initrd = rootfs.join(&name);
    if !initrd.is_file() {
        println!(
            "bench: running mkinitramfs for {} in {}",
            kernel.version,
            rootfs.display()
        );
        deps::run(deps::cmd("chroot").arg(rootfs).args([
            "mkinitramfs",
            "-o",
            &format!("/{name}"),
            &kernel.version,
        ]))?;
    }
    Ok(initrd)
}

/// The reference disk: GPT, the standalone GRUB ESP of `image` booting
/// `kernel` with Debian's `initrd`, and `rootfs` as an ext4 partition.
fn plain_disk(
    rootfs: &Path,
    kernel: &Kernel,
    initrd: &Path,
    out: &Path,
    work: &Path,
) -> Result<()> {
    let scratch = work.join("plain-disk");
    deps::remove_if_exists(&scratch)?;
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let esp = scratch.join("esp.img");
    // make_ext4 labels the filesystem RAMSTICK.
    let cmdline = format!("root=LABEL=RAMSTICK rw {CMDLINE}");
    let esp_size = image::make_esp(&esp, &scratch, kernel, initrd, &cmdline)?;
    let root_size = image::round_up_mib(image::dir_size(rootfs)? * 13 / 10) + 256 * image::MIB;
    let ext4 = scratch.join("root.img");
    image::make_ext4(&ext4, root_size, rootfs)?;
    let layout = image::Layout {
        total: 2 * image::GPT_GAP + esp_size + root_size,
        esp_size,
        persist_size: root_size,
    };
    image::write_disk(out, &layout, &esp, &ext4)?;
    deps::remove_if_exists(&scratch)
}

/// A 200 MB upper image (the generated UPPER tree as the upper's root).
fn upper_image(work: &Path) -> Result<PathBuf> {
    let tree = super::tree::ensure(&target_dir().join("bench/trees/upper"), super::tree::UPPER)?;
    let out = work.join("upperfs.squashfs");
    deps::remove_if_exists(&out)?;
    deps::run(deps::cmd("mksquashfs").arg(&tree).arg(&out).args([
        "-comp",
        "zstd",
        "-noappend",
        "-quiet",
        "-no-progress",
    ]))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_between_kernel_log_lines() {
        let dmesg = "[    2.500000] Run /init as init process\n\
                     <6>[    5.750000] systemd[1]: systemd 252.39-1~deb12u1 running in system mode\n\
                     [    6.000000] systemd[1]: systemd-journald.service: ok\n";
        let t = kmsg_interval(dmesg, RUN_INIT, SYSTEMD_START).unwrap();
        assert!((t - 3.25).abs() < 1e-9, "{t}");
        assert!(kmsg_interval(dmesg, RUN_INIT, "switching root").is_err());
        let reversed = "[ 9.0] Run /init as init process\n[ 1.0] systemd[1]: systemd 252\n";
        assert!(kmsg_interval(reversed, RUN_INIT, SYSTEMD_START).is_err());
    }
}

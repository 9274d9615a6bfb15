//! Boot rows, in QEMU under TCG with the Debian rootfs and its own kernel:
//!
//! * ramstick: our initramfs, the rootfs as squashfs on the stick, booted
//!   by GRUB's "clean" entry (no saved state);
//! * reference: Debian's initramfs-tools initrd (`boot/initrd.img-<kver>` of
//!   the rootfs, made by `mkinitramfs` in a chroot if missing) mounting the
//!   same tree from a plain ext4 partition (`root=LABEL=RAMSTICK`), on a GPT
//!   disk with the same standalone GRUB ESP;
//! * with a saved state: the generated tree (the codec's, about 300 MB)
//!   under `/root/state`, one layer added by the host's `saver add-layer`,
//!   booted by the default entry in `ramstick.layers=mount` (the default:
//!   the layer is loop-mounted) and, on a second stick with the same files,
//!   `ramstick.layers=ram` (unpacked into the RAM upper), each beside the
//!   clean boot of the same stick (no saved state). Every such boot checks
//!   in `boot.json` that it used the layer the way its row says.
//!
//! Measured per boot: "Run /init as init process" → systemd's first kernel
//! log line ("systemd[1]: systemd <version> running…"), both read from `dmesg`
//! in the guest; and the host's wall clock from starting QEMU (firmware) to
//! the autologin shell prompt. Every boot starts from a fresh copy of the disk.
//!
//! The `mount` boots then run an idle session: `exit` at the autologin root
//! shell, so getty logs root in again (wtmp, lastlog, the shell's history),
//! then `saver save` (bytes written, see [`guest::measure`]). Its reference
//! is today's full-image save of that stick's state, measured once in the
//! same guest: `saver merge` of the chain after the save (the state and the
//! session) into one zstd-15 image on the stick, i.e. the whole state packed
//! as one image.

use super::guest::{self, SAVER};
use super::sticks::{self, KERNEL_LOG};
use super::table::{Row, Series, Unit};
use super::Inputs;
use crate::build::Binaries;
use crate::kernel::{self, Kernel};
use crate::qemu::{again_after_fault, Machine, Vm, CPUS, KERNEL_RUNS_INIT};
use crate::{deps, image, rootfs, target_dir};
use anyhow::{bail, Context, Result};
use ramstick_common::bootmenu::GrubEntry;
use ramstick_common::cmdline::LayersMode;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The Debian rootfs's autologin prompt on ttyS0.
const DEBIAN_PROMPT: &str = "root@ramstick:~# ";
/// What agetty prints when it logs root in by itself.
const AUTOLOGIN: &str = "(automatic login)";
/// init's last kernel log line before it executes the real init.
pub const SWITCH_ROOT: &str = "switching root to";
/// systemd's first kernel log line (its version banner) starts with this.
const SYSTEMD_START: &str = "systemd[1]: systemd ";
/// From QEMU start to the prompt, under TCG.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// One shell command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);
/// A zstd-15 image of a 300 MB state, under TCG.
pub const FULL_IMAGE_TIMEOUT: Duration = Duration::from_secs(1800);
/// Guest memory (MiB).
pub const MEM: u32 = 1536;
/// The reference's image, on the persist partition.
pub const FULL_IMAGE: &str = "/persist/bench-full.squashfs";

/// The boot and idle-session rows (skipped in `--quick`).
pub fn rows(inputs: Inputs, state: Result<PathBuf>, work: &Path) -> Vec<Row> {
    let quick = inputs.quick;
    // --quick has the small generated tree: name the rows by the full one.
    let size = state
        .as_ref()
        .ok()
        .filter(|_| !quick)
        .map(|t| image::dir_size(t));
    let label = match size {
        Some(Ok(size)) => format!("a {} MiB saved state", size >> 20),
        _ => "a ~300 MB saved state".to_string(),
    };
    let names = [
        "boot (Debian rootfs): Run /init → exec of the real init (systemd)".to_string(),
        "boot (Debian rootfs): firmware → login shell (host wall clock)".to_string(),
        format!("boot, Debian with {label}, ramstick.layers=mount (default): Run /init → systemd (vs no saved state)"),
        format!("boot, Debian with {label}, ramstick.layers=mount (default): firmware → login shell (vs no saved state)"),
        format!("boot, Debian with {label}, ramstick.layers=ram: Run /init → systemd (vs no saved state)"),
        format!("boot, Debian with {label}, ramstick.layers=ram: firmware → login shell (vs no saved state)"),
        format!("writes to the stick per save, idle Debian session (login, logout) on {label} (vs a full-image save of the state)"),
    ];
    if quick {
        let why = "skipped in --quick (Debian rootfs; see the busybox rows)";
        return names.iter().map(|n| Row::skipped(n, why)).collect();
    }
    let measured = inputs
        .bins()
        .and_then(|b| measure(b, inputs.saver()?, &state?, work, inputs.runs));
    let m = match measured {
        Ok(m) => m,
        Err(e) => return names.iter().map(|n| Row::failed(n, &e)).collect(),
    };
    let debian = ("initramfs-tools + ext4", &m.debian);
    let none = ("no saved state", &m.clean);
    let full = ("full-image save (saver merge, zstd 15)", &m.full_image);
    vec![
        Row::compare(&names[0], Unit::Seconds, 0, &m.clean, debian),
        Row::compare(&names[1], Unit::Seconds, 1, &m.clean, debian),
        Row::compare(&names[2], Unit::Seconds, 0, &m.mount, none),
        Row::compare(&names[3], Unit::Seconds, 1, &m.mount, none),
        Row::compare(&names[4], Unit::Seconds, 0, &m.ram, none),
        Row::compare(&names[5], Unit::Seconds, 1, &m.ram, none),
        Row::compare(&names[6], Unit::Bytes, 0, &m.idle, full),
    ]
}

/// Every series of the Debian boots.
#[derive(Default)]
struct Measured {
    /// [init, login] of each kind of boot.
    debian: Series<2>,
    clean: Series<2>,
    mount: Series<2>,
    ram: Series<2>,
    /// Bytes written by the idle session's save.
    idle: Series<1>,
    /// Bytes written by the full-image save (once).
    full_image: Series<1>,
}

fn measure(
    bins: &Binaries,
    saver: &Path,
    state: &Path,
    work: &Path,
    runs: usize,
) -> Result<Measured> {
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
    let tree = sticks::rooted(state, &work.join("state-tree"), "root/state")?;
    println!("bench: adding {} as a saved layer", state.display());
    let layers = sticks::added(saver, &work.join("persist"), std::slice::from_ref(&tree))?;
    deps::remove_if_exists(&tree)?;
    // Room for the rootfs, the state's layer, the full image and the sessions.
    let size = image::round_up_mib(image::dir_size(&rootfs)? + 3 * image::dir_size(state)?)
        + 512 * image::MIB;
    let stick = |name: &str, cmdline: &str| -> Result<PathBuf> {
        let out = work.join(name);
        println!("bench: building {}", out.display());
        image::build(&image::Spec {
            rootfs: rootfs.clone(),
            out: out.clone(),
            size: Some(size),
            kernel: kernel.clone(),
            bins: bins.clone(),
            extra_cmdline: cmdline.to_string(),
            persist_extra: layers.clone(),
            omit: Vec::new(),
        })?;
        Ok(out)
    };
    let mount_stick = stick("ramstick-debian.img", &sticks::cmdline(""))?;
    let ram_stick = stick(
        "ramstick-debian-ram.img",
        &sticks::cmdline("ramstick.layers=ram"),
    )?;

    let mut m = Measured::default();
    for run in 1..=runs {
        println!("bench: Debian boots, round {run}/{runs}");
        boot_series(
            &mut m.debian,
            &plain,
            GrubEntry::Default,
            work,
            "debian-initrd",
            |_| Ok(()),
        );
        boot_series(
            &mut m.clean,
            &mount_stick,
            GrubEntry::Clean,
            work,
            "ramstick-clean",
            |vm| guest::expect_layers(vm, 0, LayersMode::Mount, CMD_TIMEOUT),
        );
        boot_series(
            &mut m.mount,
            &mount_stick,
            GrubEntry::Default,
            work,
            "ramstick-mount",
            |vm| {
                guest::expect_layers(vm, 1, LayersMode::Mount, CMD_TIMEOUT)?;
                m.idle.record(|| Ok([idle_session(vm)?]));
                if run == 1 {
                    m.full_image.record(|| Ok([full_image_save(vm)?]));
                }
                Ok(())
            },
        );
        boot_series(
            &mut m.ram,
            &ram_stick,
            GrubEntry::Default,
            work,
            "ramstick-ram",
            |vm| guest::expect_layers(vm, 1, LayersMode::Ram, CMD_TIMEOUT),
        );
    }
    for disk in [&plain, &mount_stick, &ram_stick] {
        deps::remove_if_exists(disk)?;
    }
    Ok(m)
}

/// Log out of the autologin shell, wait for getty to log root in again,
/// then save: the bytes written.
fn idle_session(vm: &mut Vm) -> Result<f64> {
    vm.sendline("exit")?;
    vm.expect(AUTOLOGIN, BOOT_TIMEOUT)
        .context("getty did not log root in again after `exit`")?;
    vm.expect(DEBIAN_PROMPT, BOOT_TIMEOUT)
        .context("no shell prompt after the new login")?;
    Ok(guest::save(vm, BOOT_TIMEOUT)?.written)
}

/// The whole saved state (the chain after the save) as one zstd-15 image on
/// the stick: the bytes written; the image is removed after.
fn full_image_save(vm: &mut Vm) -> Result<f64> {
    let chain = guest::chain_files(vm, CMD_TIMEOUT)?;
    let merge = format!(
        "{SAVER} merge {FULL_IMAGE} {} --level 15 --quiet",
        chain.join(" ")
    );
    let cost = guest::measure(vm, &merge, FULL_IMAGE_TIMEOUT)?;
    vm.run(&format!("rm -f {FULL_IMAGE}; sync"), CMD_TIMEOUT)?;
    Ok(cost.written)
}

/// Boot a fresh copy of `master` once more into `series`, then run `then`
/// on the booted guest (its error fails the series).
fn boot_series(
    series: &mut Series<2>,
    master: &Path,
    entry: GrubEntry,
    work: &Path,
    name: &str,
    then: impl FnOnce(&mut Vm) -> Result<()>,
) {
    series.record(|| {
        let disk = fresh_copy(master, work, name)?;
        let booted = boot(
            &machine(&disk, work, name),
            &work.join(format!("{name}.log")),
            entry,
            DEBIAN_PROMPT,
        );
        let figures = booted.and_then(|mut b| {
            let init = init_time(&mut b.vm, SYSTEMD_START)?;
            then(&mut b.vm)?;
            Ok([init, b.login])
        });
        deps::remove_if_exists(&disk)?;
        figures
    });
}

/// A fresh sparse copy of the disk `master` at `work/<name>.run.img`.
pub fn fresh_copy(master: &Path, work: &Path, name: &str) -> Result<PathBuf> {
    let disk = work.join(format!("{name}.run.img"));
    deps::run(
        deps::cmd("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(master)
            .arg(&disk),
    )?;
    Ok(disk)
}

/// How QEMU runs every bench boot (TCG, virtio disk, `cache=unsafe`).
pub fn machine(disk: &Path, work: &Path, name: &str) -> Machine {
    Machine {
        disk: disk.to_path_buf(),
        kvm: false,
        mem: MEM,
        cpus: CPUS,
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
/// A boot QEMU failed before the guest ran /init (it hung or crashed:
/// nothing of ramstick ran, nothing was measured) is started once more.
pub fn boot(machine: &Machine, log: &Path, entry: GrubEntry, prompt: &str) -> Result<Booted> {
    again_after_fault("bench", || boot_once(machine, log, entry, prompt))
}

fn boot_once(machine: &Machine, log: &Path, entry: GrubEntry, prompt: &str) -> Result<Booted> {
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
    let cmd = format!("dmesg | grep -F -e '{KERNEL_RUNS_INIT}' -e '{end}'");
    let out = vm.run_kernel_log(&cmd, CMD_TIMEOUT)?;
    kmsg_interval(&out, KERNEL_RUNS_INIT, end)
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
    let cmdline = format!("root=LABEL=RAMSTICK rw {KERNEL_LOG}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_between_kernel_log_lines() {
        let dmesg = "[    2.500000] Run /init as init process\n\
                     <6>[    5.750000] systemd[1]: systemd 252.39-1~deb12u1 running in system mode\n\
                     [    6.000000] systemd[1]: systemd-journald.service: ok\n";
        let t = kmsg_interval(dmesg, KERNEL_RUNS_INIT, SYSTEMD_START).unwrap();
        assert!((t - 3.25).abs() < 1e-9, "{t}");
        assert!(kmsg_interval(dmesg, KERNEL_RUNS_INIT, "switching root").is_err());
        let reversed = "[ 9.0] Run /init as init process\n[ 1.0] systemd[1]: systemd 252\n";
        assert!(kmsg_interval(reversed, KERNEL_RUNS_INIT, SYSTEMD_START).is_err());
    }
}

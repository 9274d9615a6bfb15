//! The e2e scenarios: each boots a disk image and checks what the guest sees.

use super::guest::*;
use super::{Ctx, DiskSpec, Scenario};
use crate::qemu::Vm;
use anyhow::{bail, ensure, Context, Result};
use ramstick_common::cmdline::BootType;
use std::time::Duration;

/// Every scenario, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "boot-default",
        run: boot_default,
    },
    Scenario {
        name: "entry-backup",
        run: entry_backup,
    },
    Scenario {
        name: "entry-clean",
        run: entry_clean,
    },
    Scenario {
        name: "entry-tmpfs",
        run: entry_tmpfs,
    },
    Scenario {
        name: "usb",
        run: usb,
    },
    Scenario {
        name: "poweroff",
        run: poweroff,
    },
    Scenario {
        name: "fallback-truncated",
        run: fallback_truncated,
    },
    Scenario {
        name: "clean-ignores-upper",
        run: clean_ignores_upper,
    },
    Scenario {
        name: "default-legacy-upper",
        run: default_legacy_upper,
    },
    Scenario {
        name: "missing-rootfs",
        run: missing_rootfs,
    },
    Scenario {
        name: "wrong-persist",
        run: wrong_persist,
    },
    Scenario {
        name: "bad-init",
        run: bad_init,
    },
    Scenario {
        name: "shell-never-reboots",
        run: shell_never_reboots,
    },
    Scenario {
        name: "swap-user-links-bad-param",
        run: swap_user_links_bad_param,
    },
    Scenario {
        name: "image-too-small",
        run: image_too_small,
    },
    Scenario {
        name: "debian-systemd",
        run: debian_systemd,
    },
];

const MARKER: &str = "/etc/ramstick-marker";

/// Boot a fresh copy of `spec`'s disk with GRUB entry `entry` to the rootfs shell.
fn boot_fresh_to_shell(ctx: &mut Ctx, spec: &DiskSpec, entry: GrubEntry, usb: bool) -> Result<Vm> {
    let mut vm = start(ctx, spec, entry, usb)?;
    wait_shell(&mut vm)?;
    Ok(vm)
}

/// Boot a fresh copy of `spec`'s disk and pick GRUB entry `entry`.
fn start(ctx: &mut Ctx, spec: &DiskSpec, entry: GrubEntry, usb: bool) -> Result<Vm> {
    let disk = ctx.disk(spec)?;
    let mut vm = ctx.boot(&disk, usb)?;
    vm.select_entry(entry)?;
    Ok(vm)
}

/// `/proc/cmdline` must contain every one of `params`.
fn check_cmdline(vm: &mut Vm, params: &[&str]) -> Result<()> {
    let cmdline = vm.run("cat /proc/cmdline", CMD)?;
    for p in params {
        ensure!(
            cmdline.split_whitespace().any(|w| w == *p),
            "{p} is not on the kernel command line: {}",
            cmdline.trim()
        );
    }
    Ok(())
}

/// One line of `/proc/mounts`.
#[derive(Debug, PartialEq)]
struct Mount {
    source: String,
    target: String,
    fstype: String,
}

fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Mount {
                source: f.next()?.to_string(),
                target: f.next()?.to_string(),
                fstype: f.next()?.to_string(),
            })
        })
        .collect()
}

fn mounts(vm: &mut Vm) -> Result<Vec<Mount>> {
    Ok(parse_mounts(&vm.run("cat /proc/mounts", CMD)?))
}

/// The topmost mount on `target`, which must have type `fstype` when given.
fn mount_at<'a>(mounts: &'a [Mount], target: &str, fstype: Option<&str>) -> Result<&'a Mount> {
    let Some(m) = mounts.iter().rev().find(|m| m.target == target) else {
        bail!("nothing is mounted on {target}; mounts: {mounts:?}");
    };
    if let Some(fstype) = fstype {
        ensure!(
            m.fstype == fstype,
            "{target} is {} ({}), not {fstype}",
            m.fstype,
            m.source
        );
    }
    Ok(m)
}

/// The marker file's content, or `None` when it does not exist.
fn marker(vm: &mut Vm) -> Result<Option<String>> {
    let (rc, out) = vm.run_status(&format!("cat {MARKER}"), CMD)?;
    Ok((rc == 0).then(|| out.trim().to_string()))
}

fn boot_default(ctx: &mut Ctx) -> Result<()> {
    let mut vm = start(ctx, &DiskSpec::default(), GrubEntry::Default, false)?;
    vm.expect("no saved state on the stick", BOOT)
        .context("a new stick has no saved state and init should say so")?;
    wait_shell(&mut vm)?;
    check_cmdline(&mut vm, &["ramstick.boot=default"])?;

    let kver = vm.run("uname -r", CMD)?.trim().to_string();
    ensure!(
        kver == ctx.kernel_version(),
        "running kernel {kver}, built with {}",
        ctx.kernel_version()
    );
    let mounts = mounts(&mut vm)?;
    mount_at(&mounts, "/", Some("overlay"))?;
    mount_at(&mounts, "/persist", Some("ext4"))?;
    mount_at(&mounts, "/run/ramstick/upper", None)?;
    mount_at(&mounts, &format!("/lib/modules/{kver}"), Some("squashfs"))?;
    mount_at(&mounts, "/lib/firmware", Some("squashfs"))?;
    mount_at(&mounts, "/run", Some("tmpfs"))?;
    // The modules image really serves the running kernel's modules.
    vm.run(&format!("test -f /lib/modules/{kver}/modules.dep"), CMD)
        .context("/lib/modules/<kver>/modules.dep is not visible")?;
    let lower = mounts.iter().any(|m| {
        m.fstype == "squashfs"
            && (m.target == "/run/ramstick/lower" || m.target.starts_with("/run/ramstick/lower/"))
    });
    ensure!(
        lower,
        "no squashfs lower under /run/ramstick/lower; mounts: {mounts:?}"
    );

    vm.run("test -x /run/ramstick/bin/saver", CMD)
        .context("the saver is not executable at /run/ramstick/bin/saver")?;
    // boot.json and the kmsg timings are checked by wait_shell for every boot.
    let info = boot_info(&mut vm)?;
    ensure!(info.asked == BootType::Default, "boot.json: {info:?}");
    let out = vm.run("echo MARK-$((6*7))", CMD)?;
    ensure!(out.trim() == "MARK-42", "echo printed {out:?}");
    Ok(())
}

/// Boot GRUB entry `entry` of a new stick and check the command line init got.
fn check_entry(ctx: &mut Ctx, entry: GrubEntry, params: &[&str], asked: BootType) -> Result<Vm> {
    let mut vm = boot_fresh_to_shell(ctx, &DiskSpec::default(), entry, false)?;
    check_cmdline(&mut vm, params)?;
    let info = boot_info(&mut vm)?;
    ensure!(info.asked == asked, "boot.json: {info:?}");
    Ok(vm)
}

fn entry_backup(ctx: &mut Ctx) -> Result<()> {
    check_entry(
        ctx,
        GrubEntry::Backup,
        &["ramstick.boot=backup"],
        BootType::Backup,
    )
    .map(drop)
}

fn entry_clean(ctx: &mut Ctx) -> Result<()> {
    check_entry(
        ctx,
        GrubEntry::Clean,
        &["ramstick.boot=clean"],
        BootType::Clean,
    )
    .map(drop)
}

fn entry_tmpfs(ctx: &mut Ctx) -> Result<()> {
    let params = ["ramstick.boot=default", "ramstick.upper=tmpfs"];
    let mut vm = check_entry(ctx, GrubEntry::TmpfsUpper, &params, BootType::Default)?;
    let mounts = mounts(&mut vm)?;
    mount_at(&mounts, "/run/ramstick/upper", Some("tmpfs"))?;
    Ok(())
}

fn usb(ctx: &mut Ctx) -> Result<()> {
    let mut vm = boot_fresh_to_shell(ctx, &DiskSpec::default(), GrubEntry::Default, true)?;
    let mounts = mounts(&mut vm)?;
    let persist = mount_at(&mounts, "/persist", Some("ext4"))?;
    ensure!(
        persist.source.starts_with("/dev/sd"),
        "/persist comes from {}, not a USB (SCSI) disk",
        persist.source
    );
    Ok(())
}

fn poweroff(ctx: &mut Ctx) -> Result<()> {
    let mut vm = boot_fresh_to_shell(ctx, &DiskSpec::default(), GrubEntry::Default, false)?;
    let status = vm.poweroff(Duration::from_secs(120))?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

fn fallback_truncated(ctx: &mut Ctx) -> Result<()> {
    let backup = ctx.upper_image("from-backup")?;
    let good = ctx.upper_image("from-default")?;
    let truncated = ctx.truncated(&good)?;
    let spec = DiskSpec {
        persist_extra: vec![
            (truncated, "upperfs.squashfs".into()),
            (backup, "upperfs-backup.squashfs".into()),
        ],
        ..DiskSpec::default()
    };
    let mut vm = start(ctx, &spec, GrubEntry::Default, false)?;
    vm.expect("falling back to the backup chain", BOOT)?;
    wait_shell(&mut vm)?;
    let found = marker(&mut vm)?;
    ensure!(
        found.as_deref() == Some("from-backup"),
        "{MARKER}: {found:?}"
    );
    let info = boot_info(&mut vm)?;
    ensure!(info.used == BootType::Backup, "boot.json: {info:?}");
    Ok(())
}

/// A stick of the legacy layout whose upperfs.squashfs holds the marker
/// "from-default" (boot uses it as a one-layer chain).
fn upper_spec(ctx: &mut Ctx) -> Result<DiskSpec> {
    let upper = ctx.upper_image("from-default")?;
    Ok(DiskSpec {
        persist_extra: vec![(upper, "upperfs.squashfs".into())],
        ..DiskSpec::default()
    })
}

fn clean_ignores_upper(ctx: &mut Ctx) -> Result<()> {
    let spec = upper_spec(ctx)?;
    let mut vm = boot_fresh_to_shell(ctx, &spec, GrubEntry::Clean, false)?;
    let found = marker(&mut vm)?;
    ensure!(found.is_none(), "a clean boot shows {MARKER}: {found:?}");
    Ok(())
}

fn default_legacy_upper(ctx: &mut Ctx) -> Result<()> {
    let spec = upper_spec(ctx)?;
    let mut vm = boot_fresh_to_shell(ctx, &spec, GrubEntry::Default, false)?;
    let found = marker(&mut vm)?;
    ensure!(
        found.as_deref() == Some("from-default"),
        "{MARKER}: {found:?}"
    );
    let info = boot_info(&mut vm)?;
    ensure!(info.used == BootType::Default, "boot.json: {info:?}");
    Ok(())
}

fn missing_rootfs(ctx: &mut Ctx) -> Result<()> {
    let spec = DiskSpec {
        omit: vec!["rootfs.squashfs".into()],
        ..DiskSpec::default()
    };
    let mut vm = start(ctx, &spec, GrubEntry::Default, false)?;
    expect_emergency_shell(&mut vm, "rootfs.squashfs").map(drop)
}

fn wrong_persist(ctx: &mut Ctx) -> Result<()> {
    let spec = DiskSpec {
        extra_cmdline: "ramstick.persist=LABEL=NOPE ramstick.timeout=3".into(),
        ..DiskSpec::default()
    };
    let mut vm = start(ctx, &spec, GrubEntry::Default, false)?;
    expect_emergency_shell(&mut vm, "LABEL=NOPE").map(drop)
}

fn bad_init(ctx: &mut Ctx) -> Result<()> {
    let spec = DiskSpec {
        extra_cmdline: "ramstick.init=/sbin/nope".into(),
        ..DiskSpec::default()
    };
    let mut vm = start(ctx, &spec, GrubEntry::Default, false)?;
    let line = expect_emergency_shell(&mut vm, "/sbin/nope does not exist in the new root")?;
    ensure!(
        line.contains("Candidates present: /sbin/init"),
        "the message does not list the candidates: {line:?}"
    );
    Ok(())
}

fn shell_never_reboots(ctx: &mut Ctx) -> Result<()> {
    let spec = DiskSpec {
        extra_cmdline: "ramstick.persist=LABEL=NOPE ramstick.timeout=2 ramstick.shell=never".into(),
        ..DiskSpec::default()
    };
    let mut vm = start(ctx, &spec, GrubEntry::Default, false)?;
    vm.expect("BOOT FAILED", BOOT)?;
    let next = vm.expect_any(&["rebooting in", "starting emergency shell"], CMD)?;
    ensure!(next == 0, "ramstick.shell=never still started a shell");
    // The machine really reboots: the firmware hands over to GRUB again.
    vm.expect("ramstick (default)", Duration::from_secs(120))
        .context("no reboot into GRUB after the failure")?;
    Ok(())
}

fn swap_user_links_bad_param(ctx: &mut Ctx) -> Result<()> {
    // The last ramstick.boot wins: an invalid value must warn and boot default.
    let spec = DiskSpec {
        extra_cmdline: "ramstick.swap=16M ramstick.swappiness=7 ramstick.boot=fast".into(),
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    vm.expect("`ramstick.boot=fast` is not valid", BOOT)
        .context("no warning for the malformed ramstick.boot")?;
    wait_shell(&mut vm)?;
    let info = boot_info(&mut vm)?;
    ensure!(info.asked == BootType::Default, "boot.json: {info:?}");
    let swaps = vm.run("cat /proc/swaps", CMD)?;
    ensure!(
        swaps.contains("/persist/swapfile"),
        "swap is not on: {swaps}"
    );
    let size = vm.run("stat -c %s /persist/swapfile", CMD)?;
    ensure!(
        size.trim() == (16u64 << 20).to_string(),
        "swapfile has {size} bytes"
    );
    let swappiness = vm.run("cat /proc/sys/vm/swappiness", CMD)?;
    ensure!(swappiness.trim() == "7", "vm.swappiness is {swappiness}");
    vm.run(
        "mkdir /persist/user/Documents && echo hi > /persist/user/notes && sync",
        CMD,
    )?;
    let status = vm.poweroff(Duration::from_secs(120))?;
    ensure!(status.success(), "QEMU exited with {status}");
    drop(vm);

    // Second boot of the same stick: the user's files are linked into the home.
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    wait_shell(&mut vm)?;
    for name in ["Documents", "notes"] {
        let target = vm.run(&format!("readlink /home/user/{name}"), CMD)?;
        ensure!(
            target.trim() == format!("/persist/user/{name}"),
            "/home/user/{name} -> {target:?}"
        );
        let owner = vm.run(&format!("stat -c %u:%g /home/user/{name}"), CMD)?;
        ensure!(
            owner.trim() == "1000:1000",
            "/home/user/{name} owned by {owner}"
        );
    }
    let swaps = vm.run("cat /proc/swaps", CMD)?;
    ensure!(
        swaps.contains("/persist/swapfile"),
        "swap is not on after reboot: {swaps}"
    );
    Ok(())
}

/// `xtask image --size` too small for the images: a message with both
/// numbers, and neither the image nor a partial file left behind.
fn image_too_small(ctx: &mut Ctx) -> Result<()> {
    let out = ctx.run.join("too-small.img");
    let partial = crate::initramfs::partial_path(&out);
    let result = crate::image::build(&crate::image::Spec {
        rootfs: ctx.rootfs.clone(),
        out: out.clone(),
        size: Some(16 << 20),
        kernel: ctx.kernel.clone(),
        bins: ctx.bins.clone(),
        extra_cmdline: String::new(),
        persist_extra: Vec::new(),
        omit: Vec::new(),
    });
    let err = match result {
        Ok(()) => bail!("a 16 MiB image was built"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("16 MiB is too small") && err.contains("needs at least"),
        "unclear error: {err}"
    );
    ensure!(!out.exists(), "{} was left behind", out.display());
    ensure!(!partial.exists(), "{} was left behind", partial.display());
    Ok(())
}

/// The Debian rootfs boots its own kernel through our init into systemd,
/// with the saver unit running, and powers off cleanly.
fn debian_systemd(ctx: &mut Ctx) -> Result<()> {
    if !crate::deps::is_root() {
        println!("  debian-systemd: skipped: mmdebstrap needs root (run as root to include it)");
        return Ok(());
    }
    let disk = ctx.debian_disk()?;
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    vm.expect("switching root to /sbin/init", BOOT)?;
    vm.expect("Debian GNU/Linux", BOOT)
        .context("systemd did not start")?;
    vm.expect("root@ramstick:~# ", BOOT)
        .context("no root shell on ttyS0 (autologin)")?;
    let mounts = mounts(&mut vm)?;
    mount_at(&mounts, "/", Some("overlay"))?;
    mount_at(&mounts, "/persist", Some("ext4"))?;
    mount_at(&mounts, "/run/ramstick/upper", None)?;
    let active = vm.run_status("systemctl is-active ramstick-saver.service", CMD)?;
    ensure!(
        active.1.trim() == "active",
        "ramstick-saver.service is {:?}",
        active.1.trim()
    );
    let status = vm.poweroff(Duration::from_secs(180))?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_mounts() {
        let text = "overlay / overlay rw,lowerdir=/a:/b 0 0\n/dev/vda2 /persist ext4 rw 0 0\n\n";
        let m = parse_mounts(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[1],
            Mount {
                source: "/dev/vda2".into(),
                target: "/persist".into(),
                fstype: "ext4".into()
            }
        );
        assert!(mount_at(&m, "/", Some("overlay")).is_ok());
        assert!(mount_at(&m, "/persist", Some("tmpfs")).is_err());
        assert!(mount_at(&m, "/run", None).is_err());
    }

    #[test]
    fn topmost_mount_wins() {
        let m = parse_mounts("rootfs / rootfs rw 0 0\noverlay / overlay rw 0 0\n");
        assert_eq!(mount_at(&m, "/", None).unwrap().fstype, "overlay");
    }
}

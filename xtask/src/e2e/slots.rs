//! e2e scenarios of slots: GRUB boots a slot on trial once; a trial cut
//! before it commits returns to the committed slot by itself; a trial that
//! runs to its health check is committed by the saver daemon.

use super::guest::*;
use super::{Ctx, DiskSpec, Scenario};
use crate::deps;
use anyhow::{ensure, Context, Result};
use ramstick_common::bootmenu::slots::GRUBENV;
use ramstick_common::grubenv::Env;
use ramstick_common::place::Slot;
use ramstick_common::slotboot::{ENV_SLOT, ENV_TRIAL, ENV_TRIED};
use std::fs;
use std::path::Path;

pub const ALL: &[Scenario] = &[Scenario {
    name: "slot-trial-boot",
    run: slot_trial_boot,
}];

/// Slot b (a copy of the base) set to boot once on trial: GRUB uses the flag
/// up before booting it with `ramstick.trial=on` (init arms the watchdog),
/// and a reboot without a commit is back on slot a.
fn slot_trial_boot(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;

    // A stick with one slot: GRUB reads the data partition and lists no
    // slot b.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let console = console_text(vm.log_path())?;
    ensure!(
        console.contains("ramstick (default)") && !console.contains("ramstick (slot b,"),
        "the menu of a stick without slot b lists it (console log {})",
        vm.log_path().display()
    );
    vm.run(&format!("{SAVER} off"), CMD)?;
    let status = vm.poweroff(SAVE)?;
    ensure!(status.success(), "QEMU exited with {status}");
    drop(vm);

    copy_base_to_slot_b(ctx, &disk)?;
    let mut env = read_grubenv(ctx, &disk)?;
    ensure!(
        env.get(ENV_SLOT) == Some("a"),
        "a new stick's grubenv does not commit slot a: {env:?}"
    );
    env.set(ENV_TRIAL, "b");
    write_grubenv(ctx, &disk, &env)?;

    // Power lost during the trial (QEMU killed as soon as GRUB boots it):
    // GRUB used the flag up before booting, so nothing tries slot b again.
    let mut vm = ctx.boot(&disk, false)?;
    vm.expect("ramstick: trial boot of slot b", BOOT)
        .context("GRUB did not announce the trial")?;
    vm.kill();
    drop(vm);
    let env = read_grubenv(ctx, &disk)?;
    ensure!(
        env.get(ENV_TRIAL) == Some("") && env.get(ENV_TRIED) == Some("b"),
        "GRUB did not use the trial flag up: {env:?}"
    );
    ensure!(
        env.get(ENV_SLOT) == Some("a"),
        "the committed slot changed: {env:?}"
    );

    // The next boot: the committed slot, by itself, slot b listed after it;
    // GRUB and the saver say the trial did not commit.
    let mut vm = ctx.boot(&disk, false)?;
    vm.expect("ramstick: the trial of slot b did not commit", BOOT)
        .context("GRUB did not say the trial did not commit")?;
    vm.select_entry(GrubEntry::Default)?;
    wait_shell(&mut vm)?;
    let console = console_text(vm.log_path())?;
    let this_boot = console.rsplit("did not commit").next().unwrap_or_default();
    ensure!(
        this_boot.contains("ramstick (slot b, default)"),
        "the menu does not list slot b (console log {})",
        vm.log_path().display()
    );
    let cmdline = out(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        cmdline.contains("ramstick.slot=a") && cmdline.contains("ramstick.trial=off"),
        "the boot after the trial: {cmdline}"
    );
    let info = boot_info(&mut vm)?;
    ensure!(
        info.slot.slot == Slot::A && !info.slot.trial && !info.slot.watchdog_armed,
        "boot.json after the trial: {:?}",
        info.slot
    );
    let status = out(&mut vm, &format!("{SAVER} slot status"))?;
    ensure!(
        status.contains("failed"),
        "saver slot status does not report the failed trial:\n{status}"
    );
    // Tried again, by hand this time.
    vm.run(&format!("{SAVER} slot try b"), CMD)?;
    let status = vm.poweroff(SAVE)?;
    ensure!(status.success(), "QEMU exited with {status}");
    drop(vm);

    // The trial boot, to its end: init arms the watchdog, the daemon's
    // health check passes (busybox: the daemon runs) and commits slot b.
    let mut vm = boot_trial(ctx, &disk)?;
    let info = boot_info(&mut vm)?;
    ensure!(
        info.slot.slot == Slot::B && info.slot.trial && info.slot.watchdog_armed,
        "boot.json of the trial boot: {:?}",
        info.slot
    );
    ensure!(
        info.slot.base_image == "slot-b/rootfs.squashfs",
        "slot b booted {}",
        info.slot.base_image
    );
    let log = vm.run_kernel_log("dmesg | grep 'trial boot of slot b'", CMD)?;
    ensure!(
        log.contains("within 600 s or it restarts into the committed slot"),
        "init did not say the watchdog is armed:\n{log}"
    );
    // The daemon says it on the console, maybe before the shell was up.
    wait_console(&vm, &["trial of slot b confirmed"], BOOT)
        .context("the saver daemon did not commit the trial")?;
    let status = vm.poweroff(SAVE)?;
    ensure!(status.success(), "QEMU exited with {status}");
    drop(vm);
    let env = read_grubenv(ctx, &disk)?;
    ensure!(
        env.get(ENV_SLOT) == Some("b") && env.get(ENV_TRIED) == Some(""),
        "the trial was not committed: {env:?}"
    );
    Ok(())
}

/// The console log so far (the serial console carries raw bytes too).
fn console_text(log: &Path) -> Result<String> {
    let bytes = fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Byte offset of partition `n` (1 = the ESP, 2 = the data partition).
fn partition_offset(disk: &Path, n: usize) -> Result<u64> {
    let parts = crate::update_stick::partitions(disk)?;
    let (start, _) = parts
        .get(n - 1)
        .with_context(|| format!("{} has no partition {n}", disk.display()))?;
    Ok(*start)
}

/// `slot-b/rootfs.squashfs`: a copy of slot a's base, put on the data
/// partition with debugfs.
fn copy_base_to_slot_b(ctx: &Ctx, disk: &Path) -> Result<()> {
    let fs = format!("{}?offset={}", disk.display(), partition_offset(disk, 2)?);
    let base = ctx.work.join("slot-b-rootfs.squashfs");
    let _ = fs::remove_file(&base);
    deps::run(
        deps::cmd("debugfs")
            .args(["-R", &format!("dump /rootfs.squashfs {}", base.display())])
            .arg(&fs),
    )?;
    ensure!(base.is_file(), "debugfs did not dump rootfs.squashfs");
    deps::run_with_input(
        deps::cmd("debugfs").args(["-w", "-f", "-"]).arg(&fs),
        &format!(
            "mkdir slot-b\ncd slot-b\nwrite {} rootfs.squashfs\n",
            base.display()
        ),
    )?;
    let listed = deps::output(deps::cmd("debugfs").args(["-R", "ls -l /slot-b"]).arg(&fs))?;
    ensure!(
        listed.contains("rootfs.squashfs"),
        "slot-b/rootfs.squashfs was not written: {listed}"
    );
    Ok(())
}

/// The ESP of `disk`, as mtools names it.
fn esp(disk: &Path) -> Result<String> {
    Ok(format!(
        "{}@@{}",
        disk.display(),
        partition_offset(disk, 1)?
    ))
}

fn read_grubenv(ctx: &Ctx, disk: &Path) -> Result<Env> {
    let copy = ctx.work.join("grubenv");
    let _ = fs::remove_file(&copy);
    deps::run(
        deps::cmd("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(esp(disk)?)
            .arg(format!("::/{GRUBENV}"))
            .arg(&copy),
    )?;
    Env::read(&copy).with_context(|| format!("reading {GRUBENV} of the ESP"))
}

fn write_grubenv(ctx: &Ctx, disk: &Path, env: &Env) -> Result<()> {
    let copy = ctx.work.join("grubenv");
    fs::write(&copy, env.to_block()?).with_context(|| format!("writing {}", copy.display()))?;
    deps::run(
        deps::cmd("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i"])
            .arg(esp(disk)?)
            .arg(&copy)
            .arg(format!("::/{GRUBENV}")),
    )
}

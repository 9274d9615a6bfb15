//! e2e scenarios of issue 15's trial flow inside the guest: the saver
//! mounts the real ESP, `saver fold` writes slot b and sets the trial, GRUB
//! boots it once, and the daemon's health check commits it
//! (`slot-fold-commit`) or fails and leaves the committed slot to the next
//! boot (`slot-trial-fails`).

use super::guest::*;
use super::{Ctx, DiskSpec, Scenario};
use crate::qemu::Vm;
use anyhow::{bail, ensure, Context, Result};
use ramstick_common::place::Slot;
use std::time::Duration;

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "slot-fold-commit",
        run: slot_fold_commit,
    },
    Scenario {
        name: "slot-trial-fails",
        run: slot_trial_fails,
    },
];

/// A fold of the busybox system under TCG (packing, reading back).
const FOLD: Duration = Duration::from_secs(600);
/// From the shell prompt to the daemon's verdict on a trial boot.
const VERDICT: Duration = Duration::from_secs(300);
/// A file standing for an installed package.
const HELLO: &str = "/usr/local/bin/hello";
/// The busybox rootfs's daemon logs here.
const DAEMON_LOG: &str = "/run/ramstick/saver/daemon.log";
/// The user's health hook.
const HOOK: &str = "/etc/ramstick/health-check";

/// Installs the "package", saves it into slot a's chain, changes another
/// file in the session, folds, and checks that the trial of b is pending.
fn prepare_and_fold(vm: &mut Vm, extra: &str) -> Result<()> {
    vm.run(
        &format!(
            "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho hello from the package\\n' \
             > {HELLO} && chmod 755 {HELLO}{extra}"
        ),
        CMD,
    )?;
    let (rc, said) = vm.run_status(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(rc == 0, "saver save failed:\n{said}");
    vm.run("echo changed in the session > /root/changed", CMD)?;
    let (rc, said) = vm.run_status(&format!("{SAVER} fold --yes 2>&1"), FOLD)?;
    ensure!(rc == 0, "saver fold failed:\n{said}");
    ensure!(
        said.contains("slot b holds the folded system"),
        "saver fold says:\n{said}"
    );
    let status = out(vm, &format!("{SAVER} slot status 2>&1"))?;
    ensure!(
        status.contains("trial of slot b pending"),
        "after the fold, saver slot status says:\n{status}"
    );
    Ok(())
}

/// Powers the machine off (the session is saved on the way) and waits.
fn power_off(vm: &mut Vm) -> Result<()> {
    let status = vm.poweroff(SAVE)?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

fn slot_fold_commit(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    prepare_and_fold(&mut vm, "")?;
    power_off(&mut vm)?;
    drop(vm);

    // The trial: the daemon's health check passes and it commits.
    let mut vm = boot_trial(ctx, &disk)?;
    let seen = wait_console(
        &vm,
        &["trial of slot b confirmed", "trial of slot b failed"],
        VERDICT,
    )?;
    ensure!(
        seen == 0,
        "the trial of slot b failed (console log {})",
        vm.log_path().display()
    );
    let status = out(&mut vm, &format!("{SAVER} slot status 2>&1"))?;
    ensure!(
        status.contains("committed:  slot b") && status.contains("trial:      no trial"),
        "after the commit, saver slot status says:\n{status}"
    );
    check_folded_files(&mut vm)?;
    let status = out(&mut vm, &format!("{SAVER} status 2>&1"))?;
    ensure!(
        status.contains("on the stick: nothing saved yet"),
        "slot b's chain is not empty; saver status says:\n{status}"
    );
    ensure!(
        boot_info(&mut vm)?.layers.is_empty(),
        "slot b booted with layers"
    );
    power_off(&mut vm)?;
    drop(vm);

    // Committed: slot b again, by itself, without a trial.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let cmdline = out(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        cmdline.contains("ramstick.slot=b") && cmdline.contains("ramstick.trial=off"),
        "the boot after the commit: {cmdline}"
    );
    check_folded_files(&mut vm)?;
    let said = out(&mut vm, &format!("{SAVER} slot rollback 2>&1"))?;
    ensure!(
        said.contains("the next boot uses slot a"),
        "saver slot rollback says:\n{said}"
    );
    power_off(&mut vm)?;
    drop(vm);

    // Rolled back: slot a with its own chain (the package saved in it).
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let cmdline = out(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        cmdline.contains("ramstick.slot=a") && cmdline.contains("ramstick.trial=off"),
        "the boot after the rollback: {cmdline}"
    );
    let info = boot_info(&mut vm)?;
    ensure!(
        info.slot.slot == Slot::A && !info.layers.is_empty(),
        "slot a booted without its chain: {:?}, {} layers",
        info.slot,
        info.layers.len()
    );
    ensure!(
        out(&mut vm, HELLO)? == "hello from the package",
        "slot a's chain lost the package"
    );
    vm.kill();
    Ok(())
}

/// The package and the session's file are in slot b's base.
fn check_folded_files(vm: &mut Vm) -> Result<()> {
    ensure!(
        out(vm, HELLO)? == "hello from the package",
        "the package is not in slot b"
    );
    ensure!(
        out(vm, "cat /root/changed")? == "changed in the session",
        "the session's file is not in slot b"
    );
    Ok(())
}

fn slot_trial_fails(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let hook = format!(
        " && mkdir -p /etc/ramstick && printf '#!/bin/sh\\necho the network is down\\nexit 1\\n' \
         > {HOOK} && chmod 755 {HOOK}"
    );
    prepare_and_fold(&mut vm, &hook)?;
    power_off(&mut vm)?;
    drop(vm);

    // The trial: the hook fails, the daemon says so and does not commit.
    let mut vm = boot_trial(ctx, &disk)?;
    let seen = wait_console(
        &vm,
        &["trial of slot b failed", "trial of slot b confirmed"],
        VERDICT,
    )?;
    ensure!(
        seen == 0,
        "the trial of slot b was committed despite the failing hook (console log {})",
        vm.log_path().display()
    );
    let console = std::fs::read(vm.log_path()).context("reading the console log")?;
    let console = String::from_utf8_lossy(&console);
    ensure!(
        console.contains("the network is down"),
        "the failure does not carry the hook's message (console log {})",
        vm.log_path().display()
    );
    let status = out(&mut vm, &format!("{SAVER} slot status 2>&1"))?;
    ensure!(
        status.contains("committed:  slot a") && status.contains("trial of slot b in progress"),
        "after the failed check, saver slot status says:\n{status}"
    );
    power_off(&mut vm)?;
    drop(vm);

    // Back on slot a: GRUB and the saver say the trial did not commit.
    let mut vm = ctx.boot(&disk, false)?;
    vm.expect("ramstick: the trial of slot b did not commit", BOOT)
        .context("GRUB did not say the trial did not commit")?;
    vm.select_entry(GrubEntry::Default)?;
    wait_shell(&mut vm)?;
    let cmdline = out(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        cmdline.contains("ramstick.slot=a") && cmdline.contains("ramstick.trial=off"),
        "the boot after the failed trial: {cmdline}"
    );
    // The daemon says it too, once, at its start.
    if let Err(e) = wait_console(
        &vm,
        &["the trial of slot b did not commit (failed, hung or lost power): running slot a"],
        CMD,
    ) {
        let log = vm
            .run(&format!("cat {DAEMON_LOG}"), CMD)
            .unwrap_or_default();
        bail!("{e:#}; the daemon's log:\n{log}");
    }
    let status = out(&mut vm, &format!("{SAVER} slot status 2>&1"))?;
    ensure!(
        status.contains("committed:  slot a") && status.contains("trial of slot b failed"),
        "after the failed trial, saver slot status says:\n{status}"
    );
    let status = out(&mut vm, &format!("{SAVER} status 2>&1"))?;
    ensure!(
        status.contains("b: trial failed"),
        "saver status does not say the trial failed:\n{status}"
    );
    ensure!(
        out(&mut vm, HELLO)? == "hello from the package",
        "slot a's chain lost the package"
    );
    vm.kill();
    Ok(())
}

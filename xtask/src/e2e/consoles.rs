//! e2e scenarios of a person at a console that is not /dev/console. On a
//! PC with a serial port GRUB's `console=tty0 console=ttyS0,115200` makes
//! that port /dev/console while its user looks at the screen; here the
//! other way round: `console=tty0` named again last makes the screen
//! /dev/console (the kernel takes the last one named), and the harness
//! types on ttyS0, where the passphrase prompt and the emergency shell must
//! appear all the same.

use super::guest::{wait_shell, GrubEntry, BOOT, CMD, EMERGENCY_PROMPT};
use super::luks::{luks_disk, PASSPHRASE, PROMPT_PASSPHRASE};
use super::{Ctx, DiskSpec, Scenario};
use crate::deps;
use crate::qemu::Vm;
use anyhow::{ensure, Context, Result};
use ramstick_common::bootmenu::GRUB_CFG;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// The scenarios, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "console-elsewhere-luks",
        run: console_elsewhere_luks,
    },
    Scenario {
        name: "console-elsewhere-shell",
        run: console_elsewhere_shell,
    },
];

/// Appended to every entry's console parameters: /dev/console is tty0.
const CONSOLE_ELSEWHERE: &str = "console=tty0";

/// Adds `params` after the serial console parameter of every entry of the
/// GRUB menu on `disk`'s ESP (the disk is a scratch copy).
fn add_to_every_entry(ctx: &Ctx, disk: &Path, params: &str) -> Result<()> {
    let (start, _) = *crate::update_stick::partitions(disk)?
        .first()
        .with_context(|| format!("{} has no ESP", disk.display()))?;
    let esp = format!("{}@@{start}", disk.display());
    let copy = ctx.work.join("grub.cfg");
    let _ = fs::remove_file(&copy);
    let mtools = |args: &[&str]| {
        deps::run(
            deps::cmd(args[0])
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(&args[1..]),
        )
    };
    let on_esp = format!("::/{GRUB_CFG}");
    let local = copy.display().to_string();
    mtools(&["mcopy", "-i", &esp, &on_esp, &local])?;
    let text = fs::read_to_string(&copy).with_context(|| format!("reading {local}"))?;
    const SERIAL: &str = "console=ttyS0,115200";
    ensure!(text.contains(SERIAL), "{GRUB_CFG} has no {SERIAL}");
    fs::write(&copy, text.replace(SERIAL, &format!("{SERIAL} {params}")))
        .with_context(|| format!("writing {local}"))?;
    mtools(&["mcopy", "-o", "-i", &esp, &local, &on_esp])
}

/// /dev/console was tty0 in this boot (the kernel lists it last) and ttyS0
/// a console too.
fn check_console_elsewhere(vm: &mut Vm) -> Result<()> {
    let active = vm.run("cat /sys/class/tty/console/active", CMD)?;
    let names: Vec<&str> = active.split_whitespace().collect();
    ensure!(
        names.last() == Some(&"tty0") && names.contains(&"ttyS0"),
        "/dev/console is not tty0 beside ttyS0: the active consoles are {:?}",
        active.trim()
    );
    Ok(())
}

/// The LUKS passphrase asked on ttyS0 too, a wrong one said there, the
/// right one typed there opens the stick.
fn console_elsewhere_luks(ctx: &mut Ctx) -> Result<()> {
    let disk = luks_disk(ctx, false)?;
    add_to_every_entry(ctx, &disk, CONSOLE_ELSEWHERE)?;
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    vm.expect(PROMPT_PASSPHRASE, BOOT)
        .context("no passphrase prompt on ttyS0 while /dev/console is tty0")?;
    vm.sendline("not-the-passphrase")?;
    vm.expect("wrong passphrase", CMD)
        .context("a wrong passphrase typed on ttyS0 was not said there")?;
    vm.expect(PROMPT_PASSPHRASE, CMD)?;
    vm.sendline(PASSPHRASE)?;
    vm.expect("unlocked in", BOOT)?;
    wait_shell(&mut vm)?;
    check_console_elsewhere(&mut vm)?;
    let status = vm.poweroff(Duration::from_secs(120))?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

/// The emergency shell on ttyS0 too; leaving it reboots the machine.
fn console_elsewhere_shell(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    add_to_every_entry(
        ctx,
        &disk,
        &format!("{CONSOLE_ELSEWHERE} ramstick.persist=LABEL=NOPE ramstick.timeout=2"),
    )?;
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    vm.expect("BOOT FAILED", BOOT)?;
    vm.expect(EMERGENCY_PROMPT, CMD)
        .context("no emergency shell on ttyS0 while /dev/console is tty0")?;
    let out = vm.run("echo EMERG-$((2+3))", CMD)?;
    ensure!(out.trim() == "EMERG-5", "emergency shell printed {out:?}");
    check_console_elsewhere(&mut vm)?;
    // The shells on the other consoles end with this one: the machine reboots.
    vm.sendline("exit")?;
    vm.expect("ramstick (default)", Duration::from_secs(120))
        .context("no reboot into GRUB after leaving the emergency shell")?;
    Ok(())
}

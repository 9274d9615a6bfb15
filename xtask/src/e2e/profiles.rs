//! e2e scenario of profiles: a second, independent saved state of the same
//! base, booted by its GRUB entry (which GRUB's script finds on the data
//! partition) and saved on its own; the default profile never sees it.

use super::guest::{
    boot_disk_to_shell, check, out, poweroff_expecting, wait_shell, CMD, SAVE, SAVED, SAVER,
};
use super::{Ctx, DiskSpec, Scenario};
use crate::qemu::Vm;
use anyhow::{ensure, Result};
use ramstick_common::bootmenu::{profile_entries_start, GrubEntry};
use std::path::Path;

/// The scenario of this file.
pub const ALL: &[Scenario] = &[Scenario {
    name: "profiles",
    run: profiles,
}];

/// What the saver says at shutdown when the session is unchanged.
const UNCHANGED: &str = "nothing to save, nothing was written";

/// Boot the first profile entry of the menu (a one-kernel disk).
fn boot_first_profile(ctx: &mut Ctx, disk: &Path) -> Result<Vm> {
    let mut vm = ctx.boot(disk, false)?;
    vm.select_position(profile_entries_start(1, false))?;
    wait_shell(&mut vm)?;
    Ok(vm)
}

/// Saves now, expecting the saver's commit message.
fn save(vm: &mut Vm) -> Result<()> {
    let said = vm.run(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(said.contains(SAVED), "saver save says {said:?}");
    Ok(())
}

fn profiles(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;

    // Session 1, the default profile: file A saved, profile work created.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    out(&mut vm, "echo A > /root/a && echo done")?;
    save(&mut vm)?;
    let created = out(&mut vm, &format!("{SAVER} profile create work 2>&1"))?;
    ensure!(
        created.contains("created profile work"),
        "saver profile create says {created:?}"
    );
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);

    // Session 2, GRUB's entry of profile work: the base, without A; W saved there.
    let mut vm = boot_first_profile(ctx, &disk)?;
    check(
        &mut vm,
        "-n \"$(grep -o ramstick.profile=work /proc/cmdline)\"",
        "GRUB's profile entry did not pass ramstick.profile=work",
    )?;
    check(
        &mut vm,
        "! -e /root/a",
        "the default profile's file A shows in profile work",
    )?;
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("profile:      work (its saved state: /persist/profiles/work/layers)"),
        "saver status does not show profile work:\n{status}"
    );
    out(&mut vm, "echo W > /root/w && echo done")?;
    save(&mut vm)?;
    check(
        &mut vm,
        "-f /persist/profiles/work/layers/manifest.json",
        "profile work's save is not in profiles/work/layers",
    )?;
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);

    // Session 3, the default profile again: A kept, W not there.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/a")? == "A",
        "the default profile lost A"
    );
    check(
        &mut vm,
        "! -e /root/w",
        "profile work's file W shows in the default profile",
    )?;
    let list = out(&mut vm, &format!("{SAVER} profile list"))?;
    let line = |name: &str| {
        list.lines().find(|l| {
            l.get(2..)
                .is_some_and(|r| r.starts_with(&format!("{name} ")))
        })
    };
    ensure!(
        line("default").is_some_and(|l| l.starts_with("* ")),
        "saver profile list does not mark default as running:\n{list}"
    );
    ensure!(
        line("work")
            .is_some_and(|l| l.starts_with("  ") && l.split_whitespace().nth(1) == Some("1")),
        "saver profile list does not show work with its one layer:\n{list}"
    );
    // A copy shares work's layer files; a delete removes it; default stays.
    out(&mut vm, &format!("{SAVER} profile copy work play"))?;
    let inodes = out(
        &mut vm,
        "stat -c %i /persist/profiles/work/layers/layer-*.squashfs          /persist/profiles/play/layers/layer-*.squashfs | sort -u | wc -l",
    )?;
    ensure!(
        inodes == "1",
        "the copy's layer is not work's file ({inodes} inodes)"
    );
    out(&mut vm, &format!("{SAVER} profile delete play"))?;
    check(
        &mut vm,
        "! -e /persist/profiles/play",
        "profile play was not deleted",
    )?;
    let (rc, refused) = vm.run_status(&format!("{SAVER} profile delete default 2>&1"), CMD)?;
    ensure!(
        rc != 0 && refused.contains("never deleted"),
        "saver profile delete default exits {rc}: {refused}"
    );
    poweroff_expecting(&mut vm, UNCHANGED)?;
    Ok(())
}

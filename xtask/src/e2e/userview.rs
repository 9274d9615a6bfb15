//! e2e scenario of the user's view of a session: `saver diff` lists what
//! the next save would write, `saver off` makes a poweroff save nothing,
//! `saver on` and a save keep the session, and GRUB's "default, read-only"
//! entry boots that session without ever saving.

use super::guest::{
    boot_disk_to_shell as boot, check, out, poweroff_expecting, SAVE, SAVED, SAVER,
};
use super::{Ctx, DiskSpec, Scenario};
use crate::qemu::Vm;
use anyhow::{ensure, Result};
use ramstick_common::bootmenu::GrubEntry;
use std::time::Duration;

/// The scenario of this file.
pub const ALL: &[Scenario] = &[Scenario {
    name: "userview-diff-off",
    run: diff_off,
}];

/// What the saver says at shutdown when saving is off.
const NOT_SAVED: &str = "session not saved: saving is off";
/// What the saver says when the session is unchanged.
const UNCHANGED: &str = "nothing to save, nothing was written";
/// A diff walks the upper and stats the lowers: quick, but TCG is slow.
const DIFF: Duration = Duration::from_secs(120);

/// A file added, one of the rootfs modified, one deleted, and a cache
/// excluded (a line added to the exclusion list) holding a file.
fn change_things(vm: &mut Vm) -> Result<()> {
    out(
        vm,
        "echo added > /root/added && echo changed-host > /etc/hostname && rm /bin/rev \
         && echo /root/.cache >> /etc/ramstick/exclude \
         && mkdir -p /root/.cache && echo junk > /root/.cache/junk && echo done",
    )?;
    Ok(())
}

/// `saver diff --all`: its exit status and output.
fn diff_all(vm: &mut Vm) -> Result<(i32, String)> {
    vm.run_status(&format!("{SAVER} diff --all"), DIFF)
}

fn diff_off(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;

    // Session 1: changes listed by the diff, then saving turned off.
    let mut vm = boot(ctx, &disk, GrubEntry::Default)?;
    let (rc, clean) = diff_all(&mut vm)?;
    ensure!(rc == 0, "a fresh boot's diff exits {rc}: {clean}");
    ensure!(
        clean.contains("nothing to save"),
        "a fresh boot's diff says {clean:?}"
    );
    change_things(&mut vm)?;
    let (rc, said) = diff_all(&mut vm)?;
    ensure!(rc == 1, "the diff of a changed session exits {rc}: {said}");
    for line in [
        "A  /root/added",
        "M  /etc/hostname",
        "D  /bin/rev",
        "excluded by /root/.cache",
    ] {
        ensure!(said.contains(line), "the diff lacks {line:?}:\n{said}");
    }
    let (rc, json) = vm.run_status(&format!("{SAVER} diff --json"), DIFF)?;
    ensure!(
        rc == 1 && json.contains("\"/root/added\"") && json.contains("\"deleted\""),
        "saver diff --json exits {rc}: {json}"
    );
    out(&mut vm, &format!("{SAVER} off"))?;
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("saving:       OFF") && status.contains("saver off"),
        "saver status does not say saving is off:\n{status}"
    );
    let (rc, refused) = vm.run_status(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(
        rc == 3 && refused.contains(NOT_SAVED),
        "saver save while off exits {rc}: {refused}"
    );
    poweroff_expecting(&mut vm, NOT_SAVED)?;
    drop(vm);

    // Session 2: nothing of session 1 was saved; the same changes, saving
    // off and on again, saved by hand.
    let mut vm = boot(ctx, &disk, GrubEntry::Default)?;
    check(&mut vm, "! -e /root/added", "session 1 was saved while off")?;
    check(&mut vm, "-e /bin/rev", "session 1's deletion was saved")?;
    change_things(&mut vm)?;
    out(&mut vm, &format!("{SAVER} off && {SAVER} on"))?;
    let said = vm.run(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(
        said.contains(SAVED),
        "the save after saver on says {said:?}"
    );
    let (rc, after) = diff_all(&mut vm)?;
    ensure!(
        rc == 0 && after.contains("the next save writes nothing"),
        "the diff right after a save exits {rc}: {after}"
    );
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);

    // Session 3: session 2 kept, the excluded file not.
    let mut vm = boot(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/added")? == "added",
        "session 2 was not kept"
    );
    ensure!(
        out(&mut vm, "cat /etc/hostname")? == "changed-host",
        "session 2's modification was not kept"
    );
    check(
        &mut vm,
        "! -e /bin/rev",
        "session 2's deletion was not kept",
    )?;
    check(
        &mut vm,
        "! -e /root/.cache",
        "an excluded directory was saved",
    )?;
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);

    // Session 4, GRUB's read-only entry: the saved session, never saved.
    let mut vm = boot(ctx, &disk, GrubEntry::ReadOnly)?;
    ensure!(
        out(&mut vm, "cat /root/added")? == "added",
        "the read-only entry does not boot the saved session"
    );
    out(&mut vm, "echo thrown-away > /root/added")?;
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("saving:       OFF") && status.contains("ramstick.save=off"),
        "saver status on the read-only entry:\n{status}"
    );
    let (rc, refused) = vm.run_status(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(
        rc == 3 && refused.contains(NOT_SAVED),
        "saver save on the read-only entry exits {rc}: {refused}"
    );
    poweroff_expecting(&mut vm, NOT_SAVED)?;
    Ok(())
}

//! e2e: writing a slot. `update-stick-keeps-state`: a stick with a saved
//! session and a file in `user/` gets the same busybox tree plus a marker
//! file from the host (`update-stick`, in-process); on the host, slot a's
//! files (base, chain, `user/`, modules, firmware) are byte-identical, slot
//! b is complete and GRUB's trial names it; then a boot — into slot b when
//! the stick's GRUB knows slots (its `grub.cfg` reads `ramstick_trial`),
//! else into slot a with its state. `fold-kill`: `saver fold` cut by QEMU
//! killed at a random moment; the next boot is slot a with its state; a
//! fold to the end then writes a slot b whose base holds the session.

use super::guest::{
    boot_disk_to_shell, boot_info, out, poweroff_expecting, random_millis, GrubEntry, CMD, SAVED,
    SAVER,
};
use super::{Ctx, DiskSpec, Scenario};
use crate::deps;
use crate::update_stick::{update_mounted, Attached, Esp, Update};
use anyhow::{ensure, Context, Result};
use ramstick_common::bootmenu::slots::GRUBENV;
use ramstick_common::bootmenu::GRUB_CFG;
use ramstick_common::grubenv::Env;
use ramstick_common::slotboot::ENV_TRIAL;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "update-stick-keeps-state",
        run: update_stick_keeps_state,
    },
    Scenario {
        name: "fold-kill",
        run: fold_kill,
    },
];

/// A fold of the busybox system under TCG (packing, reading back).
const FOLD: Duration = Duration::from_secs(600);

/// Every file of `dir` but those under `slot-b/`, with its bytes.
fn slot_a_files(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e.with_context(|| format!("cannot list {}", d.display()))?;
            let rel = e.path().strip_prefix(dir)?.to_path_buf();
            if rel.starts_with("slot-b") || rel.starts_with("lost+found") {
                continue;
            }
            if e.file_type()?.is_dir() {
                todo.push(e.path());
            } else {
                let bytes =
                    fs::read(e.path()).with_context(|| format!("cannot read {}", rel.display()))?;
                out.insert(rel, bytes);
            }
        }
    }
    Ok(out)
}

fn update_stick_keeps_state(ctx: &mut Ctx) -> Result<()> {
    if !deps::is_root() {
        println!("  update-stick-keeps-state: skipped: update-stick needs root (loop devices)");
        return Ok(());
    }
    let disk = ctx.disk(&DiskSpec::default())?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    vm.run(
        "echo kept > /root/kept && echo mine > /persist/user/notes",
        CMD,
    )?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mnt = ctx.work.join("update-stick");
    deps::remove_if_exists(&mnt)?;
    fs::create_dir_all(&mnt).with_context(|| format!("cannot create {}", mnt.display()))?;
    let (before, slots_in_grub) = {
        let stick = Attached::attach(&disk, &mnt)?;
        let mut esp = stick.esp();
        if esp.read(GRUBENV)?.is_none() {
            // A stick image from before slots (`cargo xtask image` adds the
            // block once the slot boot is in): the block GRUB would have.
            println!("  the image has no {GRUBENV}: adding one");
            let mut block = Env::default();
            block.set("ramstick_slot", "a");
            let local = ctx.work.join("grubenv");
            fs::write(&local, block.to_block().map_err(anyhow::Error::msg)?)
                .with_context(|| format!("cannot write {}", local.display()))?;
            esp.write(GRUBENV, &local)?;
        }
        let cfg = esp.read(GRUB_CFG)?.context("the ESP has no grub.cfg")?;
        let cfg = String::from_utf8_lossy(&cfg).into_owned();
        (slot_a_files(&stick.persist)?, cfg.contains(ENV_TRIAL))
    };
    let tree = ctx.work.join("update-tree");
    deps::remove_if_exists(&tree)?;
    deps::run(deps::cmd("cp").arg("-a").arg(&ctx.rootfs).arg(&tree))?;
    fs::write(tree.join("etc/update-marker"), "updated from the host\n")
        .context("cannot write the marker")?;
    {
        let stick = Attached::attach(&disk, &mnt)?;
        let update = Update {
            rootfs: tree.clone(),
            kernel: None,
            yes: false,
            work: ctx.work.join("update-images"),
            kernel_check: true,
        };
        let slot = update_mounted(&mut stick.esp(), &stick.persist, &update)?;
        ensure!(slot.name() == "b", "update-stick wrote slot {slot}");
    }
    {
        let stick = Attached::attach(&disk, &mnt)?;
        let after = slot_a_files(&stick.persist)?;
        let changed: Vec<&PathBuf> = before
            .keys()
            .chain(after.keys())
            .filter(|p| before.get(*p) != after.get(*p))
            .collect();
        ensure!(changed.is_empty(), "slot a's files changed: {changed:?}");
        ensure!(
            before.contains_key(Path::new("user/notes"))
                && before.contains_key(Path::new("layers/manifest.json")),
            "the saved state or user/notes is missing on the stick"
        );
        for f in ["slot-b/rootfs.squashfs", "slot-b/slot.json"] {
            ensure!(stick.persist.join(f).is_file(), "{f} is missing");
        }
        let mut esp = stick.esp();
        let block = esp.read(GRUBENV)?.context("grubenv is gone")?;
        let mut env = Env::parse(&block).map_err(anyhow::Error::msg)?;
        ensure!(
            env.get(ENV_TRIAL) == Some("b"),
            "the trial is not set: {env:?}"
        );
        if !slots_in_grub {
            // Without a GRUB that consumes the trial, a boot is slot a:
            // leave the block as GRUB found it.
            env.set(ENV_TRIAL, "");
            esp.write_env(GRUBENV, &env)?;
        }
    }
    let _ = fs::remove_dir_all(&tree);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    if slots_in_grub {
        let cmdline = out(&mut vm, "cat /proc/cmdline")?;
        ensure!(
            cmdline.contains("ramstick.slot=b"),
            "the trial did not boot slot b: {cmdline}"
        );
        ensure!(
            out(&mut vm, "cat /etc/update-marker")? == "updated from the host",
            "slot b does not run the new system"
        );
        ensure!(
            out(&mut vm, "test -e /root/kept && echo yes || echo no")? == "no",
            "slot b shows slot a's saved state"
        );
    } else {
        println!("  this stick's GRUB has no slots yet: checking that slot a boots with its state");
        ensure!(
            out(&mut vm, "cat /root/kept")? == "kept",
            "slot a's state is gone"
        );
    }
    ensure!(
        out(&mut vm, "cat /persist/user/notes")? == "mine",
        "user/ changed"
    );
    vm.kill();
    Ok(())
}

fn fold_kill(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    vm.run("echo kept > /root/kept", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    // Incompressible data in the session, so that the base takes seconds to
    // write: the cut lands while it is written, mostly.
    vm.run(
        "dd if=/dev/urandom of=/root/big bs=1M count=24 2>/dev/null",
        CMD,
    )?;
    let delay = random_millis(4000);
    println!("  cutting the power {delay} ms after the fold starts writing");
    vm.sendline(&format!("{SAVER} fold --yes"))?;
    vm.expect("folding the running system", FOLD)?;
    std::thread::sleep(Duration::from_millis(delay));
    vm.kill();
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let cmdline = out(&mut vm, "cat /proc/cmdline")?;
    if cmdline.contains("ramstick.slot=b") {
        // The cut came after the fold had written slot b whole and set its
        // trial: GRUB tries it, complete, with the session in its base.
        println!("  the fold had completed before the cut: slot b on trial");
        ensure!(
            cmdline.contains("ramstick.trial=on"),
            "slot b booted without a trial: {cmdline}"
        );
        ensure!(
            out(&mut vm, "cat /root/kept; ls /persist/slot-b/slot.json")?
                == "kept\n/persist/slot-b/slot.json",
            "slot b booted incomplete or without the folded session"
        );
        // Back to slot a for the rest.
        vm.run(&format!("{SAVER} slot rollback"), CMD)?;
        poweroff_expecting(&mut vm, "saver:")?;
        drop(vm);
        vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
        let cmdline = out(&mut vm, "cat /proc/cmdline")?;
        ensure!(
            cmdline.contains("ramstick.slot=a"),
            "the rollback did not return to slot a: {cmdline}"
        );
    }
    ensure!(
        out(&mut vm, "cat /root/kept")? == "kept",
        "slot a's state is gone after the cut fold"
    );
    ensure!(boot_info(&mut vm)?.failures.is_empty(), "a layer failed");
    let (rc, said) = vm.run_status(&format!("{SAVER} fold --yes 2>&1"), FOLD)?;
    ensure!(rc == 0, "saver fold failed:\n{said}");
    ensure!(
        said.contains("slot b holds the folded system"),
        "saver fold says:\n{said}"
    );
    let folded = out(
        &mut vm,
        "mkdir -p /tmp/b && mount -o loop,ro /persist/slot-b/rootfs.squashfs /tmp/b && \
         cat /tmp/b/root/kept; ls /tmp/b/lib/modules | wc -l; umount /tmp/b",
    )?;
    ensure!(
        folded.lines().collect::<Vec<_>>() == ["kept", "0"],
        "slot b's base shows {folded:?} (want the session's file and no modules)"
    );
    poweroff_expecting(&mut vm, "saver:")?;
    drop(vm);
    // The fold set slot b's trial: the next boot tries it, the session in
    // its base.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let cmdline = out(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        cmdline.contains("ramstick.slot=b") && cmdline.contains("ramstick.trial=on"),
        "the boot after the fold is not slot b's trial: {cmdline}"
    );
    ensure!(
        out(&mut vm, "cat /root/kept")? == "kept",
        "slot b's base lacks the folded session"
    );
    vm.kill();
    Ok(())
}

//! Reliability scenarios: a real init that cannot run in the new root, two
//! sticks with the same label, and a damaged data filesystem.

use super::guest::*;
use super::{Ctx, DiskSpec, Scenario};
use crate::deps;
use anyhow::{ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "init-interpreter-missing",
        run: init_interpreter_missing,
    },
    Scenario {
        name: "two-sticks-refused",
        run: two_sticks_refused,
    },
    Scenario {
        name: "fsck-repairs",
        run: fsck_repairs,
    },
];

/// `ramstick.init=` a script whose interpreter the rootfs lacks: init must
/// say so before freeing the initramfs, and the emergency shell must work
/// (before, the exec failed after the wipe: no shell, a reboot loop).
fn init_interpreter_missing(ctx: &mut Ctx) -> Result<()> {
    let upper = script_upper(ctx)?;
    let spec = DiskSpec {
        extra_cmdline: "ramstick.init=/sbin/pyinit".into(),
        persist_extra: vec![(upper, "upperfs.squashfs".into())],
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    let line = expect_emergency_shell(
        &mut vm,
        "/sbin/pyinit is a script for /usr/bin/python3, which does not exist in the new root",
    )?;
    ensure!(
        line.contains("ramstick.init="),
        "the message does not say how to choose another init: {line:?}"
    );
    Ok(())
}

/// An upper image holding `/sbin/pyinit`, a Python script (the busybox
/// rootfs has no Python).
fn script_upper(ctx: &mut Ctx) -> Result<PathBuf> {
    ctx.upper_image_of(
        "upper-pyinit",
        &[(
            "sbin/pyinit",
            "#!/usr/bin/python3\nprint('never runs')\n",
            0o755,
        )],
    )
}

/// The stick and a byte-for-byte copy (a cloned backup) both attached:
/// init must refuse to pick one, list both and say how to choose.
fn two_sticks_refused(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    let copy = ctx.run.join(format!("{}-copy.img", ctx.scenario));
    deps::run(
        deps::cmd("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&disk)
            .arg(&copy),
    )?;
    let mut vm = ctx.boot_with(&disk, false, 1024, std::slice::from_ref(&copy))?;
    vm.select_entry(GrubEntry::Default)?;
    let line = expect_emergency_shell(
        &mut vm,
        "2 devices match ramstick.persist=LABEL=RAMSTICK, refusing to guess",
    )?;
    for dev in ["/dev/vda2", "/dev/vdb2"] {
        ensure!(line.contains(dev), "{dev} is not listed: {line:?}");
    }
    // Nothing was mounted from either.
    let mounts = vm.run("cat /proc/mounts", CMD)?;
    ensure!(!mounts.contains("/dev/vd"), "a stick was mounted: {mounts}");
    drop(vm);
    let log = String::from_utf8_lossy(&fs::read(ctx.log_path())?).into_owned();
    ensure!(
        log.contains("unplug all but the stick you want to use")
            && log.contains("ramstick.persist=/dev/vda2 (they share"),
        "no hint on how to choose (console log {})",
        ctx.log_path().display()
    );
    deps::remove_if_exists(&copy)
}

/// The data filesystem left damaged (a block in use marked free, and not
/// cleanly unmounted, as a crash leaves it): init's e2fsck must repair it,
/// say so, and the boot must go on normally with /persist mounted
/// nosuid,nodev,noatime,errors=remount-ro.
fn fsck_repairs(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    damage_persist(&disk)?;
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    vm.expect("e2fsck repaired the data filesystem on /dev/vda2", BOOT)
        .context("init did not report the repair")?;
    wait_shell(&mut vm)?;
    let mounts = vm.run("grep ' /persist ' /proc/mounts", CMD)?;
    let flags = mounts.split_whitespace().nth(3).unwrap_or_default();
    for opt in ["rw", "nosuid", "nodev", "noatime"] {
        ensure!(
            flags.split(',').any(|x| x == opt),
            "/persist is not mounted {opt}: {mounts}"
        );
    }
    // /proc/mounts leaves out what the superblock already says; this lists all.
    let options = vm.run("cat /proc/fs/ext4/vda2/options", CMD)?;
    ensure!(
        options.lines().any(|l| l.trim() == "errors=remount-ro"),
        "/persist does not remount read-only on errors: {options}"
    );
    let out = vm.run("echo FSCK-$((40+2))", CMD)?;
    ensure!(out.trim() == "FSCK-42", "the shell printed {out:?}");
    Ok(())
}

/// Byte offset of partition 2 (the data partition) of `disk`.
fn persist_offset(disk: &Path) -> Result<u64> {
    let json = deps::output(deps::cmd("sfdisk").arg("--json").arg(disk))?;
    let table: serde_json::Value = serde_json::from_str(&json).context("parsing sfdisk --json")?;
    let start = table["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .context("no second partition in sfdisk --json")?;
    Ok(start * 512)
}

/// Mark a block of `rootfs.squashfs` free and the filesystem not clean.
fn damage_persist(disk: &Path) -> Result<()> {
    let fs = format!("{}?offset={}", disk.display(), persist_offset(disk)?);
    let bmap = deps::output(
        deps::cmd("debugfs")
            .args(["-R", "bmap /rootfs.squashfs 0"])
            .arg(&fs),
    )?;
    let block: u64 = bmap
        .trim()
        .parse()
        .with_context(|| format!("debugfs bmap printed {bmap:?}"))?;
    deps::run_with_input(
        deps::cmd("debugfs").args(["-w", "-f", "-"]).arg(&fs),
        &format!("freeb {block}\nssv state 0\n"),
    )?;
    // The damage is real: e2fsck -n (no changes) must see it.
    let check = deps::cmd("e2fsck").args(["-fn"]).arg(&fs).output()?;
    ensure!(
        !check.status.success(),
        "the damage did not take: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    Ok(())
}

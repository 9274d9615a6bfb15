//! e2e scenarios of the layered saved state: a stick of the legacy layout
//! converted by its first save, with the bytes written measured against
//! the new layer; a corrupt middle layer; a checkpoint, then a power cut;
//! a power cut in the middle of a compaction; the `ram` mode; and a saved
//! state bigger than the RAM of the machine it boots on.
//!
//! Saved states are built on the host by the host's own saver (`saver
//! add-layer`, see [`Ctx::layered`]); a power cut is QEMU killed.

use super::guest::{
    boot_disk_to_shell, boot_info, check, out, persist_written, poweroff_expecting, random_millis,
    wait_shell, GrubEntry, BOOT, CMD, SAVE, SAVED, SAVER,
};
use super::{Ctx, DiskSpec, Scenario};
use crate::deps;
use crate::qemu::Vm;
use anyhow::{ensure, Context, Result};
use ramstick_common::chain::FailureClass;
use ramstick_common::cmdline::LayersMode;
use ramstick_testkit::noise_seeded;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The layered-state scenarios, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "layers-migration",
        run: migration,
    },
    Scenario {
        name: "layers-corrupt-middle",
        run: corrupt_middle,
    },
    Scenario {
        name: "layers-checkpoint-kill",
        run: checkpoint_kill,
    },
    Scenario {
        name: "layers-compaction-kill",
        run: compaction_kill,
    },
    Scenario {
        name: "layers-ram-mode",
        run: ram_mode,
    },
    Scenario {
        name: "layers-small-ram",
        run: small_ram,
    },
];

/// What the saver says when the session is unchanged.
const UNCHANGED: &str = "nothing to save, nothing was written";
/// Reading a big file through the emulated machine.
const READ: Duration = Duration::from_secs(300);

/// A tree in the work directory holding `files` (path, bytes).
fn tree(ctx: &Ctx, name: &str, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    let dir = ctx.work.join(format!("tree-{name}"));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    for (path, bytes) in files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(dir)
}

/// Incompressible bytes.
fn noise(mib: usize, seed: u64) -> Vec<u8> {
    noise_seeded(mib << 20, false, seed)
}

/// The md5 of a host file, as busybox `md5sum` prints it.
fn md5(file: &Path) -> Result<String> {
    let line = deps::output(deps::cmd("md5sum").arg(file))?;
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The md5 of a guest file.
fn guest_md5(vm: &mut Vm, path: &str) -> Result<String> {
    let line = vm.run(&format!("md5sum {path}"), READ)?;
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The size of a guest file.
fn guest_size(vm: &mut Vm, path: &str) -> Result<u64> {
    out(vm, &format!("stat -c %s {path}"))?
        .parse()
        .with_context(|| format!("the size of {path}"))
}

/// A stick of the legacy layout with a 96 MiB state: its first save
/// converts it (a hard link, not a copy) and writes about the size of the
/// session's own layer; so does the next session's; backup = the state
/// before the last save.
fn migration(ctx: &mut Ctx) -> Result<()> {
    let big = tree(ctx, "legacy", &[("root/big.bin", noise(96, 1))])?;
    let image = ctx.work.join("legacy-upperfs.squashfs");
    deps::output(
        deps::cmd("mksquashfs")
            .arg(&big)
            .arg(&image)
            .args([
                "-noappend",
                "-all-root",
                "-mkfs-time",
                "0",
                "-all-time",
                "0",
            ])
            .args(["-quiet", "-no-progress"]),
    )?;
    let want = md5(&big.join("root/big.bin"))?;
    let spec = DiskSpec {
        persist_extra: vec![(image, "upperfs.squashfs".into())],
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("the legacy layout"),
        "saver status:\n{status}"
    );
    for (n, layer) in [(1, "layer-000002.squashfs"), (2, "layer-000003.squashfs")] {
        if n == 2 {
            poweroff_expecting(&mut vm, UNCHANGED)?;
            vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
            ensure!(
                guest_md5(&mut vm, "/root/big.bin")? == want,
                "the 96 MiB state changed"
            );
        }
        vm.run(&format!("head -c 1048576 /dev/urandom > /root/s{n}"), CMD)?;
        let before = persist_written(&mut vm)?;
        let said = vm.run(&format!("{SAVER} save 2>&1"), SAVE)?;
        ensure!(said.contains(SAVED), "session {n}: the saver says {said:?}");
        let written = persist_written(&mut vm)? - before;
        let size = guest_size(&mut vm, &format!("/persist/layers/{layer}"))?;
        println!("  session {n}: wrote {written} bytes for a layer of {size} bytes");
        ensure!(
            written <= size + (512 << 10) && written <= 3 << 19,
            "session {n}: a 1 MiB change wrote {written} bytes (its layer has {size})"
        );
    }
    check(
        &mut vm,
        "! -e /persist/upperfs.squashfs",
        "the legacy image is left",
    )?;
    check(
        &mut vm,
        "! -e /persist/upperfs-backup.squashfs",
        "the legacy backup is left",
    )?;
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Backup)?;
    check(
        &mut vm,
        "-e /root/s1 -a ! -e /root/s2",
        "backup is not the state before the last save",
    )?;
    ensure!(
        guest_md5(&mut vm, "/root/big.bin")? == want,
        "the backup lost the state"
    );
    poweroff_expecting(&mut vm, UNCHANGED)
}

/// A middle layer cut short: boot uses the layers below it, loudly; the
/// save sets it aside and keeps the layer above it; the next boot is whole.
fn corrupt_middle(ctx: &mut Ctx) -> Result<()> {
    let trees = [
        tree(ctx, "c1", &[("etc/l1", b"one\n".to_vec())])?,
        tree(ctx, "c2", &[("etc/l2", noise(1, 2))])?,
        tree(ctx, "c3", &[("etc/l3", b"three\n".to_vec())])?,
    ];
    let spec = DiskSpec {
        persist_extra: ctx.layered("corrupt", &trees)?,
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Clean)?;
    vm.run(
        "truncate -s 4096 /persist/layers/layer-000002.squashfs && sync",
        CMD,
    )?;
    poweroff_expecting(&mut vm, "clean boot")?;
    drop(vm);

    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    vm.expect("booting the first 1 of the 3 saved layers", BOOT)
        .context("init did not say that it boots a prefix of the chain")?;
    wait_shell(&mut vm)?;
    check(
        &mut vm,
        "-e /etc/l1 -a ! -e /etc/l2 -a ! -e /etc/l3",
        "not the prefix",
    )?;
    let info = boot_info(&mut vm)?;
    ensure!(
        info.failures.len() == 1
            && info.failures[0].layer == "layer-000002.squashfs"
            && info.failures[0].class == FailureClass::Corrupt,
        "boot.json: {:?}",
        info.failures
    );
    vm.run("echo after > /root/after", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        boot_info(&mut vm)?.failures.is_empty(),
        "still a failing layer"
    );
    check(
        &mut vm,
        "-e /etc/l1 -a -e /root/after",
        "the session on the prefix is lost",
    )?;
    let files = out(&mut vm, "ls /persist/layers")?;
    ensure!(
        files.contains("layer-000002-corrupt-") && files.contains("layer-000003.squashfs"),
        "the damaged layer is not set aside or the layer above it was dropped: {files}"
    );
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("kept aside:   layer-000003.squashfs"),
        "saver status:\n{status}"
    );
    poweroff_expecting(&mut vm, UNCHANGED)
}

/// `ramstick.checkpoint=1`: the daemon saves within a minute; QEMU killed
/// then (no shutdown save) boots with the checkpoint.
fn checkpoint_kill(ctx: &mut Ctx) -> Result<()> {
    let spec = DiskSpec {
        extra_cmdline: "ramstick.checkpoint=1".into(),
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    vm.run("echo checkpointed > /root/cp && sync", CMD)?;
    // The busybox rootfs's daemon logs to /run/ramstick/saver/daemon.log.
    let (rc, log) = vm.run_status(
        &format!(
            "for i in $(seq 180); do grep -q '{SAVED}' /run/ramstick/saver/daemon.log && break; \
             sleep 1; done; cat /run/ramstick/saver/daemon.log; grep -q '{SAVED}' \
             /run/ramstick/saver/daemon.log"
        ),
        Duration::from_secs(240),
    )?;
    ensure!(
        rc == 0,
        "no checkpoint within three minutes; the daemon's log:\n{log}"
    );
    vm.kill();
    drop(vm);
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/cp")? == "checkpointed",
        "the checkpoint was lost"
    );
    vm.kill();
    Ok(())
}

/// `saver compact` cut by a power cut at a random moment: the next boot
/// shows the same state; then a compaction to the end does too.
fn compaction_kill(ctx: &mut Ctx) -> Result<()> {
    let mut trees = Vec::new();
    let mut want = Vec::new();
    for n in 1..=5u64 {
        let t = tree(
            ctx,
            &format!("k{n}"),
            &[
                (&format!("etc/k{n}"), noise(3, 10 + n)),
                ("etc/last", format!("{n}\n").into_bytes()),
            ],
        )?;
        want.push(md5(&t.join(format!("etc/k{n}")))?);
        trees.push(t);
    }
    let spec = DiskSpec {
        persist_extra: ctx.layered("compaction", &trees)?,
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;
    let same = |vm: &mut Vm| -> Result<()> {
        for (i, sum) in want.iter().enumerate() {
            let path = format!("/etc/k{}", i + 1);
            ensure!(
                guest_md5(vm, &path)? == *sum,
                "{path} differs after the cut"
            );
        }
        ensure!(
            out(vm, "cat /etc/last")? == "5",
            "the top layer is not on top"
        );
        ensure!(boot_info(vm)?.failures.is_empty(), "a layer failed");
        Ok(())
    };
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    same(&mut vm)?;
    let delay = random_millis(8000);
    println!("  cutting the power {delay} ms into the compaction");
    vm.sendline(&format!("{SAVER} compact"))?;
    std::thread::sleep(Duration::from_millis(delay));
    vm.kill();
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    same(&mut vm)?;
    let said = vm.run(&format!("{SAVER} compact 2>&1"), SAVE)?;
    ensure!(
        said.contains("compaction done") || said.contains("nothing to merge"),
        "saver compact says {said:?}"
    );
    let (rc, checked) = vm.run_status(&format!("{SAVER} check"), READ)?;
    ensure!(rc == 0, "saver check:\n{checked}");
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("chain:        2 layers"),
        "saver status:\n{status}"
    );
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    same(&mut vm)?;
    vm.kill();
    Ok(())
}

/// `ramstick.layers=ram`: the layers are unpacked into the upper
/// filesystem; a session saves on top as usual.
fn ram_mode(ctx: &mut Ctx) -> Result<()> {
    let trees = [
        tree(ctx, "r1", &[("etc/r1", b"one\n".to_vec())])?,
        tree(ctx, "r2", &[("etc/r2", b"two\n".to_vec())])?,
    ];
    let spec = DiskSpec {
        extra_cmdline: "ramstick.layers=ram".into(),
        persist_extra: ctx.layered("ram", &trees)?,
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let info = boot_info(&mut vm)?;
    ensure!(
        info.layers.len() == 2 && info.layers.iter().all(|l| l.how == LayersMode::Ram),
        "boot.json: {:?}",
        info.layers
    );
    check(&mut vm, "-e /etc/r1 -a -e /etc/r2", "a layer is missing")?;
    check(
        &mut vm,
        "-e /run/ramstick/upper/layers/layer-000001/etc/r1",
        "the layer is not unpacked into the upper",
    )?;
    vm.run("echo ram > /root/ram", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    check(
        &mut vm,
        "-e /etc/r1 -a -e /etc/r2 -a -e /root/ram",
        "the session is lost",
    )?;
    ensure!(
        boot_info(&mut vm)?.layers.len() == 3,
        "the session's layer is not in the chain"
    );
    poweroff_expecting(&mut vm, UNCHANGED)
}

/// A 300 MiB state on a 512 MiB machine in `ram` mode: the layer does not
/// fit the RAM upper and is mounted from the stick instead; the state is
/// intact, a session saves on top, and the next boot has all of it.
fn small_ram(ctx: &mut Ctx) -> Result<()> {
    let big = tree(ctx, "huge", &[("root/huge.bin", noise(300, 3))])?;
    let want = md5(&big.join("root/huge.bin"))?;
    let spec = DiskSpec {
        extra_cmdline: "ramstick.layers=ram".into(),
        persist_extra: ctx.layered("huge", &[big])?,
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;
    for session in 1..=2 {
        let mut vm = ctx.boot_with(&disk, false, 512, &[])?;
        vm.select_entry(GrubEntry::Default)?;
        vm.expect("cannot be unpacked into the RAM upper", BOOT)
            .context("init did not say that the layer does not fit")?;
        wait_shell(&mut vm)?;
        let info = boot_info(&mut vm)?;
        ensure!(
            info.failures.is_empty() && info.layers[0].how == LayersMode::Mount,
            "boot.json: {info:?}"
        );
        ensure!(
            guest_md5(&mut vm, "/root/huge.bin")? == want,
            "the 300 MiB state changed"
        );
        if session == 1 {
            vm.run("echo small > /root/small", CMD)?;
            poweroff_expecting(&mut vm, SAVED)?;
        } else {
            ensure!(
                out(&mut vm, "cat /root/small")? == "small",
                "the session was lost"
            );
            poweroff_expecting(&mut vm, UNCHANGED)?;
        }
    }
    Ok(())
}

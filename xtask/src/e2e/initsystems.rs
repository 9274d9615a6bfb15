//! e2e scenarios of the saver hooks per init system: a session persists
//! across a poweroff on Debian with OpenRC (standing in for Alpine) and
//! with sysvinit, and on a tree made by plain `mmdebstrap` without any
//! ramstick file (`cargo xtask image` adds the hook); a stick built with
//! `--no-saver` says at every boot that its sessions are not saved.
//!
//! The Debian trees are the `--minimal` kinds (no kernel, no tools: the
//! stick boots xtask's Debian kernel), cached like every e2e disk.

use super::guest::{
    boot_debian, boot_info, check, out, poweroff_expecting, wait_shell, GrubEntry, BOOT, CMD, SAVE,
    SAVED, SAVER,
};
use super::{cache, Ctx, DiskSpec, Scenario};
use crate::hooks::Saver;
use crate::qemu::Vm;
use crate::rootfs::Kind;
use crate::{deps, target_dir, workspace_root};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "init-openrc",
        run: init_openrc,
    },
    Scenario {
        name: "init-sysvinit",
        run: init_sysvinit,
    },
    Scenario {
        name: "init-plain-mmdebstrap",
        run: init_plain_mmdebstrap,
    },
    Scenario {
        name: "init-no-saver",
        run: init_no_saver,
    },
];

/// What init says when nothing will save the session.
const NOT_SAVED: &str = "this session will not be saved";
/// The saver daemon's pid file and log on OpenRC, sysvinit and busybox.
const DAEMON_PID: &str = "/run/ramstick/saver/daemon.pid";
const DAEMON_LOG: &str = "/run/ramstick/saver/daemon.log";

/// Skips (true) when not root: mmdebstrap needs root.
fn skipped(name: &str) -> bool {
    if deps::is_root() {
        return false;
    }
    println!("  {name}: skipped: mmdebstrap needs root (run as root to include it)");
    true
}

fn init_openrc(ctx: &mut Ctx) -> Result<()> {
    if skipped("init-openrc") {
        return Ok(());
    }
    let disk = ctx.kind_disk(Kind::DebianOpenrc, true, &DiskSpec::default())?;
    persists(ctx, &disk, "OpenRC", &|vm| {
        let status = out(vm, "rc-service ramstick-saver status 2>&1 || true")?;
        ensure!(status.contains("started"), "rc-service says {status:?}");
        Ok(())
    })
}

fn init_sysvinit(ctx: &mut Ctx) -> Result<()> {
    if skipped("init-sysvinit") {
        return Ok(());
    }
    let disk = ctx.kind_disk(Kind::DebianSysvinit, true, &DiskSpec::default())?;
    persists(ctx, &disk, "sysvinit", &|vm| {
        let line = out(vm, "grep '^rsK:' /etc/inittab")?;
        ensure!(
            line == "rsK:06:wait:/etc/init.d/ramstick-saver stop",
            "inittab: {line:?}"
        );
        Ok(())
    })
}

/// The session of a Debian tree with `init`: the daemon runs and saves on
/// SIGUSR1 (into its log), `extra` checks the hook, the poweroff saves (its
/// messages on the console) and the next boot shows every change.
fn persists(
    ctx: &mut Ctx,
    disk: &Path,
    init: &str,
    extra: &dyn Fn(&mut Vm) -> Result<()>,
) -> Result<()> {
    let mut vm = boot_debian(ctx, disk, GrubEntry::Default)?;
    hook_in_boot_json(&mut vm, init)?;
    extra(&mut vm)?;
    vm.run(
        "echo first > /root/session && rm /etc/issue.net && mkdir -p /opt/new",
        CMD,
    )?;
    vm.run(&format!("kill -USR1 $(cat {DAEMON_PID})"), CMD)?;
    wait_for_log(&mut vm, SAVED).context("no save after SIGUSR1 to the daemon")?;
    vm.run("echo later > /root/later", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mut vm = boot_debian(ctx, disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/session /root/later")? == "first\nlater",
        "the session was not restored"
    );
    check(&mut vm, "! -e /etc/issue.net", "the deleted file is back")?;
    check(&mut vm, "-d /opt/new", "the new directory is missing")?;
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("chain:        1 layers") && !status.contains("MISSING"),
        "one layer expected, and the hook; saver status:\n{status}"
    );
    vm.poweroff(SAVE)?;
    Ok(())
}

/// boot.json names the init system and has no warning.
fn hook_in_boot_json(vm: &mut Vm, init: &str) -> Result<()> {
    let info = boot_info(vm)?;
    ensure!(
        info.saver_hook.init.as_deref() == Some(init) && info.saver_hook.warning.is_none(),
        "boot.json's saver hook: {:?}",
        info.saver_hook
    );
    Ok(())
}

/// Waits until the daemon's log shows `text`.
fn wait_for_log(vm: &mut Vm, text: &str) -> Result<()> {
    let cmd = format!(
        "for i in $(seq 120); do grep -q '{text}' {DAEMON_LOG} && break; sleep 1; done; \
         grep -q '{text}' {DAEMON_LOG}"
    );
    let (rc, _) = vm.run_status(&cmd, SAVE)?;
    ensure!(rc == 0, "{DAEMON_LOG} has no {text:?}");
    Ok(())
}

/// What plain `mmdebstrap` makes: no ramstick file; only what a user who
/// wants a console login sets (an init, udev, an empty root password).
const PLAIN_MMDEBSTRAP: &[&str] = &[
    "--variant=minbase",
    "--include=systemd-sysv,udev",
    "--customize-hook=chroot \"$1\" passwd --delete root",
    "bookworm",
];

/// target/rootfs-plain, built once; its stamp.
fn plain_tree() -> Result<(PathBuf, String)> {
    let dir = target_dir().join("rootfs-plain");
    let stamp_file = target_dir().join("rootfs-plain.stamp");
    let mut h = cache::Hasher::default();
    for arg in PLAIN_MMDEBSTRAP {
        h.str(arg);
    }
    let stamp = format!("{:016x}", h.finish());
    let _building = Ctx::building();
    if fs::read_to_string(&stamp_file).unwrap_or_default().trim() != stamp {
        println!("e2e: building target/rootfs-plain (plain mmdebstrap)");
        deps::ensure(&[("mmdebstrap", "mmdebstrap")])?;
        deps::remove_if_exists(&dir)?;
        deps::run(deps::cmd("mmdebstrap").args(PLAIN_MMDEBSTRAP).arg(&dir))?;
        fs::write(&stamp_file, &stamp)
            .with_context(|| format!("writing {}", stamp_file.display()))?;
    }
    Ok((dir, stamp))
}

fn init_plain_mmdebstrap(ctx: &mut Ctx) -> Result<()> {
    if skipped("init-plain-mmdebstrap") {
        return Ok(());
    }
    let (tree, stamp) = plain_tree()?;
    for ours in ["etc/ramstick", "etc/systemd/system/ramstick-saver.service"] {
        ensure!(
            tree.join(ours).symlink_metadata().is_err(),
            "the plain tree has /{ours}"
        );
    }
    let disk = ctx.tree_disk(&tree, &stamp, &DiskSpec::default(), Saver::Required)?;
    let login = |ctx: &mut Ctx| -> Result<Vm> {
        let mut vm = ctx.boot(&disk, false)?;
        vm.select_entry(GrubEntry::Default)?;
        vm.expect("login: ", BOOT)
            .context("no login prompt on ttyS0")?;
        vm.sendline("root")?;
        vm.expect(":~# ", CMD)
            .context("no root shell after login")?;
        Ok(vm)
    };
    let mut vm = login(ctx)?;
    hook_in_boot_json(&mut vm, "systemd")?;
    vm.run("echo plain > /root/session", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);
    let mut vm = login(ctx)?;
    ensure!(
        out(&mut vm, "cat /root/session")? == "plain",
        "the session was not restored"
    );
    ensure!(
        tree.join("etc/ramstick").symlink_metadata().is_err(),
        "the image build wrote into the tree"
    );
    vm.poweroff(SAVE)?;
    Ok(())
}

/// A copy of the busybox tree without its saver hook, built with
/// `--no-saver`: every boot says the session will not be saved (console,
/// boot.json, `saver status`), and a poweroff saves nothing.
fn init_no_saver(ctx: &mut Ctx) -> Result<()> {
    let tree = ctx.work.join("rootfs-no-saver");
    deps::remove_if_exists(&tree)?;
    deps::run(deps::cmd("cp").arg("-a").arg(&ctx.rootfs).arg(&tree))?;
    deps::remove_if_exists(&tree.join("etc/init.d/ramstick-saver"))?;
    let skel = workspace_root().join("rootfs-skel/busybox/etc/inittab");
    fs::copy(&skel, tree.join("etc/inittab"))
        .with_context(|| format!("copying {}", skel.display()))?;
    let mut h = cache::Hasher::default();
    h.tree(&tree)?;
    let stamp = format!("{:016x}", h.finish());
    let disk = ctx.tree_disk(&tree, &stamp, &DiskSpec::default(), Saver::None)?;
    for boot in 0..2 {
        let mut vm = ctx.boot(&disk, false)?;
        vm.select_entry(GrubEntry::Default)?;
        let line = vm
            .expect_line(NOT_SAVED, BOOT)
            .context("init did not say the session will not be saved")?;
        ensure!(
            line.contains("busybox init") && line.contains("fix:"),
            "the warning: {line:?}"
        );
        wait_shell(&mut vm)?;
        let info = boot_info(&mut vm)?;
        ensure!(
            info.saver_hook
                .warning
                .as_deref()
                .is_some_and(|w| w.starts_with(NOT_SAVED)),
            "boot.json: {:?}",
            info.saver_hook
        );
        let status = out(&mut vm, &format!("{SAVER} status"))?;
        ensure!(
            status.contains("saver hook:   MISSING: this session will not be saved"),
            "saver status:\n{status}"
        );
        if boot == 1 {
            check(&mut vm, "! -e /root/unsaved", "the session was saved")?;
        }
        vm.run("echo x > /root/unsaved", CMD)?;
        let status = vm.poweroff(SAVE)?;
        if !status.success() {
            bail!("QEMU exited with {status}");
        }
    }
    Ok(())
}

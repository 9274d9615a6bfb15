//! e2e scenarios of the saver: sessions persist across poweroffs.
//!
//! Each scenario boots one disk several times: changes are made over the
//! serial console, `poweroff` runs the saver (busybox inittab, or the
//! systemd unit on Debian), and the next boot must show exactly them. Every
//! session's save appends one layer to the chain in /persist/layers.

use super::guest::{
    boot_debian, boot_disk_to_shell, check, check_read_ahead, out, persist_written,
    poweroff_expecting, GrubEntry, CMD, SAVE, SAVED, SAVER,
};
use super::{Ctx, DiskSpec, Scenario};
use crate::deps;
use crate::qemu::Vm;
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::PathBuf;

/// The persistence scenarios, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "persist-session",
        run: persist_session,
    },
    Scenario {
        name: "persist-rotation",
        run: persist_rotation,
    },
    Scenario {
        name: "persist-unchanged",
        run: persist_unchanged,
    },
    Scenario {
        name: "persist-no-space",
        run: persist_no_space,
    },
    Scenario {
        name: "persist-debian",
        run: persist_debian,
    },
];

/// What the saver says when the session is unchanged.
const UNCHANGED: &str = "nothing to save, nothing was written";
/// The saved state's commit point.
const MANIFEST: &str = "/persist/layers/manifest.json";
/// The file of the capability test image, and its `security.capability`
/// (VFS_CAP_REVISION_2, effective, CAP_NET_RAW permitted), as `setcap cap_net_raw+ep` writes.
const CAP_FILE: &str = "pinger";
const CAP_VALUE: &str = "0x0100000200200000000000000000000000000000";

/// Size, inode and mtime of a file of the guest (unchanged = same triple).
fn identity(vm: &mut Vm, path: &str) -> Result<String> {
    out(vm, &format!("stat -c '%s %i %Y' {path}"))
}

/// A squashfs image holding `pinger` with a `security.capability` xattr,
/// for the guest to unpack with `saver unpack` (busybox has no setfattr).
/// `None` when not root (only root may set security.* xattrs).
fn capability_image(ctx: &Ctx) -> Result<Option<PathBuf>> {
    if !deps::is_root() {
        println!("  the security.capability check is skipped: setting it needs root");
        return Ok(None);
    }
    deps::ensure(&[("setfattr", "attr"), ("mksquashfs", "squashfs-tools")])?;
    let dir = ctx.work.join("caps");
    let out = ctx.work.join("caps.squashfs");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(CAP_FILE);
    fs::write(&file, "#!/bin/sh\necho ping\n")
        .with_context(|| format!("writing {}", file.display()))?;
    deps::run(
        deps::cmd("setfattr")
            .args(["-n", "security.capability", "-v", CAP_VALUE])
            .arg(&file),
    )?;
    deps::output(
        deps::cmd("mksquashfs")
            .arg(&dir)
            .arg(&out)
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
    Ok(Some(out))
}

/// Every kind of overlay change, saved and restored exactly; backup shows
/// the session before; clean shows the pristine rootfs and writes nothing.
fn persist_session(ctx: &mut Ctx) -> Result<()> {
    let caps = capability_image(ctx)?;
    let spec = DiskSpec {
        persist_extra: caps
            .iter()
            .map(|c| (c.clone(), "caps.squashfs".to_string()))
            .collect(),
        ..DiskSpec::default()
    };
    let disk = ctx.disk(&spec)?;

    // Session 1: one file.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    vm.run("echo one > /root/session", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    // Session 2: every kind of change.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/session")? == "one",
        "session 1 was not restored"
    );
    let original_hostname = out(&mut vm, "cat /etc/hostname")?;
    vm.run(
        "echo two > /root/session && echo created > /root/new-file \
         && echo changed-host > /etc/hostname && rm /bin/rev \
         && rm -rf /usr/sbin && mkdir /usr/sbin && echo fresh > /usr/sbin/fresh \
         && echo linked > /root/link-a && ln /root/link-a /root/link-b",
        CMD,
    )?;
    if caps.is_some() {
        vm.run(
            &format!("{SAVER} unpack --quiet /persist/caps.squashfs /root/caps"),
            CMD,
        )?;
        vm.run(
            &format!("{SAVER} verify /persist/caps.squashfs /root/caps"),
            CMD,
        )
        .context("the capability file was not unpacked with its xattr")?;
    }
    // A save in the middle of the session, then more changes: the session's
    // layer is replaced, and the backup stays the state before the session.
    let said = vm.run(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(
        said.contains(SAVED),
        "the save in the session says {said:?}"
    );
    vm.run("echo more > /root/after-save", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    // Boot default: exactly session 2.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/session")? == "two",
        "session 2 was not restored"
    );
    ensure!(
        out(&mut vm, "cat /root/new-file")? == "created",
        "new file lost"
    );
    ensure!(
        out(&mut vm, "cat /root/after-save")? == "more",
        "the change after the session's first save was lost"
    );
    let layers = out(&mut vm, "ls /persist/layers")?;
    ensure!(
        layers.split_whitespace().collect::<Vec<_>>()
            == [
                "layer-000001.squashfs",
                "layer-000003.squashfs",
                "manifest.json"
            ],
        "one layer per session expected (the second save replaced the first): {layers}"
    );
    ensure!(
        out(&mut vm, "cat /etc/hostname")? == "changed-host",
        "the modified rootfs file was not restored"
    );
    check(&mut vm, "! -e /bin/rev", "the deleted rootfs file is back")?;
    check(
        &mut vm,
        "! -e /usr/sbin/chroot",
        "the replaced directory shows the rootfs's old contents (not opaque)",
    )?;
    ensure!(
        out(&mut vm, "cat /usr/sbin/fresh")? == "fresh",
        "the new directory's file is lost"
    );
    let inodes = out(&mut vm, "stat -c %i /root/link-a /root/link-b")?;
    let inodes: Vec<&str> = inodes.lines().collect();
    ensure!(
        inodes.len() == 2 && inodes[0] == inodes[1],
        "the hardlink pair is not one inode: {inodes:?}"
    );
    if caps.is_some() {
        vm.run(
            &format!("{SAVER} verify /persist/caps.squashfs /root/caps"),
            CMD,
        )
        .context("the security.capability xattr did not survive the save")?;
    }
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);

    // Boot backup: session 1.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Backup)?;
    ensure!(
        out(&mut vm, "cat /root/session")? == "one",
        "backup is not session 1"
    );
    check(
        &mut vm,
        "! -e /root/new-file -a ! -e /root/after-save",
        "backup shows session 2's files",
    )?;
    check(
        &mut vm,
        "-e /bin/rev",
        "backup lacks a rootfs file session 2 deleted",
    )?;
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);

    // Boot clean: the pristine rootfs, and saving writes nothing.
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Clean)?;
    check(
        &mut vm,
        "! -e /root/session",
        "a clean boot shows the saved session",
    )?;
    ensure!(
        out(&mut vm, "cat /etc/hostname")? == original_hostname,
        "a clean boot shows the modified hostname"
    );
    check(
        &mut vm,
        "-e /usr/sbin/chroot",
        "a clean boot lacks a rootfs directory's file",
    )?;
    let image = identity(&mut vm, MANIFEST)?;
    let before = persist_written(&mut vm)?;
    let said = vm.run(&format!("{SAVER} save 2>&1"), CMD)?;
    ensure!(
        said.contains("clean boot"),
        "the saver says {said:?} on a clean boot"
    );
    let after = persist_written(&mut vm)?;
    ensure!(
        after == before,
        "a clean boot's save wrote {} bytes",
        after - before
    );
    ensure!(
        identity(&mut vm, MANIFEST)? == image,
        "the manifest changed"
    );
    poweroff_expecting(&mut vm, "clean boot")?;
    Ok(())
}

/// Three boot/poweroff cycles: the chain grows by one layer a session;
/// default shows the last, backup the one before.
fn persist_rotation(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    for n in 1..=3 {
        let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
        if n > 1 {
            let seen = out(&mut vm, "cat /root/cycle")?;
            ensure!(
                seen == (n - 1).to_string(),
                "cycle {n} starts from {seen:?}"
            );
        }
        vm.run(&format!("echo {n} > /root/cycle"), CMD)?;
        poweroff_expecting(&mut vm, SAVED)?;
    }
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/cycle")? == "3",
        "the default chain is not the last session"
    );
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("chain:        3 layers")
            && status.contains("backup:       the first 2 layers of the chain")
            && status.contains("changes:      0 added (0 B), 0 modified (0 B; 0 metadata only), 0 deleted since boot"),
        "saver status:\n{status}"
    );
    poweroff_expecting(&mut vm, UNCHANGED)?;
    drop(vm);
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Backup)?;
    ensure!(
        out(&mut vm, "cat /root/cycle")? == "2",
        "the backup chain is not the session before"
    );
    poweroff_expecting(&mut vm, UNCHANGED)
}

/// An unchanged session writes far less than an image to the stick.
fn persist_unchanged(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    // 2 MiB of random data: an image far larger than any metadata update.
    vm.run("head -c 2097152 /dev/urandom > /root/blob", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let image = identity(&mut vm, MANIFEST)?;
    let layer = identity(&mut vm, "/persist/layers/layer-000001.squashfs")?;
    let size: u64 = layer
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("no layer size")?;
    ensure!(size > 2 << 20, "the layer is only {size} bytes");
    let before = persist_written(&mut vm)?;
    let said = vm.run(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(said.contains(UNCHANGED), "the saver says {said:?}");
    let after = persist_written(&mut vm)?;
    ensure!(
        after - before < size / 2,
        "an unchanged save wrote {} bytes (the layer has {size})",
        after - before
    );
    ensure!(
        identity(&mut vm, MANIFEST)? == image,
        "the manifest changed"
    );
    poweroff_expecting(&mut vm, UNCHANGED)
}

/// A stick without room for the new layer: the save fails with the
/// numbers on the console, and the saved state stays as it was.
fn persist_no_space(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec::default())?;
    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    vm.run("echo kept > /root/kept", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    let sum = out(
        &mut vm,
        "md5sum /persist/layers/manifest.json /persist/layers/layer-000001.squashfs",
    )?;
    vm.run("head -c 16777216 /dev/urandom > /root/big", CMD)?;
    // Leave 4 MiB available (as df shows it; root may use ext4's reserved
    // blocks too, a few MiB more): the save is tried and the stick fills up.
    let fill = "sync; set -- $(stat -f -c '%a %S' /persist); \
                fallocate -l $(( $1 * $2 / 1024 - FREE ))K /persist/NAME && sync";
    vm.run(&fill.replace("FREE", "4096").replace("NAME", "filler"), CMD)?;
    let (rc, said) = vm.run_status(&format!("{SAVER} save 2>&1"), SAVE)?;
    ensure!(rc != 0, "the save succeeded on a full stick: {said}");
    ensure!(said.contains("the stick is full"), "unclear error: {said}");
    ensure!(
        out(
            &mut vm,
            "md5sum /persist/layers/manifest.json /persist/layers/layer-000001.squashfs"
        )? == sum,
        "the saved state changed"
    );
    // Leave 1 MiB, below a tenth of the 16 MiB: refused before writing anything.
    vm.run(
        &fill.replace("FREE", "1024").replace("NAME", "filler2"),
        CMD,
    )?;
    poweroff_expecting(&mut vm, "not enough space on the stick")?;
    drop(vm);

    let mut vm = boot_disk_to_shell(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/kept")? == "kept",
        "the saved session is lost"
    );
    check(
        &mut vm,
        "! -e /root/big",
        "the unsaved session was restored",
    )?;
    ensure!(
        out(
            &mut vm,
            "md5sum /persist/layers/manifest.json /persist/layers/layer-000001.squashfs"
        )? == sum,
        "the saved state changed"
    );
    vm.run("rm /persist/filler /persist/filler2", CMD)?;
    poweroff_expecting(&mut vm, UNCHANGED)
}

/// The Debian/systemd rootfs: the saver unit saves at poweroff.
fn persist_debian(ctx: &mut Ctx) -> Result<()> {
    if !deps::is_root() {
        println!("  persist-debian: skipped: mmdebstrap needs root (run as root to include it)");
        return Ok(());
    }
    let disk = ctx.debian_disk()?;
    let mut vm = boot_debian(ctx, &disk, GrubEntry::Default)?;
    // systemd 252 reads 27: the program, its loader and their libraries.
    check_read_ahead(&mut vm, 20)?;
    vm.run(
        "echo debian > /root/session && rm /etc/issue.net && mkdir -p /opt/new \
         && ln -s /root/session /opt/new/link",
        CMD,
    )?;
    // SIGUSR1: the daemon saves now and keeps running.
    vm.run("systemctl kill -s USR1 ramstick-saver.service", CMD)?;
    vm.expect(SAVED, SAVE)
        .context("no save after SIGUSR1 to the daemon")?;
    let active = vm.run_status("systemctl is-active ramstick-saver.service", CMD)?;
    ensure!(
        active.1.trim() == "active",
        "the daemon stopped after SIGUSR1"
    );
    vm.run("echo later > /root/later", CMD)?;
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mut vm = boot_debian(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "cat /root/session")? == "debian",
        "the session was not restored"
    );
    check(&mut vm, "! -e /etc/issue.net", "the deleted file is back")?;
    ensure!(
        out(&mut vm, "cat /root/later")? == "later",
        "the change after the SIGUSR1 save was not saved at poweroff"
    );
    ensure!(
        out(&mut vm, "readlink /opt/new/link")? == "/root/session",
        "the symlink was not restored"
    );
    let status = out(&mut vm, "/run/ramstick/bin/saver status")?;
    ensure!(
        status.contains("chain:        1 layers")
            && status.contains("layer-000002.squashfs")
            && !status.contains("layer-000001.squashfs"),
        "one layer expected: the poweroff save's layer-000002 replacing the SIGUSR1 save's \
         layer-000001; saver status:\n{status}"
    );
    let status = vm.run_status("systemctl is-active ramstick-saver.service", CMD)?;
    ensure!(
        status.1.trim() == "active",
        "ramstick-saver.service is {:?}",
        status.1.trim()
    );
    vm.sendline("poweroff")?;
    let status = vm.wait_exit(SAVE)?;
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

//! What every e2e scenario shares about the guest: timeouts, prompts, GRUB
//! entries, and the checks of a boot (shell reached, boot record, emergency
//! shell, a poweroff that saves).

use super::Ctx;
use crate::qemu::Vm;
use anyhow::{bail, ensure, Context, Result};
use ramstick_common::bootinfo::BootInfo;
pub use ramstick_common::bootmenu::GrubEntry;
use std::path::Path;
use std::time::{Duration, Instant};

/// From the GRUB menu to a shell prompt under TCG (GRUB ~5 s, kernel + init 15-40 s).
pub const BOOT: Duration = Duration::from_secs(180);
/// One shell command.
pub const CMD: Duration = Duration::from_secs(60);
/// The busybox rootfs's root shell prompt on ttyS0 (PS1 'ramstick:\w# ' in /).
pub const PROMPT: &str = "ramstick:/# ";
/// The prompt of init's emergency shell.
pub const EMERGENCY_PROMPT: &str = "(initramfs) # ";
/// A save of a small session under TCG, then the machine's power-off.
pub const SAVE: Duration = Duration::from_secs(300);
/// Where init puts the saver in the running system.
pub const SAVER: &str = "/run/ramstick/bin/saver";
/// What the saver prints after committing the session's layer.
pub const SAVED: &str = "saver: saved the session";

/// The Debian kinds' root prompt on ttyS0 (autologin, hostname ramstick).
pub const DEBIAN_PROMPT: &str = "root@ramstick:~# ";

/// Boot a disk of a Debian kind with GRUB entry `entry` and wait for its
/// root shell.
pub fn boot_debian(ctx: &mut Ctx, disk: &Path, entry: GrubEntry) -> Result<Vm> {
    let mut vm = ctx.boot(disk, false)?;
    vm.select_entry(entry)?;
    vm.expect(DEBIAN_PROMPT, BOOT)
        .context("no root shell on ttyS0 (autologin)")?;
    Ok(vm)
}

/// Boot `disk` with GRUB entry `entry` and wait for the rootfs shell.
pub fn boot_disk_to_shell(ctx: &mut Ctx, disk: &Path, entry: GrubEntry) -> Result<Vm> {
    let mut vm = ctx.boot(disk, false)?;
    vm.select_entry(entry)?;
    wait_shell(&mut vm)?;
    Ok(vm)
}

/// `poweroff`, expecting `message` from the saver on the console on the way down.
pub fn poweroff_expecting(vm: &mut Vm, message: &str) -> Result<()> {
    vm.sendline("poweroff")?;
    vm.expect(message, SAVE)
        .with_context(|| format!("the saver did not print {message:?} at poweroff"))?;
    let status = vm.wait_exit(SAVE)?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

/// Wait for the rootfs shell prompt; fail early on a failed boot.
pub fn wait_shell(vm: &mut Vm) -> Result<()> {
    let seen = vm.expect_any(
        &[PROMPT, "BOOT FAILED", "Kernel panic", "rebooting in"],
        BOOT,
    )?;
    if seen == 0 {
        return check_boot_record(vm);
    }
    let rest = vm.expect("\n", CMD).unwrap_or_default();
    let what = ["", "BOOT FAILED", "Kernel panic", "rebooting in"][seen];
    bail!(
        "boot did not reach the shell: {what}{} (console log {})",
        rest.trim_end(),
        vm.log_path().display()
    );
}

/// Every boot leaves boot.json with the phase timings, and the timings in kmsg.
pub fn check_boot_record(vm: &mut Vm) -> Result<()> {
    let info = boot_info(vm)?;
    for phase in ["modules", "device_wait", "layers", "mounts", "total"] {
        ensure!(
            info.timings_ms.contains_key(phase),
            "boot.json has no {phase} timing: {info:?}"
        );
    }
    let log = vm.run_kernel_log("dmesg | grep 'ramstick: '", CMD)?;
    ensure!(
        log.lines()
            .any(|l| l.contains("timings:") && mentions_millis(l)),
        "no phase timings among init's kernel log lines:\n{log}"
    );
    check_read_ahead(vm, 1)
}

/// init's read-ahead of the real init (`init/src/warm.rs`) ran in the new
/// root and read at least `min_files` files (the program, its loader, its
/// libraries). It ends on its own after the switch: waited for a while.
pub fn check_read_ahead(vm: &mut Vm, min_files: usize) -> Result<()> {
    let started = Instant::now();
    loop {
        let log = vm.run_kernel_log("dmesg | grep 'ramstick: read-ahead' || true", CMD)?;
        let files = log.lines().find_map(|l| {
            let (_, rest) = l.split_once(": read-ahead of ")?;
            let (_, count) = rest.split_once(": ")?;
            count.split_whitespace().next()?.parse::<usize>().ok()
        });
        match files {
            Some(n) if n >= min_files => return Ok(()),
            Some(n) => bail!("the read-ahead read {n} files, expected {min_files} or more:\n{log}"),
            None if started.elapsed() < Duration::from_secs(30) && !log.contains("cannot") => {
                std::thread::sleep(Duration::from_secs(1));
            }
            None => bail!("no read-ahead line from init in the kernel log:\n{log}"),
        }
    }
}

/// Expect init to fail with a line containing `mention`, then use its
/// emergency shell. Returns the failure line.
pub fn expect_emergency_shell(vm: &mut Vm, mention: &str) -> Result<String> {
    let line = vm.expect_line("BOOT FAILED", BOOT)?;
    ensure!(
        line.contains(mention),
        "the failure line does not mention {mention:?}: {line:?}"
    );
    let next = vm.expect_any(&["starting emergency shell", "rebooting in"], CMD)?;
    ensure!(
        next == 0,
        "init reboots instead of starting the emergency shell"
    );
    vm.expect(EMERGENCY_PROMPT, CMD)?;
    let out = vm.run("echo EMERG-$((2+3))", CMD)?;
    ensure!(out.trim() == "EMERG-5", "emergency shell printed {out:?}");
    Ok(line)
}

/// Output of a command that must succeed, trimmed.
pub fn out(vm: &mut Vm, cmd: &str) -> Result<String> {
    Ok(vm.run(cmd, CMD)?.trim().to_string())
}

/// `test <expr>` must hold in the guest.
pub fn check(vm: &mut Vm, expr: &str, what: &str) -> Result<()> {
    let (rc, _) = vm.run_status(&format!("test {expr}"), CMD)?;
    ensure!(rc == 0, "{what} (test {expr} failed)");
    Ok(())
}

/// Bytes written to the persist partition so far (after a sync).
pub fn persist_written(vm: &mut Vm) -> Result<u64> {
    let line = out(
        vm,
        "sync; d=$(awk '$2==\"/persist\"{print $1}' /proc/mounts); \
         cat /sys/class/block/${d##*/}/stat",
    )?;
    let sectors: u64 = line
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("unexpected block stat line {line:?}"))?;
    Ok(sectors * 512)
}

pub fn boot_info(vm: &mut Vm) -> Result<BootInfo> {
    let json = vm.run("cat /run/ramstick/boot.json", CMD)?;
    BootInfo::from_json(&json).with_context(|| format!("parsing boot.json: {json}"))
}

/// True when `line` has a number followed by "ms" (like "modules: 120 ms" or "120ms").
fn mentions_millis(line: &str) -> bool {
    let b = line.as_bytes();
    (0..b.len()).any(|i| {
        b[i..].starts_with(b"ms")
            && b[..i]
                .trim_ascii_end()
                .last()
                .is_some_and(u8::is_ascii_digit)
    })
}

/// Milliseconds in 0..max, from the clock (a different moment every run).
pub fn random_millis(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) % max
}

/// Boots the default entry, which GRUB turns into the trial of slot b.
pub fn boot_trial(ctx: &mut Ctx, disk: &Path) -> Result<Vm> {
    let mut vm = ctx.boot(disk, false)?;
    vm.expect("ramstick: trial boot of slot b", BOOT)
        .context("GRUB did not announce the trial of slot b")?;
    vm.select_entry(GrubEntry::Default)?;
    wait_shell(&mut vm)?;
    let cmdline = out(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        cmdline.contains("ramstick.slot=b") && cmdline.contains("ramstick.trial=on"),
        "the trial boot's command line: {cmdline}"
    );
    Ok(vm)
}

/// Waits for the daemon's line containing one of `lines` on the console
/// (the log file: the line may come before or after the shell's prompt);
/// returns the index of the one seen.
pub fn wait_console(vm: &Vm, lines: &[&str], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let bytes = std::fs::read(vm.log_path())
            .with_context(|| format!("reading {}", vm.log_path().display()))?;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(i) = lines.iter().position(|l| text.contains(l)) {
            return Ok(i);
        }
        if Instant::now() >= deadline {
            bail!(
                "none of {lines:?} on the console within {timeout:.0?} (console log {})",
                vm.log_path().display()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_millisecond_timings() {
        assert!(mentions_millis("[ 3.1] ramstick: modules loaded in 120 ms"));
        assert!(mentions_millis("ramstick: timings: total=830ms"));
        assert!(!mentions_millis("ramstick: mounting /persist (ms-dos?)"));
        assert!(!mentions_millis("ramstick: starting"));
    }
}

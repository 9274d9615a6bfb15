//! e2e scenarios of the encrypted stick (issue 6): the persist partition is
//! a LUKS2 container (`cargo xtask image --luks-passphrase-file`), found by
//! its label without extra parameters and opened by the initramfs's
//! `ramstick-unlock`.
//!
//! Three boots: passphrase (a wrong one first, then the right one; a marker
//! written to /persist must not be found in the raw disk image after
//! power-off; neither the console log nor kmsg may hold the passphrase),
//! key file (no typing), three wrong passphrases (init's failure path), and
//! a session saved by the saver at power-off through the opened container
//! and restored at the next boot.

use super::guest::{wait_shell, GrubEntry, BOOT, CMD, EMERGENCY_PROMPT, SAVE, SAVED};
use super::{cache, Ctx, DiskSpec, Scenario};
use crate::qemu::Vm;
use crate::{build, image};
use anyhow::{ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The LUKS scenarios, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "luks-passphrase",
        run: luks_passphrase,
    },
    Scenario {
        name: "luks-keyfile",
        run: luks_keyfile,
    },
    Scenario {
        name: "luks-wrong-thrice",
        run: luks_wrong_thrice,
    },
    Scenario {
        name: "luks-persist-session",
        run: luks_persist_session,
    },
];

/// The test passphrase. Commands typed into the guest never hold it whole
/// (they build it from two halves), so finding it in a log is a leak.
pub(super) const PASSPHRASE: &str = "correct-horse-ramstick";
const PASSPHRASE_HALVES: (&str, &str) = ("correct-hor", "se-ramstick");
/// The wrong passphrases typed (with the attempt number).
const GUESS: &str = "bad-guess-";
/// Written to /persist in the guest; must not be in the raw disk image.
const MARKER: &str = "ramstick-luks-plaintext-marker";
/// The prompt `ramstick-unlock` shows for the virtio disk's partition 2.
pub(super) const PROMPT_PASSPHRASE: &str = "Passphrase for /dev/vda2: ";
const WRONG: &str = "wrong passphrase for /dev/vda2";

/// A fresh copy of the LUKS disk image (built into the e2e cache first):
/// passphrase [`PASSPHRASE`], plus a key file in the initramfs with `keyfile`.
pub(super) fn luks_disk(ctx: &mut Ctx, keyfile: bool) -> Result<PathBuf> {
    let unlock = build::unlock_binary()?;
    let mut h = cache::Hasher::default();
    h.str("luks");
    h.str(PASSPHRASE);
    h.field(&[u8::from(keyfile)]);
    h.str(&format!(
        "{} {}",
        image::LUKS_TEST_MEMORY_KIB,
        image::LUKS_TEST_ITERATIONS
    ));
    h.file(&unlock)?;
    ctx.cached_disk(&format!("luks-{:016x}", h.finish()), |ctx, out| {
        let passphrase = ctx.work.join("luks-passphrase");
        fs::write(&passphrase, format!("{PASSPHRASE}\n"))
            .with_context(|| format!("writing {}", passphrase.display()))?;
        let key = ctx.work.join("luks-keyfile");
        fs::write(&key, b"ramstick e2e key file\x00\x01\x02")
            .with_context(|| format!("writing {}", key.display()))?;
        let luks = image::LuksSpec {
            passphrase_file: passphrase,
            keyfile_in_initramfs: keyfile.then_some(key),
            pbkdf_memory_kib: image::LUKS_TEST_MEMORY_KIB,
            iter_time_ms: None,
            iterations: image::LUKS_TEST_ITERATIONS,
            unlock,
        };
        image::build_encrypted(&ctx.image_spec(&DiskSpec::default(), out), Some(&luks))
    })
}

/// Boot the first GRUB entry of `disk` and wait for the passphrase prompt.
fn boot_to_prompt(ctx: &mut Ctx, disk: &Path) -> Result<Vm> {
    let mut vm = ctx.boot(disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    vm.expect(PROMPT_PASSPHRASE, BOOT)
        .context("waiting for the passphrase prompt naming /dev/vda2")?;
    Ok(vm)
}

/// /persist is the opened mapping (ext4 inside the container).
fn check_persist_is_mapping(vm: &mut Vm) -> Result<()> {
    let mounts = vm.run("cat /proc/mounts", CMD)?;
    ensure!(
        mounts
            .lines()
            .any(|l| l.starts_with("/dev/mapper/ramstick /persist ext4 ")),
        "/persist is not /dev/mapper/ramstick:\n{mounts}"
    );
    Ok(())
}

/// Count the lines of the guest's kernel log holding `a` + `b`, without
/// typing the text whole (the console log must not get it from us).
fn kmsg_count(vm: &mut Vm, (a, b): (&str, &str)) -> Result<usize> {
    let out = vm.run(
        &format!(
            "P='{a}'; P=\"${{P}}{b}\"; dmesg > /tmp/kmsg; grep -c -F -e \"$P\" /tmp/kmsg || true"
        ),
        CMD,
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("grep -c printed {out:?}"))
}

/// The number of times `needle` occurs in the file at `path`.
fn occurrences(path: &Path, needle: &[u8]) -> Result<usize> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    count_in(file, needle, 4 << 20).with_context(|| format!("reading {}", path.display()))
}

/// The number of times a non-empty `needle` occurs in `input`, read `chunk`
/// bytes at a time (matches across chunk boundaries count).
fn count_in(mut input: impl std::io::Read, needle: &[u8], chunk: usize) -> Result<usize> {
    let mut count = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(count);
        }
        carry.extend_from_slice(&buf[..n]);
        count += carry.windows(needle.len()).filter(|w| *w == needle).count();
        let keep = carry.len().min(needle.len() - 1);
        carry.drain(..carry.len() - keep);
    }
}

fn luks_passphrase(ctx: &mut Ctx) -> Result<()> {
    let disk = luks_disk(ctx, false)?;
    let mut vm = boot_to_prompt(ctx, &disk)?;
    vm.sendline("not-the-passphrase")?;
    vm.expect(WRONG, CMD)
        .context("a wrong passphrase was not reported")?;
    vm.expect(PROMPT_PASSPHRASE, CMD)
        .context("no new prompt after a wrong passphrase")?;
    vm.sendline(PASSPHRASE)?;
    let unlocked = vm.expect_line("unlocked in", BOOT)?;
    println!("e2e: {}", unlocked.trim());
    wait_shell(&mut vm)?;
    check_persist_is_mapping(&mut vm)?;
    vm.run(
        &format!("echo {MARKER} > /persist/luks-marker && sync"),
        CMD,
    )?;
    // Read back from the device (through dm-crypt), not from the page cache.
    let back = vm.run(
        "echo 3 > /proc/sys/vm/drop_caches && cat /persist/luks-marker",
        CMD,
    )?;
    // (The kernel may log the drop_caches write on the console in between.)
    ensure!(
        back.lines().any(|l| l.trim() == MARKER),
        "/persist/luks-marker reads {back:?}"
    );
    ensure!(
        kmsg_count(&mut vm, ("opened as /dev/", "mapper/ramstick"))? > 0,
        "init's unlock message is not in the kernel log"
    );
    ensure!(
        kmsg_count(&mut vm, PASSPHRASE_HALVES)? == 0,
        "the kernel log holds the passphrase"
    );
    let status = vm.poweroff(Duration::from_secs(120))?;
    ensure!(status.success(), "QEMU exited with {status}");
    ensure!(
        occurrences(&disk, MARKER.as_bytes())? == 0,
        "the marker's plaintext is in the raw disk image {}",
        disk.display()
    );
    check_log_lacks(ctx, PASSPHRASE)
}

/// The scenario's console log (everything the guest printed) must not hold `secret`.
fn check_log_lacks(ctx: &Ctx, secret: &str) -> Result<()> {
    let log = ctx.log_path();
    ensure!(
        occurrences(&log, secret.as_bytes())? == 0,
        "the console log {} holds a typed passphrase ({secret:?})",
        log.display()
    );
    Ok(())
}

fn luks_keyfile(ctx: &mut Ctx) -> Result<()> {
    let disk = luks_disk(ctx, true)?;
    let mut vm = ctx.boot(&disk, false)?;
    vm.select_entry(GrubEntry::Default)?;
    let seen = vm.expect_any(&["unlocked with the key file", PROMPT_PASSPHRASE], BOOT)?;
    ensure!(seen == 0, "the key file boot asks for the passphrase");
    wait_shell(&mut vm)?;
    check_persist_is_mapping(&mut vm)?;
    let cmdline = vm.run("cat /proc/cmdline", CMD)?;
    ensure!(
        cmdline.contains("ramstick.luks.keyfile=/etc/ramstick/luks.key"),
        "the key file is not on the command line: {cmdline}"
    );
    Ok(())
}

fn luks_wrong_thrice(ctx: &mut Ctx) -> Result<()> {
    let disk = luks_disk(ctx, false)?;
    let mut vm = boot_to_prompt(ctx, &disk)?;
    for attempt in 1..=3 {
        if attempt > 1 {
            vm.expect(PROMPT_PASSPHRASE, CMD)?;
        }
        vm.sendline(&format!("{GUESS}{attempt}"))?;
        vm.expect(&format!("{WRONG} (attempt {attempt} of 3)"), CMD)?;
    }
    let line = vm.expect_line("BOOT FAILED", CMD)?;
    ensure!(
        line.contains("3 wrong passphrase(s) for /dev/vda2"),
        "the failure line does not say why: {line:?}"
    );
    vm.expect("what to do:", CMD)?;
    vm.expect(EMERGENCY_PROMPT, CMD)
        .context("no emergency shell after three wrong passphrases")?;
    let out = vm.run("ls /dev/mapper", CMD)?;
    ensure!(
        !out.contains("ramstick"),
        "the container is open after three wrong passphrases: {out}"
    );
    vm.kill();
    // Nothing typed at a prompt is echoed (the shell commands above are).
    check_log_lacks(ctx, GUESS)
}

fn luks_persist_session(ctx: &mut Ctx) -> Result<()> {
    let disk = luks_disk(ctx, false)?;
    let mut vm = boot_to_prompt(ctx, &disk)?;
    vm.sendline(PASSPHRASE)?;
    wait_shell(&mut vm)?;
    vm.run("echo kept-on-luks > /root/luks-session", CMD)?;
    vm.sendline("poweroff")?;
    vm.expect(SAVED, SAVE)
        .context("the saver did not save the session at poweroff")?;
    let status = vm.wait_exit(SAVE)?;
    ensure!(status.success(), "QEMU exited with {status}");
    drop(vm);

    let mut vm = boot_to_prompt(ctx, &disk)?;
    vm.sendline(PASSPHRASE)?;
    wait_shell(&mut vm)?;
    let restored = vm.run("cat /root/luks-session", CMD)?;
    ensure!(
        restored.lines().any(|l| l.trim() == "kept-on-luks"),
        "the session was not restored from the encrypted stick: {restored:?}"
    );
    let layers = vm.run("ls /persist/layers", CMD)?;
    ensure!(
        layers.contains("manifest.json") && layers.contains("layer-000001.squashfs"),
        "no saved layer on /persist: {layers}"
    );
    vm.kill();
    check_log_lacks(ctx, PASSPHRASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needles_across_chunks_are_counted_once() {
        let hay = b"xxsecretxxsecsecretsecret";
        for chunk in [1, 2, 3, 5, 7, 64] {
            assert_eq!(count_in(&hay[..], b"secret", chunk).unwrap(), 3, "{chunk}");
        }
        assert_eq!(count_in(&b"secre"[..], b"secret", 2).unwrap(), 0);
    }
}

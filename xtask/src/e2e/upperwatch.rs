//! e2e scenario of the RAM upper's watch: a small upper filled step by
//! step from /dev/urandom; the daemon warns on the console at 80% and 90%
//! naming the directory that fills it, and at 95% takes a checkpoint; with
//! saving turned off (`saver off`) it says so instead and saves nothing.

use super::guest::{boot_disk_to_shell as boot, out, poweroff_expecting, GrubEntry, SAVED, SAVER};
use super::{Ctx, DiskSpec, Scenario};
use crate::qemu::Vm;
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// The scenario of this file.
pub const ALL: &[Scenario] = &[Scenario {
    name: "upperwatch-fill",
    run: fill,
}];

/// A small upper (zram with ext4, the default kind): quick to fill, and its
/// checkpoint fits on the image's persist partition.
const CMDLINE: &str = "ramstick.upper.size=40M";
/// The directory the scenario fills (the warnings must name it).
const FILL: &str = "/root/fill";
/// The start of every warning's first line on the console.
const WARNING: &str = "ramstick: WARNING: the RAM upper (where this session's changes live) is ";
/// The daemon looks every 10 s; TCG is slow.
const NOTICE: Duration = Duration::from_secs(90);
/// Filling some MiB from /dev/urandom under TCG.
const FILLING: Duration = Duration::from_secs(300);
/// The checkpoint of the filled upper under TCG.
const CHECKPOINT: Duration = Duration::from_secs(400);
/// What the saver says at shutdown when saving is off.
const NOT_SAVED: &str = "session not saved: saving is off";
/// The busybox rootfs's daemon logs here.
const DAEMON_LOG: &str = "/run/ramstick/saver/daemon.log";

/// Writes 1 MiB files of random bytes into [`FILL`] until the upper's
/// filesystem is at least `pct`% full (as `df` rounds it).
fn fill_to(vm: &mut Vm, pct: u32) -> Result<()> {
    let cmd = format!(
        "mkdir -p {FILL}; n=$(ls {FILL} | wc -l); \
         while [ $(df -P /run/ramstick/upper | awk 'NR==2 {{sub(\"%\", \"\", $5); print $5}}') \
         -lt {pct} ]; do n=$((n+1)); \
         dd if=/dev/urandom of={FILL}/f$n bs=1M count=1 2>/dev/null || break; done; sync; \
         df -P /run/ramstick/upper"
    );
    let said = vm.run(&cmd, FILLING)?;
    println!("e2e: upper filled to {pct}%:\n{said}");
    Ok(())
}

/// The console log's bytes from `from` on.
fn console_from(log: &Path, from: usize) -> Result<String> {
    let bytes = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned())
}

/// The complete warnings in console text: each one's lines (the first
/// with [`WARNING`], and the `ramstick: ` lines after it, through the
/// last, "to do").
fn warnings(text: &str) -> Vec<Vec<String>> {
    text.match_indices(WARNING)
        .map(|(at, _)| {
            let mut lines: Vec<String> = Vec::new();
            for l in text[at..].lines() {
                if !l.starts_with("ramstick: ") || (!lines.is_empty() && l.starts_with(WARNING)) {
                    break;
                }
                lines.push(l.to_string());
            }
            lines
        })
        // The daemon writes a warning at once, but the log may hold half of it.
        .filter(|w| w.iter().any(|l| l.starts_with("ramstick: to do: ")))
        .collect()
}

/// The percentage a warning's first line gives.
fn percent(warning: &[String]) -> Result<u32> {
    warning
        .first()
        .and_then(|l| l.strip_prefix(WARNING))
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no percentage in {warning:?}"))
}

/// Waits until the console (from byte `from`) shows a warning of at least
/// `threshold` percent; returns its text.
fn warning_of(log: &Path, from: usize, threshold: u32) -> Result<String> {
    let deadline = Instant::now() + NOTICE;
    loop {
        let text = console_from(log, from)?;
        for w in warnings(&text) {
            if percent(&w)? >= threshold {
                return Ok(w.join("\n"));
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no {threshold}% warning on the console within {NOTICE:?} (console log {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The console log's length now.
fn console_len(ctx: &Ctx) -> usize {
    std::fs::metadata(ctx.log_path()).map_or(0, |m| m.len() as usize)
}

/// Fills the upper to `fill`% and expects a warning of `threshold` (below
/// `below`) naming [`FILL`], which contains `says`.
fn expect_warning(
    ctx: &Ctx,
    vm: &mut Vm,
    fill: u32,
    (threshold, below): (u32, u32),
    says: &str,
) -> Result<()> {
    let from = console_len(ctx);
    fill_to(vm, fill)?;
    let text = warning_of(&ctx.log_path(), from, threshold)?;
    ensure!(
        percent(&text.lines().map(str::to_string).collect::<Vec<_>>())? < below,
        "expected the {threshold}% warning, the console says:\n{text}"
    );
    ensure!(
        text.contains(&format!("largest directories: {FILL} ")),
        "the {threshold}% warning does not name {FILL}:\n{text}"
    );
    ensure!(
        text.contains(says),
        "the {threshold}% warning does not say {says:?}:\n{text}"
    );
    Ok(())
}

/// How many saves the daemon's log records.
fn saves(vm: &mut Vm) -> Result<usize> {
    Ok(out(vm, &format!("grep -c '{SAVED}' {DAEMON_LOG} || true"))?
        .parse()
        .unwrap_or(0))
}

fn fill(ctx: &mut Ctx) -> Result<()> {
    let disk = ctx.disk(&DiskSpec {
        extra_cmdline: CMDLINE.into(),
        ..DiskSpec::default()
    })?;
    let mut vm = boot(ctx, &disk, GrubEntry::Default)?;
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("ram:          the upper holds"),
        "saver status shows no RAM figure:\n{status}"
    );

    // Saving on: 80% and 90% warn, 95% checkpoints; once each.
    let start = console_len(ctx);
    let todo = "`saver save` moves the changes to the stick";
    expect_warning(ctx, &mut vm, 82, (80, 90), todo)?;
    expect_warning(
        ctx,
        &mut vm,
        91,
        (90, 95),
        "at 95% the session is saved or lost",
    )?;
    expect_warning(ctx, &mut vm, 97, (95, 101), "taking a checkpoint now")?;
    let (rc, log) = vm.run_status(
        &format!(
            "for i in $(seq {}); do grep -q '{SAVED}' {DAEMON_LOG} && break; sleep 1; done; \
             cat {DAEMON_LOG}; grep -q '{SAVED}' {DAEMON_LOG}",
            CHECKPOINT.as_secs() - 30
        ),
        CHECKPOINT,
    )?;
    ensure!(rc == 0, "no checkpoint at 95%; the daemon's log:\n{log}");
    ensure!(
        log.contains("saver: WARNING: the RAM upper"),
        "the warnings are not in the daemon's log:\n{log}"
    );
    let said = warnings(&console_from(&ctx.log_path(), start)?);
    ensure!(
        said.len() == 3,
        "expected one warning per threshold, the console shows {}: {said:#?}",
        said.len()
    );

    // Saving off: emptied (the thresholds rearm), filled again: the 95%
    // warning says saving is off and nothing is saved.
    out(&mut vm, &format!("{SAVER} off && rm -rf {FILL} && sync"))?;
    let log = ctx.log_path();
    let from = console_len(ctx);
    // Two looks of the daemon at the emptied upper.
    std::thread::sleep(Duration::from_secs(25));
    ensure!(
        !console_from(&log, from)?.contains(WARNING),
        "the emptied upper still warns"
    );
    expect_warning(
        ctx,
        &mut vm,
        97,
        (95, 101),
        "saving is off (turned off by `saver off`",
    )?;
    let text = warning_of(&log, from, 95)?;
    ensure!(
        text.contains("no checkpoint; copy what you need elsewhere"),
        "the 95% warning with saving off:\n{text}"
    );
    std::thread::sleep(Duration::from_secs(15));
    ensure!(
        saves(&mut vm)? == 1,
        "the daemon saved at 95% although saving is off"
    );
    poweroff_expecting(&mut vm, NOT_SAVED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_read_whole_from_the_console() {
        let text = format!(
            "ramstick:/# dd\n{WARNING}83% full: 33.0 MiB used of 40.0 MiB\n\
             ramstick: largest directories: /root/fill 30.0 MiB\n\
             ramstick: to do: delete files\nramstick:/# \n\
             {WARNING}91% full: 36.4 MiB used of 40.0 MiB\n\
             ramstick: to do: delete files\n{WARNING}96% full: half of it"
        );
        let w = warnings(&text);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].len(), 3, "{w:?}");
        assert_eq!(percent(&w[0]).unwrap(), 83);
        assert_eq!(percent(&w[1]).unwrap(), 91);
        assert!(percent(&["ramstick: other".to_string()]).is_err());
        assert!(percent(&[]).is_err());
    }
}

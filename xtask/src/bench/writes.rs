//! Writes and shutdown rows, on a busybox stick (1 GiB, our kernel) in QEMU:
//! `saver save` run by hand in the guest, with the persist partition's
//! sectors written (field 7 of `/sys/class/block/<part>/stat`, after a
//! `sync` on both sides) and the time it took (`/proc/uptime`) around it,
//! for sessions that changed 1 MB (a file rewritten with new random bytes
//! before each save), 100 MB (likewise), and nothing (after a reboot into
//! what was saved). Each is also shown against the size of the resulting
//! `upperfs.squashfs`: a copy-based rotation writes ~3 images per save.
//!
//! The first boot (a fresh stick) also gives the `--quick` boot rows: "Run
//! /init" → init's "switching root" kernel log line, and firmware → shell.

use super::boot::{self, BOOT_TIMEOUT, CMD_TIMEOUT};
use super::table::{Cell, Row, Series, Unit};
use crate::build::Binaries;
use crate::{deps, image, kernel, rootfs, target_dir};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;

/// The busybox rootfs's root shell prompt on ttyS0.
const PROMPT: &str = "ramstick:/# ";
/// init's last kernel log line before it executes the real init.
const SWITCH_ROOT: &str = "switching root to";
/// The stick: room for a 100 MB image, its backup and the next one.
const DISK_SIZE: u64 = 1 << 30;

/// Sessions, in the order they run.
const SESSIONS: [(&str, &str); 3] = [
    (
        "1 MB changed",
        "dd if=/dev/urandom of=/root/bench-1m bs=1M count=1 2>/dev/null",
    ),
    (
        "100 MB changed",
        "dd if=/dev/urandom of=/root/bench-100m bs=1M count=100 2>/dev/null",
    ),
    ("unchanged (after a reboot)", ""),
];

/// The writes and shutdown rows (and in `--quick`, the busybox boot rows).
pub fn rows(quick: bool, bins: Result<&Binaries, &str>, work: &Path, runs: usize) -> Vec<Row> {
    let boot_names = [
        "boot, busybox stick (--quick): Run /init → switch_root",
        "boot, busybox stick (--quick): firmware → shell prompt",
    ];
    let write_name =
        |s: &str| format!("writes to the stick per save, {s} (vs resulting image size)");
    let time_name = |s: &str| format!("shutdown: `saver save` wall time, {s}");
    let measured = bins
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|b| measure(quick, b, work, runs));
    let (first_boot, sessions) = match measured {
        Ok(m) => m,
        Err(e) => {
            let mut names: Vec<String> = Vec::new();
            if quick {
                names.extend(boot_names.iter().map(|n| n.to_string()));
            }
            names.extend(SESSIONS.iter().map(|s| write_name(s.0)));
            names.extend(SESSIONS.iter().map(|s| time_name(s.0)));
            return names.iter().map(|n| Row::failed(n, &e)).collect();
        }
    };
    let mut rows = Vec::new();
    if quick {
        let reference = Cell::Skipped("— (Debian comparison: full run)".into());
        for (i, name) in boot_names.iter().enumerate() {
            rows.push(Row {
                name: name.to_string(),
                ours: first_boot.cell("", Unit::Seconds, i),
                reference: reference.clone(),
            });
        }
    }
    for ((name, _), series) in SESSIONS.iter().zip(&sessions) {
        rows.push(match series {
            Some(s) => Row {
                name: write_name(name),
                ours: s.cell("", Unit::Bytes, 0),
                reference: s.cell("image size", Unit::Bytes, 1),
            },
            None => Row::skipped(&write_name(name), "skipped in --quick"),
        });
    }
    for ((name, _), series) in SESSIONS.iter().zip(&sessions) {
        rows.push(match series {
            Some(s) => Row {
                name: time_name(name),
                ours: s.cell("", Unit::Seconds, 2),
                reference: Cell::Skipped("— (no standard tool)".into()),
            },
            None => Row::skipped(&time_name(name), "skipped in --quick"),
        });
    }
    rows
}

/// A [series per session (None: skipped)]; each run is [bytes written, image size, seconds].
type Sessions = [Option<Series<3>>; 3];

/// The first boot's [init, login] and the sessions' series.
fn measure(
    quick: bool,
    bins: &Binaries,
    work: &Path,
    runs: usize,
) -> Result<(Series<2>, Sessions)> {
    let rootfs_dir = target_dir().join("rootfs-busybox");
    if !rootfs_dir.join(rootfs::MARKER).is_file() {
        rootfs::build(rootfs::Kind::Busybox, &rootfs_dir)?;
    }
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let disk = work.join("busybox-stick.img");
    println!("bench: building {}", disk.display());
    image::build(&image::Spec {
        rootfs: rootfs_dir,
        out: disk.clone(),
        size: Some(DISK_SIZE),
        kernel: kernel::fetch_debian()?,
        bins: bins.clone(),
        extra_cmdline: "log_buf_len=4M".into(),
        persist_extra: Vec::new(),
        omit: Vec::new(),
    })?;
    let machine = boot::machine(&disk, work, "busybox");
    let log = work.join("busybox.log");

    let mut first = Series::<2>::default();
    let mut sessions: Sessions = Default::default();
    let mut b = boot::boot(&machine, &log, 0, PROMPT)?;
    first.record(|| Ok([boot::init_time(&mut b.vm, SWITCH_ROOT)?, b.login]));
    for (i, (_, change)) in SESSIONS.iter().enumerate().take(2) {
        if quick && i == 1 {
            continue;
        }
        let mut series = Series::default();
        for _ in 0..runs {
            series.record(|| {
                b.vm.run(change, BOOT_TIMEOUT)?;
                save(&mut b.vm)
            });
        }
        sessions[i] = Some(series);
    }
    b.vm.run("sync", CMD_TIMEOUT)?;
    b.vm.kill();
    println!("bench: rebooting into the saved session");
    let log = work.join("busybox-reboot.log");
    let mut b = boot::boot(&machine, &log, 0, PROMPT)?;
    let mut unchanged = Series::default();
    for _ in 0..runs {
        unchanged.record(|| save(&mut b.vm));
    }
    sessions[2] = Some(unchanged);
    b.vm.kill();
    deps::remove_if_exists(&disk)?;
    Ok((first, sessions))
}

/// Run `saver save` in the guest: [bytes written to the persist partition,
/// size of upperfs.squashfs afterwards, seconds].
fn save(vm: &mut crate::qemu::Vm) -> Result<[f64; 3]> {
    let script = "sync; P=$(awk '$2==\"/persist\"{print $1}' /proc/mounts); P=${P##*/}; \
         S0=$(awk '{print $7}' /sys/class/block/$P/stat); T0=$(cut -d' ' -f1 /proc/uptime); \
         /run/ramstick/bin/saver save; RC=$?; sync; \
         S1=$(awk '{print $7}' /sys/class/block/$P/stat); T1=$(cut -d' ' -f1 /proc/uptime); \
         Z=$(stat -c %s /persist/upperfs.squashfs 2>/dev/null || echo 0); \
         echo \"BENCH-SAVE $RC $S0 $S1 $T0 $T1 $Z\"";
    let out = vm.run(script, BOOT_TIMEOUT)?;
    parse_save(&out)
}

/// Parse the `BENCH-SAVE rc s0 s1 t0 t1 size` line of [`save`]'s output.
fn parse_save(out: &str) -> Result<[f64; 3]> {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("BENCH-SAVE "))
        .with_context(|| format!("no BENCH-SAVE line in:\n{out}"))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad BENCH-SAVE line {line:?}"))?;
    let [rc, s0, s1, t0, t1, size] = f[..] else {
        bail!("bad BENCH-SAVE line {line:?}");
    };
    if rc != 0.0 {
        bail!("saver save exited with {rc}; output:\n{out}");
    }
    Ok([(s1 - s0) * 512.0, size, t1 - t0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_line_is_parsed() {
        let out = "saver: packing\nBENCH-SAVE 0 1000 3048 10.50 12.75 1048576\n";
        assert_eq!(parse_save(out).unwrap(), [1048576.0, 1048576.0, 2.25]);
        let failed = parse_save("BENCH-SAVE 1 0 0 1 2 0\n")
            .unwrap_err()
            .to_string();
        assert!(failed.contains("exited with 1"), "{failed}");
        assert!(parse_save("nothing\n").is_err());
        assert!(parse_save("BENCH-SAVE 0 1 2\n").is_err());
    }
}

//! Writes and shutdown rows, on busybox sticks in QEMU: `saver save` run by
//! hand in the guest, with the persist partition's bytes written and the
//! time it took around it (see [`guest::measure`]):
//!
//! * on a fresh stick (no saved state), for sessions that changed 1 MB (a
//!   file rewritten with new random bytes before each save), 100 MB
//!   (likewise), and nothing (after a reboot into what was saved); each
//!   beside the size of the layer it wrote (the ideal: the layer, once);
//! * on a stick with a big saved state (see [`bigstate`]), for a 1 MB
//!   change, beside today's full-image save, and beside the same save on
//!   the fresh stick (the save's time must not grow with the state).
//!
//! The first boot of the fresh stick also gives the `--quick` boot rows:
//! "Run /init" → init's "switching root" kernel log line, and firmware →
//! shell.

use super::bigstate;
use super::boot::{self, BOOT_TIMEOUT, CMD_TIMEOUT};
use super::guest;
use super::sticks::{self, BUSYBOX_PROMPT};
use super::table::{Cell, Row, Series, Unit};
use super::Inputs;
use crate::build::Binaries;
use crate::{deps, image};
use anyhow::{anyhow, Context, Result};
use ramstick_common::bootmenu::GrubEntry;
use std::fs;
use std::path::{Path, PathBuf};

/// The stick: room for a 100 MB layer, the session's next one and the rootfs.
const DISK_SIZE: u64 = 1 << 30;

/// Sessions on the fresh stick, in the order they run.
const SESSIONS: [(&str, &str); 3] = [
    ("1 MB changed", bigstate::CHANGE),
    (
        "100 MB changed",
        "dd if=/dev/urandom of=/root/bench-100m bs=1M count=100 2>/dev/null",
    ),
    ("unchanged (after a reboot)", ""),
];

/// The `--quick` boot rows.
const BOOT_NAMES: [&str; 2] = [
    "boot, busybox stick (--quick): Run /init → switch_root",
    "boot, busybox stick (--quick): firmware → shell prompt",
];

/// The writes and shutdown rows (and in `--quick`, the busybox boot rows).
pub fn rows(inputs: Inputs, state: Result<PathBuf>, work: &Path) -> Vec<Row> {
    let (quick, runs) = (inputs.quick, inputs.runs);
    let fresh = inputs
        .bins()
        .and_then(|b| measure_fresh(quick, b, &work.join("fresh"), runs));
    let state = state.and_then(|t| Ok((image::dir_size(&t)?, t)));
    let label = match &state {
        Ok((size, _)) if quick => format!("a {} MiB saved state (--quick)", size >> 20),
        Ok((size, _)) => format!("a {} MiB saved state", size >> 20),
        Err(_) => "a saved state".to_string(),
    };
    let big = state.and_then(|(_, tree)| {
        // --quick: one save (the stick and its boot are most of the cost).
        let runs = if quick { 1 } else { runs };
        let work = work.join("state");
        bigstate::measure(inputs.bins()?, inputs.saver()?, &tree, &work, runs)
    });

    let mut rows = Vec::new();
    let (first_boot, sessions) = match fresh {
        Ok((first, sessions)) => (Ok(first), sessions.map(Ok)),
        Err(e) => (
            Err(anyhow!("{e:#}")),
            std::array::from_fn(|_| Err(anyhow!("{e:#}"))),
        ),
    };
    if quick {
        let reference = Cell::Skipped("— (Debian comparison: full run)".into());
        for (i, name) in BOOT_NAMES.iter().enumerate() {
            rows.push(Row {
                name: name.to_string(),
                ours: cell(&first_boot, "", Unit::Seconds, i),
                reference: reference.clone(),
            });
        }
    }
    // Per session: the bytes written beside the layer, then the time.
    let kinds: [(&str, Unit, usize); 2] = [
        (
            "writes to the stick per save, {} (vs the layer it wrote)",
            Unit::Bytes,
            0,
        ),
        ("shutdown: `saver save` wall time, {}", Unit::Seconds, 2),
    ];
    for (pattern, unit, index) in kinds {
        for ((session, _), s) in SESSIONS.iter().zip(&sessions) {
            let name = pattern.replace("{}", session);
            rows.push(match s {
                Ok(None) => Row::skipped(&name, "skipped in --quick"),
                _ => Row {
                    name,
                    ours: cell(s, "", unit, index),
                    reference: match unit {
                        Unit::Bytes => layer_cell(s),
                        _ => Cell::Skipped("— (no standard tool)".into()),
                    },
                },
            });
        }
    }
    let (save, full_image) = match big {
        Ok(r) => (Ok(Some(r.save)), Ok(Some(r.full_image))),
        Err(e) => (Err(anyhow!("{e:#}")), Err(e)),
    };
    let full = "full-image save (saver pack, zstd 15)";
    rows.push(Row {
        name: format!(
            "writes to the stick per save, 1 MB changed on {label} (vs a full-image save of the state)"
        ),
        ours: cell(&save, "", Unit::Bytes, 0),
        reference: cell(&full_image, full, Unit::Bytes, 0),
    });
    rows.push(Row {
        name: format!(
            "shutdown: `saver save` wall time, 1 MB changed on {label} (vs a full-image save)"
        ),
        ours: cell(&save, "", Unit::Seconds, 1),
        reference: cell(&full_image, full, Unit::Seconds, 1),
    });
    rows.push(Row {
        name: format!("shutdown: `saver save` wall time, 1 MB changed: on {label} vs on none"),
        ours: cell(&save, "", Unit::Seconds, 1),
        reference: cell(&sessions[0], "no saved state", Unit::Seconds, 2),
    });
    rows
}

/// Figure `index` of a measured series (`None`: not measured), or the error.
fn cell<const N: usize>(
    series: &Result<Option<Series<N>>>,
    label: &str,
    unit: Unit,
    index: usize,
) -> Cell {
    match series.as_ref().map(Option::as_ref) {
        Ok(Some(s)) => s.cell(label, unit, index),
        Ok(None) => Cell::Skipped("skipped in --quick".into()),
        Err(e) => Cell::Failed(format!("{e:#}")),
    }
}

/// The size of the layer each save wrote; a save that wrote none (nothing to save) has none.
fn layer_cell(s: &Result<Option<Series<3>>>) -> Cell {
    match cell(s, "layer size", Unit::Bytes, 1) {
        Cell::Values { values, .. } if values.iter().all(|v| *v == 0.0) => {
            Cell::Skipped("no layer written (nothing to save)".into())
        }
        c => c,
    }
}

/// A series per session (None: skipped); each run is [bytes written, size
/// of the layer written (0: none), seconds].
type Sessions = [Option<Series<3>>; 3];

/// The fresh stick's first boot's [init, login] and the sessions' series.
fn measure_fresh(
    quick: bool,
    bins: &Binaries,
    work: &Path,
    runs: usize,
) -> Result<(Option<Series<2>>, Sessions)> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let disk = work.join("busybox-stick.img");
    sticks::busybox(bins, &disk, DISK_SIZE, Vec::new())?;
    let machine = boot::machine(&disk, work, "busybox");
    let log = work.join("busybox.log");

    let mut first = Series::<2>::default();
    let mut sessions: Sessions = Default::default();
    let mut b = boot::boot(&machine, &log, GrubEntry::Default, BUSYBOX_PROMPT)?;
    first.record(|| Ok([boot::init_time(&mut b.vm, boot::SWITCH_ROOT)?, b.login]));
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
    let mut b = boot::boot(&machine, &log, GrubEntry::Default, BUSYBOX_PROMPT)?;
    let mut unchanged = Series::default();
    for _ in 0..runs {
        unchanged.record(|| save(&mut b.vm));
    }
    sessions[2] = Some(unchanged);
    b.vm.kill();
    deps::remove_if_exists(&disk)?;
    Ok((Some(first), sessions))
}

/// Run `saver save` in the guest: [bytes written to the persist partition,
/// size of the layer it wrote (0: none), seconds].
fn save(vm: &mut crate::qemu::Vm) -> Result<[f64; 3]> {
    let before = guest::newest_layer(vm, CMD_TIMEOUT)?;
    let cost = guest::save(vm, BOOT_TIMEOUT)?;
    let after = guest::newest_layer(vm, CMD_TIMEOUT)?;
    let layer = match after {
        Some((name, size)) if before.as_ref().is_none_or(|(b, _)| *b != name) => size,
        _ => 0,
    };
    Ok([cost.written, layer as f64, cost.seconds])
}

//! What boot pays per saved layer, on busybox sticks in QEMU (our kernel,
//! `ramstick.layers=mount`): the same files — a generated tree of 16
//! directories under `/root/bench-layers` — saved as 1 layer on one stick
//! and as 16 layers (one directory each) on another. `saver add-layer`
//! would never leave 16 (its policy merges at 9), so both chains are made
//! by hand (see [`sticks::chain`]): each layer packed by `saver pack` at the
//! session level, the manifest written with their digests. Boots alternate
//! between the sticks, each from a fresh copy, and check in `boot.json`
//! that every layer was used.
//!
//! Figures: "Run /init" → init's "switching root" kernel log line, with 16
//! layers against 1; and per round, (16 layers − 1 layer) / 15, the cost of
//! one more layer, against the whole 1-layer figure.

use super::boot::{self, CMD_TIMEOUT};
use super::guest;
use super::sticks::{self, BUSYBOX_PROMPT};
use super::table::{Row, Series, Unit};
use super::tree::{self, Shape};
use super::Inputs;
use crate::build::Binaries;
use crate::deps;
use anyhow::{Context, Result};
use ramstick_common::bootmenu::GrubEntry;
use ramstick_common::cmdline::LayersMode;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers of the long chain.
const LAYERS: u32 = 16;
/// 16 directories of 50 small files (about 5 MB).
const SHAPE: Shape = Shape {
    dirs: LAYERS,
    files_per_dir: 50,
    large_files: 0,
    large_mib: 0,
};
/// Each stick: the busybox rootfs and a few MB of layers.
const DISK_SIZE: u64 = 512 << 20;

/// Both rows (skipped in `--quick`: four more boots).
pub fn rows(inputs: Inputs, trees: &Path, work: &Path) -> Vec<Row> {
    let names = [
        format!("boot per saved layer, busybox stick: Run /init → switch_root, the same files as {LAYERS} layers (vs as 1 layer)"),
        format!("boot per saved layer, busybox stick: cost of one more layer, ({LAYERS} layers − 1 layer) / {} (vs Run /init → switch_root with 1 layer)", LAYERS - 1),
    ];
    if inputs.quick {
        let why = "skipped in --quick (four more QEMU boots)";
        return names.iter().map(|n| Row::skipped(n, why)).collect();
    }
    let measured = inputs
        .bins()
        .and_then(|b| measure(b, inputs.saver()?, trees, work, inputs.runs));
    let (one, many) = match measured {
        Ok(m) => m,
        Err(e) => return names.iter().map(|n| Row::failed(n, &e)).collect(),
    };
    let mut per_layer = Series::<1>::default();
    match (one.values(0), many.values(0)) {
        (Ok(a), Ok(b)) => {
            for (a, b) in a.iter().zip(&b) {
                per_layer.record(|| Ok([(b - a) / f64::from(LAYERS - 1)]));
            }
        }
        (Err(e), _) | (_, Err(e)) => per_layer.record(|| Err(e)),
    }
    let single = ("1 layer", &one);
    vec![
        Row::compare(&names[0], Unit::Seconds, 0, &many, single),
        Row {
            name: names[1].clone(),
            ours: per_layer.cell("", Unit::Seconds, 0),
            reference: one.cell("1 layer", Unit::Seconds, 0),
        },
    ]
}

/// The init times of boots with [1 layer, 16 layers].
fn measure(
    bins: &Binaries,
    saver: &Path,
    trees: &Path,
    work: &Path,
    runs: usize,
) -> Result<(Series<1>, Series<1>)> {
    let files = tree::ensure(&trees.join("layers16"), SHAPE)?;
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let whole = sticks::rooted(&files, &work.join("whole"), "root/bench-layers")?;
    let parts: Vec<PathBuf> = (0..LAYERS)
        .map(|i| {
            let dir = format!("d{i:04}");
            let under = format!("root/bench-layers/{dir}");
            sticks::rooted(&files.join(&dir), &work.join(format!("part{i:02}")), &under)
        })
        .collect::<Result<_>>()?;
    let mut sticks_made = Vec::new();
    for (name, trees) in [("one", vec![whole]), ("many", parts)] {
        let persist = sticks::chain(saver, &work.join(format!("persist-{name}")), &trees)?;
        let disk = work.join(format!("busybox-{name}.img"));
        sticks::busybox(bins, &disk, DISK_SIZE, persist)?;
        for t in &trees {
            deps::remove_if_exists(t)?;
        }
        sticks_made.push((disk, trees.len()));
    }
    let (mut one, mut many) = (Series::default(), Series::default());
    for run in 1..=runs {
        println!("bench: layer-count boots, round {run}/{runs}");
        for ((disk, layers), series) in sticks_made.iter().zip([&mut one, &mut many]) {
            series.record(|| init_time(disk, *layers, work));
        }
    }
    for (disk, _) in &sticks_made {
        deps::remove_if_exists(disk)?;
    }
    Ok((one, many))
}

/// Boot a fresh copy of `master`: Run /init → switch_root, after checking
/// that all `layers` were mounted.
fn init_time(master: &Path, layers: usize, work: &Path) -> Result<[f64; 1]> {
    let name = format!("layers-{layers}");
    let disk = boot::fresh_copy(master, work, &name)?;
    let log = work.join(format!("{name}.log"));
    let figure = boot::boot(
        &boot::machine(&disk, work, &name),
        &log,
        GrubEntry::Default,
        BUSYBOX_PROMPT,
    )
    .and_then(|mut b| {
        guest::expect_layers(&mut b.vm, layers, LayersMode::Mount, CMD_TIMEOUT)?;
        let t = boot::init_time(&mut b.vm, boot::SWITCH_ROOT)?;
        b.vm.kill();
        Ok([t])
    });
    deps::remove_if_exists(&disk)?;
    figure
}

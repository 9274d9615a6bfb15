//! Compaction rows: `saver merge` of 8 layers into one (what the compaction
//! policy does at fan-in 8, at zstd 15) must not need memory that grows
//! with the state. The generated tree is split into 8 parts (its top-level
//! entries dealt round-robin, as hard links), each packed by `saver pack` at
//! the session level; then `saver merge OUT L1 … L8` is measured (wall
//! time, peak RSS from `wait4`), beside mksquashfs packing the whole tree at
//! the same level (the codec rows' runs).

use super::measure;
use super::sticks::SESSION_LEVEL;
use super::table::{Row, Series, Unit};
use crate::deps;
use anyhow::{anyhow, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Layers merged at once (the policy's fan-in).
const FAN_IN: usize = 8;

/// The rows' names for the tree described by `label`.
pub fn names(label: &str) -> [String; 2] {
    let what = format!("compaction: `saver merge` of {FAN_IN} layers ({label} in {FAN_IN} parts)");
    [
        format!("{what}: wall time (vs mksquashfs of the whole tree)"),
        format!("{what}: peak RSS (vs mksquashfs of the whole tree)"),
    ]
}

/// The rows: `merged` ([wall, peak RSS] per run) against mksquashfs'
/// pack series ([wall, peak RSS, size]).
pub fn rows(names: &[String], merged: &Series<2>, mksquashfs: &Series<3>) -> Vec<Row> {
    names
        .iter()
        .zip([(Unit::Seconds, 0), (Unit::Bytes, 1)])
        .map(|(name, (unit, i))| Row {
            name: name.clone(),
            ours: merged.cell("", unit, i),
            reference: mksquashfs.cell("mksquashfs", unit, i),
        })
        .collect()
}

/// Split `tree`, pack the parts, and merge them `runs` times.
pub fn measure(tree: &Path, saver: Result<&Path, &str>, work: &Path, runs: usize) -> Series<2> {
    let mut series = Series::default();
    let layers = saver
        .map_err(|e| anyhow!("no saver binary: {e}"))
        .and_then(|s| layers(tree, s, work).map(|l| (s, l)));
    let (saver, layers) = match layers {
        Ok(l) => l,
        Err(e) => {
            series.record(|| Err(e));
            return series;
        }
    };
    let out = work.join("merged.squashfs");
    let errlog = work.join("stderr.log");
    for _ in 0..runs {
        series.record(|| {
            deps::remove_if_exists(&out)?;
            let mut cmd = Command::new(saver);
            cmd.arg("merge").arg(&out).args(&layers).arg("--quiet");
            let run = measure::run(&mut cmd, &errlog)?;
            Ok([run.wall, run.max_rss])
        });
    }
    series
}

/// The [`FAN_IN`] layer images of `tree`'s parts, in `work`.
fn layers(tree: &Path, saver: &Path, work: &Path) -> Result<Vec<PathBuf>> {
    deps::remove_if_exists(work)?;
    let parts = split(tree, &work.join("parts"), FAN_IN)?;
    let mut images = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let image = work.join(format!("layer{i}.squashfs"));
        deps::output(Command::new(saver).arg("pack").arg(part).arg(&image).args([
            "--level",
            SESSION_LEVEL,
            "--quiet",
        ]))?;
        images.push(image);
    }
    deps::remove_if_exists(&work.join("parts"))?;
    Ok(images)
}

/// `n` directories under `into`, dealt `tree`'s top-level entries in
/// turn (in name order), as hard links.
fn split(tree: &Path, into: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = fs::read_dir(tree)
        .with_context(|| format!("listing {}", tree.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", tree.display()))?;
    entries.sort();
    let parts: Vec<PathBuf> = (0..n).map(|i| into.join(format!("part{i}"))).collect();
    for (i, part) in parts.iter().enumerate() {
        fs::create_dir_all(part).with_context(|| format!("creating {}", part.display()))?;
        let mine: Vec<&PathBuf> = entries.iter().skip(i).step_by(n).collect();
        if !mine.is_empty() {
            deps::run(deps::cmd("cp").arg("-al").args(mine).arg(part))?;
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_deals_the_entries_in_turn() {
        let base = ramstick_testkit::TempDir::new("xtask-split");
        let tree = base.join("tree");
        for name in ["a", "b", "c", "d", "e"] {
            base.file(&format!("tree/{name}/f"), name, 0o644);
        }
        base.file("tree/top", "t", 0o644);
        let parts = split(&tree, &base.join("parts"), 4).unwrap();
        let names = |p: &Path| {
            let mut v: Vec<String> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&parts[0]), ["a", "e"]);
        assert_eq!(names(&parts[1]), ["b", "top"]);
        assert_eq!(names(&parts[2]), ["c"]);
        assert_eq!(names(&parts[3]), ["d"]);
        assert_eq!(fs::read_to_string(parts[0].join("e/f")).unwrap(), "e");
    }
}

//! Many sessions with compaction, simulated on the host (as root): an ext4
//! filesystem in a sparse image file, loop-mounted, stands for the persist
//! partition; each session is a fresh tree (what an overlay upperdir holds
//! after it) with a new file of incompressible bytes and one small file
//! rewritten every session, appended by the host's `saver add-layer --persist
//! MNT TREE` — the same plan, checks and compaction policy as a save (fan-in
//! 8 per level, the chain never over 16).
//!
//! Figures: the bytes written to the loop device over the whole run
//! (`/sys/block/loopN/stat` field 7, after a `sync`; ext4's own metadata and
//! journal included, as on a stick) against the bytes the sessions changed,
//! and the longest `current` chain the manifest named after any session
//! against the bound. One run: the figures hardly vary.

use super::sticks;
use super::table::{Cell, Row, Unit};
use super::Inputs;
use crate::deps;
use anyhow::{bail, ensure, Context, Result};
use ramstick_common::manifest::MAX_CHAIN;
use ramstick_testkit::noise_seeded;
use std::fs;
use std::path::{Path, PathBuf};

/// How many sessions, each changing how much.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub sessions: usize,
    /// Bytes of the new file of each session.
    pub change: usize,
}

/// The full run: 50 sessions of 1 MiB.
pub const FULL: Plan = Plan {
    sessions: 50,
    change: 1 << 20,
};

/// `--quick`: 10 sessions of 100 KiB (one compaction).
pub const QUICK: Plan = Plan {
    sessions: 10,
    change: 100 << 10,
};

/// The persist filesystem (sparse): room for every session and a merge.
const FS_SIZE: u64 = 1 << 30;

/// The two rows of `plan`.
pub fn rows(inputs: Inputs, work: &Path) -> Vec<Row> {
    let quick = inputs.quick;
    let plan = if quick { QUICK } else { FULL };
    let size = match plan.change {
        c if c >= 1 << 20 => format!("{} MiB", c >> 20),
        c => format!("{} KiB", c >> 10),
    };
    let what = format!(
        "{} sessions of {size} changes each, with compaction (host, saver add-layer){}",
        plan.sessions,
        if quick { " (--quick)" } else { "" }
    );
    let names = [
        format!("{what}: bytes written to the stick (vs bytes changed)"),
        format!("{what}: longest chain (vs the bound)"),
    ];
    if !deps::is_root() {
        let why = "skipped: needs root (a loop-mounted ext4 and the saver's kernel read-back)";
        return names.iter().map(|n| Row::skipped(n, why)).collect();
    }
    let measured = inputs.saver().and_then(|s| simulate(s, work, plan));
    let out = match measured {
        Ok(o) => o,
        Err(e) => return names.iter().map(|n| Row::failed(n, &e)).collect(),
    };
    let one = |label: &str, unit: Unit, v: f64| Cell::Values {
        label: label.to_string(),
        unit,
        values: vec![v],
    };
    vec![
        Row {
            name: names[0].clone(),
            ours: one("", Unit::Bytes, out.written),
            reference: one("changed", Unit::Bytes, out.changed),
        },
        Row {
            name: names[1].clone(),
            ours: one("", Unit::Count, out.longest as f64),
            reference: one("bound", Unit::Count, MAX_CHAIN as f64),
        },
    ]
}

/// What a simulation found.
struct Outcome {
    written: f64,
    changed: f64,
    longest: usize,
}

fn simulate(saver: &Path, work: &Path, plan: Plan) -> Result<Outcome> {
    deps::remove_if_exists(work)?;
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let image = work.join("persist.ext4");
    fs::File::create(&image)
        .and_then(|f| f.set_len(FS_SIZE))
        .with_context(|| format!("creating {}", image.display()))?;
    // Inode tables and journal written now, not by a kernel thread during the run.
    deps::output(
        deps::cmd("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image),
    )?;
    let mnt = work.join("mnt");
    fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    let dev = Loop::mount(&image, &mnt)?;
    let tree = work.join("tree");
    let (mut changed, mut longest) = (0usize, 0);
    nix::unistd::sync();
    let start = dev.sectors_written()?;
    println!(
        "bench: {} sessions of {} bytes on {}",
        plan.sessions, plan.change, dev.name
    );
    for n in 1..=plan.sessions {
        changed += session_tree(&tree, n, plan.change)?;
        deps::output(
            deps::cmd(&saver.to_string_lossy())
                .arg("add-layer")
                .arg("--persist")
                .arg(&mnt)
                .arg(&tree),
        )
        .with_context(|| format!("session {n}"))?;
        longest = longest.max(sticks::read_manifest(&mnt)?.current.len());
    }
    nix::unistd::sync();
    let written = (dev.sectors_written()? - start) * 512;
    // The run is only a figure if the state holds every session's file.
    let m = sticks::read_manifest(&mnt)?;
    let data: u64 = m
        .current
        .iter()
        .filter_map(|n| m.layers.get(n))
        .map(|l| l.data_bytes)
        .sum();
    ensure!(
        data >= (plan.sessions * plan.change) as u64,
        "the final chain holds {data} bytes of data, less than the {} sessions wrote",
        plan.sessions
    );
    drop(dev);
    deps::remove_if_exists(work)?;
    Ok(Outcome {
        written: written as f64,
        changed: changed as f64,
        longest,
    })
}

/// Session `n`'s upperdir at `dir` (replaced): a new file of `change`
/// incompressible bytes and the small file every session rewrites. Returns
/// the bytes it changed.
fn session_tree(dir: &Path, n: usize, change: usize) -> Result<usize> {
    deps::remove_if_exists(dir)?;
    let big = dir.join(format!("root/session-{n:03}.bin"));
    let small = dir.join("etc/bench-small");
    let small_text = format!("written by session {n}\n");
    for (file, bytes) in [
        (&big, noise_seeded(change, false, n as u64)),
        (&small, small_text.into_bytes()),
    ] {
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(change + fs::metadata(&small).map(|m| m.len() as usize).unwrap_or(0))
}

/// A loop device with a filesystem mounted from it; unmounted and detached when dropped.
struct Loop {
    /// `loop3`.
    name: String,
    mnt: PathBuf,
}

impl Loop {
    fn mount(image: &Path, mnt: &Path) -> Result<Loop> {
        let dev = deps::output(deps::cmd("losetup").args(["--find", "--show"]).arg(image))?;
        let dev = dev.trim().to_string();
        let name = dev.trim_start_matches("/dev/").to_string();
        if let Err(e) = deps::run(deps::cmd("mount").arg(&dev).arg(mnt)) {
            let _ = deps::run(deps::cmd("losetup").args(["-d", &dev]));
            return Err(e);
        }
        Ok(Loop {
            name,
            mnt: mnt.to_path_buf(),
        })
    }

    fn sectors_written(&self) -> Result<u64> {
        let path = format!("/sys/block/{}/stat", self.name);
        let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        sectors_written(&stat).with_context(|| format!("reading {path}"))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Best effort: a failure leaves a mount to clean up by hand, named here.
        if let Err(e) = deps::run(deps::cmd("umount").arg(&self.mnt)) {
            eprintln!("bench: warning: {e:#}");
        }
        let dev = format!("/dev/{}", self.name);
        if let Err(e) = deps::run(deps::cmd("losetup").args(["-d", &dev])) {
            eprintln!("bench: warning: {e:#}");
        }
    }
}

/// Field 7 (sectors written) of a block device's `stat` file.
fn sectors_written(stat: &str) -> Result<u64> {
    let field = stat
        .split_whitespace()
        .nth(6)
        .with_context(|| format!("a block stat line with fewer than 7 fields: {stat:?}"))?;
    match field.parse() {
        Ok(n) => Ok(n),
        Err(e) => bail!("field 7 of {stat:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_written_is_field_seven() {
        let stat = "    1139        0    52370      240      412      210    20968     1022        0      880     1262        0        0        0        0       32       12\n";
        assert_eq!(sectors_written(stat).unwrap(), 20968);
        assert!(sectors_written("1 2 3\n").is_err());
        assert!(sectors_written("1 2 3 4 5 6 x 8\n").is_err());
    }

    #[test]
    fn a_session_tree_holds_its_change() {
        let dir = ramstick_testkit::TempDir::new("xtask-sessions");
        let changed = session_tree(&dir, 7, 4096).unwrap();
        let big = fs::read(dir.join("root/session-007.bin")).unwrap();
        assert_eq!(big.len(), 4096);
        let small = fs::read_to_string(dir.join("etc/bench-small")).unwrap();
        assert_eq!(small, "written by session 7\n");
        assert_eq!(changed, 4096 + small.len());
        // The next session replaces the tree: only its own files.
        session_tree(&dir, 8, 10).unwrap();
        assert!(!dir.join("root/session-007.bin").exists());
    }
}

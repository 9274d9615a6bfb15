//! Booting a sample of the replayed disks: each must boot to the shell and
//! show the state the host check predicted — the same chain of layers in
//! `boot.json`, none failing, and the same files.

use super::check::State;
use super::log::Log;
use super::points::{Kind, Point, Rng};
use super::record::{boot_default_to_shell, Recording, CMD};
use super::replay::{Cursor, Region};
use super::{guest_view, parse_view, Shown};
use crate::deps;
use anyhow::{ensure, Context, Result};
use ramstick_common::bootinfo::{BootInfo, BOOT_JSON};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

/// How the boots went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Booted {
    pub passed: usize,
    pub failed: usize,
    pub secs: f64,
}

/// Boots up to `n` of the points found consistent, spread over the states
/// and kinds (see [`pick`]).
pub fn sample(
    rec: &Recording,
    log: &Log,
    shown: &[Shown],
    states: &[State],
    n: usize,
    seed: u64,
    dir: &Path,
) -> Result<Booted> {
    let started = Instant::now();
    let mut picked = pick(shown, n, seed);
    picked.sort_by_key(|(p, _)| p.base);
    let mut booted = Booted::default();
    if picked.is_empty() {
        return Ok(booted);
    }
    deps::remove_if_exists(dir)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let len = fs::metadata(&rec.base)
        .with_context(|| format!("stat {}", rec.base.display()))?
        .len();
    let whole = Region { offset: 0, len };
    let mut cursor = Cursor::new(&rec.base, &dir.join("cursor.img"), whole)?;
    let disk = dir.join("disk.img");
    for (i, (point, state)) in picked.iter().enumerate() {
        let console = dir.join(format!("boot-{i}.log"));
        println!(
            "crashtest: booting {} (expecting the state of mark {:?}; console {})",
            point.describe(log),
            rec.marks[*state].name,
            console.display()
        );
        let result = cursor
            .materialize(log, point, &disk)
            .and_then(|()| boot_and_compare(&disk, dir, &console, &states[*state]));
        match result {
            Ok(()) => booted.passed += 1,
            Err(e) => {
                booted.failed += 1;
                println!("crashtest: BOOT FAILED to show the predicted state: {e:#}");
            }
        }
    }
    deps::remove_if_exists(&disk)?;
    deps::remove_if_exists(&dir.join("cursor.img"))?;
    booted.secs = started.elapsed().as_secs_f64();
    Ok(booted)
}

/// Up to `n` points, one per (state, kind) in turn, drawn at random within
/// each group: first the points between flushes that show the new state
/// of their window (the commit landed, some writes around it did not),
/// then the other points between flushes, then the flushes.
fn pick(shown: &[Shown], n: usize, seed: u64) -> Vec<(Point, usize)> {
    let mut rng = Rng::new(seed ^ 0xb007);
    let mut groups: BTreeMap<(bool, bool, usize, Kind), Vec<&Shown>> = BTreeMap::new();
    for s in shown {
        let flush = s.point.kind == Kind::Flush;
        groups
            .entry((flush, s.state == s.window, s.state, s.point.kind))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    while out.len() < n && groups.values().any(|g| !g.is_empty()) {
        for group in groups.values_mut().filter(|g| !g.is_empty()) {
            if out.len() == n {
                break;
            }
            let i = rng.below(group.len());
            let s = group.swap_remove(i);
            out.push((s.point.clone(), s.state));
        }
    }
    out
}

/// Boots `disk` and compares what it shows with `want`.
fn boot_and_compare(disk: &Path, dir: &Path, console: &Path, want: &State) -> Result<()> {
    let mut vm = boot_default_to_shell(disk, dir, console, None)?;
    let view = parse_view(&vm.run(&guest_view(), CMD)?)?;
    let json = vm.run(&format!("cat {BOOT_JSON}"), CMD)?;
    vm.kill();
    let info = BootInfo::from_json(&json).with_context(|| format!("parsing boot.json: {json}"))?;
    let used: Vec<&str> = info.layers.iter().map(|l| l.name.as_str()).collect();
    let predicted: Vec<&str> = want.chain.iter().map(|l| l.name.as_str()).collect();
    ensure!(
        info.failures.is_empty(),
        "layers failed at boot: {:?}",
        info.failures
    );
    ensure!(
        used == predicted,
        "boot used {used:?}, the host predicted {predicted:?}"
    );
    ensure!(
        view == want.view,
        "the booted system shows {view:?}, the host predicted {:?}",
        want.view
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_spread_over_states_and_kinds_between_flushes_first() {
        let s = |kind, base, state, window| Shown {
            point: Point {
                kind,
                base,
                extra: Vec::new(),
            },
            state,
            window,
        };
        let shown = vec![
            s(Kind::Flush, 1, 0, 0),
            s(Kind::Flush, 2, 1, 0),
            s(Kind::Torn, 3, 1, 1),
            s(Kind::Torn, 4, 1, 1),
            s(Kind::Dropped, 5, 2, 1),
            s(Kind::Reordered, 6, 1, 1),
        ];
        let one = pick(&shown, 1, 3);
        assert_eq!(
            (one[0].0.kind, one[0].1),
            (Kind::Dropped, 2),
            "the new state first"
        );
        let three = pick(&shown, 3, 3);
        let mut kinds: Vec<(Kind, usize)> = three.iter().map(|(p, s)| (p.kind, *s)).collect();
        kinds[1..].sort();
        assert_eq!(
            kinds[1..],
            [(Kind::Reordered, 1), (Kind::Torn, 1)],
            "then the rest between flushes, before the flushes"
        );
        assert_eq!(pick(&shown, 10, 3).len(), 6, "all, once each");
    }
}

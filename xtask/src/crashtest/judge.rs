//! Judging replayed states against the marks: where a mark's window
//! starts ([`snap`]), which window a point is in, the state at each mark,
//! and whether a point shows the old or the new state of its window.

use super::check::{self, State};
use super::log::Log;
use super::points::{Kind, Point};
use super::record::Recording;
use super::replay::{self, Cursor, Region};
use crate::deps;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// A point found consistent: the index of the state it showed, and of its
/// window (the old state's).
#[derive(Debug, Clone)]
pub struct Shown {
    pub point: Point,
    pub state: usize,
    pub window: usize,
}

/// What the points of one kind gave.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub replayed: usize,
    pub consistent: usize,
    pub old: usize,
    pub new: usize,
    pub recovered: usize,
}

/// What the points gave.
pub struct Checked {
    pub tally: BTreeMap<Kind, Tally>,
    /// Points not consistent (each was reported, its image kept).
    pub failed: usize,
    pub shown: Vec<Shown>,
}

/// Replays and checks `points` (sorted by base) against the states of
/// their windows; an inconsistent point is reported and its image kept in
/// `dir/failed/`.
pub fn check_points(
    rec: &Recording,
    log: &Log,
    points: &[Point],
    (positions, states): (&[usize], &[State]),
    cursor: &mut Cursor,
    dir: &Path,
) -> Result<Checked> {
    let work = dir.join("points");
    let mut checked = Checked {
        tally: BTreeMap::new(),
        failed: 0,
        shown: Vec::new(),
    };
    for (n, point) in points.iter().enumerate() {
        let w = window(positions, point.base);
        let t = checked.tally.entry(point.kind).or_default();
        t.replayed += 1;
        let verdict = check_point(log, cursor, point, &work).and_then(|(state, notes)| {
            t.recovered += usize::from(notes.recovered);
            which(&state, states, w)
        });
        match verdict {
            Ok(i) => {
                t.consistent += 1;
                if i == w {
                    t.old += 1;
                } else {
                    t.new += 1;
                }
                checked.shown.push(Shown {
                    point: point.clone(),
                    state: i,
                    window: w,
                });
            }
            Err(e) => {
                checked.failed += 1;
                let failed = dir.join("failed");
                let kept = failed.join(format!("point-{n}.img"));
                fs::create_dir_all(&failed)
                    .with_context(|| format!("creating {}", failed.display()))?;
                cursor.materialize(log, point, &kept)?;
                println!(
                    "crashtest: INCONSISTENT {} (between {:?} and {:?}): {e:#}\n  image kept: {}",
                    point.describe(log),
                    rec.marks[w].name,
                    rec.marks.get(w + 1).map_or("", |m| m.name.as_str()),
                    kept.display()
                );
            }
        }
        if (n + 1) % 25 == 0 {
            println!("crashtest: {} of {} points checked", n + 1, points.len());
        }
    }
    Ok(checked)
}

/// A mark's position moved back to just after the last barrier before it:
/// what a write logged after the barrier but before the mark holds is not
/// yet durable there, so it belongs to the next window.
pub fn snap(log: &Log, entries: usize) -> usize {
    if entries >= log.entries.len() {
        return log.entries.len();
    }
    log.entries[..entries]
        .iter()
        .rposition(|e| e.is_barrier())
        .map_or(0, |i| i + 1)
}

/// The window a point of base `base` is in: the index of the last mark at
/// or before it (its state is old; the next mark's is new).
pub fn window(positions: &[usize], base: usize) -> usize {
    positions.iter().rposition(|&p| p <= base).unwrap_or(0)
}

/// The state at each mark, checked: consistent, and showing what the guest
/// showed then; the compaction shortened the chain and kept the view.
pub fn mark_states(
    rec: &Recording,
    log: &Log,
    positions: &[usize],
    cursor: &mut Cursor,
    work: &Path,
) -> Result<Vec<State>> {
    let mut states: Vec<State> = Vec::new();
    for (m, &at) in rec.marks.iter().zip(positions) {
        let (state, _) = check_point(log, cursor, &Point::prefix(at), work)
            .with_context(|| format!("the state at mark {:?} (entry {at})", m.name))?;
        ensure!(
            state.view == m.view,
            "at mark {:?} the saved state shows {:?}, the guest showed {:?}",
            m.name,
            state.view,
            m.view
        );
        let names: Vec<&str> = state.chain.iter().map(|l| l.name.as_str()).collect();
        println!(
            "crashtest: mark {:?} at entry {at}: chain {names:?}",
            m.name
        );
        states.push(state);
    }
    let at = |name: &str| rec.marks.iter().position(|m| m.name == name);
    if let (Some(before), Some(after)) = (at("saved again"), at("compacted")) {
        ensure!(
            states[after].chain.len() < states[before].chain.len(),
            "the compaction did not shorten the chain"
        );
    }
    ensure!(
        states.windows(2).any(|w| w[0] != w[1]),
        "the recording never changed the saved state"
    );
    Ok(states)
}

/// Replays `point` and observes it (a fresh scratch directory each time).
pub fn check_point(
    log: &Log,
    cursor: &mut Cursor,
    point: &Point,
    work: &Path,
) -> Result<(State, check::Notes)> {
    let image = work.join("point.img");
    let scratch = work.join("scratch");
    deps::remove_if_exists(&scratch)?;
    cursor.materialize(log, point, &image)?;
    let seen = check::observe(&image, &scratch);
    deps::remove_if_exists(&scratch)?;
    seen
}

/// Control points, to show that the check can fail: for each window in
/// which the state changed, every write of the window applied but its
/// largest (a layer's data, which a flush made durable before the commit)
/// — a state no power cut can leave. Each must be rejected; returns how many.
pub fn controls(
    log: &Log,
    positions: &[usize],
    states: &[State],
    (part, region): (&Path, Region),
    work: &Path,
) -> Result<usize> {
    let mut cursor = Cursor::new(part, &work.join("cursor.img"), region)?;
    let mut n = 0;
    for w in 0..states.len().saturating_sub(1) {
        if states[w] == states[w + 1] {
            continue;
        }
        let mut extra = replay::writes_between(log, positions[w], positions[w + 1]);
        let Some(largest) = (0..extra.len()).max_by_key(|&i| extra[i].to - extra[i].from) else {
            continue;
        };
        extra.remove(largest);
        let point = Point {
            kind: Kind::Flush,
            base: positions[w],
            extra,
        };
        let verdict = check_point(log, &mut cursor, &point, work)
            .and_then(|(state, _)| which(&state, states, w));
        ensure!(
            verdict.is_err(),
            "the check accepts a state no power cut can leave ({}): it cannot see a lost layer",
            point.describe(log)
        );
        n += 1;
    }
    Ok(n)
}

/// Which of the states of window `w` (its mark's, the next one's) `state`
/// is; an error when neither.
pub fn which(state: &State, states: &[State], w: usize) -> Result<usize> {
    let names = |s: &State| s.chain.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    for i in [w, w + 1] {
        if states.get(i) == Some(state) {
            return Ok(i);
        }
    }
    bail!(
        "neither the old nor the new state: chain {:?} showing {:?}; old {:?} showing {:?}, new {:?}",
        names(state),
        state.view,
        names(&states[w]),
        states[w].view,
        states.get(w + 1).map(names)
    )
}

#[cfg(test)]
mod tests {
    use super::super::log::craft::Crafted;
    use super::*;

    #[test]
    fn marks_snap_back_to_their_last_barrier() {
        let dir = ramstick_testkit::TempDir::new("snap");
        let mut c = Crafted::new();
        c.write(0, &[1; 512])
            .flush()
            .write(512, &[2; 512])
            .write(0, &[3; 512])
            .flush();
        let path = dir.join("w.log");
        fs::write(&path, &c.bytes).unwrap();
        let log = Log::open(&path).unwrap();
        assert_eq!(snap(&log, 0), 0);
        assert_eq!(snap(&log, 1), 0);
        assert_eq!(snap(&log, 2), 2);
        assert_eq!(
            snap(&log, 4),
            2,
            "a write after the flush is not durable yet"
        );
        assert_eq!(snap(&log, 5), 5);
        let positions = [0, 2, 5];
        assert_eq!(window(&positions, 0), 0);
        assert_eq!(window(&positions, 2), 1);
        assert_eq!(window(&positions, 4), 1);
        assert_eq!(window(&positions, 5), 2);
    }

    #[test]
    fn a_state_is_the_old_or_the_new_one_whole() {
        let layer = |n: &str| check::Layer {
            name: n.into(),
            size: 1,
            meta_digest: "m".into(),
            digest: "d".into(),
        };
        let s = |chain: &[&str], v: &str| State {
            chain: chain.iter().map(|n| layer(n)).collect(),
            view: vec![Some(v.into())],
        };
        let states = [s(&["1"], "a"), s(&["1", "2"], "b"), s(&["3"], "b")];
        assert_eq!(which(&s(&["1"], "a"), &states, 0).unwrap(), 0);
        assert_eq!(which(&s(&["1", "2"], "b"), &states, 0).unwrap(), 1);
        assert!(
            which(&s(&["3"], "b"), &states, 0).is_err(),
            "two windows on"
        );
        assert!(which(&s(&["1", "2"], "a"), &states, 0).is_err(), "a mix");
        assert!(which(&s(&[], "a"), &states, 0).is_err(), "clean");
        assert_eq!(
            which(&s(&["3"], "b"), &states, 2).unwrap(),
            2,
            "the last window"
        );
    }
}

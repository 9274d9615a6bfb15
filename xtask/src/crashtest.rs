//! `cargo xtask crashtest`: proves that a power cut at any moment of a save
//! or a compaction leaves a stick that boots the old or the new state, by
//! replaying the writes a real guest sent to its stick.
//!
//! 1. [`record`]: a busybox stick with a saved state boots in QEMU with its
//!    disk behind QEMU's `blklogwrites` filter, which logs every write and
//!    flush (dm-log-writes' format, [`log`]); the session saves twice and
//!    compacts, and after each step the host notes how far the log is and
//!    what the guest shows (a mark).
//! 2. [`replay`]: the data partition is rebuilt at every flush of the log,
//!    and at sampled points between flushes with writes dropped, reordered
//!    or torn at 4 KiB.
//! 3. [`check`]: for each, on the host, what boot would do — the ext4 is
//!    consistent after the journal replay, the layers boot picks are whole
//!    and read back, and they show what the guest showed at the mark
//!    before the point or at the mark after it: the old or the new state.
//! 4. [`boot`]: a sample of the replayed disks boots in QEMU and shows the
//!    state the host predicted.
//!
//! Everything is kept in `target/crashtest/`: the recording (reused with
//! `--reuse`), the images of points found inconsistent, the consoles.

mod boot;
mod check;
mod log;
mod record;
mod replay;

use crate::{deps, qemu, target_dir};
use anyhow::{bail, ensure, Context, Result};
use check::State;
use log::Log;
use record::{Mark, Recording};
use replay::{Cursor, Kind, Point, Region, Rng, Segment};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// `cargo xtask crashtest`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Args {
    /// The reduced run of `cargo xtask test`: the points of the saves and
    /// the compaction only, fewer samples, one boot.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the sampled points (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Draws of each sampled kind between two flushes (default: 32; --quick 1).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Replayed disks to boot in QEMU (default: 8; --quick 1).
    #[arg(long)]
    pub boots: Option<usize>,
    /// Replay the last recording again instead of recording a new one.
    #[arg(long)]
    pub reuse: bool,
}

/// The files whose content tells the states apart (see [`record`]): the
/// first layer's two files, the second layer's file, and the session's.
pub const PROBES: &[&str] = &["/root/a", "/root/big", "/root/b", "/root/c", "/root/d"];

/// The marks whose windows the reduced run replays (the saves and the
/// compaction: from the mark after the boot to the mark after compacting).
const QUICK_FROM: &str = "booted";
const QUICK_TO: &str = "compacted";
/// The most points the reduced run checks (a sample of its windows').
const QUICK_POINTS: usize = 40;

/// The guest command printing the md5 of each of [`PROBES`] or `absent`.
pub fn guest_view() -> String {
    format!(
        "for f in {}; do if [ -e $f ]; then md5sum $f; else echo absent $f; fi; done",
        PROBES.join(" ")
    )
}

/// The output of [`guest_view`], as [`check::State::view`] holds it.
pub fn parse_view(text: &str) -> Result<Vec<Option<String>>> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(lines.len() == PROBES.len(), "unexpected view {text:?}");
    lines
        .iter()
        .zip(PROBES)
        .map(
            |(line, probe)| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["absent", p] if p == *probe => Ok(None),
                [sum, p] if p == *probe && sum.len() == 32 => Ok(Some(sum.to_string())),
                _ => bail!("unexpected line {line:?} for {probe}"),
            },
        )
        .collect()
}

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
struct Tally {
    replayed: usize,
    consistent: usize,
    old: usize,
    new: usize,
    recovered: usize,
}

pub fn run(a: &Args) -> Result<()> {
    if !deps::is_root() {
        bail!("crashtest needs root: it loop-mounts every replayed filesystem");
    }
    qemu::ensure_tools()?;
    deps::ensure(&[
        ("e2fsck", "e2fsprogs"),
        ("dumpe2fs", "e2fsprogs"),
        ("unshare", "util-linux"),
        ("mount", "mount"),
        ("sfdisk", "fdisk"),
        ("md5sum", "coreutils"),
    ])?;
    let started = Instant::now();
    let dir = target_dir().join("crashtest");
    let rec_dir = dir.join("record");
    let rec = if a.reuse {
        Recording::load(&rec_dir)?
    } else {
        record::record(&rec_dir)?
    };
    let recorded = started.elapsed().as_secs_f64();
    let log = Log::open(&rec.log)?;
    let seed = a.seed.unwrap_or_else(clock_seed);
    let samples = a.samples.unwrap_or(if a.quick { 1 } else { 32 });
    let boots = a.boots.unwrap_or(if a.quick { 1 } else { 8 });
    println!(
        "crashtest: {} log entries of {}-byte sectors ({} counted by the superblock), {} \
         flushes, {} discards; seed {seed}, {samples} samples per kind between flushes",
        log.entries.len(),
        log.sector_size,
        log.counted,
        log.entries.iter().filter(|e| e.is_barrier()).count(),
        log.entries.iter().filter(|e| e.is_discard()).count()
    );
    let outside = replay::outside(&log, 0, log.entries.len(), rec.region);
    println!("crashtest: {outside} bytes were written outside the data partition (ignored)");

    let work = dir.join("points");
    deps::remove_if_exists(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let positions: Vec<usize> = rec.marks.iter().map(|m| snap(&log, m.entries)).collect();
    let part = work.join("base-part.img");
    replay::extract(&rec.base, rec.region, &part)?;
    let mut marks_cursor = Cursor::new(&part, &work.join("cursor.img"), rec.region)?;
    let states = mark_states(&rec, &log, &positions, &mut marks_cursor, &work)?;
    drop(marks_cursor);
    let mut cursor = Cursor::new(&part, &work.join("cursor.img"), rec.region)?;
    let points = select(a.quick, &rec.marks, &positions, &log, samples, seed);

    let mut tally: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut shown = Vec::new();
    for (n, point) in points.iter().enumerate() {
        let w = window(&positions, point.base);
        let t = tally.entry(point.kind).or_default();
        t.replayed += 1;
        let verdict = check_point(&log, &mut cursor, point, &work).and_then(|(state, notes)| {
            t.recovered += usize::from(notes.recovered);
            which(&state, &states, w)
        });
        match verdict {
            Ok(i) => {
                t.consistent += 1;
                if i == w {
                    t.old += 1;
                } else {
                    t.new += 1;
                }
                shown.push(Shown {
                    point: point.clone(),
                    state: i,
                    window: w,
                });
            }
            Err(e) => {
                let kept = dir.join("failed").join(format!("point-{n}.img"));
                let _ = fs::create_dir_all(dir.join("failed"));
                let _ = cursor.materialize(&log, point, &kept);
                println!(
                    "crashtest: INCONSISTENT {} (between {:?} and {:?}): {e:#}\n  image kept: {}",
                    point.describe(&log),
                    rec.marks[w].name,
                    rec.marks.get(w + 1).map_or("", |m| m.name.as_str()),
                    kept.display()
                );
                failures.push(point.describe(&log));
            }
        }
        if (n + 1) % 25 == 0 {
            println!("crashtest: {} of {} points checked", n + 1, points.len());
        }
    }
    drop(cursor);
    let controls = controls(&log, &positions, &states, (&part, rec.region), &work)?;
    let replay_secs = started.elapsed().as_secs_f64() - recorded;
    let booted = boot::sample(&rec, &log, &shown, &states, boots, seed, &dir.join("boots"))?;
    report(
        &tally,
        &booted,
        started.elapsed().as_secs_f64(),
        recorded,
        replay_secs,
        seed,
    );
    println!(
        "crashtest: {controls} deliberately broken states (a save's largest write lost across \
         its flushes), all rejected by the check"
    );
    deps::remove_if_exists(&work)?;
    if !failures.is_empty() || booted.failed > 0 {
        bail!(
            "{} replayed points are not the old or the new state, {} booted samples failed",
            failures.len(),
            booted.failed
        );
    }
    Ok(())
}

/// Nanoseconds of the clock, as a seed.
fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// A mark's position moved back to just after the last barrier before it:
/// what a write logged after the barrier but before the mark holds is not
/// yet durable there, so it belongs to the next window.
fn snap(log: &Log, entries: usize) -> usize {
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
fn window(positions: &[usize], base: usize) -> usize {
    positions.iter().rposition(|&p| p <= base).unwrap_or(0)
}

/// The state at each mark, checked: consistent, and showing what the guest
/// showed then; the compaction shortened the chain and kept the view.
fn mark_states(
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
fn check_point(
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
fn controls(
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
fn which(state: &State, states: &[State], w: usize) -> Result<usize> {
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

/// The points to replay: every flush and the samples of every segment (in
/// the full run), or a sample of those of the saves and the compaction.
fn select(
    quick: bool,
    marks: &[Mark],
    positions: &[usize],
    log: &Log,
    samples: usize,
    seed: u64,
) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    let how = replay::Sampling {
        samples,
        exhaustive: !quick,
    };
    let span = |name: &str| {
        marks
            .iter()
            .position(|m| m.name == name)
            .map(|i| positions[i])
    };
    let (from, to) = match (quick, span(QUICK_FROM), span(QUICK_TO)) {
        (true, Some(from), Some(to)) => (from, to),
        _ => (0, log.entries.len()),
    };
    let segments: Vec<Segment> = replay::segments(log)
        .into_iter()
        .filter(|s| s.start >= from && s.start < to)
        .collect();
    let mut points: Vec<Point> = segments
        .iter()
        .flat_map(|s| replay::segment_points(log, s, how, &mut rng))
        .collect();
    if quick && points.len() > QUICK_POINTS {
        rng.shuffle(&mut points);
        points.truncate(QUICK_POINTS);
    }
    points.sort_by_key(|p| p.base);
    points
}

/// Prints the counts (and the README's table rows).
fn report(
    tally: &BTreeMap<Kind, Tally>,
    booted: &boot::Booted,
    total: f64,
    recorded: f64,
    replayed: f64,
    seed: u64,
) {
    println!("\n| kind | replayed | consistent | old state | new state | journal replayed |");
    println!("|---|---|---|---|---|---|");
    let mut all = Tally::default();
    for kind in Kind::ALL {
        let t = tally.get(&kind).copied().unwrap_or_default();
        println!(
            "| {kind} | {} | {} | {} | {} | {} |",
            t.replayed, t.consistent, t.old, t.new, t.recovered
        );
        all.replayed += t.replayed;
        all.consistent += t.consistent;
        all.old += t.old;
        all.new += t.new;
        all.recovered += t.recovered;
    }
    println!(
        "| all | {} | {} | {} | {} | {} |",
        all.replayed, all.consistent, all.old, all.new, all.recovered
    );
    println!(
        "\ncrashtest: {} of {} replayed points consistent; {} of {} booted samples showed the \
         predicted state; seed {seed}; {total:.0} s (recording {recorded:.0} s, host checks \
         {replayed:.0} s, boots {:.0} s)",
        all.consistent,
        all.replayed,
        booted.passed,
        booted.passed + booted.failed,
        booted.secs
    );
}

/// A fresh directory for a unit test.
#[cfg(test)]
pub fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-crashtest-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::log::craft::Crafted;
    use super::*;

    #[test]
    fn views_parse_from_the_guest_output() {
        let text = "absent /root/a\n0c1b5dd1c1e69a9b9b9ac3a7bb1bd61b  /root/big\nabsent /root/b\n\
                    absent /root/c\nabsent /root/d\n";
        let v = parse_view(text).unwrap();
        assert_eq!(v[0], None);
        assert_eq!(v[1].as_deref(), Some("0c1b5dd1c1e69a9b9b9ac3a7bb1bd61b"));
        assert!(parse_view("absent /root/a\n").is_err());
        assert!(parse_view(&text.replace("/root/big", "/root/x")).is_err());
    }

    #[test]
    fn marks_snap_back_to_their_last_barrier() {
        let dir = test_dir("snap");
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

//! `cargo xtask crashtest`: proves that a power cut at any moment of a save
//! or a compaction leaves a stick that boots the old or the new state, by
//! replaying the writes a real guest sent to its stick.
//!
//! 1. [`record`]: a busybox stick with a saved state boots in QEMU with its
//!    disk behind QEMU's `blklogwrites` filter, which logs every write and
//!    flush (dm-log-writes' format, [`log`]); the session saves twice and
//!    compacts, and after each step the host notes how far the log is and
//!    what the guest shows (a mark).
//! 2. [`points`], [`replay`]: the data partition is rebuilt at every flush
//!    of the log, and at points between flushes with writes dropped,
//!    reordered or torn at 4 KiB.
//! 3. [`check`], [`judge`]: for each, on the host, what boot would do — the
//!    ext4 is consistent after the journal replay, the layers boot picks
//!    are whole and read back, and they show what the guest showed at the
//!    mark before the point or at the mark after it: the old or the new
//!    state. Controls (states no power cut can leave) must be rejected.
//! 4. [`boot`]: a sample of the replayed disks boots in QEMU and shows the
//!    state the host predicted.
//!
//! Everything is kept in `target/crashtest/`: the recording (reused with
//! `--reuse`), the images of points found inconsistent, the consoles.

mod boot;
mod check;
mod judge;
mod log;
mod points;
mod record;
mod replay;

use crate::{deps, qemu, target_dir};
use anyhow::{bail, ensure, Context, Result};
use judge::{check_points, controls, mark_states, snap, Shown, Tally};
use log::Log;
use points::{Kind, Point, Rng, Segment};
use record::{Mark, Recording};
use replay::Cursor;
use std::collections::BTreeMap;
use std::fs;
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

    let checked = check_points(
        &rec,
        &log,
        &points,
        (&positions, &states),
        &mut cursor,
        &dir,
    )?;
    drop(cursor);
    let controls = controls(&log, &positions, &states, (&part, rec.region), &work)?;
    let replay_secs = started.elapsed().as_secs_f64() - recorded;
    let booted = boot::sample(
        &rec,
        &log,
        &checked.shown,
        &states,
        boots,
        seed,
        &dir.join("boots"),
    )?;
    report(
        &checked.tally,
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
    if checked.failed > 0 || booted.failed > 0 {
        bail!(
            "{} replayed points are not the old or the new state, {} booted samples failed",
            checked.failed,
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
    let how = points::Sampling {
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
    let segments: Vec<Segment> = points::segments(log)
        .into_iter()
        .filter(|s| s.start >= from && s.start < to)
        .collect();
    let mut points: Vec<Point> = segments
        .iter()
        .flat_map(|s| points::segment_points(log, s, how, &mut rng))
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

#[cfg(test)]
mod tests {
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
}

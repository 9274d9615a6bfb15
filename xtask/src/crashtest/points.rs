//! The states a power cut could leave the device in, as points to replay
//! over a write log.
//!
//! The log is cut into segments at its barriers (flushes; a FUA write
//! counts as one). A write before a barrier is on stable storage once the
//! barrier completed; the writes since the last barrier may or may not be,
//! in any combination and order, and a write may be torn between the
//! device's atomic units. So the states a cut can leave are:
//!
//! - [`Kind::Flush`]: everything up to a barrier, in order;
//! - [`Kind::Dropped`]: that, plus the next segment's first writes in
//!   order, the writes after them lost;
//! - [`Kind::Reordered`]: that, plus some of the next segment's writes
//!   landed out of the order they were issued in: later ones without
//!   earlier ones, and where two overlap, the older data last;
//! - [`Kind::Torn`]: that, plus the segment's first writes in order, and
//!   only some of the [`TEAR`]-sized pieces of the next one.
//!
//! Every barrier and every in-order prefix is a point; the out-of-order
//! subsets of a small segment can all be (see [`Sampling`]); the rest is
//! drawn with a seeded generator, so a run can be repeated.

use super::log::{Entry, Log};
use std::fmt;

/// The unit a write may be torn at: an ext4 block and a flash page.
pub const TEAR: u64 = 4096;
/// Attempts at drawing a sample that is not an in-order state.
const DRAWS: usize = 16;

/// How a replayed state was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Flush,
    Dropped,
    Reordered,
    Torn,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Flush, Kind::Dropped, Kind::Reordered, Kind::Torn];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Flush => "flush",
            Kind::Dropped => "dropped",
            Kind::Reordered => "reordered",
            Kind::Torn => "torn",
        })
    }
}

/// Bytes `from..to` of the data of log entry `entry` (a write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub entry: usize,
    pub from: u64,
    pub to: u64,
}

impl Piece {
    pub fn whole(log: &Log, entry: usize) -> Piece {
        Piece {
            entry,
            from: 0,
            to: log.entries[entry].len,
        }
    }
}

/// The log entries between two barriers: `start..end`, where `end` is the
/// barrier's index (or the log's length after the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
    /// The writes among them, in log order.
    pub writes: Vec<usize>,
}

/// The segments of `log`, in order (the last one may have no barrier).
pub fn segments(log: &Log) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut writes = Vec::new();
    for (i, e) in log.entries.iter().enumerate() {
        if e.is_write() {
            writes.push(i);
        }
        if e.is_barrier() {
            out.push(Segment {
                start,
                end: i,
                writes: std::mem::take(&mut writes),
            });
            start = i + 1;
        }
    }
    if start < log.entries.len() {
        out.push(Segment {
            start,
            end: log.entries.len(),
            writes,
        });
    }
    out
}

/// One state a power cut could leave: the first `base` entries of the log
/// applied in order, then `extra`, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub kind: Kind,
    pub base: usize,
    pub extra: Vec<Piece>,
}

impl Point {
    /// Everything up to (not including) entry `base`, in order.
    pub fn prefix(base: usize) -> Point {
        Point {
            kind: Kind::Flush,
            base,
            extra: Vec::new(),
        }
    }

    /// A short description: the kind, the entries applied in order, then
    /// the extra entries (`n[from..to]` for a piece of one).
    pub fn describe(&self, log: &Log) -> String {
        let extra: Vec<String> = self
            .extra
            .iter()
            .map(|p| {
                if *p == Piece::whole(log, p.entry) {
                    p.entry.to_string()
                } else {
                    format!("{}[{}..{}]", p.entry, p.from, p.to)
                }
            })
            .collect();
        if extra.is_empty() {
            format!("{} 0..{}", self.kind, self.base)
        } else {
            format!("{} 0..{} + {}", self.kind, self.base, extra.join(","))
        }
    }
}

/// A small seeded generator (xorshift64*): the same seed samples the same points.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// A mask of `n` bits with at least one set and one clear (`n` ≥ 2).
    fn mixed_mask(&mut self, n: usize) -> Vec<bool> {
        loop {
            let mask: Vec<bool> = (0..n).map(|_| self.next() & 1 == 1).collect();
            if mask.iter().any(|&b| b) && mask.iter().any(|&b| !b) {
                return mask;
            }
        }
    }
}

/// The [`TEAR`]-aligned pieces of write `entry` (aligned on the device).
pub fn tear(log: &Log, entry: usize) -> Vec<Piece> {
    let e: &Entry = &log.entries[entry];
    let mut pieces = Vec::new();
    let mut from = 0;
    while from < e.len {
        let next_boundary = (e.offset + from) / TEAR * TEAR + TEAR;
        let to = (next_boundary - e.offset).min(e.len);
        pieces.push(Piece { entry, from, to });
        from = to;
    }
    pieces
}

/// How many points of each kind a segment gives.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Random draws of each kind that is sampled.
    pub samples: usize,
    /// Every subset of a segment's writes (up to [`EXHAUSTIVE`] writes)
    /// rather than draws.
    pub exhaustive: bool,
}

/// The most writes between two flushes whose subsets are all replayed.
pub const EXHAUSTIVE: usize = 10;

/// True when two writes touch a common byte.
fn overlap(log: &Log, a: usize, b: usize) -> bool {
    let (a, b) = (&log.entries[a], &log.entries[b]);
    a.offset < b.offset + b.len && b.offset < a.offset + a.len
}

/// The points of one segment (writes `w`): its barrier (when it has one);
/// every in-order prefix (the writes after it lost: [`Kind::Dropped`]);
/// writes landed out of order ([`Kind::Reordered`]: a subset that is not a
/// prefix, every one when `exhaustive` and small enough, else drawn, and
/// drawn orders that put overlapping writes the other way round); and
/// drawn tears ([`Kind::Torn`]).
pub fn segment_points(log: &Log, seg: &Segment, how: Sampling, rng: &mut Rng) -> Vec<Point> {
    let mut out = Vec::new();
    if seg.end < log.entries.len() {
        out.push(Point::prefix(seg.end + 1));
    }
    let w = &seg.writes;
    let whole = |entries: &[usize]| entries.iter().map(|&e| Piece::whole(log, e)).collect();
    let push = |out: &mut Vec<Point>, kind: Kind, extra: Vec<Piece>| {
        let p = Point {
            kind,
            base: seg.start,
            extra,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for j in 1..w.len() {
        push(&mut out, Kind::Dropped, whole(&w[..j]));
    }
    // A later write landed while an earlier one did not: a non-empty
    // subset (in issue order) that is not a prefix.
    let out_of_order = |entries: &[usize]| !entries.is_empty() && entries != &w[..entries.len()];
    let small = how.exhaustive && w.len() <= EXHAUSTIVE;
    if small {
        for bits in 1u32..(1 << w.len()) {
            let entries: Vec<usize> = (0..w.len())
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| w[i])
                .collect();
            if out_of_order(&entries) {
                push(&mut out, Kind::Reordered, whole(&entries));
            }
        }
    }
    if w.len() >= 2 {
        for _ in 0..how.samples {
            for _ in 0..DRAWS {
                let mut order: Vec<usize> =
                    w.iter().copied().filter(|_| rng.next() & 1 == 1).collect();
                rng.shuffle(&mut order);
                // The order of the writes matters only where they overlap.
                let inverted = order
                    .iter()
                    .enumerate()
                    .any(|(i, &a)| order[i + 1..].iter().any(|&b| b < a && overlap(log, a, b)));
                if !inverted {
                    if small {
                        continue; // every such subset is a point already
                    }
                    order.sort_unstable();
                    if !out_of_order(&order) {
                        continue;
                    }
                }
                push(&mut out, Kind::Reordered, whole(&order));
                break;
            }
        }
    }
    let tearable: Vec<usize> = (0..w.len())
        .filter(|&i| tear(log, w[i]).len() >= 2)
        .collect();
    if !tearable.is_empty() {
        for _ in 0..how.samples {
            let i = tearable[rng.below(tearable.len())];
            let pieces = tear(log, w[i]);
            let mask = rng.mixed_mask(pieces.len());
            let mut extra: Vec<Piece> = whole(&w[..i]);
            extra.extend(
                pieces
                    .into_iter()
                    .zip(mask)
                    .filter(|(_, k)| *k)
                    .map(|(p, _)| p),
            );
            push(&mut out, Kind::Torn, extra);
        }
    }
    out
}

/// A small log over a small device, for the tests of the replay.
#[cfg(test)]
pub mod fixture {
    use super::super::log::craft::Crafted;
    use super::Log;
    use ramstick_testkit::TempDir;

    /// A device of 8 blocks of 4 KiB, each block filled with its number,
    /// and a log: A (blocks 1-2 ← 0xa1), B (block 5 ← 0xb1), flush,
    /// C (blocks 0-3 ← 0xc1), D (block 2 ← 0xd1), E (block 6 ← 0xe1), flush,
    /// F (block 7 ← 0xf1), without a flush.
    pub fn fixture(name: &str) -> (TempDir, Log) {
        let dir = TempDir::new(name);
        let base = dir.join("base.img");
        let bytes: Vec<u8> = (0..8u8).flat_map(|b| vec![b; 4096]).collect();
        std::fs::write(&base, bytes).unwrap();
        let mut c = Crafted::new();
        c.write(4096, &[0xa1; 8192])
            .write(5 * 4096, &[0xb1; 4096])
            .flush()
            .write(0, &[0xc1; 4 * 4096])
            .write(2 * 4096, &[0xd1; 4096])
            .write(6 * 4096, &[0xe1; 4096])
            .flush()
            .write(7 * 4096, &[0xf1; 4096]);
        let path = dir.join("write.log");
        std::fs::write(&path, &c.bytes).unwrap();
        (dir, Log::open(&path).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::fixture;
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn segments_end_at_barriers() {
        let (_, log) = fixture("segments");
        let s = segments(&log);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].start, s[0].end, s[0].writes.clone()),
            (0, 2, vec![0, 1])
        );
        assert_eq!(
            (s[1].start, s[1].end, s[1].writes.clone()),
            (3, 6, vec![3, 4, 5])
        );
        assert_eq!((s[2].start, s[2].end, s[2].writes.clone()), (7, 8, vec![7]));
    }

    /// The entries of each extra piece, and whether all are whole.
    fn entries(log: &Log, p: &Point) -> (Vec<usize>, bool) {
        let whole = p.extra.iter().all(|x| *x == Piece::whole(log, x.entry));
        (p.extra.iter().map(|x| x.entry).collect(), whole)
    }

    #[test]
    fn every_prefix_and_out_of_order_subset_of_a_small_segment() {
        let (_, log) = fixture("exhaustive");
        let segs = segments(&log);
        let how = Sampling {
            samples: 30,
            exhaustive: true,
        };
        let points = segment_points(&log, &segs[1], how, &mut Rng::new(7));
        assert_eq!(points[0], Point::prefix(7), "the barrier first");
        let of = |kind| -> Vec<Vec<usize>> {
            points
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| {
                    assert_eq!(p.base, 3, "{p:?}");
                    entries(&log, p).0
                })
                .collect()
        };
        assert_eq!(of(Kind::Dropped), [vec![3], vec![3, 4]]);
        let reordered = of(Kind::Reordered);
        // Every subset in issue order that is not a prefix: {4} {5} {3,5} {4,5}.
        for subset in [vec![4], vec![5], vec![3, 5], vec![4, 5]] {
            assert!(
                reordered.contains(&subset),
                "{subset:?} missing: {reordered:?}"
            );
        }
        // Beyond those, only orders that put D (4) before C (3), which it overlaps.
        for r in &reordered {
            let sorted = r.windows(2).all(|w| w[0] < w[1]);
            let at = |x| r.iter().position(|&e| e == x);
            let inverted = matches!((at(4), at(3)), (Some(d), Some(c)) if d < c);
            assert!(sorted || inverted, "{r:?}");
        }
        assert!(
            reordered.len() > 4,
            "no overlapping write drawn the other way: {reordered:?}"
        );
        for t in of(Kind::Torn) {
            // Only C (16 KiB) tears, and nothing is before it.
            assert!(
                t.iter().all(|&e| e == 3) && !t.is_empty() && t.len() < 4,
                "{t:?}"
            );
        }
        assert!(points
            .iter()
            .filter(|p| p.kind == Kind::Torn)
            .all(|p| p.extra.iter().all(|x| x.to - x.from == TEAR)));
        // The same seed gives the same points.
        assert_eq!(
            points,
            segment_points(&log, &segs[1], how, &mut Rng::new(7))
        );
    }

    #[test]
    fn sampled_points_are_crash_states_of_their_segment() {
        let (_, log) = fixture("sample");
        let segs = segments(&log);
        let how = Sampling {
            samples: 20,
            exhaustive: false,
        };
        let mut rng = Rng::new(11);
        let points = segment_points(&log, &segs[1], how, &mut rng);
        let kinds: BTreeSet<Kind> = points.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, Kind::ALL.into_iter().collect());
        for p in &points[1..] {
            let (e, whole) = entries(&log, p);
            assert!(e.iter().all(|x| [3, 4, 5].contains(x)), "{p:?}");
            let prefix = e == [3, 4, 5][..e.len().min(3)];
            match p.kind {
                Kind::Dropped => assert!(whole && prefix && e.len() < 3, "{p:?}"),
                Kind::Reordered => assert!(whole && !prefix, "{p:?}"),
                Kind::Torn => assert!(!whole && e.iter().all(|&x| x == 3), "{p:?}"),
                Kind::Flush => panic!("a second barrier point: {p:?}"),
            }
        }
        // One write: nothing to reorder, and 4 KiB cannot tear.
        let last = segment_points(&log, &segs[2], how, &mut rng);
        assert!(last.is_empty(), "{last:?}");
    }
}

//! Rebuilding the device as a power cut could have left it: the points of
//! [`super::points`] written over a base image from the write log.

use super::log::Log;
use super::points::{Piece, Point};
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes copied from the log at a time.
const CHUNK: usize = 1 << 20;

/// The part of the device an image holds: bytes `offset..offset + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

/// Applies `pieces` in order to `image`, which holds `region` of the
/// device (bytes outside it are skipped). Returns the bytes written.
pub fn apply(log: &Log, pieces: &[Piece], region: Region, image: &File) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0;
    for p in pieces {
        let e = &log.entries[p.entry];
        let start = (e.offset + p.from).max(region.offset);
        let end = (e.offset + p.to).min(region.offset + region.len);
        let mut at = start;
        while at < end {
            let n = (end - at).min(CHUNK as u64) as usize;
            log.read_data(e.data + (at - e.offset), &mut buf[..n])?;
            image
                .write_all_at(&buf[..n], at - region.offset)
                .with_context(|| format!("writing a replayed image at {}", at - region.offset))?;
            at += n as u64;
            written += n as u64;
        }
    }
    Ok(written)
}

/// The whole writes among entries `from..to`.
pub fn writes_between(log: &Log, from: usize, to: usize) -> Vec<Piece> {
    (from..to)
        .filter(|&i| log.entries[i].is_write())
        .map(|i| Piece::whole(log, i))
        .collect()
}

/// Bytes the writes among entries `from..to` put outside `region`.
pub fn outside(log: &Log, from: usize, to: usize, region: Region) -> u64 {
    log.entries[from..to]
        .iter()
        .filter(|e| e.is_write())
        .map(|e| {
            let inside = (e.offset + e.len)
                .min(region.offset + region.len)
                .saturating_sub(e.offset.max(region.offset));
            e.len - inside
        })
        .sum()
}

/// An image moved forward through the log in order, from which the points
/// are copied (points sorted by their base cost one pass over the log).
pub struct Cursor {
    path: PathBuf,
    file: File,
    region: Region,
    /// Entries applied so far.
    at: usize,
}

impl Cursor {
    /// A cursor at the start of the log, on a sparse copy of `base`.
    pub fn new(base: &Path, path: &Path, region: Region) -> Result<Cursor> {
        sparse_copy(base, path)?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Cursor {
            path: path.to_path_buf(),
            file,
            region,
            at: 0,
        })
    }

    /// Writes the state of `point` to `out`. Points must come in the
    /// order of their `base`.
    pub fn materialize(&mut self, log: &Log, point: &Point, out: &Path) -> Result<()> {
        anyhow::ensure!(
            point.base >= self.at,
            "points must be replayed in log order ({} after {})",
            point.base,
            self.at
        );
        apply(
            log,
            &writes_between(log, self.at, point.base),
            self.region,
            &self.file,
        )?;
        self.at = point.base;
        sparse_copy(&self.path, out)?;
        let image = OpenOptions::new()
            .write(true)
            .open(out)
            .with_context(|| format!("opening {}", out.display()))?;
        apply(log, &point.extra, self.region, &image)?;
        image
            .sync_data()
            .with_context(|| format!("syncing {}", out.display()))
    }
}

/// Writes `region` of the disk image `disk` to the new file `out` (its
/// all-zero MiBs left as holes): the image a [`Cursor`] over that region starts from.
pub fn extract(disk: &Path, region: Region, out: &Path) -> Result<()> {
    let from = File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let to = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    to.set_len(region.len)
        .with_context(|| format!("sizing {}", out.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < region.len {
        let n = (region.len - at).min(CHUNK as u64) as usize;
        from.read_exact_at(&mut buf[..n], region.offset + at)
            .with_context(|| format!("reading {} at {}", disk.display(), region.offset + at))?;
        if buf[..n].iter().any(|&b| b != 0) {
            to.write_all_at(&buf[..n], at)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        at += n as u64;
    }
    Ok(())
}

/// Copies `from` to `to`, leaving holes for its all-zero blocks.
pub fn sparse_copy(from: &Path, to: &Path) -> Result<()> {
    crate::deps::run(
        crate::deps::cmd("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(from)
            .arg(to),
    )
}

#[cfg(test)]
mod tests {
    use super::super::points::fixture::fixture;
    use super::super::points::{tear, Kind};
    use super::*;

    /// The first byte of each 4 KiB block of `image`.
    fn blocks(image: &Path) -> Vec<u8> {
        std::fs::read(image)
            .unwrap()
            .chunks(4096)
            .map(|c| c[0])
            .collect()
    }

    const WHOLE: Region = Region {
        offset: 0,
        len: 8 * 4096,
    };

    #[test]
    fn flush_points_replay_everything_before_the_barrier_in_order() {
        let (dir, log) = fixture("flush");
        let mut cur = Cursor::new(&dir.join("base.img"), &dir.join("cursor.img"), WHOLE).unwrap();
        let out = dir.join("p.img");
        cur.materialize(&log, &Point::prefix(0), &out).unwrap();
        assert_eq!(blocks(&out), [0, 1, 2, 3, 4, 5, 6, 7]);
        cur.materialize(&log, &Point::prefix(3), &out).unwrap();
        assert_eq!(blocks(&out), [0, 0xa1, 0xa1, 3, 4, 0xb1, 6, 7]);
        // D after C: block 2 holds D's data.
        cur.materialize(&log, &Point::prefix(7), &out).unwrap();
        assert_eq!(blocks(&out), [0xc1, 0xc1, 0xd1, 0xc1, 4, 0xb1, 0xe1, 7]);
        assert!(
            cur.materialize(&log, &Point::prefix(3), &out).is_err(),
            "backwards"
        );
    }

    #[test]
    fn extras_apply_in_their_order_and_torn_pieces_alone() {
        let (dir, log) = fixture("extras");
        let mut cur = Cursor::new(&dir.join("base.img"), &dir.join("cursor.img"), WHOLE).unwrap();
        let out = dir.join("p.img");
        // Reordered: D lands, then C over it (older data last), E lost.
        let p = Point {
            kind: Kind::Reordered,
            base: 3,
            extra: vec![Piece::whole(&log, 4), Piece::whole(&log, 3)],
        };
        cur.materialize(&log, &p, &out).unwrap();
        assert_eq!(blocks(&out), [0xc1, 0xc1, 0xc1, 0xc1, 4, 0xb1, 6, 7]);
        // Torn: only C's second and fourth 4 KiB pieces.
        let pieces = tear(&log, 3);
        assert_eq!(pieces.len(), 4);
        let p = Point {
            kind: Kind::Torn,
            base: 3,
            extra: vec![pieces[1], pieces[3]],
        };
        cur.materialize(&log, &p, &out).unwrap();
        assert_eq!(blocks(&out), [0, 0xc1, 0xa1, 0xc1, 4, 0xb1, 6, 7]);
    }

    #[test]
    fn a_region_holds_only_its_part_of_the_device() {
        let (dir, log) = fixture("region");
        // Blocks 2..6 of the device, as a partition image.
        let part = dir.join("part.img");
        let region = Region {
            offset: 2 * 4096,
            len: 4 * 4096,
        };
        extract(&dir.join("base.img"), region, &part).unwrap();
        assert_eq!(blocks(&part), [2, 3, 4, 5]);
        let mut cur = Cursor::new(&part, &dir.join("cursor.img"), region).unwrap();
        let out = dir.join("p.img");
        cur.materialize(&log, &Point::prefix(7), &out).unwrap();
        assert_eq!(blocks(&out), [0xd1, 0xc1, 4, 0xb1]);
        assert_eq!(outside(&log, 0, 7, region), 4096 + 2 * 4096 + 4096);
    }
}

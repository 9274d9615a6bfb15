//! Codec rows: `saver pack` vs `mksquashfs -comp zstd` at the same level
//! (wall time, image size, peak RSS), and `saver unpack` vs `unsquashfs -d`
//! on the same image (the one mksquashfs made) into a fresh empty directory
//! each run (wall time, peak RSS). Runs alternate between the tools, and
//! each starts after a `sync` so no tool pays for the other's writeback.
//!
//! For the tree the layered saves are measured on, also: `saver pack` at
//! zstd level 3 (a session's layer, written while the user waits) against
//! level 15 (wall time, image size), and the compaction rows (see
//! [`compaction`]) against mksquashfs of the whole tree.

use super::compaction;
use super::measure;
use super::sticks::SESSION_LEVEL;
use super::table::{Row, Series, Unit};
use crate::{deps, image};
use anyhow::{anyhow, ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// zstd level for both packers: the saver's default and mksquashfs' default.
pub const LEVEL: &str = "15";

/// The five codec rows for `tree` (or its error), `runs` runs each; with
/// `layered`, the session-level and compaction rows too.
pub fn rows(
    label: &str,
    tree: Result<PathBuf>,
    saver: Result<&Path, &str>,
    work: &Path,
    runs: usize,
    layered: bool,
) -> Vec<Row> {
    let tree = tree.and_then(|t| {
        let size = image::dir_size(&t)?;
        Ok((t, size))
    });
    let label = match &tree {
        Ok((_, size)) => format!("{label}, {} MiB", size >> 20),
        Err(_) => label.to_string(),
    };
    let mut names = vec![
        format!("pack ({label}): wall time"),
        format!("pack ({label}): image size"),
        format!("pack ({label}): peak RSS"),
        format!("unpack ({label}): wall time"),
        format!("unpack ({label}): peak RSS"),
    ];
    if layered {
        names.extend([
            format!("pack ({label}) at zstd {SESSION_LEVEL} (session layers): wall time (vs zstd {LEVEL})"),
            format!("pack ({label}) at zstd {SESSION_LEVEL} (session layers): image size (vs zstd {LEVEL})"),
        ]);
        names.extend(compaction::names(&label));
    }
    let measured = tree.and_then(|(tree, _)| {
        fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
        let result = measure_all(&tree, saver, work, runs, layered);
        let merged = layered.then(|| compaction::measure(&tree, saver, &work.join("merge"), runs));
        // Best effort: the images and unpacked trees are big; the rows matter more.
        let _ = deps::remove_if_exists(work);
        Ok((result, merged))
    });
    let (([pack_ours, pack_theirs, pack_session], [unpack_ours, unpack_theirs]), merged) =
        match measured {
            Ok(m) => m,
            Err(e) => return names.iter().map(|n| Row::failed(n, &e)).collect(),
        };
    let mk = ("mksquashfs", &pack_theirs);
    let un = ("unsquashfs", &unpack_theirs);
    let mut rows = vec![
        Row::compare(&names[0], Unit::Seconds, 0, &pack_ours, mk),
        Row::compare(&names[1], Unit::Bytes, 2, &pack_ours, mk),
        Row::compare(&names[2], Unit::Bytes, 1, &pack_ours, mk),
        Row::compare(&names[3], Unit::Seconds, 0, &unpack_ours, un),
        Row::compare(&names[4], Unit::Bytes, 1, &unpack_ours, un),
    ];
    if let Some(merged) = merged {
        let strong_label = format!("saver --level {LEVEL}");
        let strong = (strong_label.as_str(), &pack_ours);
        rows.push(Row::compare(
            &names[5],
            Unit::Seconds,
            0,
            &pack_session,
            strong,
        ));
        rows.push(Row::compare(
            &names[6],
            Unit::Bytes,
            2,
            &pack_session,
            strong,
        ));
        rows.extend(compaction::rows(&names[7..], &merged, &pack_theirs));
    }
    rows
}

/// ([saver pack, mksquashfs, saver pack at the session level (with
/// `layered`)], [saver unpack, unsquashfs]); pack figures are [wall, peak
/// RSS, image size], unpack ones [wall, peak RSS].
fn measure_all(
    tree: &Path,
    saver: Result<&Path, &str>,
    work: &Path,
    runs: usize,
    layered: bool,
) -> ([Series<3>; 3], [Series<2>; 2]) {
    let ours_img = work.join("saver.squashfs");
    let theirs_img = work.join("mksquashfs.squashfs");
    let errlog = work.join("stderr.log");
    let mut pack: [Series<3>; 3] = Default::default();
    let mut unpack: [Series<2>; 2] = Default::default();
    let saver_cmd = |args: &[&Path]| -> Result<Command> {
        let saver = saver.map_err(|e| anyhow!("no saver binary: {e}"))?;
        let mut cmd = Command::new(saver);
        cmd.args(args);
        Ok(cmd)
    };
    let packed = |cmd: &mut Command, image: &Path| -> Result<[f64; 3]> {
        deps::remove_if_exists(image)?;
        let run = measure::run(cmd, &errlog)?;
        let size = fs::metadata(image)
            .with_context(|| format!("{} made no image", deps::describe(cmd)))?
            .len();
        Ok([run.wall, run.max_rss, size as f64])
    };
    let saver_pack = |level: &str| -> Result<[f64; 3]> {
        let mut cmd = saver_cmd(&[Path::new("pack"), tree, &ours_img])?;
        cmd.args(["--compressor", "zstd", "--level", level, "--quiet"]);
        packed(&mut cmd, &ours_img)
    };
    for _ in 0..runs {
        pack[0].record(|| saver_pack(LEVEL));
        pack[1].record(|| {
            let mut cmd = deps::cmd("mksquashfs");
            cmd.arg(tree).arg(&theirs_img);
            cmd.args(["-comp", "zstd", "-Xcompression-level", LEVEL]);
            cmd.args(["-noappend", "-quiet", "-no-progress"]);
            packed(&mut cmd, &theirs_img)
        });
        if layered {
            pack[2].record(|| saver_pack(SESSION_LEVEL));
        }
    }
    // Both unpackers read the same image: the standard one.
    let out = work.join("unpacked");
    let have_image = !pack[1].failed() && theirs_img.is_file();
    let unpacked = |cmd: &mut Command| -> Result<[f64; 2]> {
        ensure!(have_image, "mksquashfs made no image to unpack");
        deps::remove_if_exists(&out)?;
        fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let run = measure::run(cmd, &errlog)?;
        Ok([run.wall, run.max_rss])
    };
    for _ in 0..runs {
        unpack[0].record(|| {
            let mut cmd = saver_cmd(&[Path::new("unpack"), &theirs_img, &out])?;
            cmd.arg("--quiet");
            unpacked(&mut cmd)
        });
        unpack[1].record(|| {
            let mut cmd = deps::cmd("unsquashfs");
            cmd.args(["-f", "-no-progress", "-quiet", "-d"]);
            cmd.arg(&out).arg(&theirs_img);
            unpacked(&mut cmd)
        });
    }
    (pack, unpack)
}

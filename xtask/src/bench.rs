//! `cargo xtask bench`: one side-by-side table of speed, size and writes
//! against the standard tools, measured in one run on this machine (absolute
//! times drift on shared machines; the ratios are the result). Printed and
//! written to `target/bench/report.md`. Every row is the median of the runs
//! with their min–max; a row whose tool failed shows the error and makes the
//! bench exit non-zero (CI runs `--quick` to keep the harness working; it
//! never asserts a speed).
//!
//! Sections: [`codec`] (pack/unpack vs squashfs-tools), [`size`] (initramfs
//! vs initramfs-tools), [`boot`] (QEMU boots vs initramfs-tools on ext4),
//! [`writes`] (sectors written and time per `saver save`).

mod boot;
mod codec;
mod measure;
mod size;
mod table;
mod tree;
mod writes;

use crate::{build, deps, kernel, qemu, target_dir};
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::time::Instant;
use table::Row;

/// `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    /// A reduced run (under 2 minutes) that checks every row produces a number.
    #[arg(long)]
    pub quick: bool,
}

/// Runs per measurement.
const RUNS: usize = 3;

const TOOLS: &[(&str, &str)] = &[
    ("mksquashfs", "squashfs-tools"),
    ("unsquashfs", "squashfs-tools"),
    ("gzip", "gzip"),
    ("zstd", "zstd"),
    ("xz", "xz-utils"),
    ("chroot", "coreutils"),
];

pub fn run(a: &Args) -> Result<()> {
    let started = Instant::now();
    let load_before = load_average();
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    deps::ensure(TOOLS)?;
    qemu::ensure_tools()?;
    println!("bench: building init and saver");
    let bins = build::static_binaries().map_err(|e| format!("{e:#}"));
    let bins = bins.as_ref().map_err(String::as_str);
    // A private copy: other work may rebuild target/…/saver during the bench.
    let saver_copy = dir.join("saver");
    let saver = bins.map_err(str::to_string).and_then(|b| {
        fs::copy(&b.saver, &saver_copy)
            .map(|_| saver_copy.clone())
            .map_err(|e| format!("copying {}: {e}", b.saver.display()))
    });
    let saver = saver.as_deref().map_err(String::as_str);
    let mut rows = Vec::new();

    let (name, shape) = match a.quick {
        true => ("quick", tree::QUICK),
        false => ("full", tree::FULL),
    };
    let t = Section::start("codec");
    let codec_work = dir.join("codec");
    let generated = tree::ensure(&dir.join("trees").join(name), shape);
    let mut codec_rows = codec::rows("generated tree", generated, saver, &codec_work, RUNS);
    // --quick uses the Debian rootfs only if it is already built (for the size row).
    let debian = boot::debian_rootfs(!a.quick);
    if !a.quick {
        let tree = debian
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| anyhow!("{e:#}"));
        codec_rows.extend(codec::rows("Debian rootfs", tree, saver, &codec_work, RUNS));
    }
    t.done(codec_rows, &mut rows);

    let t = Section::start("initramfs sizes");
    let debian_kernel = debian
        .as_ref()
        .ok()
        .and_then(|r| kernel::from_rootfs(r).map(|k| (r, k)));
    let kernel = match &debian_kernel {
        Some((_, k)) => Ok(k.clone()),
        None => kernel::fetch_debian().map_err(|e| format!("{e:#}")),
    };
    let reference = match (&debian_kernel, &debian) {
        (Some((root, k)), _) => Some(boot::debian_initrd(root, k).map_err(|e| format!("{e:#}"))),
        (None, _) if a.quick => None,
        (None, Err(e)) => Some(Err(format!("{e:#}"))),
        (None, Ok(root)) => Some(Err(format!("{} ships no kernel", root.display()))),
    };
    let kernel = kernel.as_ref().map_err(String::as_str);
    t.done(
        size::rows(bins, kernel, reference, &dir.join("size")),
        &mut rows,
    );

    let t = Section::start("boots");
    t.done(
        boot::rows(a.quick, bins, &dir.join("boot"), RUNS),
        &mut rows,
    );
    let t = Section::start("writes per save");
    t.done(
        writes::rows(a.quick, bins, &dir.join("writes"), RUNS),
        &mut rows,
    );

    let command = if a.quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let intro =
        vec![
            format!("Made by `{command}` on {}.", now()),
            format!(
            "Host: {} cores, Linux {}, load average {load_before} at the start and {} at the end \
             (other work shares the cores: compare the ratios, not the absolute times); QEMU under \
             TCG; {RUNS} runs per figure unless n says otherwise; the whole bench took {:.0} s.",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            deps::output(deps::cmd("uname").arg("-r")).unwrap_or_default().trim(),
            load_average(),
            started.elapsed().as_secs_f64()
        ),
        ];
    let report = table::render(&intro, &rows);
    println!("\n{report}");
    let out = dir.join("report.md");
    fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("bench: report written to {}", out.display());
    let failed = rows.iter().filter(|r| r.failed_cells()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} rows have no figure (see ERROR in the table)",
            rows.len()
        );
    }
    Ok(())
}

/// A bench section's progress lines, with its duration.
struct Section {
    name: &'static str,
    started: Instant,
}

impl Section {
    fn start(name: &'static str) -> Section {
        println!("bench: {name}");
        Section {
            name,
            started: Instant::now(),
        }
    }

    /// Print the section's rows (so a long run shows its figures as it goes) and keep them.
    fn done(self, new: Vec<Row>, all: &mut Vec<Row>) {
        let secs = self.started.elapsed().as_secs_f64();
        println!("bench: {} done in {secs:.0} s", self.name);
        print!("{}", table::render(&[], &new));
        all.extend(new);
    }
}

/// The 1-minute load average, from /proc/loadavg ("?" if unreadable).
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The current UTC time, e.g. `2026-11-24 04:30 UTC`.
fn now() -> String {
    deps::output(deps::cmd("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "an unknown date".into())
}

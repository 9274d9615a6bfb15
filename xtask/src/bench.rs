//! `cargo xtask bench`: one side-by-side table of speed, size and writes
//! against the standard tools, measured in one run on this machine (absolute
//! times drift on shared machines; the ratios are the result). Printed and
//! written to `target/bench/report.md`. Every row is the median of the runs
//! with their min–max; a row whose tool failed shows the error and makes the
//! bench exit non-zero (CI runs `--quick` to keep the harness working; it
//! never asserts a speed).
//!
//! Sections: [`codec`] (pack/unpack vs squashfs-tools, the session's zstd
//! level, [`compaction`]'s merge), [`size`] (initramfs vs initramfs-tools),
//! [`boot`] (QEMU boots vs initramfs-tools on ext4, with a saved state in
//! both layer modes, an idle session's save), [`chainboot`] (what boot pays
//! per saved layer), [`writes`] (bytes written and time per `saver save`,
//! also on a big saved state: [`bigstate`]), [`sessions`] (many sessions
//! with compaction, simulated on the host).

mod bigstate;
mod boot;
mod chainboot;
mod codec;
mod compaction;
mod guest;
mod measure;
mod sessions;
mod size;
mod sticks;
mod table;
mod tree;
mod writes;

use crate::build::Binaries;
use crate::{build, deps, kernel, qemu, target_dir};
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::path::Path;
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

/// What the sections that build sticks share.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// `--quick`.
    pub quick: bool,
    /// init and saver (or why they are missing).
    pub bins: Result<&'a Binaries, &'a str>,
    /// The bench's own copy of the saver, for the host.
    pub saver: Result<&'a Path, &'a str>,
    /// Runs per figure.
    pub runs: usize,
}

impl<'a> Inputs<'a> {
    pub fn bins(&self) -> Result<&'a Binaries> {
        self.bins.map_err(|e| anyhow!("no init and saver: {e}"))
    }

    pub fn saver(&self) -> Result<&'a Path> {
        self.saver.map_err(|e| anyhow!("no saver binary: {e}"))
    }
}

const TOOLS: &[(&str, &str)] = &[
    ("mksquashfs", "squashfs-tools"),
    ("unsquashfs", "squashfs-tools"),
    ("gzip", "gzip"),
    ("zstd", "zstd"),
    ("xz", "xz-utils"),
    ("chroot", "coreutils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("losetup", "mount"),
    ("mount", "mount"),
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
    let trees = dir.join("trees");
    let generated = tree::ensure(&trees.join(name), shape);
    let tree_copy = || {
        generated
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| anyhow!("{e:#}"))
    };
    let mut codec_rows = codec::rows(
        "generated tree",
        tree_copy(),
        saver,
        &codec_work,
        RUNS,
        true,
    );
    // --quick uses the Debian rootfs only if it is already built (for the size row).
    let debian = boot::debian_rootfs(!a.quick);
    if !a.quick {
        let tree = debian
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| anyhow!("{e:#}"));
        codec_rows.extend(codec::rows(
            "Debian rootfs",
            tree,
            saver,
            &codec_work,
            RUNS,
            false,
        ));
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

    let inputs = Inputs {
        quick: a.quick,
        bins,
        saver,
        runs: RUNS,
    };
    let t = Section::start("many sessions with compaction (host)");
    t.done(sessions::rows(inputs, &dir.join("sessions")), &mut rows);
    let t = Section::start("boots");
    t.done(
        boot::rows(inputs, tree_copy(), &dir.join("boot")),
        &mut rows,
    );
    let t = Section::start("boot per saved layer");
    t.done(
        chainboot::rows(inputs, &trees, &dir.join("chain")),
        &mut rows,
    );
    let t = Section::start("writes per save");
    t.done(
        writes::rows(inputs, tree_copy(), &dir.join("writes")),
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

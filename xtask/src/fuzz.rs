//! `cargo xtask fuzz [--target unpack|cmdline]`: fuzzes the squashfs reader
//! (issue 4) or the boot command line (issue 13).
//!
//! Installs what it needs (the nightly toolchain, cargo-fuzz), writes a
//! seed corpus into `target/fuzz-corpus/<target>`, then runs that target of
//! `fuzz/` for a bounded time. `unpack`'s seeds are mksquashfs images (zstd,
//! gzip, and gzip with uncompressed metadata; each with a file in a
//! fragment, a multi-block file, a directory, a symlink, a hardlink and an
//! xattr); `cmdline`'s are the golden command lines of
//! `tests/golden/cmdline/`. Any crash (for `cmdline` also an inconsistent
//! plan), leak of a write outside the sandbox, timeout or memory blow-up
//! fails the command.

use crate::deps::{self, find_command};
use crate::{target_dir, workspace_root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// What to fuzz: `unpack` (the squashfs reader) or `cmdline` (the
    /// command line parser, the boot plan and its text).
    #[arg(long, value_enum, default_value_t = Target::Unpack)]
    pub target: Target,
}

/// The fuzz targets of `fuzz/`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Unpack,
    Cmdline,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Unpack => "unpack",
            Target::Cmdline => "cmdline",
        }
    }

    /// Largest input the fuzzer makes: the kernel's command line is at
    /// most 2048 bytes on x86 (one more byte picks the RAM size).
    fn max_len(self) -> u32 {
        match self {
            Target::Unpack => MAX_LEN,
            Target::Cmdline => 2049,
        }
    }
}

/// Seconds one input may take before it counts as a hang.
const TIMEOUT_SECS: u32 = 30;
/// Memory one run may use before it counts as a blow-up.
const RSS_LIMIT_MB: u32 = 2048;
/// Largest input the fuzzer makes (seeds are smaller).
const MAX_LEN: u32 = 65536;

pub fn run(a: &Args) -> Result<()> {
    let rustup = find_command("rustup").context("rustup is needed for the nightly toolchain")?;
    ensure_nightly(&rustup)?;
    ensure_cargo_fuzz()?;
    let target = a.target.name();
    let corpus = match a.target {
        Target::Unpack => {
            deps::ensure(&[("mksquashfs", "squashfs-tools")])?;
            seed_corpus()?
        }
        Target::Cmdline => cmdline_corpus()?,
    };
    println!("fuzzing the {target} target for {} s", a.seconds);
    let mut cmd = Command::new(&rustup);
    cmd.args(["run", "nightly", "cargo", "fuzz", "run", target]);
    if a.target == Target::Cmdline {
        // The parser and the plan are safe Rust without unsafe blocks or C:
        // AddressSanitizer finds nothing there and costs half the speed.
        cmd.args(["--sanitizer", "none"]);
    }
    cmd.arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={}", a.seconds),
            &format!("-timeout={TIMEOUT_SECS}"),
            &format!("-rss_limit_mb={RSS_LIMIT_MB}"),
            &format!("-max_len={}", a.target.max_len()),
        ])
        .current_dir(workspace_root());
    // The outer cargo's toolchain choice must not leak into the nightly build.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    deps::run(&mut cmd)
        .with_context(|| format!("the fuzzer found a failure (see fuzz/artifacts/{target}/)"))
}

/// The golden command lines as seeds (each after a RAM-size byte); returns
/// the corpus directory.
fn cmdline_corpus() -> Result<PathBuf> {
    let corpus = target_dir().join("fuzz-corpus/cmdline");
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let golden = workspace_root().join("tests/golden/cmdline");
    let entries =
        std::fs::read_dir(&golden).with_context(|| format!("cannot list {}", golden.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", golden.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "cmdline") {
            continue;
        }
        let line =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        let seed = corpus.join(format!("seed-{name}"));
        std::fs::write(&seed, [&[1u8][..], &line].concat())
            .with_context(|| format!("cannot write {}", seed.display()))?;
    }
    if std::fs::read_dir(&corpus)?.count() == 0 {
        bail!("no seed command lines in {}", golden.display());
    }
    Ok(corpus)
}

fn ensure_nightly(rustup: &Path) -> Result<()> {
    let list = deps::output(Command::new(rustup).args(["toolchain", "list"]))?;
    if list.lines().any(|l| l.starts_with("nightly")) {
        return Ok(());
    }
    println!("installing the nightly toolchain (cargo-fuzz needs it)");
    deps::run(Command::new(rustup).args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))
}

fn ensure_cargo_fuzz() -> Result<()> {
    let cargo = find_command("cargo").context("cargo not found in PATH")?;
    let installed = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("installing cargo-fuzz");
    deps::run(Command::new(&cargo).args(["install", "cargo-fuzz", "--locked"]))
}

/// Writes the seed images; returns the corpus directory.
fn seed_corpus() -> Result<PathBuf> {
    let corpus = target_dir().join("fuzz-corpus/unpack");
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let tree = target_dir().join("fuzz-corpus/tree");
    deps::remove_if_exists(&tree)?;
    std::fs::create_dir_all(tree.join("dir")).context("cannot create the seed tree")?;
    let w = |rel: &str, data: &[u8]| {
        std::fs::write(tree.join(rel), data).with_context(|| format!("cannot write seed {rel}"))
    };
    w("small", b"a small file kept in a fragment\n")?;
    w("dir/blocks", &b"0123456789abcdef".repeat(700))?;
    w("dir/zeros", &[0u8; 8192])?;
    std::os::unix::fs::symlink("../small", tree.join("dir/link"))
        .context("cannot create the seed symlink")?;
    std::fs::hard_link(tree.join("small"), tree.join("dir/hardlink"))
        .context("cannot create the seed hardlink")?;
    let xattr = Command::new("setfattr")
        .args(["-n", "user.seed", "-v", "value"])
        .arg(tree.join("small"))
        .status();
    if !xattr.is_ok_and(|s| s.success()) {
        println!("note: no user xattr in the seeds (setfattr failed)");
    }
    let variants: [(&str, &[&str]); 3] = [
        ("zstd", &["-comp", "zstd"]),
        ("gzip", &["-comp", "gzip"]),
        (
            "gzip-plain-metadata",
            &["-comp", "gzip", "-noI", "-noD", "-noF", "-noX"],
        ),
    ];
    for (name, args) in variants {
        let image = corpus.join(format!("seed-{name}.sqfs"));
        deps::run(
            Command::new("mksquashfs")
                .arg(&tree)
                .arg(&image)
                .args([
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                    "-nopad",
                    "-b",
                    "4096",
                ])
                .args(args),
        )?;
    }
    if std::fs::read_dir(&corpus)?.count() == 0 {
        bail!("no seed images in {}", corpus.display());
    }
    Ok(corpus)
}

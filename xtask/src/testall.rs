//! `cargo xtask test`: everything CI runs, in order, stopping at the first
//! failure: system packages, rustfmt, clippy, the unit and integration tests
//! (as root with every skip a failure: a root run that skipped a privileged
//! test proves nothing),
//! 30 s each of fuzzing the squashfs reader and the command line, then the
//! QEMU end-to-end suite, the reduced crash-consistency replay (`crashtest
//! --quick`, as root) and `bench --quick` (which checks only that every
//! bench row produces a figure).

use crate::{bench, crashtest, deps, e2e, fuzz, workspace_root};
use anyhow::Result;
use std::process::Command;
use std::time::Instant;

/// `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Skip the QEMU end-to-end scenarios.
    #[arg(long)]
    pub no_e2e: bool,
}

/// Commands the build and the e2e suite run, with the Debian package providing each.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("grub-mkstandalone", "grub-efi-amd64-bin"),
    ("mcopy", "mtools"),
    ("mksquashfs", "squashfs-tools"),
    ("mkfs.vfat", "dosfstools"),
    ("mkfs.ext4", "e2fsprogs"),
    ("sfdisk", "fdisk"),
    ("depmod", "kmod"),
    ("cpio", "cpio"),
    ("zstd", "zstd"),
    ("getfattr", "attr"),
];

/// Files (not commands) the build needs, with their Debian package.
const FILES: &[(&str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf"),
    ("/usr/lib/grub/x86_64-efi/normal.mod", "grub-efi-amd64-bin"),
    ("/bin/busybox", "busybox-static"),
];

pub fn run(a: &Args) -> Result<()> {
    let all = Instant::now();
    step("system packages", || {
        deps::ensure(TOOLS)?;
        // What the tests run, so that none is skipped for a missing tool.
        deps::ensure(ramstick_testkit::TOOLS)?;
        deps::ensure_files(FILES)?;
        // loopdev-3 (in init) generates its bindings with bindgen → libclang;
        // zstd-sys (the saver's codec) compiles C for musl → musl-gcc.
        deps::ensure_packages(&[
            "libclang-dev",
            "musl-tools",
            "libcryptsetup-dev",
            "cryptsetup-bin",
        ])?;
        deps::ensure_musl_target()
    })?;
    step("cargo fmt --all -- --check", || {
        deps::run(&mut cargo(&["fmt", "--all", "--", "--check"]))
    })?;
    step(
        "cargo clippy --workspace --all-targets -- -D warnings",
        || {
            deps::run(&mut cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    step("cargo test --workspace", || {
        let mut test = cargo(&["test", "--workspace"]);
        if deps::is_root() {
            test.env(ramstick_testkit::NO_SKIP, "1");
        }
        deps::run(&mut test)
    })?;
    // About a minute of fuzzing in all, split between the two targets.
    for target in [fuzz::Target::Unpack, fuzz::Target::Cmdline] {
        let name = format!("cargo xtask fuzz --target {target:?} --seconds 30").to_lowercase();
        step(&name, || {
            fuzz::run(&fuzz::Args {
                seconds: 30,
                target,
            })
        })?;
    }
    if a.no_e2e {
        println!("\n==> e2e: skipped (--no-e2e)");
        println!("\n==> crashtest --quick: skipped (--no-e2e)");
        println!("\n==> bench --quick: skipped (--no-e2e)");
    } else {
        step("cargo xtask e2e", || e2e::run(&e2e::Args::default()))?;
        if deps::is_root() {
            step("cargo xtask crashtest --quick", || {
                crashtest::run(&crashtest::Args {
                    quick: true,
                    ..crashtest::Args::default()
                })
            })?;
        } else {
            println!("\n==> crashtest --quick: skipped (needs root: it loop-mounts)");
        }
        step("cargo xtask bench --quick", || {
            bench::run(&bench::Args { quick: true })
        })?;
    }
    println!("\ntest: all passed in {:.1} s", all.elapsed().as_secs_f64());
    Ok(())
}

/// Run one step under a header, with its elapsed time.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n==> {name}");
    let started = Instant::now();
    let result = f();
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            println!("==> {name}: ok ({secs:.1} s)");
            Ok(())
        }
        Err(e) => {
            println!("==> {name}: FAILED ({secs:.1} s)");
            Err(e.context(format!("step `{name}` failed; later steps were not run")))
        }
    }
}

/// Cargo (the one that started us, if known) with `args`, in the workspace root.
fn cargo(args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(workspace_root());
    command
}

//! `cargo xtask …`: builds the initramfs, the images and a bootable disk, and
//! boots it in QEMU. The developer's loop and the test harness.

mod bench;
mod build;
mod busybox;
mod cache;
mod crashtest;
mod deps;
mod e2e;
mod fuzz;
mod hooks;
mod image;
mod initramfs;
mod kernel;
mod owners;
mod qemu;
mod rootfs;
mod stick;
mod testall;
mod update_stick;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "ramstick build, boot and test tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which kernel to build for: the fetched Debian one unless both are given.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KernelArgs {
    /// A kernel image (bzImage) to use instead of Debian's.
    #[arg(long, requires = "modules")]
    pub kernel: Option<PathBuf>,
    /// The `lib/modules/<kver>` directory matching `--kernel`.
    #[arg(long)]
    pub modules: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fetch Debian's current kernel into target/kernel (no root needed).
    Kernel,
    /// Build the static musl `init` and `saver` binaries.
    Build,
    /// Build the zstd newc initramfs.
    Initramfs(initramfs::Args),
    /// Build a root filesystem tree.
    Rootfs(rootfs::Args),
    /// Build a bootable GPT disk image from a rootfs tree.
    Image(image::Args),
    /// Write a disk image to a real USB stick (asks for confirmation).
    WriteStick(stick::Args),
    /// Write a new rootfs (and kernel) into the inactive slot of a stick or
    /// image and let GRUB try it once (needs root).
    UpdateStick(update_stick::Args),
    /// Boot a disk image in QEMU (OVMF, TCG unless --kvm), serial console on stdio.
    Qemu(qemu::Args),
    /// Run the end-to-end QEMU scenarios.
    E2e(e2e::Args),
    /// Build a busybox demo stick and boot it in QEMU.
    Demo(qemu::DemoArgs),
    /// Everything CI runs: fmt, clippy, unit/integration tests, fuzzing, e2e, bench --quick.
    Test(testall::Args),
    /// Fuzz the squashfs reader (cargo-fuzz on nightly) for a bounded time.
    Fuzz(fuzz::Args),
    /// Measure speed, size and writes against the standard tools; prints one table.
    Bench(bench::Args),
    /// Replay every write of a save and a compaction as a power cut could
    /// leave it; check each state on the host, boot a sample (needs root).
    Crashtest(crashtest::Args),
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.cmd {
        Cmd::Kernel => kernel::fetch_debian().map(|k| {
            println!("kernel {} at {}", k.version, k.vmlinuz.display());
        }),
        Cmd::Build => build::static_binaries().map(|b| {
            println!("init:  {}\nsaver: {}", b.init.display(), b.saver.display());
        }),
        Cmd::Initramfs(a) => initramfs::run(&a).map(|_| ()),
        Cmd::Rootfs(a) => rootfs::run(&a),
        Cmd::Image(a) => image::run(&a),
        Cmd::WriteStick(a) => stick::run(&a),
        Cmd::UpdateStick(a) => update_stick::run(&a),
        Cmd::Qemu(a) => qemu::run(&a),
        Cmd::E2e(a) => e2e::run(&a),
        Cmd::Demo(a) => qemu::demo(&a),
        Cmd::Test(a) => testall::run(&a),
        Cmd::Fuzz(a) => fuzz::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Crashtest(a) => crashtest::run(&a),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// `target/` of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

//! `cargo xtask qemu` and `cargo xtask demo`: a machine whose serial
//! console (and, after Ctrl-A, QEMU's monitor) is this terminal, in raw mode;
//! with `--entry`, the GRUB entry is picked by typing into the menu.

use super::ansi::Watcher;
use super::ensure_tools;
use super::machine::{Console, Machine, CPUS};
use super::menu::press_entry;
use crate::{build, image, kernel, rootfs, target_dir};
use anyhow::{bail, Context, Result};
use ramstick_common::bootmenu;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

/// `cargo xtask qemu`: boot a disk image with the serial console on this terminal.
#[derive(clap::Args)]
pub struct Args {
    /// The raw disk image to boot (written to: changes persist).
    pub disk: PathBuf,
    /// Pick the GRUB menu entry at this position, counting from 0 as the
    /// menu lists them (see `ramstick_common::bootmenu`).
    #[arg(long)]
    pub entry: Option<usize>,
    /// Use KVM instead of TCG emulation.
    #[arg(long)]
    pub kvm: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value = "1024")]
    pub mem: u32,
    /// Attach the disk as USB mass storage (qemu-xhci) instead of virtio-blk.
    #[arg(long)]
    pub usb: bool,
}

/// `cargo xtask demo`: build a busybox stick and boot it.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Use KVM instead of TCG emulation.
    #[arg(long)]
    pub kvm: bool,
    /// Attach the disk as USB mass storage instead of virtio-blk.
    #[arg(long)]
    pub usb: bool,
}

/// `cargo xtask qemu`: boot `a.disk` with the serial console on this terminal.
pub fn run(a: &Args) -> Result<()> {
    ensure_tools()?;
    let machine = Machine {
        disk: a.disk.clone(),
        kvm: a.kvm,
        mem: a.mem,
        cpus: CPUS,
        usb: a.usb,
        vars: target_dir().join("qemu").join("OVMF_VARS_4M.fd"),
        unsafe_cache: false,
        extra_disks: Vec::new(),
    };
    let mut cmd = machine.command(Console::Interactive)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!(
        "qemu: booting {} ({}, {}, {} MiB); quit with Ctrl-A X",
        a.disk.display(),
        if a.kvm { "KVM" } else { "TCG" },
        if a.usb { "USB storage" } else { "virtio-blk" },
        a.mem
    );
    let raw = RawTerminal::enter();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
        (Some(i), Some(o)) => (Arc::new(Mutex::new(i)), o),
        _ => bail!("qemu-system-x86_64 started without pipes"),
    };
    let keys = Arc::clone(&stdin);
    let entry = a.entry;
    let printer = thread::spawn(move || print_output(stdout, entry, keys));
    thread::spawn(move || forward_input(stdin));
    let status = child.wait().context("waiting for qemu-system-x86_64")?;
    // The printer ends when QEMU's stdout closes; the input thread stays
    // blocked on our stdin and ends with the process.
    let _ = printer.join();
    drop(raw);
    if !status.success() {
        bail!("qemu-system-x86_64 failed: {status}");
    }
    Ok(())
}

/// Copy QEMU's output to our stdout; with `entry`, pick that GRUB entry when the menu shows.
fn print_output(mut from: ChildStdout, entry: Option<usize>, keys: Arc<Mutex<ChildStdin>>) {
    let mut watcher = entry.map(|n| (n, Watcher::new(&bootmenu::first_title())));
    let mut out = io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = out.write_all(&buf[..n]);
        let _ = out.flush();
        if let Some((entry, w)) = watcher.as_mut() {
            if w.feed(&buf[..n]) {
                let entry = *entry;
                let keys = Arc::clone(&keys);
                thread::spawn(move || {
                    if let Ok(mut stdin) = keys.lock() {
                        let _ = press_entry(&mut *stdin, entry);
                    }
                });
                watcher = None;
            }
        }
    }
}

/// Copy our stdin to QEMU (the serial port and, after Ctrl-A, the monitor).
fn forward_input(to: Arc<Mutex<ChildStdin>>) {
    let mut input = io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(mut stdin) = to.lock() else { return };
        if stdin
            .write_all(&buf[..n])
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return;
        }
    }
}

/// The terminal in raw mode (keys go to the guest as typed) until dropped.
struct RawTerminal {
    saved: String,
}

impl RawTerminal {
    /// `None` when stdin is not a terminal or `stty` fails: then nothing to restore.
    fn enter() -> Option<RawTerminal> {
        if !io::stdin().is_terminal() {
            return None;
        }
        let out = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::inherit())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let saved = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = Command::new("stty")
            .args(["raw", "-echo"])
            .stdin(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = Command::new("stty")
            .arg(&self.saved)
            .stdin(Stdio::inherit())
            .status();
    }
}

/// `cargo xtask demo`: build everything for a busybox stick and boot it.
pub fn demo(a: &DemoArgs) -> Result<()> {
    let rootfs_dir = target_dir().join("rootfs-busybox");
    let disk = target_dir().join("ramstick").join("demo.img");

    println!("demo: building the static init and saver binaries (musl)");
    let bins = build::static_binaries()?;
    println!("demo: fetching Debian's kernel into target/kernel");
    let kernel = kernel::fetch_debian()?;
    println!(
        "demo: building a busybox root filesystem in {}",
        rootfs_dir.display()
    );
    rootfs::build(rootfs::Kind::Busybox, &rootfs_dir)?;
    println!(
        "demo: building the disk image {} (kernel {})",
        disk.display(),
        kernel.version
    );
    image::build(&image::Spec {
        rootfs: rootfs_dir,
        out: disk.clone(),
        size: None,
        kernel,
        bins,
        extra_cmdline: String::new(),
        persist_extra: Vec::new(),
        omit: Vec::new(),
    })?;
    println!("demo: booting it in QEMU");
    run(&Args {
        disk,
        entry: None,
        kvm: a.kvm,
        mem: 1024,
        usb: a.usb,
    })
}

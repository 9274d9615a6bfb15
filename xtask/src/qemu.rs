//! Booting a disk image in QEMU.
//!
//! `cargo xtask qemu DISK` boots it interactively under OVMF with the serial
//! console on this terminal (quit with Ctrl-A X); `cargo xtask demo` builds a
//! busybox stick first. [`Vm`] is the expect-style serial console driver the
//! e2e suite uses: it reads everything the guest prints into a buffer (ANSI
//! escapes and `\r` stripped) and a log file, and waits for literal strings.

use crate::{build, deps, image, kernel, rootfs, target_dir};
use anyhow::{bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// OVMF firmware code (read-only pflash), from Debian's `ovmf` package.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Pristine OVMF variable store; every boot gets a fresh copy in target/.
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Virtual CPUs. Under TCG two vCPUs use both host cores (MTTCG).
const SMP: &str = "2";
/// Title of the first GRUB menu entry: once seen, the menu is on screen.
pub const GRUB_FIRST_ENTRY: &str = "ramstick (default)";
/// How long GRUB may take to show its menu (OVMF under TCG is slow).
const MENU_TIMEOUT: Duration = Duration::from_secs(120);
/// GRUB's menu key for "next entry". Not the Down arrow: its escape sequence
/// can reach GRUB split under load, and a lone ESC leaves the menu for the
/// GRUB command line.
const KEY_DOWN: &str = "v";
/// How many bytes of output an error message shows.
const TAIL_BYTES: usize = 2000;

/// `cargo xtask qemu`: boot a disk image with the serial console on this terminal.
#[derive(clap::Args)]
pub struct Args {
    /// The raw disk image to boot (written to: changes persist).
    pub disk: PathBuf,
    /// Pick this GRUB menu entry (0 = default, 1 = backup, 2 = clean, 3 = tmpfs upper).
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

/// Install QEMU and OVMF if they are missing.
pub fn ensure_tools() -> Result<()> {
    deps::ensure(&[("qemu-system-x86_64", "qemu-system-x86")])?;
    deps::ensure_files(&[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")])
}

/// How to start QEMU.
#[derive(Debug, Clone)]
pub struct Machine {
    pub disk: PathBuf,
    pub kvm: bool,
    /// Guest memory in MiB.
    pub mem: u32,
    pub usb: bool,
    /// Where to put this machine's copy of the OVMF variable store.
    pub vars: PathBuf,
    /// `cache=unsafe` for the disk: faster, fine for throwaway test disks.
    pub unsafe_cache: bool,
    /// More virtio disks, attached after `disk` (e.g. a cloned stick).
    pub extra_disks: Vec<PathBuf>,
}

/// Who talks to the serial port on QEMU's stdio.
#[derive(Clone, Copy)]
enum Console {
    /// A person: the QEMU monitor is multiplexed in (Ctrl-A X quits, Ctrl-A C monitor).
    Interactive,
    /// The test harness: serial only, no monitor.
    Harness,
}

impl Machine {
    /// The QEMU command line; also puts a fresh copy of the OVMF variables in place.
    fn command(&self, console: Console) -> Result<Command> {
        self.command_logged(console, None)
    }

    /// [`Machine::command`], with every write and flush the guest sends to
    /// `disk` logged to `write_log` when given (see [`Vm::spawn_logged`]).
    fn command_logged(&self, console: Console, write_log: Option<&Path>) -> Result<Command> {
        if !self.disk.is_file() {
            bail!("disk image {} does not exist", self.disk.display());
        }
        if let Some(dir) = self.vars.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::copy(OVMF_VARS, &self.vars)
            .with_context(|| format!("copying {OVMF_VARS} to {}", self.vars.display()))?;

        let mut cmd = deps::cmd("qemu-system-x86_64");
        cmd.args(["-machine", "q35"]);
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.args(["-m", &self.mem.to_string(), "-smp", SMP]);
        cmd.args(["-display", "none", "-nic", "none"]);
        cmd.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            qemu_path(Path::new(OVMF_CODE))
        ));
        cmd.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            qemu_path(&self.vars)
        ));
        let cache = if self.unsafe_cache {
            ",cache=unsafe"
        } else {
            ""
        };
        match write_log {
            None => cmd.arg("-drive").arg(format!(
                "if=none,id=stick,format=raw,file={}{cache}",
                qemu_path(&self.disk)
            )),
            Some(log) => cmd.args(write_log_blockdevs(&self.disk, log)),
        };
        if write_log.is_some() {
            if self.usb {
                bail!("a logged disk is attached as virtio-blk only");
            }
            // A write-back cache, so that the guest sends the flushes the log records.
            cmd.args([
                "-device",
                "virtio-blk-pci,drive=stick,bootindex=0,write-cache=on",
            ]);
        } else if self.usb {
            cmd.args(["-device", "qemu-xhci,id=xhci"]);
            cmd.args(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]);
        } else {
            cmd.args(["-device", "virtio-blk-pci,drive=stick,bootindex=0"]);
        }
        for (i, extra) in self.extra_disks.iter().enumerate() {
            cmd.arg("-drive").arg(format!(
                "if=none,id=extra{i},format=raw,file={}{cache}",
                qemu_path(extra)
            ));
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive=extra{i}"));
        }
        match console {
            Console::Interactive => cmd.args([
                "-chardev",
                "stdio,id=con,mux=on,signal=off",
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con,mode=readline",
            ]),
            Console::Harness => cmd.args([
                "-chardev",
                "stdio,id=con,signal=off",
                "-serial",
                "chardev:con",
                "-monitor",
                "none",
            ]),
        };
        Ok(cmd)
    }
}

/// The `-blockdev` options of a disk whose writes go through QEMU's
/// `blklogwrites` filter: every write, write-zeroes, discard and flush the
/// guest sends is appended to `log` in dm-log-writes' format (512-byte log
/// sectors), in the order the requests complete. No `cache.no-flush`
/// (`cache=unsafe`): the guest's flushes must reach the filter to be logged.
fn write_log_blockdevs(disk: &Path, log: &Path) -> [String; 6] {
    [
        "-blockdev".into(),
        format!(
            "driver=file,node-name=stick-file,filename={}",
            qemu_path(disk)
        ),
        "-blockdev".into(),
        format!(
            "driver=file,node-name=stick-log,filename={}",
            qemu_path(log)
        ),
        "-blockdev".into(),
        "driver=blklogwrites,node-name=stick,file=stick-file,log=stick-log,log-sector-size=512"
            .into(),
    ]
}

/// A path as a QEMU option value (commas are doubled).
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// `cargo xtask qemu`: boot `a.disk` with the serial console on this terminal.
pub fn run(a: &Args) -> Result<()> {
    ensure_tools()?;
    let machine = Machine {
        disk: a.disk.clone(),
        kvm: a.kvm,
        mem: a.mem,
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
    let mut watcher = entry.map(|n| (n, Watcher::new(GRUB_FIRST_ENTRY)));
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

/// Choose GRUB menu entry `n` like a person: `n` times Down, then Enter.
fn press_entry(w: &mut impl Write, n: usize) -> io::Result<()> {
    thread::sleep(Duration::from_millis(300));
    for _ in 0..n {
        w.write_all(KEY_DOWN.as_bytes())?;
        w.flush()?;
        thread::sleep(Duration::from_millis(150));
    }
    w.write_all(b"\r")?;
    w.flush()
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

/// Removes terminal escape sequences and control characters (except `\n` and
/// `\t`) from a byte stream fed in arbitrary chunks.
#[derive(Default)]
pub struct AnsiStripper {
    state: Scan,
}

/// Where the stripper is inside an escape sequence.
#[derive(Default, Clone, Copy)]
enum Scan {
    #[default]
    Text,
    /// After ESC.
    Start,
    /// Inside `ESC [ … final`.
    Csi,
    /// Inside `ESC ] …` (ended by BEL or `ESC \`).
    Osc,
    /// ESC inside an OSC.
    OscEsc,
    /// Inside `ESC ( B`-like sequences (intermediate bytes, then one final byte).
    Intermediate,
}

impl AnsiStripper {
    /// Append the printable part of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match (self.state, b) {
                (Scan::Text, 0x1b) => Scan::Start,
                (Scan::Text, b'\n' | b'\t') => {
                    out.push(b);
                    Scan::Text
                }
                (Scan::Text, 0..=0x1f | 0x7f) => Scan::Text,
                (Scan::Text, _) => {
                    out.push(b);
                    Scan::Text
                }
                (Scan::Start, b'[') => Scan::Csi,
                (Scan::Start, b']') => Scan::Osc,
                (Scan::Start, 0x20..=0x2f) => Scan::Intermediate,
                (Scan::Start, _) => Scan::Text,
                (Scan::Csi, 0x40..=0x7e) => Scan::Text,
                (Scan::Csi, _) => Scan::Csi,
                (Scan::Osc, 0x07) => Scan::Text,
                (Scan::Osc, 0x1b) => Scan::OscEsc,
                (Scan::Osc, _) => Scan::Osc,
                (Scan::OscEsc, _) => Scan::Text,
                (Scan::Intermediate, 0x20..=0x2f) => Scan::Intermediate,
                (Scan::Intermediate, _) => Scan::Text,
            };
        }
    }
}

/// Watches a raw output stream for one literal string (escapes stripped).
struct Watcher {
    strip: AnsiStripper,
    needle: Vec<u8>,
    window: Vec<u8>,
}

impl Watcher {
    fn new(needle: &str) -> Watcher {
        Watcher {
            strip: AnsiStripper::default(),
            needle: needle.as_bytes().to_vec(),
            window: Vec::new(),
        }
    }

    /// Feed a chunk; true once the needle has been seen.
    fn feed(&mut self, chunk: &[u8]) -> bool {
        self.strip.feed(chunk, &mut self.window);
        if find(&self.window, &self.needle).is_some() {
            return true;
        }
        let keep = self.needle.len().saturating_sub(1);
        let cut = self.window.len().saturating_sub(keep);
        self.window.drain(..cut);
        false
    }
}

/// Position of the first `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Everything the guest printed so far, shared with the reader thread.
#[derive(Default)]
struct Output {
    text: Vec<u8>,
    eof: bool,
}

type Shared = Arc<(Mutex<Output>, Condvar)>;

/// A running QEMU whose serial console the harness drives.
pub struct Vm {
    child: Child,
    stdin: ChildStdin,
    out: Shared,
    reader: Option<thread::JoinHandle<()>>,
    /// Everything before this offset has been consumed by an `expect`.
    cursor: usize,
    nonce: u64,
    log: PathBuf,
}

impl Vm {
    /// Start `machine`, appending its console (cleaned) and QEMU's stderr to `log`.
    pub fn spawn(machine: &Machine, log: &Path) -> Result<Vm> {
        Vm::spawn_logged(machine, log, None)
    }

    /// [`Vm::spawn`] with the disk's writes logged to `write_log` (created
    /// empty, or emptied) through QEMU's `blklogwrites` filter, when given.
    pub fn spawn_logged(machine: &Machine, log: &Path, write_log: Option<&Path>) -> Result<Vm> {
        if let Some(write_log) = write_log {
            File::create(write_log).with_context(|| format!("creating {}", write_log.display()))?;
        }
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let logfile = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let errlog = logfile
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = machine.command_logged(Console::Harness, write_log)?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(errlog));
        let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("qemu-system-x86_64 started without pipes");
            }
        };
        let out: Shared = Arc::default();
        let shared = Arc::clone(&out);
        let reader = thread::spawn(move || read_console(stdout, logfile, shared));
        Ok(Vm {
            child,
            stdin,
            out,
            reader: Some(reader),
            cursor: 0,
            nonce: 0,
            log: log.to_path_buf(),
        })
    }

    /// The console log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn lock(&self) -> MutexGuard<'_, Output> {
        // A poisoned lock only means the reader panicked; the data is still usable.
        self.out.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last ~2000 bytes of output, for error messages.
    fn tail(&self) -> String {
        let out = self.lock();
        let start = out.text.len().saturating_sub(TAIL_BYTES);
        String::from_utf8_lossy(&out.text[start..]).into_owned()
    }

    /// Wait until one of `needles` appears after the cursor. Returns its index
    /// and the text from the cursor to the end of the match; the cursor moves there.
    fn wait_any(&mut self, needles: &[&str], timeout: Duration) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let longest = needles.iter().map(|n| n.len()).max().unwrap_or(0);
        let (lock, cond) = &*self.out;
        let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
        // Text before `scanned` holds no complete match: search only its end again.
        let mut scanned = self.cursor;
        loop {
            let from = self
                .cursor
                .max(scanned.saturating_sub(longest.saturating_sub(1)));
            let hit = needles
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    find(&out.text[from..], n.as_bytes()).map(|p| (from + p, i, n.len()))
                })
                .min();
            if let Some((start, i, len)) = hit {
                let text = String::from_utf8_lossy(&out.text[self.cursor..start + len]);
                let text = text.into_owned();
                self.cursor = start + len;
                return Ok((i, text));
            }
            scanned = out.text.len();
            let now = Instant::now();
            if out.eof || now >= deadline {
                let why = if out.eof {
                    "QEMU exited".to_string()
                } else {
                    format!("timed out after {:.0?}", timeout)
                };
                drop(out);
                bail!(
                    "{why} waiting for {needles:?}; console log {}; last output:\n{}",
                    self.log.display(),
                    self.tail()
                );
            }
            out = cond
                .wait_timeout(out, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Wait for `pattern`; returns the text from the cursor through the match.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_any(&[pattern], timeout).map(|(_, text)| text)
    }

    /// Wait for whichever of `patterns` comes first; returns its index.
    pub fn expect_any(&mut self, patterns: &[&str], timeout: Duration) -> Result<usize> {
        self.wait_any(patterns, timeout).map(|(i, _)| i)
    }

    /// Wait for `pattern` and return the whole line it is on.
    pub fn expect_line(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let mut text = self.expect(pattern, timeout)?;
        text.push_str(&self.expect("\n", timeout)?);
        Ok(last_line(&text).to_string())
    }

    /// Type `s` on the serial console.
    pub fn send(&mut self, s: &str) -> Result<()> {
        self.stdin
            .write_all(s.as_bytes())
            .and_then(|_| self.stdin.flush())
            .context("writing to the QEMU serial console")
    }

    /// Type `s` and Enter.
    pub fn sendline(&mut self, s: &str) -> Result<()> {
        self.send(&format!("{s}\n"))
    }

    /// Run a shell command; returns its exit status and output (with `\n`
    /// line ends), without the kernel's console lines printed meanwhile.
    pub fn run_status(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String)> {
        let (rc, out) = self.run_marked(cmd, timeout)?;
        Ok((rc, without_kernel_lines(&out)))
    }

    /// Run a command that prints kernel log lines itself (`dmesg`): its
    /// output as the console shows it, kernel lines included. It must succeed.
    pub fn run_kernel_log(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run_marked(cmd, timeout)?;
        if rc != 0 {
            bail!("{cmd:?} exited with status {rc}; output:\n{out}");
        }
        Ok(out)
    }

    /// Run a shell command between markers: its exit status and raw output.
    fn run_marked(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String)> {
        self.nonce += 1;
        let line = marked_command(cmd, self.nonce);
        self.sendline(&line)?;
        self.expect(&begin_marker(self.nonce), timeout)
            .with_context(|| format!("running {cmd:?}"))?;
        let body = self
            .expect(&end_marker(self.nonce), timeout)
            .with_context(|| format!("running {cmd:?}"))?;
        parse_marked_output(&body, self.nonce)
            .with_context(|| format!("reading the exit status of {cmd:?}"))
    }

    /// Run a shell command that must succeed; returns its output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run_status(cmd, timeout)?;
        if rc != 0 {
            bail!("{cmd:?} exited with status {rc}; output:\n{out}");
        }
        Ok(out)
    }

    /// Wait for the GRUB menu and choose entry `n` (0 = first).
    pub fn select_entry(&mut self, n: usize) -> Result<()> {
        self.expect(GRUB_FIRST_ENTRY, MENU_TIMEOUT)
            .context("waiting for the GRUB menu")?;
        press_entry(&mut self.stdin, n).context("typing into the GRUB menu")
    }

    /// Type `poweroff` and wait for QEMU to exit.
    pub fn poweroff(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.sendline("poweroff")?;
        self.wait_exit(timeout)
    }

    /// Wait for QEMU to exit by itself; killed and an error after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for QEMU")? {
                self.join_reader();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "QEMU did not exit within {timeout:.0?}; console log {}; last output:\n{}",
                    self.log.display(),
                    self.tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop QEMU now.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.join_reader();
    }

    /// Wait for the reader to drain QEMU's output (it ends at EOF).
    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reader thread: clean QEMU's output, append it to the log and the shared buffer.
fn read_console(mut from: ChildStdout, mut log: File, out: Shared) {
    let mut strip = AnsiStripper::default();
    let mut buf = [0u8; 4096];
    let mut clean = Vec::new();
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        clean.clear();
        strip.feed(&buf[..n], &mut clean);
        let _ = log.write_all(&clean);
        let (lock, cond) = &*out;
        let mut o = lock.lock().unwrap_or_else(|e| e.into_inner());
        o.text.extend_from_slice(&clean);
        o.eof = n == 0;
        cond.notify_all();
        if n == 0 {
            return;
        }
    }
}

/// The last line of `text`, without its newline.
fn last_line(text: &str) -> &str {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.rsplit('\n').next().unwrap_or(text)
}

// A command runs as `echo "@@B"'7'; CMD; echo "@@E:$?:"'7@@'`. The terminal
// echo of that line never contains the markers as printed (`@@B7`, `:7@@`)
// because quotes split them, so only the real output matches.

/// The line typed for `cmd` with markers numbered `nonce`.
fn marked_command(cmd: &str, nonce: u64) -> String {
    format!("echo \"@@B\"'{nonce}'; {cmd}; echo \"@@E:$?:\"'{nonce}@@'")
}

fn begin_marker(nonce: u64) -> String {
    format!("@@B{nonce}\n")
}

fn end_marker(nonce: u64) -> String {
    format!(":{nonce}@@\n")
}

/// Split the text between the markers into (exit status, command output).
fn parse_marked_output(body: &str, nonce: u64) -> Result<(i32, String)> {
    let Some(body) = body.strip_suffix(&end_marker(nonce)) else {
        bail!("no end marker in {body:?}");
    };
    let Some(at) = body.rfind("@@E:") else {
        bail!("no exit status marker in {body:?}");
    };
    let rc = body[at + 4..]
        .parse()
        .with_context(|| format!("bad exit status {:?}", &body[at + 4..]))?;
    Ok((rc, body[..at].to_string()))
}

/// `text` without the kernel's own console lines (`[   41.030471] …`),
/// which the kernel prints on the serial console whenever it logs, in the
/// middle of a command's output.
fn without_kernel_lines(text: &str) -> String {
    let is_kernel = |line: &str| {
        line.strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .is_some_and(|(stamp, _)| {
                let stamp = stamp.trim_start();
                !stamp.is_empty()
                    && stamp.contains('.')
                    && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            })
    };
    text.split_inclusive('\n')
        .filter(|line| !is_kernel(line))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(chunks: &[&[u8]]) -> String {
        let mut s = AnsiStripper::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn kernel_console_lines_are_not_command_output() {
        let body = "[   41.030471] iTCO_vendor_support: vendor-support=0\nactive\n[12.5] x\n[not a stamp] kept\n";
        assert_eq!(without_kernel_lines(body), "active\n[not a stamp] kept\n");
        assert_eq!(without_kernel_lines("no newline"), "no newline");
    }

    #[test]
    fn strips_csi_osc_charset_and_carriage_returns() {
        let raw = b"\x1b[2J\x1b[1;1Hramstick \x1b[7m(default)\x1b[0m\r\n\x1b]0;title\x07ok\x1b(B!\x1b]2;t\x1b\\.";
        assert_eq!(strip(&[raw]), "ramstick (default)\nok!.");
    }

    #[test]
    fn strips_escapes_split_across_chunks() {
        assert_eq!(
            strip(&[b"ab\x1b", b"[12", b";3", b"Hc\x1b", b"(", b"Bd\r", b"\n"]),
            "abcd\n"
        );
    }

    #[test]
    fn keeps_tabs_and_utf8_drops_other_controls() {
        assert_eq!(strip(&["a\tb\x08\x0e\x00é\x7f".as_bytes()]), "a\tbé");
    }

    #[test]
    fn watcher_finds_needle_across_chunks_and_escapes() {
        let mut w = Watcher::new(GRUB_FIRST_ENTRY);
        assert!(!w.feed(b"\x1b[5;3H ramstick (def"));
        assert!(!w.feed(b"\x1b[0"));
        assert!(w.feed(b"mault) "));
        let mut w = Watcher::new(GRUB_FIRST_ENTRY);
        assert!(!w.feed(b"ramstick (backup)"));
    }

    #[test]
    fn marked_output_round_trip() {
        let typed = marked_command("echo MARK-$((6*7))", 3);
        // What the terminal echoes back must not contain the markers.
        assert!(!typed.contains(&begin_marker(3)[..4]));
        assert!(!typed.contains(end_marker(3).trim_end()));
        let body = "MARK-42\n@@E:0:3@@\n";
        assert_eq!(
            parse_marked_output(body, 3).unwrap(),
            (0, "MARK-42\n".to_string())
        );
        assert_eq!(
            parse_marked_output("no newline@@E:1:3@@\n", 3).unwrap(),
            (1, "no newline".to_string())
        );
        assert!(parse_marked_output("junk:4@@\n", 3).is_err());
    }

    #[test]
    fn last_line_of_text() {
        assert_eq!(last_line("a\nb: BOOT FAILED: x\n"), "b: BOOT FAILED: x");
        assert_eq!(last_line("single"), "single");
    }

    #[test]
    fn a_logged_disk_goes_through_blklogwrites_with_flushes() {
        let args = write_log_blockdevs(Path::new("/d,1.img"), Path::new("/w.log"));
        assert_eq!(
            args[1],
            "driver=file,node-name=stick-file,filename=/d,,1.img"
        );
        assert_eq!(args[3], "driver=file,node-name=stick-log,filename=/w.log");
        assert!(args[5]
            .starts_with("driver=blklogwrites,node-name=stick,file=stick-file,log=stick-log"));
        assert!(args
            .iter()
            .all(|a| !a.contains("no-flush") && !a.contains("unsafe")));
    }

    #[test]
    fn qemu_paths_escape_commas() {
        assert_eq!(qemu_path(Path::new("/a,b/c.img")), "/a,,b/c.img");
    }
}

//! [`Vm`]: a running QEMU whose serial console the harness drives like
//! `expect`. A reader thread appends everything the guest prints (escapes
//! and `\r` stripped) to a buffer and a log file; [`Vm`] waits for literal
//! strings in it, types commands and reads their output and exit status
//! between markers.

use super::ansi::{find, AnsiStripper};
use super::fault::{before_init, crash, Fault, QemuFault, KERNEL_STALL};
use super::machine::{Console, Machine};
use super::menu::{press_entry, MENU_TIMEOUT};
use anyhow::{anyhow, bail, Context, Result};
use ramstick_common::bootmenu::{self, GrubEntry};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How many bytes of output an error message shows.
const TAIL_BYTES: usize = 2000;

/// Everything the guest printed so far, shared with the reader thread.
#[derive(Default)]
struct Output {
    text: Vec<u8>,
    eof: bool,
    /// When the guest last printed something.
    last: Option<Instant>,
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
            let stalled = out
                .last
                .map(|t| now.duration_since(t))
                .filter(|silent| *silent >= KERNEL_STALL && before_init(&out.text));
            if out.eof || stalled.is_some() || now >= deadline {
                let (eof, booting) = (out.eof, before_init(&out.text));
                drop(out);
                return Err(self.failure(needles, timeout, eof, stalled, booting));
            }
            // Woken at least every few seconds to notice a stall.
            let nap = (deadline - now).min(Duration::from_secs(5));
            out = cond
                .wait_timeout(out, nap)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Why `wait_any` gave up: QEMU hung while the kernel booted (`stalled`
    /// for so long), QEMU crashed, exited, or the time ran out.
    fn failure(
        &mut self,
        needles: &[&str],
        timeout: Duration,
        eof: bool,
        stalled: Option<Duration>,
        before_init: bool,
    ) -> anyhow::Error {
        let waiting = format!(
            "waiting for {needles:?}; console log {}",
            self.log.display()
        );
        let fault = match stalled {
            Some(silent) => Some(Fault::Stalled(silent)),
            None if eof => self.exit_status().and_then(crash).map(Fault::Crashed),
            None => None,
        };
        match fault {
            Some(fault) => anyhow::Error::new(QemuFault {
                fault,
                before_init,
                tail: self.tail(),
            })
            .context(waiting),
            None if eof => anyhow!("QEMU exited {waiting}; last output:\n{}", self.tail()),
            None => anyhow!(
                "timed out after {timeout:.0?} {waiting}; last output:\n{}",
                self.tail()
            ),
        }
    }

    /// QEMU's exit status, once it exits (its output has ended: soon).
    fn exit_status(&mut self) -> Option<ExitStatus> {
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
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

    /// Wait for the GRUB menu and choose `entry`.
    pub fn select_entry(&mut self, entry: GrubEntry) -> Result<()> {
        self.expect(&bootmenu::first_title(), MENU_TIMEOUT)
            .context("waiting for the GRUB menu")?;
        press_entry(&mut self.stdin, entry.position()).context("typing into the GRUB menu")
    }

    /// Wait for the GRUB menu and choose the entry at `position` (0 = the
    /// first; for entries no [`GrubEntry`] names, like a profile's).
    pub fn select_position(&mut self, position: usize) -> Result<()> {
        self.expect(&bootmenu::first_title(), MENU_TIMEOUT)
            .context("waiting for the GRUB menu")?;
        press_entry(&mut self.stdin, position).context("typing into the GRUB menu")
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
        if !clean.is_empty() {
            o.last = Some(Instant::now());
        }
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

    #[test]
    fn kernel_console_lines_are_not_command_output() {
        let body = "[   41.030471] iTCO_vendor_support: vendor-support=0\nactive\n[12.5] x\n[not a stamp] kept\n";
        assert_eq!(without_kernel_lines(body), "active\n[not a stamp] kept\n");
        assert_eq!(without_kernel_lines("no newline"), "no newline");
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
}

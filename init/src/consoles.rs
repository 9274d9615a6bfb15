//! The consoles a person may be at. /dev/console is only the last
//! `console=` of the command line: GRUB's entries name `tty0` then `ttyS0`
//! (so a serial line, and the e2e suite, see everything), and on a machine
//! with a serial port /dev/console is that port while its user looks at the
//! screen. A question asked on /dev/console alone (the LUKS passphrase, the
//! emergency shell) would never be seen there: what asks the user runs on
//! every active console, and the first to finish counts.

use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::Pid;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How often the programs are looked at (a person is answering).
const POLL: Duration = Duration::from_millis(50);
/// How long a program that lost gets to end after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The active consoles' device nodes, /dev/console's first (the kernel
/// lists them in `<sys>/class/tty/console/active`, /dev/console's last).
/// `tty0`, whichever virtual terminal is in front, is taken as `tty1`: a
/// fixed terminal a shell can own. Only nodes that exist under `dev_root`.
pub fn active(sys_root: &Path, dev_root: &Path) -> Vec<PathBuf> {
    let text =
        std::fs::read_to_string(sys_root.join("class/tty/console/active")).unwrap_or_default();
    let mut found: Vec<PathBuf> = Vec::new();
    for name in text.split_whitespace().rev() {
        let name = if name == "tty0" { "tty1" } else { name };
        let node = dev_root.join(name);
        if node.exists() && !found.contains(&node) {
            found.push(node);
        }
    }
    found
}

/// Runs a program that talks to the user on every active console at once
/// (on /dev/console when the kernel lists none): `command(first)` makes
/// each, `first` for the one on /dev/console, or on the first console that
/// opens. The first to end counts (see [`first_to_exit`]); its exit status.
pub fn run_everywhere(
    sys_root: &Path,
    dev_root: &Path,
    command: impl Fn(bool) -> Command,
) -> io::Result<i32> {
    let mut consoles = active(sys_root, dev_root);
    if consoles.is_empty() {
        consoles.push(dev_root.join("console"));
    }
    let mut programs = Vec::new();
    for console in consoles {
        match on_console(command(programs.is_empty()), &console) {
            Ok(cmd) => programs.push((console, cmd)),
            Err(e) => log::warn!("cannot use the console {}: {e}", console.display()),
        }
    }
    first_to_exit(programs).map(|(_, code)| code)
}

/// A console opened for reading and writing, never as init's own
/// controlling terminal.
fn open(console: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(console)
}

/// `cmd` with `console` as its stdin, stdout and stderr and, in a session
/// of its own, as its controlling terminal (job control, ^C).
pub fn on_console(mut cmd: Command, console: &Path) -> io::Result<Command> {
    let tty = open(console)?;
    cmd.stdin(tty.try_clone()?)
        .stdout(tty.try_clone()?)
        .stderr(tty);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (setsid, ioctl).
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
    Ok(cmd)
}

/// A console's terminal settings, put back when dropped (a program stopped
/// while it had echo off must not leave the console without it).
struct Settings {
    tty: File,
    saved: Termios,
}

impl Drop for Settings {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.tty, SetArg::TCSANOW, &self.saved);
    }
}

fn settings_of(console: &Path) -> Option<Settings> {
    let tty = open(console).ok()?;
    let saved = termios::tcgetattr(&tty).ok()?;
    Some(Settings { tty, saved })
}

/// Runs `programs` (each a console and its command, see [`on_console`]) at
/// once and waits for the first to end; the others are stopped (SIGTERM,
/// then SIGKILL) and every console's settings put back. Returns the index
/// of the first and its exit status (-1: killed by a signal). A program that
/// cannot start is said and left out; none starting is the error.
pub fn first_to_exit(programs: Vec<(PathBuf, Command)>) -> io::Result<(usize, i32)> {
    let _settings: Vec<Settings> = programs
        .iter()
        .filter_map(|(console, _)| settings_of(console))
        .collect();
    let mut running: Vec<(usize, Child)> = Vec::new();
    let mut last_error = None;
    for (i, (console, mut cmd)) in programs.into_iter().enumerate() {
        match cmd.spawn() {
            Ok(child) => running.push((i, child)),
            Err(e) => {
                log::warn!("cannot start it on {}: {e}", console.display());
                last_error = Some(e);
            }
        }
    }
    if running.is_empty() {
        return Err(last_error.unwrap_or_else(|| io::Error::other("no console to run it on")));
    }
    let (first, status) = loop {
        let mut done = None;
        for (n, (i, child)) in running.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                done = Some((n, *i, status.code().unwrap_or(-1)));
                break;
            }
        }
        if let Some((n, i, code)) = done {
            running.remove(n);
            break (i, code);
        }
        std::thread::sleep(POLL);
    };
    stop(running);
    Ok((first, status))
}

/// SIGTERM to each, then SIGKILL to what is left after [`STOP_GRACE`];
/// every one reaped.
fn stop(mut running: Vec<(usize, Child)>) {
    for (_, child) in &running {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let start = Instant::now();
    while !running.is_empty() && start.elapsed() < STOP_GRACE {
        running.retain_mut(|(_, child)| !matches!(child.try_wait(), Ok(Some(_)) | Err(_)));
        std::thread::sleep(POLL);
    }
    for (_, mut child) in running {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consoles_are_listed_dev_console_first_tty0_as_tty1() {
        let base = ramstick_testkit::TempDir::new("consoles");
        let (sys, dev) = (base.join("sys"), base.join("dev"));
        assert!(active(&sys, &dev).is_empty());
        std::fs::create_dir_all(sys.join("class/tty/console")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        for node in ["tty1", "ttyS0"] {
            std::fs::write(dev.join(node), "").unwrap();
        }
        // GRUB's `console=tty0 console=ttyS0,115200`, plus a console without
        // a node and tty0 named twice.
        std::fs::write(
            sys.join("class/tty/console/active"),
            "tty0 ttyS1 tty0 ttyS0\n",
        )
        .unwrap();
        assert_eq!(active(&sys, &dev), [dev.join("ttyS0"), dev.join("tty1")]);
    }

    #[test]
    fn the_first_to_end_counts_and_the_others_are_stopped() {
        let sh = |script: &str| {
            let mut c = Command::new("/bin/sh");
            // Nothing inherited: a `sleep` left behind would hold the
            // test harness's output open.
            c.args(["-c", script])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            (PathBuf::from("/dev/null"), c)
        };
        let start = Instant::now();
        let (first, code) = first_to_exit(vec![
            sh("exec sleep 30"),
            sh("sleep 0.2; exit 7"),
            sh("trap '' TERM; sleep 30"),
        ])
        .unwrap();
        assert_eq!((first, code), (1, 7));
        // The one that ignores SIGTERM was killed after the grace.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        let missing = (
            PathBuf::from("/dev/null"),
            Command::new("/nonexistent/program"),
        );
        assert!(first_to_exit(vec![missing]).is_err());
    }
}

//! Running a tool as a child process and measuring it: wall time, and peak
//! resident memory from the child's own `rusage` (returned by `wait4`).

use anyhow::{bail, Context, Result};
use nix::libc;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What one run of a tool cost.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Wall time in seconds.
    pub wall: f64,
    /// Peak resident set size in bytes (of the child and the children it waited for).
    pub max_rss: f64,
}

/// Run `cmd` (stdin and stdout to /dev/null, stderr into `errlog`) and
/// measure it. A non-zero exit is an error showing the end of its stderr.
pub fn run(cmd: &mut Command, errlog: &Path) -> Result<Run> {
    let what = short_name(cmd);
    let err = File::create(errlog).with_context(|| format!("creating {}", errlog.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    // Writeback of an earlier run must not be charged to this one.
    nix::unistd::sync();
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
    let pid = libc::pid_t::try_from(child.id()).context("child pid out of range")?;
    let (status, usage) = wait4(pid).with_context(|| format!("waiting for {what}"))?;
    let wall = started.elapsed().as_secs_f64();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let stderr = fs::read(errlog).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let how = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("wait status {status:#x}")
        };
        bail!("{what} failed ({how}): {}", tail.join(" / "));
    }
    Ok(Run {
        wall,
        // ru_maxrss is in KiB on Linux.
        max_rss: usage.ru_maxrss as f64 * 1024.0,
    })
}

/// `program subcommand` for messages: the program's file name and the
/// arguments before the first path or text (the full command line is mostly paths).
fn short_name(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    let words = cmd
        .get_args()
        .map(|a| a.to_string_lossy())
        .take_while(|a| !a.contains(['/', ' ']));
    std::iter::once(program.into())
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reap `pid` and return its wait status and resource usage.
fn wait4(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    // SAFETY: `rusage` is a plain C struct of integers; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: both pointers are to live, writable locals of the types wait4
        // expects; `pid` is our own child, which std's `Child` never waits for
        // here (it is only dropped, which does not reap).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_time_and_memory_of_a_child() {
        let dir = ramstick_testkit::TempDir::new("xtask-measure");
        let log = dir.join("measure.log");
        let small = run(Command::new("sh").args(["-c", "true"]), &log).unwrap();
        // The shell holds a 32 MiB string: its peak RSS must show it.
        let big = run(
            Command::new("sh").args([
                "-c",
                "x=$(head -c 33554432 /dev/zero | tr '\\0' a); test ${#x} = 33554432",
            ]),
            &log,
        )
        .unwrap();
        assert!(big.wall > 0.0 && small.wall > 0.0);
        assert!(
            big.max_rss > small.max_rss + 30.0 * 1048576.0,
            "{small:?} {big:?}"
        );
        let e = run(
            Command::new("sh").args(["-c", "echo broken-tool >&2; exit 3"]),
            &log,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("sh -c failed"), "{e}");
        assert!(e.contains("broken-tool"), "{e}");
        let mut cmd = Command::new("/usr/bin/saver");
        cmd.args(["pack", "/src", "/img", "--quiet"]);
        assert_eq!(short_name(&cmd), "saver pack");
    }
}

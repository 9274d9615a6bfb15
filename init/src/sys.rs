//! The system calls of the boot — mounts, loop devices, sysfs and procfs
//! files, helper programs — behind one trait.
//!
//! [`LinuxSys`] does them for real; the tests' `RecordingSys` (in
//! `sys/recording.rs`, built for unit tests only) records each call as one
//! line of text, so tests assert the exact sequence, flags and options.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(test)]
mod recording;
#[cfg(test)]
pub use recording::RecordingSys;

/// How long a program stopped by [`Sys::run_bounded`]'s timeout may take to
/// end after SIGTERM (e2fsck stops at a safe point) before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// What [`Sys::run_bounded`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded {
    /// The exit status (128 + the signal when a signal ended it); `None`
    /// when the timeout stopped it.
    pub status: Option<i32>,
    /// Its standard output, then its standard error.
    pub output: String,
}

pub trait Sys {
    /// mount(2). `flags` are the MS_* flags; `data` the filesystem options.
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()>;
    /// mount(2) with MS_MOVE.
    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// umount2(2), lazily when `detach`.
    fn umount(&self, target: &Path, detach: bool) -> io::Result<()>;
    /// `mkdir -p`.
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// Attach `image` read-only to a free loop device (autoclear), return the device path.
    fn loop_attach(&self, image: &Path) -> io::Result<PathBuf>;
    /// Write a small value to a (sysfs/procfs) file.
    fn write_file(&self, path: &Path, data: &str) -> io::Result<()>;
    /// Read a small (sysfs/procfs) file.
    fn read_file(&self, path: &Path) -> io::Result<String>;
    /// Write each `(offset, data)` into the existing file or device `path`,
    /// then flush it to the device.
    fn write_blocks(&self, path: &Path, writes: &[(u64, Vec<u8>)]) -> io::Result<()>;
    /// Run a helper program from the initramfs and wait; non-zero exit is an error.
    fn run(&self, argv: &[&str]) -> io::Result<()>;
    /// Start a helper program and leave it running, its output discarded
    /// (nobody waits for it here: after switch_root the real init reaps it).
    fn spawn(&self, argv: &[&str]) -> io::Result<()>;
    /// Run a program that talks to the user, with extra environment `env`,
    /// on every console a person may be at (`consoles::active`): `argv` on
    /// /dev/console, `others` on the other consoles; the first to end counts
    /// and the rest are stopped. Returns its exit status (-1: killed).
    fn run_console(&self, argv: &[&str], others: &[&str], env: &[(&str, &str)]) -> io::Result<i32>;
    /// Run a helper program with its output captured; one still running
    /// after `timeout` gets SIGTERM, then SIGKILL after [`KILL_GRACE`].
    fn run_bounded(&self, argv: &[&str], timeout: Duration) -> io::Result<Bounded>;
    /// Whether a path exists (without following a final symlink).
    fn exists(&self, path: &Path) -> bool;
    /// The names in a directory.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// swapon(2) of a prepared swap area.
    fn swapon(&self, path: &Path) -> io::Result<()>;
    /// Starts the watchdog `device` with a `timeout_secs` timeout and leaves
    /// it running: opens it (never creating it), sets the timeout, writes
    /// one byte and closes it without the magic `V`.
    fn arm_watchdog(&self, device: &Path, timeout_secs: u32) -> io::Result<()>;
}

/// The real thing. Attached loop devices stay open here: they are set to
/// autoclear, which detaches a device as soon as its last opener closes it,
/// so closing before the mount would detach it under the mount. The
/// descriptors close at exec (close-on-exec) and the mounts keep the devices.
#[derive(Default)]
pub struct LinuxSys {
    loops: RefCell<Vec<loopdev::LoopDevice>>,
}

impl LinuxSys {
    pub fn new() -> Self {
        Self::default()
    }
}

fn opt(s: &str) -> Option<&str> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

// WDIOC_SETTIMEOUT of <linux/watchdog.h>: _IOWR('W', 6, int).
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, nix::libc::c_int);

impl Sys for LinuxSys {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()> {
        mount(opt(source), target, opt(fstype), flags, opt(data)).map_err(io::Error::from)
    }

    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(io::Error::from)
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        umount2(target, flags).map_err(io::Error::from)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn loop_attach(&self, image: &Path) -> io::Result<PathBuf> {
        let control = loopdev::LoopControl::open()?;
        let device = control.next_free()?;
        device
            .with()
            .read_only(true)
            .autoclear(true)
            .attach(image)?;
        let path = device
            .path()
            .ok_or_else(|| io::Error::other("loop device has no path"))?;
        self.loops.borrow_mut().push(device);
        Ok(path)
    }

    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write_blocks(&self, path: &Path, writes: &[(u64, Vec<u8>)]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        for (offset, data) in writes {
            file.write_all_at(data, *offset)?;
        }
        file.sync_all()
    }

    fn run(&self, argv: &[&str]) -> io::Result<()> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let out = std::process::Command::new(prog).args(args).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} exited with {}: {}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn spawn(&self, argv: &[&str]) -> io::Result<()> {
        use std::process::Stdio;
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        std::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
    }

    fn run_console(&self, argv: &[&str], others: &[&str], env: &[(&str, &str)]) -> io::Result<i32> {
        if argv.is_empty() || others.is_empty() {
            return Err(io::Error::other("empty command"));
        }
        crate::consoles::run_everywhere(Path::new("/sys"), Path::new("/dev"), |first| {
            let argv = if first { argv } else { others };
            let mut cmd = std::process::Command::new(argv[0]);
            cmd.args(&argv[1..]).envs(env.iter().copied());
            cmd
        })
    }

    fn run_bounded(&self, argv: &[&str], timeout: Duration) -> io::Result<Bounded> {
        use std::io::Read;
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        use std::process::Stdio;
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let mut child = std::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the timeout stops its children too
            // (they would hold the pipes open).
            .process_group(0)
            .spawn()?;
        // Threads drain the pipes so a chatty child never blocks on them.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut text);
                }
                text
            })
        };
        let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let wait_until = |child: &mut std::process::Child, deadline: Instant| loop {
            match child.try_wait() {
                Ok(Some(st)) => return Ok(Some(st)),
                Ok(None) if Instant::now() >= deadline => return Ok(None),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e),
            }
        };
        let status = match wait_until(&mut child, Instant::now() + timeout)? {
            Some(st) => Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))),
            None => {
                use nix::sys::signal::{killpg, Signal};
                let group = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = killpg(group, Signal::SIGTERM);
                if wait_until(&mut child, Instant::now() + KILL_GRACE)?.is_none() {
                    let _ = killpg(group, Signal::SIGKILL);
                    child.wait()?;
                }
                // Whatever of the group outlived the leader goes too.
                let _ = killpg(group, Signal::SIGKILL);
                None
            }
        };
        let mut output = out.join().unwrap_or_default();
        output.extend(err.join().unwrap_or_default());
        Ok(Bounded {
            status,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }

    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
            .collect()
    }

    fn arm_watchdog(&self, device: &Path, timeout_secs: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        // Opening starts it; O_CREAT is never given, so a missing device
        // is an error rather than a plain file in /dev.
        let mut file = std::fs::OpenOptions::new().write(true).open(device)?;
        let mut timeout = nix::libc::c_int::try_from(timeout_secs).map_err(io::Error::other)?;
        // SAFETY: the fd is open for the duration of the call and `timeout`
        // is a valid int the kernel reads and writes back.
        if let Err(e) = unsafe { wdioc_settimeout(file.as_raw_fd(), &mut timeout) } {
            // The module's soft_margin set it already; a driver without the
            // ioctl keeps its own timeout.
            log::warn!(
                "{}: cannot set the timeout to {timeout_secs} s: {e}",
                device.display()
            );
        }
        file.write_all(b"1")?;
        // Closed without writing 'V': the timer keeps running.
        drop(file);
        Ok(())
    }

    fn swapon(&self, path: &Path) -> io::Result<()> {
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        // SAFETY: `path` is a valid NUL-terminated string that outlives the
        // call; swapon(2) only reads it.
        if unsafe { nix::libc::swapon(path.as_ptr(), 0) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

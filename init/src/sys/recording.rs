//! The recording fake of [`Sys`] (unit tests only): every call is one line
//! of text; reads answer from a table; calls fail on request.

use super::{Bounded, Sys};
use nix::mount::MsFlags;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Records every call; answers reads from a table and fails calls on request.
#[derive(Default)]
pub struct RecordingSys {
    pub calls: RefCell<Vec<String>>,
    /// Contents returned by `read_file`, by path; these paths also "exist".
    pub files: HashMap<PathBuf, String>,
    /// A call whose recorded line starts with one of these fails with EIO.
    pub fail_on: Vec<String>,
    /// What `run_bounded` of a program (argv[0]) returns; exit 0 and no
    /// output when absent.
    pub bounded: HashMap<String, Bounded>,
    next_loop: RefCell<u32>,
}

impl RecordingSys {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let fail = self.fail_on.iter().any(|f| line.starts_with(f.as_str()));
        self.calls.borrow_mut().push(line);
        if fail {
            Err(io::Error::from_raw_os_error(nix::libc::EIO))
        } else {
            Ok(())
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

/// `MS_RDONLY|MS_NOATIME` style text for recorded flags.
fn flags_text(flags: MsFlags) -> String {
    let names = [
        (MsFlags::MS_RDONLY, "RDONLY"),
        (MsFlags::MS_NOSUID, "NOSUID"),
        (MsFlags::MS_NODEV, "NODEV"),
        (MsFlags::MS_NOEXEC, "NOEXEC"),
        (MsFlags::MS_NOATIME, "NOATIME"),
        (MsFlags::MS_BIND, "BIND"),
        (MsFlags::MS_MOVE, "MOVE"),
        (MsFlags::MS_REC, "REC"),
        (MsFlags::MS_PRIVATE, "PRIVATE"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join("|")
    }
}

impl Sys for RecordingSys {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {fstype} {source} {} {} {data}",
            target.display(),
            flags_text(flags)
        ))
    }

    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(format!("move {} {}", from.display(), to.display()))
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        self.record(format!(
            "umount {}{}",
            target.display(),
            if detach { " detach" } else { "" }
        ))
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        self.record(format!("mkdir {}", path.display()))
    }

    fn loop_attach(&self, image: &Path) -> io::Result<PathBuf> {
        self.record(format!("loop {}", image.display()))?;
        let mut n = self.next_loop.borrow_mut();
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        *n += 1;
        Ok(dev)
    }

    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        self.record(format!("write {} {}", path.display(), data.trim_end()))
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.record(format!("read {}", path.display()))?;
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOENT))
    }

    fn write_blocks(&self, path: &Path, writes: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let bytes: usize = writes.iter().map(|w| w.1.len()).sum();
        let n = writes.len();
        self.record(format!(
            "write-blocks {} {n} writes {bytes} bytes",
            path.display()
        ))
    }

    fn run(&self, argv: &[&str]) -> io::Result<()> {
        self.record(format!("run {}", argv.join(" ")))
    }

    fn spawn(&self, argv: &[&str]) -> io::Result<()> {
        self.record(format!("spawn {}", argv.join(" ")))
    }

    fn run_console(&self, argv: &[&str], others: &[&str], env: &[(&str, &str)]) -> io::Result<i32> {
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.record(format!(
            "run-console {} {} | elsewhere {}",
            env.join(" "),
            argv.join(" "),
            others.join(" ")
        ))
        .map(|()| 0)
    }

    fn run_bounded(&self, argv: &[&str], timeout: Duration) -> io::Result<Bounded> {
        self.record(format!(
            "run-bounded {}s {}",
            timeout.as_secs(),
            argv.join(" ")
        ))?;
        Ok(argv
            .first()
            .and_then(|p| self.bounded.get(*p))
            .cloned()
            .unwrap_or(Bounded {
                status: Some(0),
                output: String::new(),
            }))
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.record(format!("list {}", dir.display()))?;
        Ok(self
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect())
    }

    fn swapon(&self, path: &Path) -> io::Result<()> {
        self.record(format!("swapon {}", path.display()))
    }

    fn arm_watchdog(&self, device: &Path, timeout_secs: u32) -> io::Result<()> {
        self.record(format!("watchdog {} {timeout_secs}", device.display()))
    }
}

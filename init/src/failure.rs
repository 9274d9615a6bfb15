//! The single failure path of PID 1: say what failed, why and what to do,
//! then an emergency shell (ramstick.shell=auto) or a reboot. Never returns,
//! never exits.

use crate::consoles;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether the emergency shell is allowed (set from the command line).
static SHELL_ALLOWED: AtomicBool = AtomicBool::new(true);

pub fn allow_shell(allowed: bool) {
    SHELL_ALLOWED.store(allowed, Ordering::SeqCst);
}

/// Whether a failure now ends in the emergency shell (else a reboot).
pub fn shell_allowed() -> bool {
    SHELL_ALLOWED.load(Ordering::SeqCst)
}

/// How long to show the message before rebooting without a shell.
const REBOOT_DELAY: Duration = Duration::from_secs(10);

/// A boot step that failed.
#[derive(Debug)]
pub struct Failure {
    /// What was being done, e.g. "mount the lower images".
    pub what: String,
    /// The cause chain.
    pub cause: anyhow::Error,
    /// What the user can do about it.
    pub hint: String,
}

/// Attach a step description and a hint to any error.
pub trait Step<T> {
    fn step(self, what: &str, hint: &str) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> Step<T> for Result<T, E> {
    fn step(self, what: &str, hint: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            what: what.to_string(),
            cause: e.into(),
            hint: hint.to_string(),
        })
    }
}

/// Report the failure and go to the emergency shell or reboot. Never returns.
pub fn fail(f: &Failure) -> ! {
    log::error!("BOOT FAILED: cannot {}: {:#}", f.what, f.cause);
    if !f.hint.is_empty() {
        log::error!("what to do: {}", f.hint);
    }
    emergency()
}

/// Emergency shell if allowed and present, then reboot.
pub fn emergency() -> ! {
    let sh = Path::new("/bin/sh");
    if shell_allowed() && sh.exists() {
        log::error!("starting emergency shell; the stick is untouched. Type `exit` to reboot");
        let shell = |_first| {
            let mut cmd = std::process::Command::new(sh);
            cmd.env("PS1", "(initramfs) # ")
                .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
                .env("HOME", "/");
            cmd
        };
        // One on each console a person may be at; the first to exit ends
        // them all.
        if let Err(e) = consoles::run_everywhere(Path::new("/sys"), Path::new("/dev"), shell) {
            log::error!("cannot start /bin/sh: {e}");
        }
    } else {
        log::error!("rebooting in {} s", REBOOT_DELAY.as_secs());
        std::thread::sleep(REBOOT_DELAY);
    }
    reboot()
}

/// Sync and reboot; if even that fails, sleep forever (PID 1 must not exit).
pub fn reboot() -> ! {
    nix::unistd::sync();
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    log::error!("reboot failed: {err:?}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

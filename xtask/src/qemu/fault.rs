//! When QEMU, not ramstick, failed a boot. QEMU 7.2's TCG (Debian 12's) has
//! now and then hung a guest kernel early in its boot (silent from 1.3 s on)
//! and segfaulted while the kernel probed PCI, in this project's CI runs.
//! [`QemuFault`] names such a failure, and whether it came before the guest
//! ran /init (so before anything of ramstick ran or wrote), so that the
//! harness can boot again instead of failing a test ramstick did not fail.

use super::ansi::{find, rfind};
use anyhow::Result;
use nix::sys::signal::Signal;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// How long the guest kernel may print nothing before it runs /init: its
/// boot to /init takes ~1–5 s under TCG, so a minute of silence there is a
/// hung emulator, not a slow one.
pub const KERNEL_STALL: Duration = Duration::from_secs(60);

/// What the kernel prints first on every boot.
const KERNEL_BANNER: &[u8] = b"Linux version ";
/// What the kernel prints when it runs the initramfs's /init.
pub const KERNEL_RUNS_INIT: &str = "Run /init as init process";

/// Signals that end QEMU only when it crashed: the harness sends none of them.
const CRASHES: &[Signal] = &[
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGABRT,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The guest kernel printed nothing for this long before running /init.
    Stalled(Duration),
    /// QEMU died of this signal.
    Crashed(Signal),
}

#[derive(Debug)]
pub struct QemuFault {
    pub fault: Fault,
    /// The guest kernel had started and not yet run /init.
    pub before_init: bool,
    /// The console's last output.
    pub tail: String,
}

impl fmt::Display for QemuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fault {
            Fault::Stalled(silent) => write!(
                f,
                "QEMU hung: the guest kernel printed nothing for {silent:.0?} before running /init"
            )?,
            Fault::Crashed(signal) => {
                let when = if self.before_init {
                    "while the guest kernel booted, before /init"
                } else {
                    "(not in the guest kernel's boot)"
                };
                write!(f, "QEMU crashed ({signal}) {when}")?
            }
        }
        write!(f, "; last output:\n{}", self.tail)
    }
}

impl std::error::Error for QemuFault {}

impl QemuFault {
    /// The fault `e` is, or was caused by.
    pub fn of(e: &anyhow::Error) -> Option<&QemuFault> {
        e.chain().find_map(|c| c.downcast_ref::<QemuFault>())
    }
}

/// Whether the last boot on the console `text` has started its kernel and
/// not yet run /init.
pub fn before_init(text: &[u8]) -> bool {
    rfind(text, KERNEL_BANNER)
        .is_some_and(|banner| find(&text[banner..], KERNEL_RUNS_INIT.as_bytes()).is_none())
}

/// The signal QEMU died of, if it crashed.
pub fn crash(status: ExitStatus) -> Option<Signal> {
    let signal = Signal::try_from(status.signal()?).ok()?;
    CRASHES.contains(&signal).then_some(signal)
}

/// `boot`, started once more if QEMU failed it before the guest ran /init
/// (said on stderr by `who`). For boots whose firmware and GRUB write
/// nothing: the second boot starts from the same disk.
pub fn again_after_fault<T>(who: &str, mut boot: impl FnMut() -> Result<T>) -> Result<T> {
    boot().or_else(|e| {
        if !QemuFault::of(&e).is_some_and(|f| f.before_init) {
            return Err(e);
        }
        eprintln!("{who}: booting again: {e:#}");
        boot()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_kernel_boots_from_its_banner_to_init() {
        let kernel = "GRUB\n[    0.000000] Linux version 6.1.0\n[    1.3] IP idents\n";
        assert!(before_init(kernel.as_bytes()));
        let init = format!("{kernel}[    2.1] {KERNEL_RUNS_INIT}\n");
        assert!(!before_init(init.as_bytes()));
        // A reboot: the second kernel's boot is what counts.
        let again = format!("{init}reboot: Restarting system\n{kernel}");
        assert!(before_init(again.as_bytes()));
        // Before the kernel (firmware, GRUB's menu) or nothing printed yet.
        assert!(!before_init(b"GRUB menu"));
        assert!(!before_init(b""));
    }

    #[test]
    fn only_crash_signals_are_crashes() {
        let by = |signal: i32| ExitStatus::from_raw(signal);
        assert_eq!(crash(by(11)), Some(Signal::SIGSEGV));
        assert_eq!(crash(by(6)), Some(Signal::SIGABRT));
        // SIGKILL (the harness's own kill), SIGTERM, a normal exit.
        assert_eq!(crash(by(9)), None);
        assert_eq!(crash(by(15)), None);
        assert_eq!(crash(ExitStatus::from_raw(0)), None);
        assert_eq!(crash(ExitStatus::from_raw(1 << 8)), None);
    }

    #[test]
    fn a_fault_before_init_is_booted_again_once() {
        let fault = |before_init| {
            Err(anyhow::Error::new(QemuFault {
                fault: Fault::Crashed(Signal::SIGSEGV),
                before_init,
                tail: String::new(),
            }))
            .context("waiting for the shell")
        };
        let mut tries = 0;
        let r: Result<u32> = again_after_fault("test", || {
            tries += 1;
            if tries == 1 {
                fault(true)
            } else {
                Ok(7)
            }
        });
        assert_eq!((r.unwrap(), tries), (7, 2));
        // Twice: the second fault is the error.
        let mut tries = 0;
        let r: Result<u32> = again_after_fault("test", || {
            tries += 1;
            fault(true)
        });
        assert!(QemuFault::of(&r.unwrap_err()).is_some());
        assert_eq!(tries, 2);
        // After init ran (ramstick may have written): not booted again.
        let mut tries = 0;
        let r: Result<u32> = again_after_fault("test", || {
            tries += 1;
            fault(false)
        });
        assert!(r.is_err());
        assert_eq!(tries, 1);
        // Any other failure: not booted again.
        let mut tries = 0;
        let r: Result<u32> = again_after_fault("test", || {
            tries += 1;
            anyhow::bail!("BOOT FAILED")
        });
        assert!(r.is_err());
        assert_eq!(tries, 1);
    }
}

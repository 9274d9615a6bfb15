//! Checking the data filesystem before it is mounted read-write for the
//! whole session: `e2fsck -p` (preen: only the repairs that are always
//! safe) from Debian's static e2fsck, which the initramfs carries. A crash
//! or a pulled stick leaves journal replay or bitmap fixes to do; finding
//! them now keeps the saver from writing into a damaged filesystem.
//!
//! The check never stops the boot: whatever e2fsck says, the boot goes on
//! and mounts the partition (only a failing mount stops it), because the
//! user's saved state is on it and the emergency shell could not do more.
//! What e2fsck did is said on the console, loudly when errors remain. It is
//! bounded in time (the plan's `persist_check_secs`): a check still running
//! then is stopped (SIGTERM, which e2fsck honours at a safe point) and the
//! boot goes on.

use std::path::Path;
use std::time::Duration;

use crate::sys::{Bounded, Sys};

/// Where the initramfs carries e2fsck.
pub const E2FSCK_IN_INITRAMFS: &str = "/bin/e2fsck";

/// e2fsck's exit status bits (e2fsck(8)).
const FSCK_NONDESTRUCT: i32 = 1;
const FSCK_REBOOT: i32 = 2;
const FSCK_UNCORRECTED: i32 = 4;

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Clean,
    /// Exit 1: errors were corrected.
    Repaired,
    /// Exit 2 (or 3): corrected, and e2fsck suggests a reboot (it asks this
    /// when the filesystem was mounted; here it was not).
    RepairedRebootSuggested,
    /// Bit 4: errors remain.
    Uncorrected(i32),
    /// e2fsck could not check (operational or usage error, cancelled, or it
    /// could not run at all); the status, -1 when it did not start.
    NotChecked(i32),
    /// Still running after the timeout; stopped.
    TimedOut,
    /// The initramfs has no e2fsck (built by an older xtask).
    Missing,
}

/// What an exit status (`None`: stopped by the timeout) means.
pub fn meaning(status: Option<i32>) -> Outcome {
    match status {
        None => Outcome::TimedOut,
        Some(0) => Outcome::Clean,
        Some(c) if c < 0 => Outcome::NotChecked(c),
        Some(c) if c & FSCK_UNCORRECTED != 0 => Outcome::Uncorrected(c),
        Some(c) if c & !(FSCK_NONDESTRUCT | FSCK_REBOOT) != 0 => Outcome::NotChecked(c),
        Some(c) if c & FSCK_REBOOT != 0 => Outcome::RepairedRebootSuggested,
        Some(_) => Outcome::Repaired,
    }
}

/// Check `device` (the plain partition, or the opened LUKS mapping) with
/// `e2fsck -p`, say on the console what it found, and return that. Never
/// fails: see the module comment.
pub fn check(sys: &dyn Sys, device: &Path, timeout: Duration) -> Outcome {
    if !sys.exists(Path::new(E2FSCK_IN_INITRAMFS)) {
        let outcome = Outcome::Missing;
        report(&outcome, device, "", timeout);
        return outcome;
    }
    let dev = device.to_string_lossy();
    log::info!(
        "checking the data filesystem on {dev} (e2fsck -p, at most {} s)",
        timeout.as_secs()
    );
    let run = sys
        .run_bounded(&[E2FSCK_IN_INITRAMFS, "-p", &dev], timeout)
        .unwrap_or_else(|e| Bounded {
            status: Some(-1),
            output: format!("cannot run {E2FSCK_IN_INITRAMFS}: {e}"),
        });
    let outcome = meaning(run.status);
    report(&outcome, device, &run.output, timeout);
    outcome
}

/// Log what `outcome` means for the user, with e2fsck's own output.
fn report(outcome: &Outcome, device: &Path, output: &str, timeout: Duration) {
    let dev = device.display();
    let said = output.trim();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!("; e2fsck said:\n{said}")
    };
    match outcome {
        Outcome::Clean => {
            log::info!("the data filesystem on {dev} is clean (e2fsck -p)");
            log::debug!("e2fsck said: {}", output.trim());
        }
        Outcome::Repaired => log::warn!(
            "e2fsck repaired the data filesystem on {dev} (exit 1); the boot goes on{said}"
        ),
        Outcome::RepairedRebootSuggested => log::warn!(
            "e2fsck repaired the data filesystem on {dev} and suggests a reboot (exit 2); \
             it was not mounted during the check, so the boot goes on (reboot if anything \
             misbehaves){said}"
        ),
        Outcome::Uncorrected(code) => log::error!(
            "!!! THE DATA FILESYSTEM ON {dev} HAS ERRORS e2fsck -p COULD NOT CORRECT (exit {code}) !!! \
             It is mounted anyway so that the boot can go on; copy what you need from /persist \
             now, then run `e2fsck -f` on the stick's data partition from another machine{said}"
        ),
        Outcome::NotChecked(code) => log::warn!(
            "e2fsck could not check the data filesystem on {dev} (exit {code}); mounting it \
             unchecked{said}"
        ),
        Outcome::TimedOut => log::warn!(
            "e2fsck took longer than {} s on {dev} and was stopped; mounting it without a \
             completed check (run `e2fsck -f` on it from another machine){said}",
            timeout.as_secs()
        ),
        Outcome::Missing => log::warn!(
            "this initramfs has no {E2FSCK_IN_INITRAMFS}: the data filesystem on {dev} is not \
             checked (rebuild the stick with cargo xtask image)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RecordingSys;
    use std::path::PathBuf;

    /// The plan's bound.
    const CHECK: Duration = Duration::from_secs(ramstick_common::plan::PERSIST_CHECK_SECS);

    fn with_e2fsck(status: Option<i32>, output: &str) -> RecordingSys {
        let mut sys = RecordingSys::new();
        sys.files
            .insert(PathBuf::from(E2FSCK_IN_INITRAMFS), String::new());
        sys.bounded.insert(
            E2FSCK_IN_INITRAMFS.into(),
            Bounded {
                status,
                output: output.into(),
            },
        );
        sys
    }

    #[test]
    fn every_exit_status_is_handled_and_the_boot_goes_on() {
        let cases = [
            (Some(0), Outcome::Clean),
            (Some(1), Outcome::Repaired),
            (Some(2), Outcome::RepairedRebootSuggested),
            (Some(3), Outcome::RepairedRebootSuggested),
            (Some(4), Outcome::Uncorrected(4)),
            (Some(5), Outcome::Uncorrected(5)),
            (Some(12), Outcome::Uncorrected(12)),
            (Some(8), Outcome::NotChecked(8)),
            (Some(16), Outcome::NotChecked(16)),
            (Some(32), Outcome::NotChecked(32)),
            (Some(33), Outcome::NotChecked(33)),
            (Some(128), Outcome::NotChecked(128)),
            (Some(137), Outcome::NotChecked(137)),
            (None, Outcome::TimedOut),
        ];
        for (status, expected) in cases {
            let sys = with_e2fsck(status, "RAMSTICK: 13/16384 files\n");
            assert_eq!(
                check(&sys, Path::new("/dev/vda2"), CHECK),
                expected,
                "{status:?}"
            );
            assert_eq!(
                sys.calls(),
                ["run-bounded 120s /bin/e2fsck -p /dev/vda2"],
                "{status:?}"
            );
        }
    }

    #[test]
    fn the_opened_luks_mapping_is_what_gets_checked() {
        let sys = with_e2fsck(Some(1), "");
        assert_eq!(
            check(&sys, Path::new("/dev/mapper/ramstick"), CHECK),
            Outcome::Repaired
        );
        assert_eq!(
            sys.calls(),
            ["run-bounded 120s /bin/e2fsck -p /dev/mapper/ramstick"]
        );
    }

    #[test]
    fn no_e2fsck_or_one_that_cannot_start_skips_the_check() {
        let sys = RecordingSys::new();
        assert_eq!(check(&sys, Path::new("/dev/vda2"), CHECK), Outcome::Missing);
        assert!(sys.calls().is_empty());
        let mut sys = with_e2fsck(Some(0), "");
        sys.fail_on.push("run-bounded".into());
        assert_eq!(
            check(&sys, Path::new("/dev/vda2"), CHECK),
            Outcome::NotChecked(-1)
        );
    }

    /// The real runner: exit statuses, output capture, and the timeout's kill.
    #[test]
    fn linux_run_bounded_reports_status_output_and_timeout() {
        let sys = crate::sys::LinuxSys::new();
        let r = sys
            .run_bounded(
                &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(r.status, Some(3));
        assert_eq!(r.output, "out\nerr\n");
        let started = std::time::Instant::now();
        let r = sys
            .run_bounded(&["/bin/sleep", "30"], Duration::from_millis(300))
            .unwrap();
        assert_eq!(r.status, None);
        assert!(started.elapsed() < Duration::from_secs(10));
        // A program that ignores SIGTERM (and its child holding the pipes)
        // is killed after the grace period.
        let started = std::time::Instant::now();
        let r = sys
            .run_bounded(
                &["/bin/sh", "-c", "trap '' TERM; sleep 60 & exec sleep 60"],
                Duration::from_millis(200),
            )
            .unwrap();
        assert_eq!(r.status, None);
        let took = started.elapsed();
        assert!(
            took >= crate::sys::KILL_GRACE && took < Duration::from_secs(30),
            "{took:?}"
        );
    }
}

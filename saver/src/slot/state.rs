//! What the saver knows of the slots: which one runs and whether on trial
//! (the kernel command line GRUB gave), and what GRUB's environment block
//! says of the committed slot and of a trial (see README "Slots and trial
//! boots").

use ramstick_common::cmdline;
use ramstick_common::grubenv::Env;
use ramstick_common::place::Slot;
use std::fmt;

pub use ramstick_common::bootmenu::slots::GRUBENV;
pub use ramstick_common::slotboot::{ENV_SLOT, ENV_TRIAL, ENV_TRIED};

/// The slot this system booted, from the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub slot: Slot,
    /// `ramstick.trial=on`: GRUB booted the slot once, from the trial flag.
    pub trial: bool,
    /// `ramstick.trial.timeout`: seconds the watchdog gives the trial.
    pub timeout: u32,
}

/// The running slot and trial state from the kernel command line `text`
/// (`/proc/cmdline`), as init planned them (`ramstick.slot`,
/// `ramstick.trial`, `ramstick.trial.timeout`; a malformed value is its
/// default). The one place the saver learns them.
pub fn running(text: &str) -> Running {
    let c = cmdline::parse(text).0;
    Running {
        slot: c.slot,
        trial: c.trial == cmdline::Trial::On,
        timeout: c.trial_timeout_secs,
    }
}

/// The slot variables of GRUB's environment block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotVars {
    /// `ramstick_slot` (absent or unreadable: `a`, as GRUB's script reads it).
    pub committed: Slot,
    /// `ramstick_trial`: the slot the next boot tries once.
    pub trial: Option<Slot>,
    /// `ramstick_tried`: the trial GRUB started that was not committed.
    pub tried: Option<Slot>,
}

impl SlotVars {
    pub fn of(env: &Env) -> SlotVars {
        let slot = |name| env.get(name).and_then(Slot::parse);
        SlotVars {
            committed: slot(ENV_SLOT).unwrap_or_default(),
            trial: slot(ENV_TRIAL),
            tried: slot(ENV_TRIED),
        }
    }

    /// What the next boot runs, as GRUB's script decides it: (slot, on trial).
    pub fn next_boot(&self) -> (Slot, bool) {
        match self.trial {
            Some(t) => (t, true),
            None => (self.committed, false),
        }
    }
}

/// Where a trial stands, seen from the running system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    /// No trial asked or unconfirmed.
    None,
    /// `saver slot try` set the flag: the next boot tries `slot`.
    Pending(Slot),
    /// This boot is the trial of the running slot, not committed yet.
    InProgress(Slot),
    /// A trial of `slot` started and never committed (it failed, hung or
    /// lost power), and the committed slot runs now.
    Failed(Slot),
}

/// Where the trial stands for a system `running` with the block's `vars`.
pub fn trial(running: &Running, vars: &SlotVars) -> Trial {
    if let Some(t) = vars.trial {
        return Trial::Pending(t);
    }
    match vars.tried {
        Some(t) if running.trial && t == running.slot => Trial::InProgress(t),
        Some(t) if t != running.slot => Trial::Failed(t),
        // A trial boot the block no longer names (rolled back since) is no
        // trial any more: nothing will commit it.
        _ => Trial::None,
    }
}

/// Whether the block's `vars` say the trial `running` is committed (its
/// slot is the committed one and no trial of it is left unconfirmed).
pub fn is_committed(vars: &SlotVars, running: &Running) -> bool {
    vars.committed == running.slot && vars.tried != Some(running.slot)
}

/// The console and log line of a trial that did not commit, on the boot
/// that returned to `running`.
pub fn failed_trial_message(tried: Slot, running: Slot) -> String {
    format!(
        "the trial of slot {tried} did not commit (failed, hung or lost power): running slot {running}"
    )
}

impl fmt::Display for Trial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trial::None => f.write_str("no trial"),
            Trial::Pending(s) => {
                write!(f, "trial of slot {s} pending: the next boot tries it once")
            }
            Trial::InProgress(s) => write!(
                f,
                "trial of slot {s} in progress: not committed yet (`saver slot commit`)"
            ),
            Trial::Failed(s) => write!(
                f,
                "trial of slot {s} failed: it did not commit (failed, hung or lost power)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        let mut e = Env::default();
        for (k, v) in vars {
            e.set(k, v);
        }
        e
    }

    #[test]
    fn the_running_slot_comes_from_the_command_line() {
        let r = running("BOOT_IMAGE=/vmlinuz quiet");
        assert_eq!((r.slot, r.trial, r.timeout), (Slot::A, false, 600));
        let r = running("ramstick.slot=b ramstick.trial=on ramstick.trial.timeout=120 -- x");
        assert_eq!((r.slot, r.trial, r.timeout), (Slot::B, true, 120));
        let r = running("ramstick.slot=c ramstick.trial=off ramstick.trial.timeout=0");
        assert_eq!((r.slot, r.trial, r.timeout), (Slot::A, false, 600));
        assert_eq!(running("ramstick.trial.timeout=3601").timeout, 600);
        // What follows `--` is init's, not the kernel's.
        assert_eq!(running("-- ramstick.slot=b").slot, Slot::A);
    }

    #[test]
    fn the_block_reads_as_grub_s_script_does() {
        let v = SlotVars::of(&Env::default());
        assert_eq!(v, SlotVars::default());
        assert_eq!(v.next_boot(), (Slot::A, false));
        let v = SlotVars::of(&env(&[(ENV_SLOT, "b"), (ENV_TRIAL, "a"), (ENV_TRIED, "")]));
        assert_eq!(
            (v.committed, v.trial, v.tried),
            (Slot::B, Some(Slot::A), None)
        );
        assert_eq!(v.next_boot(), (Slot::A, true));
        let v = SlotVars::of(&env(&[(ENV_SLOT, "x"), (ENV_TRIAL, "")]));
        assert_eq!(v.next_boot(), (Slot::A, false));
    }

    #[test]
    fn where_a_trial_stands() {
        let normal_a = running("ramstick.slot=a");
        let trial_b = running("ramstick.slot=b ramstick.trial=on");
        let vars = |committed, trial, tried| SlotVars {
            committed,
            trial,
            tried,
        };
        assert_eq!(trial(&normal_a, &vars(Slot::A, None, None)), Trial::None);
        assert_eq!(
            trial(&normal_a, &vars(Slot::A, Some(Slot::B), None)),
            Trial::Pending(Slot::B)
        );
        assert_eq!(
            trial(&trial_b, &vars(Slot::A, None, Some(Slot::B))),
            Trial::InProgress(Slot::B)
        );
        assert_eq!(
            trial(&normal_a, &vars(Slot::A, None, Some(Slot::B))),
            Trial::Failed(Slot::B)
        );
        // Committed: the trial is over.
        assert_eq!(
            trial(&running("ramstick.slot=b"), &vars(Slot::B, None, None)),
            Trial::None
        );
        // A trial boot rolled back since: no trial any more.
        assert_eq!(trial(&trial_b, &vars(Slot::A, None, None)), Trial::None);
        assert!(!is_committed(&vars(Slot::A, None, Some(Slot::B)), &trial_b));
        assert!(!is_committed(&vars(Slot::B, None, Some(Slot::B)), &trial_b));
        assert!(is_committed(&vars(Slot::B, None, None), &trial_b));
        assert_eq!(
            failed_trial_message(Slot::B, Slot::A),
            "the trial of slot b did not commit (failed, hung or lost power): running slot a"
        );
    }
}

//! What the saver daemon does about slots when it starts. On a trial boot
//! (`ramstick.trial=on`) it runs the health check in the background until
//! it passes or the trial's watchdog nears, then commits the slot (or says
//! why not: the watchdog, or the user's reboot, returns to the committed
//! slot). On another boot that finds a trial that never committed, it says
//! so once per boot, on the console and in its log; `ramstick_tried` stays
//! in the block, so `saver status` keeps showing it until the next `saver
//! slot try`.

use super::state::{self, Running, SlotVars, Trial};
use crate::session::Paths;
use crate::stick::say;
use ramstick_common::place::Slot;
use std::time::Instant;

/// Where the console is.
const CONSOLE: &str = "/dev/console";
/// Marks, in the saver's run-time directory, that this boot said the failed
/// trial (a restarted daemon does not say it again).
const SAID: &str = "trial-failed-said";

/// What the daemon does at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtStart {
    Nothing,
    /// Say that the trial of this slot did not commit.
    SayFailed(Slot),
    /// Run the health check, then commit.
    Check,
    /// A trial boot GRUB's environment does not name (rolled back since,
    /// or `ramstick.trial=on` typed by hand): say it is not committed.
    Unnamed,
}

/// The daemon's decision for a system `running` with the block's `vars`
/// (`None`: unreadable, e.g. a stick made before slots).
pub fn at_start(running: &Running, vars: Option<&SlotVars>) -> AtStart {
    match vars {
        // A daemon restarted after this trial's commit has nothing to do;
        // after a rollback (the block no longer names the trial) it says so.
        Some(v) if running.trial && state::is_committed(v, running) => AtStart::Nothing,
        Some(v) if running.trial && v.tried != Some(running.slot) => AtStart::Unnamed,
        _ if running.trial => AtStart::Check,
        Some(v) => match state::trial(running, v) {
            Trial::Failed(tried) => AtStart::SayFailed(tried),
            _ => AtStart::Nothing,
        },
        None => AtStart::Nothing,
    }
}

/// The message of a trial's end: `verdict` is the health check's (its
/// failure), then `committed` the commit's result; `back` is the slot the
/// next boot returns to when the trial is not committed.
pub fn outcome(
    slot: Slot,
    back: Slot,
    verdict: Result<(), &str>,
    committed: Result<(), &str>,
) -> String {
    match (verdict, committed) {
        (Ok(()), Ok(())) => {
            format!("trial of slot {slot} confirmed: slot {slot} is now the default")
        }
        (Ok(()), Err(e)) => format!(
            "trial of slot {slot} passed its health check but cannot be committed: {e}; the next \
             boot returns to slot {back} (`saver slot commit --force` to retry)"
        ),
        (Err(why), _) => {
            format!("trial of slot {slot} failed: {why}; the next boot returns to slot {back}")
        }
    }
}

/// Writes `line` on the console (and it is in the log through [`say`]).
pub fn to_console(line: &str) {
    say(line);
    let written = std::fs::OpenOptions::new()
        .append(true)
        .open(CONSOLE)
        .and_then(|mut c| {
            std::io::Write::write_all(&mut c, format!("ramstick: {line}\n").as_bytes())
        });
    if let Err(e) = written {
        say(&format!("cannot write on {CONSOLE}: {e}"));
    }
}

/// The daemon's start: decides, and runs the trial's check in a thread of
/// its own (the daemon's loop goes on meanwhile).
pub fn start(paths: &Paths) {
    let running = super::running_of(paths);
    let vars = super::read_vars(super::persist_root());
    // Said on every boot (in the log): an unreadable block would otherwise
    // hide a failed trial without a trace.
    if let Err(e) = &vars {
        let what = if running.trial { "on trial" } else { "running" };
        say(&format!(
            "slot {} {what}: GRUB's environment block not read: {e:#}",
            running.slot
        ));
    }
    match at_start(&running, vars.as_ref().ok()) {
        AtStart::Nothing => {}
        AtStart::SayFailed(tried) => {
            let said = paths.state.join(SAID);
            if !said.exists() {
                to_console(&state::failed_trial_message(tried, running.slot));
                let marked =
                    std::fs::create_dir_all(&paths.state).and_then(|()| std::fs::write(&said, ""));
                if let Err(e) = marked {
                    say(&format!("cannot write {}: {e}", said.display()));
                }
            }
        }
        AtStart::Unnamed => to_console(&format!(
            "slot {} runs on trial but GRUB's environment does not name the trial (rolled back, \
             or ramstick.trial=on given by hand): it is not committed; the next boot uses slot {}",
            running.slot,
            vars.as_ref()
                .map_or(running.slot.other(), |v| v.next_boot().0)
        )),
        AtStart::Check => {
            let back = vars.as_ref().map_or(running.slot.other(), |v| v.committed);
            let paths = paths.clone();
            let spawned = std::thread::Builder::new()
                .name("trial".into())
                .spawn(move || check_and_commit(&paths, &running, back));
            if let Err(e) = spawned {
                to_console(&format!(
                    "trial of slot {} not checked: cannot start a thread: {e}; the next boot \
                     returns to slot {back}",
                    running.slot
                ));
            }
        }
    }
}

fn check_and_commit(paths: &Paths, running: &Running, back: Slot) {
    let budget = super::check_time(running);
    say(&format!(
        "slot {} on trial: health check (at most {} s, before the watchdog's {} s)",
        running.slot,
        budget.as_secs(),
        running.timeout
    ));
    let line = match super::health_check(paths, Instant::now() + budget, true) {
        Ok(passed) => {
            for p in &passed {
                say(&format!("health: {p}"));
            }
            let committed =
                super::commit(super::persist_root(), running).map_err(|e| format!("{e:#}"));
            if let Ok(Some(why)) = &committed {
                to_console(why);
            }
            outcome(
                running.slot,
                back,
                Ok(()),
                committed.as_ref().map(drop).map_err(String::as_str),
            )
        }
        Err(why) => outcome(running.slot, back, Err(&why), Ok(())),
    };
    to_console(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(committed: Slot, trial: Option<Slot>, tried: Option<Slot>) -> SlotVars {
        SlotVars {
            committed,
            trial,
            tried,
        }
    }

    #[test]
    fn the_daemon_checks_a_trial_and_says_a_failed_one() {
        let trial_b = state::running("ramstick.slot=b ramstick.trial=on");
        let normal_a = state::running("ramstick.slot=a");
        let tried_b = vars(Slot::A, None, Some(Slot::B));
        assert_eq!(at_start(&trial_b, Some(&tried_b)), AtStart::Check);
        assert_eq!(at_start(&trial_b, None), AtStart::Check);
        assert_eq!(
            at_start(&trial_b, Some(&vars(Slot::B, None, None))),
            AtStart::Nothing
        );
        // Rolled back before a restarted daemon looked.
        assert_eq!(
            at_start(&trial_b, Some(&vars(Slot::A, None, None))),
            AtStart::Unnamed
        );
        assert_eq!(
            at_start(&normal_a, Some(&tried_b)),
            AtStart::SayFailed(Slot::B)
        );
        assert_eq!(
            at_start(&normal_a, Some(&vars(Slot::A, None, None))),
            AtStart::Nothing
        );
        assert_eq!(
            at_start(&normal_a, Some(&vars(Slot::A, Some(Slot::B), None))),
            AtStart::Nothing
        );
        assert_eq!(at_start(&normal_a, None), AtStart::Nothing);
    }

    #[test]
    fn the_trial_s_end_is_said() {
        assert_eq!(
            outcome(Slot::B, Slot::A, Ok(()), Ok(())),
            "trial of slot b confirmed: slot b is now the default"
        );
        assert_eq!(
            outcome(Slot::B, Slot::A, Err("systemd is maintenance"), Ok(())),
            "trial of slot b failed: systemd is maintenance; the next boot returns to slot a"
        );
        let msg = outcome(Slot::B, Slot::A, Ok(()), Err("no ESP"));
        assert!(
            msg.contains("cannot be committed: no ESP; the next boot returns to slot a"),
            "{msg}"
        );
    }
}

//! `saver slot status|try|commit|rollback`: the stick's two slots (see
//! README "Slots and trial boots"). GRUB's environment block on the ESP
//! says which slot boots: the committed one, or once a slot on trial; the
//! running system commits a trial after its health check, or the next boot
//! returns to the committed slot by itself. [`state`] reads where things
//! stand, [`plan`] plans each change of the block (run over
//! [`plan::SlotFs`], [`onstick`] the real one), [`health`] is the trial's
//! health check and [`trial`] what the daemon does about a trial.

pub mod health;
pub mod onstick;
pub mod plan;
pub mod state;
pub mod trial;

use crate::kernel::esp::{mount_esp, mount_esp_to_read};
use crate::session::Paths;
use crate::stick::say;
use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use ramstick_common::cmdline;
use ramstick_common::initsys;
use ramstick_common::place::Slot;
use serde_json::json;
use state::{Running, SlotVars, Trial};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `saver slot` is asked.
#[derive(clap::Subcommand, Debug)]
pub enum SlotCmd {
    /// Show the committed slot, the running one, where a trial stands, and
    /// each slot's base (date, size) and saved chain.
    ///
    /// Example: `saver slot status` (`saver slot status --json`)
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Boot SLOT once at the next boot, on trial: it becomes the default
    /// only when that boot passes its health check (`saver slot commit`,
    /// or the daemon by itself); otherwise the boot after returns to the
    /// committed slot. Refused for a slot without its base image.
    ///
    /// Example: `saver slot try b && reboot`
    Try {
        /// `a` or `b`.
        #[arg(value_parser = parse_slot)]
        slot: Slot,
    },
    /// On a trial boot: run the health check, then make the running slot
    /// the committed one and disarm the trial's watchdog. Exit 1 when the
    /// check fails (nothing committed).
    ///
    /// Example: `saver slot commit` (`--force` skips the check)
    Commit {
        /// Commit without the health check.
        #[arg(long)]
        force: bool,
    },
    /// Make the slot that is not running the committed one (if it is
    /// complete) and drop any trial: the next boot uses it.
    ///
    /// Example: `saver slot rollback && reboot`
    Rollback,
}

/// The persist partition's root, where the slots are. Not `Paths::persist`,
/// which is the running profile's state directory.
pub(crate) fn persist_root() -> &'static Path {
    Path::new(crate::running::PERSIST)
}

/// Taken around each read-modify-write of GRUB's environment block, so the
/// daemon's commit and a `saver slot` command never lose each other's
/// change. (A read needs no lock: a mount of the ESP waits while another
/// saver process holds it, see `kernel::esp`. Not the saver's save lock: a
/// save holds that for minutes, and a commit must not wait past the trial's
/// watchdog.)
const ENV_LOCK: &str = "/run/ramstick/saver/slot.lock";

fn env_lock() -> Result<Flock<File>> {
    let path = Path::new(ENV_LOCK);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = File::create(path).with_context(|| format!("cannot create {ENV_LOCK}"))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {ENV_LOCK}"))
}

fn parse_slot(s: &str) -> Result<Slot, String> {
    Slot::parse(s).ok_or_else(|| format!("a slot is `a` or `b`, not {s:?}"))
}

/// The running slot, from `paths.cmdline`.
pub fn running_of(paths: &Paths) -> Running {
    state::running(&std::fs::read_to_string(&paths.cmdline).unwrap_or_default())
}

/// Runs `cmd`; `Ok(false)`: the health check failed (exit 1).
pub fn slot(paths: &Paths, cmd: &SlotCmd) -> Result<bool> {
    let running = running_of(paths);
    match cmd {
        SlotCmd::Status { json } => {
            status(&running, *json)?;
            Ok(true)
        }
        SlotCmd::Try { slot } => {
            set_trial(persist_root(), *slot)?;
            println!(
                "the next boot tries slot {slot} once; it becomes the default when that boot's \
                 health check passes, else the boot after returns to the committed slot"
            );
            Ok(true)
        }
        SlotCmd::Commit { force } => {
            if !running.trial {
                // Said before the check, which would only delay the refusal.
                anyhow::bail!(
                    "this is not a trial boot (no ramstick.trial=on): slot {} runs as it is; \
                     nothing to commit",
                    running.slot
                );
            }
            if !force {
                let until = Instant::now() + check_time(&running);
                match health_check(paths, until, false) {
                    Ok(passed) => passed.iter().for_each(|p| say(&format!("health: {p}"))),
                    Err(why) => {
                        say(&format!(
                            "health check failed: {why}; slot {} is not committed",
                            running.slot
                        ));
                        return Ok(false);
                    }
                }
            }
            let watchdog_left = commit(persist_root(), &running)?;
            println!(
                "slot {} is now the default: the trial is committed",
                running.slot
            );
            if let Some(why) = watchdog_left {
                say(&why);
            }
            Ok(true)
        }
        SlotCmd::Rollback => {
            let _lock = env_lock()?;
            let esp = mount_esp(persist_root())?;
            let env = onstick::read_env(&esp.dir)?;
            let complete = onstick::is_complete(persist_root(), running.slot.other());
            let (steps, target) = plan::plan_rollback(&env, &running, complete)?;
            plan::run(&mut onstick::OnStick::new(&esp.dir), &steps)?;
            println!("the next boot uses slot {target} (now the committed slot)");
            if running.trial {
                println!(
                    "this trial's watchdog still reboots the system within {} s of its start",
                    running.timeout
                );
            }
            Ok(true)
        }
    }
}

/// Sets the one-shot trial of `slot` in GRUB's environment block of the
/// stick whose persist partition is mounted at `persist` (its ESP is
/// mounted meanwhile): the next boot tries `slot` once. Refused when the
/// slot has no base image or is already the committed one. What `saver
/// fold` calls after writing a slot.
pub fn set_trial(persist: &Path, slot: Slot) -> Result<()> {
    let _lock = env_lock()?;
    let esp = mount_esp(persist)?;
    set_trial_in(&esp.dir, persist, slot)
}

/// [`set_trial`] on the ESP mounted at `esp` by the caller.
pub fn set_trial_in(esp: &Path, persist: &Path, slot: Slot) -> Result<()> {
    let env = onstick::read_env(esp)?;
    let steps = plan::plan_try(&env, slot, onstick::is_complete(persist, slot))?;
    plan::run(&mut onstick::OnStick::new(esp), &steps)
}

/// Commits the trial `running` (a trial boot): the block names the running
/// slot, then the watchdog is disarmed. `Ok(Some(why))`: committed, but the
/// watchdog could not be disarmed (the block, read back, says the commit
/// is written) — say it: a running watchdog still restarts the machine,
/// into the slot now committed.
pub fn commit(persist: &Path, running: &Running) -> Result<Option<String>> {
    let _lock = env_lock()?;
    let esp = mount_esp(persist)?;
    let env = onstick::read_env(&esp.dir)?;
    let steps = plan::plan_commit(&env, running)?;
    match plan::run(&mut onstick::OnStick::new(&esp.dir), &steps) {
        Ok(()) => Ok(None),
        Err(e) => match onstick::read_env(&esp.dir) {
            Ok(now) if state::is_committed(&SlotVars::of(&now), running) => Ok(Some(format!(
                "the trial's watchdog could not be disarmed ({e:#}); if it runs, it restarts \
                 the machine within {} s of the boot, into slot {} (committed)",
                running.timeout, running.slot
            ))),
            _ => Err(e),
        },
    }
}

/// How long a health check may take on this boot: until shortly before
/// the trial's watchdog fires (at least half a minute when run by hand).
pub fn check_time(running: &Running) -> Duration {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0);
    health::time_left(running.timeout, uptime).unwrap_or(Duration::from_secs(30))
}

/// The health check of the running system, until `until` (`in_daemon`:
/// run by the saver daemon itself).
pub fn health_check(paths: &Paths, until: Instant, in_daemon: bool) -> health::Verdict {
    let text = std::fs::read_to_string(&paths.cmdline).unwrap_or_default();
    let init = cmdline::parse(&text).0.init;
    let system = initsys::detect(Path::new("/"), &init).map_err(|e| e.to_string());
    health::check(system, &mut health::SystemProbes { in_daemon }, until)
}

/// The block's slot variables, read from the ESP (mounted meanwhile,
/// read-only when it can be).
pub fn read_vars(persist: &Path) -> Result<SlotVars> {
    let esp = mount_esp_to_read(persist)?;
    Ok(SlotVars::of(&onstick::read_env(&esp.dir)?))
}

/// `saver status`'s slot line: the running slot, whether committed, and a
/// pending, running or failed trial.
pub fn status_line(running: &Running, vars: &SlotVars) -> String {
    let mut line = running.slot.name().to_string();
    if vars.committed == running.slot {
        line.push_str(" (committed)");
    } else {
        line.push_str(&format!(
            " ({}; committed: {})",
            if running.trial {
                "on trial"
            } else {
                "booted by hand"
            },
            vars.committed
        ));
    }
    match state::trial(running, vars) {
        Trial::None => {}
        Trial::Pending(s) => line.push_str(&format!(" · {s}: trial pending (the next boot tries it)")),
        Trial::InProgress(s) => line.push_str(&format!(
            " · {s}: trial in progress, not committed yet (the daemon's health check or `saver slot commit`)"
        )),
        Trial::Failed(s) => line.push_str(&format!(
            " · {s}: trial failed (did not commit: failed, hung or lost power)"
        )),
    }
    line
}

/// `saver status`'s slot line and JSON, reading the block; an unreadable
/// block is said, not an error.
pub fn status_summary(paths: &Paths) -> (String, serde_json::Value) {
    let running = running_of(paths);
    match read_vars(persist_root()) {
        Ok(vars) => (
            status_line(&running, &vars),
            json!({
                "running": running.slot.name(),
                "trial_boot": running.trial,
                "committed": vars.committed.name(),
                "trial": trial_json(state::trial(&running, &vars)),
            }),
        ),
        Err(e) => (
            format!("{} (GRUB's environment unknown: {e:#})", running.slot),
            json!({"running": running.slot.name(), "trial_boot": running.trial, "error": format!("{e:#}")}),
        ),
    }
}

fn trial_json(t: Trial) -> serde_json::Value {
    match t {
        Trial::None => serde_json::Value::Null,
        Trial::Pending(s) => json!({"slot": s.name(), "state": "pending"}),
        Trial::InProgress(s) => json!({"slot": s.name(), "state": "in progress"}),
        Trial::Failed(s) => json!({"slot": s.name(), "state": "failed"}),
    }
}

/// `saver slot status`.
fn status(running: &Running, json: bool) -> Result<()> {
    let vars = read_vars(persist_root());
    let slots: Vec<onstick::SlotInfo> = Slot::ALL
        .iter()
        .map(|&s| onstick::slot_info(persist_root(), s))
        .collect();
    if json {
        let value = match &vars {
            Ok(v) => json!({
                "running": running.slot.name(),
                "trial_boot": running.trial,
                "trial_timeout": running.timeout,
                "committed": v.committed.name(),
                "trial": trial_json(state::trial(running, v)),
                "slots": slots,
            }),
            Err(e) => json!({
                "running": running.slot.name(),
                "trial_boot": running.trial,
                "error": format!("{e:#}"),
                "slots": slots,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return vars.map(drop);
    }
    println!(
        "running:    slot {}{}",
        running.slot,
        if running.trial {
            format!(" (trial boot, watchdog {} s)", running.timeout)
        } else {
            String::new()
        }
    );
    let vars = vars.context("cannot tell the committed slot")?;
    println!("committed:  slot {}", vars.committed);
    println!("trial:      {}", state::trial(running, &vars));
    for info in &slots {
        println!("slot {}:     {}", info.slot, info.describe());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_where_the_slots_stand() {
        let vars = |committed, trial, tried| SlotVars {
            committed,
            trial,
            tried,
        };
        let a = state::running("ramstick.slot=a");
        let b_trial = state::running("ramstick.slot=b ramstick.trial=on");
        assert_eq!(status_line(&a, &vars(Slot::A, None, None)), "a (committed)");
        assert_eq!(
            status_line(&a, &vars(Slot::A, None, Some(Slot::B))),
            "a (committed) · b: trial failed (did not commit: failed, hung or lost power)"
        );
        assert_eq!(
            status_line(&a, &vars(Slot::A, Some(Slot::B), None)),
            "a (committed) · b: trial pending (the next boot tries it)"
        );
        let line = status_line(&b_trial, &vars(Slot::A, None, Some(Slot::B)));
        assert!(
            line.starts_with("b (on trial; committed: a) · b: trial in progress"),
            "{line}"
        );
        assert_eq!(
            status_line(&a, &vars(Slot::B, None, None)),
            "a (booted by hand; committed: b)"
        );
    }
}

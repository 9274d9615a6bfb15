//! What `saver slot try|commit|rollback` change, as plans of steps run
//! over [`SlotFs`] (the stick, or a recording fake in the tests).
//!
//! Every change of GRUB's environment block is one in-place rewrite of its
//! first sector ([`ramstick_common::grubenv::write_in_place`]): a power cut
//! leaves the old block or the new one. A commit has a second step, the
//! watchdog's disarming, and it comes last: a cut between the two leaves
//! the new slot committed with the watchdog still running, whose reboot
//! then boots the committed (new) slot — never the reverse, a disarmed
//! trial that a later reboot would undo without a word.

use super::state::{Running, SlotVars, ENV_SLOT, ENV_TRIAL, ENV_TRIED};
use anyhow::{bail, Result};
use ramstick_common::grubenv::Env;
use ramstick_common::place::Slot;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// GRUB's environment block rewritten in place with these variables.
    WriteEnv(Env),
    /// The trial's watchdog disarmed: `/dev/watchdog` opened, `V` written,
    /// closed.
    Disarm,
}

/// Where the steps act.
pub trait SlotFs {
    fn write_env(&mut self, env: &Env) -> Result<()>;
    fn disarm_watchdog(&mut self) -> Result<()>;
}

/// Runs `steps`, stopping at the first error.
pub fn run(fs: &mut dyn SlotFs, steps: &[Step]) -> Result<()> {
    for step in steps {
        match step {
            Step::WriteEnv(env) => fs.write_env(env)?,
            Step::Disarm => fs.disarm_watchdog()?,
        }
    }
    Ok(())
}

/// The write of `next`, unless the block already says that.
fn write_if_changed(env: &Env, next: Env) -> Vec<Step> {
    if &next == env {
        Vec::new()
    } else {
        vec![Step::WriteEnv(next)]
    }
}

/// `saver slot try SLOT`: the next boot boots `slot` once. `complete`:
/// whether its base image is on the stick. The committed slot needs no
/// trial, and an incomplete slot is refused (GRUB would boot a slot that
/// cannot start).
pub fn plan_try(env: &Env, slot: Slot, complete: bool) -> Result<Vec<Step>> {
    let vars = SlotVars::of(env);
    if !complete {
        bail!("slot {slot} is not complete (it has no base image): nothing to try");
    }
    if slot == vars.committed {
        bail!(
            "slot {slot} is already the committed slot: every boot uses it (to leave a trial \
             pending for the other slot: `saver slot rollback`)"
        );
    }
    let mut next = env.clone();
    next.set(ENV_TRIAL, slot.name());
    next.set(ENV_TRIED, "");
    Ok(write_if_changed(env, next))
}

/// `saver slot commit` on a trial boot: the running slot becomes the
/// committed one, then the watchdog is disarmed. Refused when the block no
/// longer shows this trial (`saver slot rollback` or `try` since the boot):
/// a commit must not undo them.
pub fn plan_commit(env: &Env, running: &Running) -> Result<Vec<Step>> {
    if !running.trial {
        bail!(
            "this is not a trial boot (no ramstick.trial=on): slot {} runs as it is; nothing to \
             commit",
            running.slot
        );
    }
    let vars = SlotVars::of(env);
    if vars.tried != Some(running.slot) && vars.committed != running.slot {
        bail!(
            "GRUB's environment no longer shows this trial of slot {} (rolled back since the \
             boot?): nothing committed, the next boot uses slot {}",
            running.slot,
            vars.next_boot().0
        );
    }
    let mut next = env.clone();
    next.set(ENV_SLOT, running.slot.name());
    next.set(ENV_TRIED, "");
    let mut steps = write_if_changed(env, next);
    steps.push(Step::Disarm);
    Ok(steps)
}

/// `saver slot rollback`: the slot that is not running becomes the
/// committed one (`complete`: whether its base image is on the stick), and
/// any trial flag goes. Returns the plan and the slot the next boot uses.
pub fn plan_rollback(env: &Env, running: &Running, complete: bool) -> Result<(Vec<Step>, Slot)> {
    let target = running.slot.other();
    if !complete {
        bail!(
            "slot {target} is not complete (it has no base image): the stick keeps booting slot {}",
            SlotVars::of(env).committed
        );
    }
    let mut next = env.clone();
    next.set(ENV_SLOT, target.name());
    next.set(ENV_TRIAL, "");
    next.set(ENV_TRIED, "");
    Ok((write_if_changed(env, next), target))
}

#[cfg(test)]
mod tests {
    use super::super::state::{running, trial, Trial};
    use super::*;
    use std::collections::BTreeSet;

    /// A stick whose writes stop ("power cut") after `budget` steps, with
    /// the slots that have a base image and the watchdog's state.
    #[derive(Debug, Clone)]
    struct Fake {
        env: Env,
        complete: BTreeSet<Slot>,
        armed: bool,
        budget: usize,
    }

    impl Fake {
        fn new(vars: &[(&str, &str)], armed: bool) -> Fake {
            let mut env = Env::default();
            for (k, v) in vars {
                env.set(k, v);
            }
            Fake {
                env,
                complete: Slot::ALL.into(),
                armed,
                budget: usize::MAX,
            }
        }

        fn spend(&mut self) -> Result<()> {
            if self.budget == 0 {
                bail!("power cut");
            }
            self.budget -= 1;
            Ok(())
        }

        /// GRUB's script at a boot: consumes a trial flag. Returns the
        /// kernel command line it boots.
        fn grub_boots(&mut self) -> String {
            let vars = SlotVars::of(&self.env);
            match vars.trial {
                Some(t) => {
                    self.env.set(ENV_TRIED, t.name());
                    self.env.set(ENV_TRIAL, "");
                    self.armed = true;
                    format!("ramstick.slot={t} ramstick.trial=on")
                }
                None => {
                    self.armed = false;
                    format!("ramstick.slot={}", vars.committed)
                }
            }
        }

        /// What the stick boots now and, if that boot hangs until the
        /// watchdog fires, then: both must be complete slots.
        fn bootable(&self) -> Result<(), String> {
            let mut stick = self.clone();
            for _ in 0..2 {
                let line = stick.grub_boots();
                let slot = running(&line).slot;
                if !stick.complete.contains(&slot) {
                    return Err(format!("boots slot {slot}, which has no base image"));
                }
            }
            Ok(())
        }
    }

    impl SlotFs for Fake {
        fn write_env(&mut self, env: &Env) -> Result<()> {
            self.spend()?;
            self.env = env.clone();
            Ok(())
        }
        fn disarm_watchdog(&mut self) -> Result<()> {
            self.spend()?;
            self.armed = false;
            Ok(())
        }
    }

    /// Runs `steps` on copies of `start` cut after 0, 1, … all of them:
    /// only the whole run succeeds, every stick left boots a complete slot,
    /// and `check` holds of it.
    fn cut_after_every_step(start: &Fake, steps: &[Step], check: impl Fn(usize, &Fake)) {
        for cut in 0..=steps.len() {
            let mut fake = Fake {
                budget: cut,
                ..start.clone()
            };
            let result = run(&mut fake, steps);
            assert_eq!(result.is_ok(), cut == steps.len(), "cut after {cut}");
            fake.bootable()
                .unwrap_or_else(|e| panic!("cut after {cut} steps: {e}"));
            check(cut, &fake);
        }
    }

    #[test]
    fn try_sets_the_one_shot_flag_and_refuses_what_cannot_boot() {
        let fake = Fake::new(&[(ENV_SLOT, "a"), (ENV_TRIED, "b")], false);
        let steps = plan_try(&fake.env, Slot::B, true).unwrap();
        let mut want = fake.env.clone();
        want.set(ENV_TRIAL, "b");
        want.set(ENV_TRIED, "");
        assert_eq!(steps, [Step::WriteEnv(want)]);
        let err = plan_try(&fake.env, Slot::B, false).unwrap_err().to_string();
        assert!(err.contains("not complete"), "{err}");
        let err = plan_try(&fake.env, Slot::A, true).unwrap_err().to_string();
        assert!(err.contains("already the committed slot"), "{err}");
        cut_after_every_step(&fake, &steps, |cut, f| {
            let next = SlotVars::of(&f.env).next_boot();
            let want = if cut == 0 {
                (Slot::A, false)
            } else {
                (Slot::B, true)
            };
            assert_eq!(next, want, "cut after {cut}");
        });
    }

    #[test]
    fn commit_writes_the_slot_before_it_disarms_the_watchdog() {
        // A trial of b that GRUB started.
        let mut fake = Fake::new(&[(ENV_SLOT, "a"), (ENV_TRIAL, "b")], false);
        let line = fake.grub_boots();
        let r = running(&line);
        assert!(r.trial && fake.armed);
        let steps = plan_commit(&fake.env, &r).unwrap();
        let mut want = fake.env.clone();
        want.set(ENV_SLOT, "b");
        want.set(ENV_TRIED, "");
        assert_eq!(steps, [Step::WriteEnv(want), Step::Disarm]);
        cut_after_every_step(&fake, &steps, |cut, f| {
            let vars = SlotVars::of(&f.env);
            // A disarmed watchdog only with the new slot committed.
            assert!(f.armed || vars.committed == Slot::B, "cut after {cut}");
            let want = if cut == 0 { Slot::A } else { Slot::B };
            assert_eq!(vars.committed, want, "cut after {cut}");
            // Whatever the cut, a reboot says what happened: before the
            // write, the trial failed; after it, b is committed.
            let after = running(&f.clone().grub_boots());
            let seen = trial(&after, &vars);
            if cut == 0 {
                assert_eq!(seen, Trial::Failed(Slot::B));
            } else {
                assert_eq!((after.slot, seen), (Slot::B, Trial::None));
            }
        });
        // Not on a normal boot.
        let err = plan_commit(&fake.env, &running("ramstick.slot=b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a trial boot"), "{err}");
        // Rolled back during the trial: a later commit (the daemon's check
        // passing) does not undo it.
        let mut rolled_back = fake.clone();
        let (back, _) = plan_rollback(&rolled_back.env, &r, true).unwrap();
        run(&mut rolled_back, &back).unwrap();
        let err = plan_commit(&rolled_back.env, &r).unwrap_err().to_string();
        assert!(err.contains("no longer shows this trial"), "{err}");
        assert!(err.contains("the next boot uses slot a"), "{err}");
        // A commit cut short and run again only disarms.
        let mut done = fake.clone();
        run(&mut done, &steps[..1]).unwrap();
        assert_eq!(plan_commit(&done.env, &r).unwrap(), [Step::Disarm]);
    }

    #[test]
    fn a_trial_that_never_commits_returns_to_the_old_slot() {
        let mut fake = Fake::new(&[(ENV_SLOT, "a")], false);
        let steps = plan_try(&fake.env, Slot::B, true).unwrap();
        run(&mut fake, &steps).unwrap();
        let first = running(&fake.grub_boots());
        assert_eq!((first.slot, first.trial), (Slot::B, true));
        assert_eq!(
            trial(&first, &SlotVars::of(&fake.env)),
            Trial::InProgress(Slot::B)
        );
        // It hangs: the watchdog reboots.
        let second = running(&fake.grub_boots());
        assert_eq!((second.slot, second.trial), (Slot::A, false));
        assert_eq!(
            trial(&second, &SlotVars::of(&fake.env)),
            Trial::Failed(Slot::B)
        );
        // The next try clears the record.
        let again = plan_try(&fake.env, Slot::B, true).unwrap();
        run(&mut fake, &again).unwrap();
        assert_eq!(SlotVars::of(&fake.env).tried, None);
    }

    #[test]
    fn rollback_commits_the_other_slot_and_drops_any_trial() {
        // Slot b committed and running; a pending trial of... nothing.
        let fake = Fake::new(&[(ENV_SLOT, "b"), (ENV_TRIAL, "a")], false);
        let r = running("ramstick.slot=b");
        let (steps, target) = plan_rollback(&fake.env, &r, true).unwrap();
        assert_eq!(target, Slot::A);
        let mut want = fake.env.clone();
        want.set(ENV_SLOT, "a");
        want.set(ENV_TRIAL, "");
        want.set(ENV_TRIED, "");
        assert_eq!(steps, [Step::WriteEnv(want)]);
        cut_after_every_step(&fake, &steps, |cut, f| {
            let next = SlotVars::of(&f.env).next_boot();
            assert_eq!(next.0, Slot::A, "cut after {cut}");
        });
        let mut incomplete = fake.clone();
        incomplete.complete.remove(&Slot::A);
        let err = plan_rollback(&incomplete.env, &r, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("slot a is not complete"), "{err}");
        assert!(err.contains("keeps booting slot b"), "{err}");
        // On a trial of b, rolling back keeps a and forgets the trial.
        let mut trial_b = Fake::new(&[(ENV_SLOT, "a"), (ENV_TRIAL, "b")], false);
        let r = running(&trial_b.grub_boots());
        let (steps, target) = plan_rollback(&trial_b.env, &r, true).unwrap();
        assert_eq!(target, Slot::A);
        run(&mut trial_b, &steps).unwrap();
        let vars = SlotVars::of(&trial_b.env);
        assert_eq!(
            (vars.committed, vars.trial, vars.tried),
            (Slot::A, None, None)
        );
    }
}

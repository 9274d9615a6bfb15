//! A trial boot's watchdog (`ramstick.trial=on`): after the modules, init
//! loads the watchdog module with the trial's timeout and starts its timer,
//! which init never stops. The saver stops it once the system passed its
//! health check and committed the slot; otherwise (a failure, a hang, a
//! power cut) the machine restarts, and GRUB — whose one-shot trial flag was
//! used up — boots the committed slot. A watchdog that cannot be armed is a
//! warning: the trial boots on, without that protection.

use ramstick_common::plan::Plan;
use std::path::Path;

use crate::mounts::at;
use crate::sys::Sys;

/// Arms the trial watchdog when the plan asks for one, loading its module
/// through `load(module, params)`. Returns whether it is armed.
pub fn arm(
    sys: &dyn Sys,
    root: &Path,
    plan: &Plan,
    load: impl FnOnce(&str, &str) -> anyhow::Result<()>,
) -> bool {
    let Some(t) = &plan.trial else {
        return false;
    };
    if let Err(e) = load(&t.module, &t.module_params) {
        log::warn!(
            "trial boot of slot {}: cannot load the watchdog module {} ({e:#}); the trial runs \
             without it: if it hangs, restart the machine yourself to return to the committed slot",
            plan.slot,
            t.module
        );
        return false;
    }
    match sys.arm_watchdog(&at(root, &t.device), t.timeout_secs) {
        Ok(()) => {
            log::info!(
                "trial boot of slot {}: the system must confirm itself within {} s or it \
                 restarts into the committed slot",
                plan.slot,
                t.timeout_secs
            );
            true
        }
        Err(e) => {
            log::warn!(
                "trial boot of slot {}: cannot arm {} ({e}); the trial runs without a watchdog: \
                 if it hangs, restart the machine yourself to return to the committed slot",
                plan.slot,
                t.device
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RecordingSys;
    use crate::testplan::plan_for;
    use std::cell::RefCell;

    #[test]
    fn a_trial_loads_softdog_with_its_timeout_and_arms_it_once() {
        let sys = RecordingSys::new();
        let loaded = RefCell::new(Vec::new());
        let plan = plan_for("ramstick.slot=b ramstick.trial=on ramstick.trial.timeout=90");
        let armed = arm(&sys, Path::new("/"), &plan, |m, p| {
            loaded.borrow_mut().push(format!("{m} {p}"));
            Ok(())
        });
        assert!(armed);
        assert_eq!(loaded.into_inner(), ["softdog soft_margin=90"]);
        assert_eq!(sys.calls(), ["watchdog /dev/watchdog 90"]);
    }

    #[test]
    fn no_trial_no_watchdog() {
        let sys = RecordingSys::new();
        let armed = arm(
            &sys,
            Path::new("/"),
            &plan_for("ramstick.slot=b"),
            |_, _| panic!("no module for a boot that is not a trial"),
        );
        assert!(!armed);
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn a_watchdog_that_cannot_be_armed_is_only_a_warning() {
        let plan = plan_for("ramstick.trial=on");
        let sys = RecordingSys::new();
        let armed = arm(&sys, Path::new("/"), &plan, |_, _| {
            Err(anyhow::anyhow!("module softdog not found"))
        });
        assert!(!armed);
        assert!(
            sys.calls().is_empty(),
            "no device opened without its module"
        );
        let mut sys = RecordingSys::new();
        sys.fail_on.push("watchdog".into());
        assert!(!arm(&sys, Path::new("/"), &plan, |_, _| Ok(())));
        assert_eq!(sys.calls(), ["watchdog /dev/watchdog 600"]);
    }
}

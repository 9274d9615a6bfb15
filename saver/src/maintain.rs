//! Running compactions: after a save when the policy asks for it and the
//! merge is small enough for someone waiting at shutdown, in the daemon
//! when the system is idle, or by hand (`saver compact`, everything that
//! may be merged). Each merge is its own crash-safe plan (`compact`); the
//! session's record follows the renaming, so its next save builds on the
//! merged chain.

use crate::commit;
use crate::compact::{self, POLICY};
use crate::save::lock;
use crate::session::{self, Paths, Session};
use crate::space::human;
use crate::stick::{say, PersistStick};
use anyhow::Result;
use ramstick_common::chain::Saved;
use ramstick_common::manifest::substitute_run;
use ramstick_squash::Exclude;

/// How much merging is acceptable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Right after a save: someone may be waiting for the shutdown.
    Save,
    /// The daemon found the system idle.
    Idle,
    /// `saver compact`: merge everything that may be merged.
    Forced,
}

impl Budget {
    /// Bytes a merge may read (the chain bound overrides it).
    fn limit(self) -> u64 {
        match self {
            // A few seconds of merging on a slow machine.
            Budget::Save => 32 << 20,
            Budget::Idle => 2 << 30,
            Budget::Forced => u64::MAX,
        }
    }
}

/// Merges while the policy asks for it and `budget` allows; returns the
/// number of merges done.
pub fn compact_if_due(paths: &Paths, session: &mut Session, budget: Budget) -> Result<usize> {
    let mut merges = 0;
    // A merge can complete a run of the next level: a few rounds at most.
    for _ in 0..4 {
        let Saved::Manifest(mut m) = session::read_saved(paths) else {
            return Ok(merges);
        };
        // Never rewrite a chain boot did not apply (made on another base).
        if session.info.slot.base_check.blocks_saving() {
            return Ok(merges);
        }
        // A manifest from before slots learns the base its chain runs on.
        if m.base.is_none() {
            m.base = crate::save::base_digest(paths, &session.info);
        }
        let run = match budget {
            Budget::Forced if merges == 0 => compact::pick_all(&m),
            Budget::Forced => None,
            _ => compact::pick(&m, &POLICY),
        };
        let Some(run) = run else {
            break;
        };
        let bytes = compact::input_bytes(&m, &run);
        let bound = m.current.len() >= POLICY.max_chain;
        if bytes > budget.limit() && !bound {
            say(&format!(
                "{} layers ({}) are due for merging; left for when the system is idle",
                run.len(),
                human(bytes)
            ));
            break;
        }
        say(&format!("merging {} layers ({})", run.len(), human(bytes)));
        let plan = compact::plan(&m, &run, &session::layer_files(paths)?);
        let none = Exclude::none();
        let mut stick = PersistStick::new(paths, &none);
        commit::run(&mut stick, &plan.steps)?;
        substitute_run(&mut session.state.base, &run, &plan.merged);
        session.store(paths)?;
        merges += 1;
    }
    Ok(merges)
}

/// `saver compact`: merges everything that may be merged, under the lock.
pub fn compact(paths: &Paths) -> Result<()> {
    let _lock = lock(&paths.state)?;
    let mut session = Session::load(paths)?;
    match compact_if_due(paths, &mut session, Budget::Forced)? {
        0 => say("nothing to merge: the chain below the latest session has fewer than two layers"),
        _ => say("compaction done"),
    }
    Ok(())
}

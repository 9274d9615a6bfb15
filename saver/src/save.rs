//! `saver save`: persist the session's changes to the stick as one layer.
//!
//! In order, under the saver's lock: how the session booted and what it
//! saved so far are read; a clean boot saves nothing; an unchanged session
//! (an empty upper, or one equal to the session's last layer) writes
//! nothing; the space on /persist is checked; then the plan of `saveplan`
//! runs over the persist partition (`stick`): the upper is packed into a
//! new layer, read back by both readers, and the manifest committed. Last,
//! when the compaction policy asks for it and it fits the time budget of a
//! save, layers are merged (see `maintain`).

use crate::clock;
use crate::commit;
use crate::maintain;
use crate::onoff::{self, Off};
use crate::saveplan::{self, Situation};
use crate::session::{self, session_exclude, Paths, Session};
use crate::space::{self, human, Estimate};
use crate::stick::{say, PersistStick};
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::chain::{FailureClass, Saved};
use ramstick_common::cmdline::BootType;
use ramstick_common::manifest::LAYERS_DIR;
use ramstick_squash::Exclude;
use std::fs::File;
use std::path::Path;
use std::time::{Instant, SystemTime};

/// What asked for the save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The system is stopping.
    Shutdown,
    /// The daemon's timer.
    Checkpoint,
    /// `saver save`, SIGUSR1.
    Demand,
}

/// How to save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Save even an unchanged session.
    pub force: bool,
    /// Build on a chain boot only partly read for a transient reason.
    pub onto_partial: bool,
    pub trigger: Trigger,
}

impl SaveOptions {
    pub fn new(trigger: Trigger) -> SaveOptions {
        SaveOptions {
            force: false,
            onto_partial: false,
            trigger,
        }
    }
}

/// How a save went (when it did not fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A clean boot: nothing is ever saved.
    CleanBoot,
    /// Nothing changed: nothing written.
    Unchanged,
    /// Saving is off (`saver off`, `ramstick.save=off`): nothing written.
    Off(Off),
    /// A new layer of this many bytes.
    Saved { layer: String, bytes: u64 },
}

/// The digest of the base this session runs on, which a commit writes as the
/// manifest's `base`: boot.json's when init read it to compare, else read
/// now (a few KiB). `None` when it cannot be read: the manifest keeps its own.
pub fn base_digest(paths: &Paths, info: &BootInfo) -> Option<String> {
    info.slot.base_digest.clone().or_else(|| {
        // `paths.persist` is the state directory; the base is named from
        // the partition's root.
        let root = crate::running::partition_root(&paths.persist, &info.state_dir);
        let image = root.join(&info.slot.base_image);
        ramstick_squash::meta_digest(&image).ok().map(|(_, d)| d)
    })
}

/// Saves the session.
pub fn save(paths: &Paths, opts: SaveOptions) -> Result<Outcome> {
    let _lock = lock(&paths.state)?;
    save_locked(paths, opts)
}

/// [`save`], with the lock held.
pub fn save_locked(paths: &Paths, opts: SaveOptions) -> Result<Outcome> {
    let started = Instant::now();
    let mut session = Session::load(paths)?;
    if session.info.asked == BootType::Clean {
        say("clean boot (ramstick.boot=clean): the session is not saved; nothing was written to the stick");
        return Ok(Outcome::CleanBoot);
    }
    if let Some(why) = session.info.slot.base_check.message(session.info.slot.slot) {
        say(&format!(
            "the session is not saved: {why}; nothing was written to the stick"
        ));
        return Ok(Outcome::CleanBoot);
    }
    if let Some(off) = onoff::why_off(paths) {
        say(&format!(
            "session not saved: saving is off ({off}); nothing was written to the stick"
        ));
        return Ok(Outcome::Off(off));
    }
    let exclude = session_exclude(&paths.exclude)?;
    let estimate = space::estimate(&paths.upperdir, &exclude)?;
    if !opts.force {
        if let Some(why) = unchanged(paths, &session, &exclude, &estimate) {
            say(&format!("{why}: nothing to save, nothing was written"));
            return Ok(Outcome::Unchanged);
        }
    }
    warn_if_long(&estimate, opts.trigger);
    session.info.slot.base_digest = base_digest(paths, &session.info);
    let saved = session::read_saved(paths);
    let layer_files = session::layer_files(paths)?;
    let reclaimable = corrupt_bytes(paths, &session, &saved);
    // What an interrupted save left is removed before the new layer is written.
    let free = space::free(crate::running::existing(&paths.persist))?
        + garbage_bytes(paths, &saved, &layer_files);
    let reclaim = space_plan(&estimate, free, reclaimable)?;
    let stamp = clock::stamp(SystemTime::now());
    let plan = saveplan::plan(&Situation {
        saved: &saved,
        boot: &session.info,
        session: &session.state,
        layer_files: &layer_files,
        legacy_present: session::legacy_present(paths),
        stamp: &stamp,
        onto_partial: opts.onto_partial,
        reclaim_corrupt: reclaim,
    })
    .context("the session was NOT saved")?;
    for note in &plan.notes {
        say(note);
    }
    say(&format!(
        "saving {} ({} entries, {} of file data) as {LAYERS_DIR}/{}",
        paths.upperdir.display(),
        estimate.entries,
        human(estimate.data),
        plan.layer
    ));
    let mut stick = PersistStick::new(paths, &exclude);
    let done = match commit::run(&mut stick, &plan.steps) {
        Ok(done) => done,
        Err(e) if is_enospc(&e) => bail!(
            "the stick is full: the new layer did not fit ({} free before the save, up to {} \
             needed). What was written is unreferenced and removed by the next save; the saved \
             state is untouched",
            human(free),
            human(estimate.worst())
        ),
        Err(e) => {
            return Err(
                e.context("the session was NOT saved (boot still finds the last saved state)")
            )
        }
    };
    session.state = plan.session.clone();
    session.store(paths)?;
    let chain = done.manifest.as_ref().map_or(0, |m| m.current.len());
    say(&format!(
        "saved the session in {:.1} s: wrote {} to the stick ({LAYERS_DIR}/{}); the chain has {chain} \
         layers, the backup boot shows the state before this session",
        started.elapsed().as_secs_f64(),
        human(stick.written),
        plan.layer
    ));
    let bytes = stick.written;
    if let Err(e) = maintain::compact_if_due(paths, &mut session, maintain::Budget::Save) {
        say(&format!(
            "compaction skipped: {e:#} (the saved state is complete)"
        ));
    }
    Ok(Outcome::Saved {
        layer: plan.layer,
        bytes,
    })
}

/// How long the init systems wait for the shutdown save (systemd's
/// `TimeoutStopSec`, the busybox hook's `timeout`) before killing it.
pub const SHUTDOWN_LIMIT_SECS: u64 = 15 * 60;
/// What a save is assumed to manage: a slow USB 2 stick, packing and
/// reading back on a slow machine.
const ASSUMED_BYTES_PER_SEC: u64 = 8 << 20;
/// Entries packed and checked per second on such a machine.
const ASSUMED_ENTRIES_PER_SEC: u64 = 2000;

/// Seconds a save of `est` may take on a slow machine.
pub fn expected_secs(est: &Estimate) -> u64 {
    est.data / ASSUMED_BYTES_PER_SEC + est.entries / ASSUMED_ENTRIES_PER_SEC
}

/// Says when a save will take long, and when a shutdown save may take
/// longer than the init system waits (a killed save leaves the saved
/// state as it was, but loses the session).
fn warn_if_long(est: &Estimate, trigger: Trigger) {
    let secs = expected_secs(est);
    if secs < 60 {
        return;
    }
    say(&format!(
        "this save packs {} in {} entries: up to about {} min on a slow stick",
        human(est.data),
        est.entries,
        secs.div_ceil(60)
    ));
    if trigger == Trigger::Shutdown && secs > SHUTDOWN_LIMIT_SECS {
        say(&format!(
            "warning: that is more than the {} min the init system waits at shutdown: if it is \
             killed, the stick keeps the last saved state and this session is lost. Next time, \
             run `saver save` before shutting down, or exclude large files (/etc/ramstick/exclude)",
            SHUTDOWN_LIMIT_SECS / 60
        ));
    }
}

/// Why nothing needs saving, if so.
fn unchanged(
    paths: &Paths,
    session: &Session,
    exclude: &Exclude,
    est: &Estimate,
) -> Option<String> {
    let Some(layer) = &session.state.layer else {
        return (est.entries == 0).then(|| "the session changed nothing".to_string());
    };
    let image = paths.layers().join(layer);
    match ramstick_squash::verify(&image, &paths.upperdir, exclude) {
        Ok(diffs) if diffs.is_empty() => Some(format!(
            "the session is unchanged since its last save ({layer})"
        )),
        Ok(diffs) => {
            say(&format!("{} entries changed since {layer}", diffs.len()));
            None
        }
        Err(e) => {
            say(&format!(
                "cannot compare the session with {layer} ({e}); saving it"
            ));
            None
        }
    }
}

/// Bytes of the files the plan removes as garbage before writing.
fn garbage_bytes(paths: &Paths, saved: &Saved, layer_files: &[String]) -> u64 {
    saveplan::garbage(saved, layer_files)
        .iter()
        .filter_map(|step| match step {
            commit::Step::Remove(path) => std::fs::metadata(paths.on_stick(path)).ok(),
            _ => None,
        })
        .map(|m| m.len())
        .sum()
}

/// Bytes of layers boot found corrupt that are still on the stick.
fn corrupt_bytes(paths: &Paths, session: &Session, saved: &Saved) -> u64 {
    let Saved::Manifest(m) = saved else {
        return 0;
    };
    session
        .info
        .failures
        .iter()
        .filter(|f| f.class == FailureClass::Corrupt)
        .filter_map(|f| m.layers.get(&f.layer).map(|_| &f.layer))
        .filter_map(|n| std::fs::metadata(paths.layers().join(n)).ok())
        .map(|meta| meta.len())
        .sum()
}

/// Decides whether the new layer can be written; true when corrupt layers
/// (`reclaimable` bytes) must be deleted rather than set aside to make room.
pub fn space_plan(est: &Estimate, free: u64, reclaimable: u64) -> Result<bool> {
    if free >= est.worst() {
        return Ok(false);
    }
    if free + reclaimable < est.floor() {
        bail!(
            "not enough space on the stick for the new layer: it needs about {} (up to {} if the \
             data does not compress), and {} is free. Nothing was written; the saved state is \
             untouched. Free some space on /persist or exclude large files (/etc/ramstick/exclude)",
            human(est.floor()),
            human(est.worst()),
            human(free + reclaimable)
        );
    }
    if free + reclaimable < est.worst() {
        say(&format!(
            "the new layer may not fit: up to {} needed, {} free; trying (if the stick fills \
             up, the partial layer is left unreferenced and the saved state stays)",
            human(est.worst()),
            human(free + reclaimable)
        ));
    }
    Ok(free < est.floor() && reclaimable > 0)
}

/// True if the error chain holds ENOSPC.
fn is_enospc(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c.downcast_ref::<std::io::Error>().or_else(|| {
            match c.downcast_ref::<ramstick_squash::Error>() {
                Some(ramstick_squash::Error::Io { error, .. }) => Some(error),
                _ => None,
            }
        });
        io.and_then(std::io::Error::raw_os_error) == Some(nix::libc::ENOSPC)
    })
}

/// Only one save or compaction at a time (the daemon and a manual command).
pub fn lock(state: &Path) -> Result<Flock<File>> {
    std::fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
    let path = state.join("lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stick::changed_while_saving;
    use crate::verifymount;

    #[test]
    fn space_decisions() {
        let est = Estimate {
            entries: 0,
            data: 99 << 20,
        };
        assert_eq!(est.worst(), 100 << 20);
        assert!(!space_plan(&est, 200 << 20, 0).unwrap());
        assert!(!space_plan(&est, 200 << 20, 5).unwrap());
        // Tight but above the floor: tried, corrupt layers only set aside.
        assert!(!space_plan(&est, 50 << 20, 0).unwrap());
        assert!(!space_plan(&est, 50 << 20, 60 << 20).unwrap());
        // Below the floor, corrupt layers make the room: deleted.
        assert!(space_plan(&est, 5 << 20, 10 << 20).unwrap());
        // Hopeless: refused with both numbers.
        let err = space_plan(&est, 1 << 20, 0).unwrap_err().to_string();
        assert!(
            err.contains("100.0 MiB") && err.contains("1.0 MiB is free"),
            "{err}"
        );
    }

    #[test]
    fn the_expected_time_grows_with_data_and_entries() {
        let small = Estimate {
            entries: 100,
            data: 1 << 20,
        };
        assert_eq!(expected_secs(&small), 0);
        let big = Estimate {
            entries: 200_000,
            data: 8 << 30,
        };
        assert_eq!(expected_secs(&big), 1024 + 100);
        assert!(expected_secs(&big) > SHUTDOWN_LIMIT_SECS);
    }

    #[test]
    fn a_tree_changing_meanwhile_is_retried_other_errors_are_not() {
        let changed = ramstick_squash::Error::Changed {
            path: "/run/ramstick/upper/upper/var/log/wtmp".into(),
            what: "its size changed (was 8832 bytes)".into(),
        };
        assert!(changed_while_saving(
            &anyhow::Error::new(changed).context("x")
        ));
        let mismatch = verifymount::Mismatch(vec!["upper: /a file".into()]);
        assert!(changed_while_saving(&anyhow::Error::new(mismatch)));
        let long = ramstick_squash::Error::Unpackable {
            path: "/x".into(),
            what: "name too long".into(),
        };
        assert!(!changed_while_saving(&anyhow::Error::new(long)));
    }

    #[test]
    fn enospc_is_found_through_the_codec_error() {
        let io = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let e = anyhow::Error::new(ramstick_squash::Error::io("write", "/persist/x", io))
            .context("cannot pack");
        assert!(is_enospc(&e));
        let other = std::io::Error::from_raw_os_error(nix::libc::EIO);
        assert!(!is_enospc(&anyhow::Error::new(other).context("x")));
    }
}

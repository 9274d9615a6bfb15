//! The plan of a save, pure: from what the stick holds, how this session
//! booted and what it saved already, the steps that write one new layer with
//! the session's changes and commit a manifest naming it.
//!
//! - The first save of a session appends its layer to the chain the session
//!   booted (`base`): `current = base + [new]`, and `backup = base`, the
//!   state before this session. After a backup boot the backup becomes the
//!   base and the default chain that was not booted becomes the backup, so
//!   nothing recent is lost.
//! - Later saves of the same session (checkpoints, `saver save`, SIGUSR1)
//!   replace the session's layer; `backup` stays the state before the
//!   session (a second save never pushes the pre-session state out).
//! - Boot used less than the asked chain: only a permanent failure (a layer
//!   missing or proven corrupt) lets the save build on the shorter chain; the
//!   healthy layers that were saved above the broken one are kept aside
//!   (`kept`), and a corrupt layer is renamed aside (or deleted when the
//!   stick needs the room: it is proven unusable). A transient failure (a
//!   read error) refuses the save unless asked to go on (`onto_partial`),
//!   and then the whole chain is kept aside too.
//! - A legacy stick (`upperfs*.squashfs`, no manifest) is converted: the
//!   image the session booted is hard-linked into `layers/` as the first
//!   layer; after the commit the legacy names are removed (the legacy backup,
//!   the state two saves ago, is dropped as the legacy rotation dropped it).
//! - A manifest that cannot be read is never saved over.

use crate::commit::{layer_path, Source, Step};
use anyhow::{bail, Result};
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::chain::{FailureClass, Saved};
use ramstick_common::cmdline::BootType;
use ramstick_common::manifest::{
    aside_name, layer_name, layer_number, Kept, LayerInfo, Manifest, Origin, LAYERS_DIR,
    LEGACY_BACKUP_IMAGE, LEGACY_IMAGE, MANIFEST_TMP,
};
use serde::{Deserialize, Serialize};

/// The level a converted legacy image gets: it holds everything ever saved
/// before, so the compaction policy treats it as long-merged already.
pub const MIGRATED_LEVEL: u32 = 3;

/// What this session has saved: kept in `/run/ramstick/saver/session.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionState {
    /// The chain the session's upper is a delta over (bottom first), in the
    /// stick's current names.
    pub base: Vec<String>,
    /// The layer holding this session's last save.
    pub layer: Option<String>,
}

impl SessionState {
    /// A session that saved nothing yet, over the chain boot used.
    pub fn booted(info: &BootInfo) -> SessionState {
        SessionState {
            base: info.layer_names(),
            layer: None,
        }
    }
}

/// Everything the plan depends on.
pub struct Situation<'a> {
    pub saved: &'a Saved,
    pub boot: &'a BootInfo,
    pub session: &'a SessionState,
    /// The names in `layers/` now.
    pub layer_files: &'a [String],
    /// Whether `upperfs.squashfs` and `upperfs-backup.squashfs` exist.
    pub legacy_present: [bool; 2],
    pub stamp: &'a str,
    /// Build on a chain boot could only partly read for a transient reason.
    pub onto_partial: bool,
    /// Delete corrupt layers instead of renaming them aside (space is short).
    pub reclaim_corrupt: bool,
}

/// A save to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavePlan {
    pub steps: Vec<Step>,
    /// The new layer's name.
    pub layer: String,
    /// The manifest the save commits (the new layers' records are filled in
    /// by the run).
    pub manifest: Manifest,
    /// The session after the commit.
    pub session: SessionState,
    /// What the save does beyond writing a layer, for the console.
    pub notes: Vec<String>,
}

/// Removes what no committed manifest names: layer files left by an
/// interrupted save or compaction, and an unrenamed manifest tmp.
pub fn garbage(saved: &Saved, layer_files: &[String]) -> Vec<Step> {
    let referenced = match saved {
        Saved::Manifest(m) => m.referenced(),
        // A damaged manifest's layers are not garbage: nothing is removed.
        Saved::Damaged(_) => return Vec::new(),
        Saved::Legacy { .. } | Saved::Nothing => Default::default(),
    };
    let mut steps: Vec<Step> = layer_files
        .iter()
        .filter(|n| {
            (layer_number(n).is_some() && !referenced.contains(n.as_str()))
                || n.as_str() == MANIFEST_TMP
        })
        .map(|n| Step::Remove(layer_path(n)))
        .collect();
    if !steps.is_empty() {
        steps.push(Step::SyncDir(LAYERS_DIR.into()));
    }
    steps
}

/// Plans a save of the session's upper.
pub fn plan(s: &Situation) -> Result<SavePlan> {
    if s.boot.asked == BootType::Clean {
        bail!("a clean boot is never saved");
    }
    if s.boot.slot.base_check.blocks_saving() {
        bail!(
            "this boot did not apply the saved state of slot {}: it was made on another base \
             (or the base could not be read to check). Nothing is saved over it, so it stays \
             untouched",
            s.boot.slot.slot
        );
    }
    let transient: Vec<_> = s
        .boot
        .failures
        .iter()
        .filter(|f| !f.class.is_permanent())
        .collect();
    if let Some(f) = transient.first().filter(|_| !s.onto_partial) {
        bail!(
            "boot could not use saved layer {} ({}: {}), which is not proof that it is damaged. \
             Saving this session now would build on the shorter chain boot used and leave the \
             layers above it out of the default boot, so nothing was written and your saved \
             state is untouched. Reboot to try the whole chain again; to save this session \
             anyway (the whole chain is then kept aside, listed by `saver status`), run \
             `saver save --onto-partial`",
            f.layer,
            f.class,
            f.message
        );
    }
    match s.saved {
        Saved::Damaged(why) => bail!(
            "the saved state's manifest cannot be read ({why}): nothing is saved over it, so \
             the layers it names stay untouched. Copy what you need to /persist/user; move \
             layers/manifest.json away (or restore it) to save again"
        ),
        Saved::Manifest(m) => plan_on_manifest(s, m),
        Saved::Legacy { .. } | Saved::Nothing => plan_conversion(s),
    }
}

/// A save on a layered stick.
fn plan_on_manifest(s: &Situation, old: &Manifest) -> Result<SavePlan> {
    let mut m = old.clone();
    // The chain is saved on the base this session runs (boot checked that
    // the old chain was made on it, when the manifest said).
    if let Some(base) = &s.boot.slot.base_digest {
        m.base = Some(base.clone());
    }
    let mut notes = Vec::new();
    let mut after = Vec::new();
    let layer = layer_name(m.next_layer);
    m.next_layer += 1;
    m.generation += 1;
    m.layers
        .insert(layer.clone(), LayerInfo::planned(0, Origin::Session));
    let session = match &s.session.layer {
        Some(prev) => {
            if old.current.last() != Some(prev) {
                bail!(
                    "the default chain no longer ends with this session's layer {prev} (another \
                     system saved to this stick?): not saving over it"
                );
            }
            m.current.pop();
            m.current.push(layer.clone());
            SessionState {
                base: s.session.base.clone(),
                layer: Some(layer.clone()),
            }
        }
        None => {
            if let Some(missing) = s.session.base.iter().find(|n| !old.layers.contains_key(*n)) {
                bail!("layer {missing}, which this session was booted from, is no longer on the stick: not saving");
            }
            let base = s.session.base.clone();
            let asked_backup = s.boot.asked == BootType::Backup && s.boot.used == BootType::Backup;
            // Whatever the new chains leave out and is not proven broken is kept aside.
            let dropped_current = old.current.clone();
            m.backup = if asked_backup && old.current != base {
                notes.push(format!(
                    "the default state that this backup boot did not use is now the backup ({} layers)",
                    old.current.len()
                ));
                old.current.clone()
            } else {
                base.clone()
            };
            m.current = base.clone();
            m.current.push(layer.clone());
            set_aside_broken(s, &mut m, &dropped_current, &mut notes, &mut after);
            SessionState {
                base,
                layer: Some(layer.clone()),
            }
        }
    };
    m.prune();
    // What no chain names any more (this session's earlier layer, layers
    // only the previous backup named) is removed after the commit.
    let handled: Vec<String> = after
        .iter()
        .filter_map(|st| match st {
            Step::Rename { from, .. } | Step::Remove(from) => Some(from.clone()),
            _ => None,
        })
        .collect();
    for name in old.referenced() {
        if !m.layers.contains_key(name) && !handled.contains(&layer_path(name)) {
            after.push(Step::Remove(layer_path(name)));
        }
    }
    let mut steps = garbage(s.saved, s.layer_files);
    steps.push(Step::WriteLayer {
        name: layer.clone(),
        source: Source::Session,
    });
    commit_then(&mut steps, &m, after);
    if s.legacy_present.iter().any(|p| *p) {
        // Left by a conversion that was cut short after its commit.
        for (present, name) in s
            .legacy_present
            .iter()
            .zip([LEGACY_IMAGE, LEGACY_BACKUP_IMAGE])
        {
            if *present {
                steps.push(Step::Remove(name.into()));
            }
        }
        steps.push(Step::SyncDir(String::new()));
    }
    Ok(SavePlan {
        steps,
        layer,
        manifest: m,
        session,
        notes,
    })
}

/// After a partial boot: corrupt layers of `chain` no longer used are
/// renamed aside (or deleted), and healthy ones the new chains leave out are
/// kept aside, with the reason.
fn set_aside_broken(
    s: &Situation,
    m: &mut Manifest,
    chain: &[String],
    notes: &mut Vec<String>,
    after: &mut Vec<Step>,
) {
    let in_use = |m: &Manifest, n: &String| m.current.contains(n) || m.backup.contains(n);
    let mut keep = Vec::new();
    for name in chain.iter().filter(|n| !in_use(m, n)) {
        let failure = s.boot.failures.iter().find(|f| &f.layer == name);
        match failure.map(|f| f.class) {
            Some(FailureClass::Corrupt) if s.reclaim_corrupt => {
                notes.push(format!("deleting the corrupt layer {name} to make room"));
                after.push(Step::Remove(layer_path(name)));
            }
            Some(FailureClass::Corrupt) => {
                let aside = aside_name(name, s.stamp);
                notes.push(format!(
                    "the corrupt layer {name} is kept as layers/{aside} (boot ignores it)"
                ));
                after.push(Step::Rename {
                    from: layer_path(name),
                    to: layer_path(&aside),
                });
            }
            Some(FailureClass::Missing) => {}
            _ => keep.push(name.clone()),
        }
    }
    if !keep.is_empty() {
        let why = s
            .boot
            .failures
            .iter()
            .map(|f| format!("{} ({}: {})", f.layer, f.class, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        notes.push(format!(
            "{} saved layers that boot could not reach are kept aside ({})",
            keep.len(),
            keep.join(", ")
        ));
        m.kept.push(Kept {
            why: format!("boot could not use the whole chain: {why}"),
            stamp: s.stamp.to_string(),
            layers: keep,
        });
    }
}

/// The commit of `m`, then the steps `after` it, then the directory syncs.
fn commit_then(steps: &mut Vec<Step>, m: &Manifest, after: Vec<Step>) {
    steps.push(Step::WriteManifest(Box::new(m.clone())));
    steps.push(Step::Commit);
    steps.push(Step::SyncDir(LAYERS_DIR.into()));
    if !after.is_empty() {
        steps.extend(after);
        steps.push(Step::SyncDir(LAYERS_DIR.into()));
    }
}

/// The first save on a stick without a manifest: legacy images become layers.
fn plan_conversion(s: &Situation) -> Result<SavePlan> {
    let mut m = Manifest::empty();
    m.generation = 1;
    m.base = s.boot.slot.base_digest.clone();
    let mut steps = garbage(s.saved, s.layer_files);
    let mut notes = Vec::new();
    let mut take = |legacy: &str, m: &mut Manifest, steps: &mut Vec<Step>| -> String {
        let name = layer_name(m.next_layer);
        m.next_layer += 1;
        m.layers.insert(
            name.clone(),
            LayerInfo::planned(MIGRATED_LEVEL, Origin::Migrated),
        );
        steps.push(Step::Link {
            from: legacy.to_string(),
            to: layer_path(&name),
        });
        notes.push(format!("converting {legacy} into layers/{name}"));
        name
    };
    let base: Vec<String> = s
        .session
        .base
        .iter()
        .map(|legacy| take(legacy, &mut m, &mut steps))
        .collect();
    let default_failed = s.boot.failures.iter().any(|f| f.layer == LEGACY_IMAGE);
    let backup = if s.boot.asked == BootType::Backup
        && s.boot.used == BootType::Backup
        && s.legacy_present[0]
        && !default_failed
    {
        vec![take(LEGACY_IMAGE, &mut m, &mut steps)]
    } else {
        base.clone()
    };
    if !steps.is_empty() {
        steps.push(Step::SyncDir(LAYERS_DIR.into()));
    }
    let layer = layer_name(m.next_layer);
    m.next_layer += 1;
    m.layers
        .insert(layer.clone(), LayerInfo::planned(0, Origin::Session));
    m.current = base.iter().cloned().chain([layer.clone()]).collect();
    m.backup = backup;
    steps.push(Step::WriteLayer {
        name: layer.clone(),
        source: Source::Session,
    });
    let mut after = Vec::new();
    for (present, legacy) in s
        .legacy_present
        .iter()
        .zip([LEGACY_IMAGE, LEGACY_BACKUP_IMAGE])
    {
        if !present {
            continue;
        }
        let corrupt = s
            .boot
            .failures
            .iter()
            .any(|f| f.layer == legacy && f.class == FailureClass::Corrupt);
        if corrupt && !s.reclaim_corrupt {
            let aside = aside_name(legacy, s.stamp);
            notes.push(format!(
                "the unreadable {legacy} is kept as {aside} (boot ignores it)"
            ));
            after.push(Step::Rename {
                from: legacy.into(),
                to: aside,
            });
        } else {
            after.push(Step::Remove(legacy.into()));
        }
    }
    commit_then(&mut steps, &m, Vec::new());
    if !after.is_empty() {
        steps.extend(after);
        steps.push(Step::SyncDir(String::new()));
    }
    Ok(SavePlan {
        steps,
        layer: layer.clone(),
        manifest: m,
        session: SessionState {
            base,
            layer: Some(layer),
        },
        notes,
    })
}

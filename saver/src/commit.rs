//! The steps every change of the saved state is made of — a save, a
//! compaction, the conversion of a legacy stick — and the runner that
//! executes them over a [`Stick`].
//!
//! The order makes the manifest the single commit point:
//!
//! 1. new layer files are written under names no manifest references
//!    (complete, synced and verified when the write returns), and legacy
//!    images are hard-linked into `layers/`;
//! 2. the new manifest is written beside the old one and synced;
//! 3. it is renamed over the old one and the directory is synced: the
//!    commit;
//! 4. only then are files the new manifest no longer references removed.
//!
//! A power cut before 3 leaves the old manifest, whose layers are all
//! untouched (what was written meanwhile is unreferenced garbage that the
//! next save removes); after 3, the new one, whose layers were all complete
//! before it was written. Boot never reads a layer the committed manifest
//! does not name. The plans that produce these steps are pure (`saveplan`,
//! `compact`); `crashtest` injects a crash after every step.

use anyhow::{Context, Result};
use ramstick_common::manifest::{LayerInfo, Manifest, LAYERS_DIR, MANIFEST, MANIFEST_TMP};
use std::collections::BTreeMap;

/// What a new layer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The session's upper (minus the exclusions).
    Session,
    /// The merge of these layers (bottom first).
    Merge(Vec<String>),
}

/// One change on the stick. Paths are relative to the persist partition's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Writes the new layer `layers/<name>`.
    WriteLayer { name: String, source: Source },
    /// Hard-links `from` to `to` (a legacy image becomes a layer).
    Link { from: String, to: String },
    /// Renames `from` to `to` (a damaged layer set aside).
    Rename { from: String, to: String },
    /// Removes a file.
    Remove(String),
    /// Writes `layers/manifest.json.tmp` and syncs it. The records of layers
    /// written by this run are filled in from what their writes returned.
    WriteManifest(Box<Manifest>),
    /// Renames the written manifest over `layers/manifest.json`: the commit.
    Commit,
    /// Syncs a directory ("" is the partition's root).
    SyncDir(String),
}

/// The stick, as the runner sees it.
pub trait Stick {
    /// Writes a new layer; when this returns Ok the file is complete,
    /// synced and verified, and its record describes it. On an error a
    /// partial file may be left (it is garbage: no manifest names it).
    fn write_layer(&mut self, name: &str, source: &Source) -> Result<LayerInfo>;
    /// The record of an existing file becoming a layer (size, digests).
    fn describe(&mut self, path: &str) -> Result<LayerInfo>;
    fn link(&mut self, from: &str, to: &str) -> Result<()>;
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    fn remove(&mut self, path: &str) -> Result<()>;
    /// Creates or replaces `path` with `text`, synced.
    fn write_synced(&mut self, path: &str, text: &str) -> Result<()>;
    fn sync_dir(&mut self, dir: &str) -> Result<()>;
}

/// `layers/<name>`.
pub fn layer_path(name: &str) -> String {
    format!("{LAYERS_DIR}/{name}")
}

/// `layers/manifest.json`.
pub fn manifest_path() -> String {
    format!("{LAYERS_DIR}/{MANIFEST}")
}

/// `layers/manifest.json.tmp`.
pub fn manifest_tmp_path() -> String {
    format!("{LAYERS_DIR}/{MANIFEST_TMP}")
}

/// What a run did: the committed manifest and the bytes of the layers written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Done {
    pub manifest: Option<Manifest>,
    pub written: BTreeMap<String, LayerInfo>,
}

/// Runs `steps` in order. Before the commit, a failing step ends the run
/// with the old manifest in force (a failed layer write is removed at once,
/// other files written so far are garbage the next save removes). Once the commit is synced, a failing removal is only
/// reported (the state is the new one; the file is garbage for the next
/// save).
pub fn run(stick: &mut dyn Stick, steps: &[Step]) -> Result<Done> {
    let mut done = Done::default();
    let mut pending: Option<Manifest> = None;
    let mut committed = false;
    // The commit is durable once the directory is synced after it.
    let mut durable = false;
    for step in steps {
        let result = match step {
            Step::WriteLayer { name, source } => stick
                .write_layer(name, source)
                .map(|info| drop(done.written.insert(name.clone(), info))),
            Step::Link { from, to } => stick.link(from, to).and_then(|()| {
                let name = to.rsplit('/').next().unwrap_or(to);
                let info = stick.describe(to)?;
                done.written.insert(name.to_string(), info);
                Ok(())
            }),
            Step::Rename { from, to } => stick.rename(from, to),
            Step::Remove(path) => stick.remove(path),
            Step::WriteManifest(m) => {
                let mut m = (**m).clone();
                for (name, info) in &done.written {
                    if let Some(slot) = m.layers.get_mut(name) {
                        let (level, origin) = (slot.level, slot.origin);
                        *slot = LayerInfo {
                            level,
                            origin,
                            ..info.clone()
                        };
                    }
                }
                let text = m.render();
                pending = Some(m);
                stick.write_synced(&manifest_tmp_path(), &text)
            }
            Step::Commit => stick
                .rename(&manifest_tmp_path(), &manifest_path())
                .map(|()| committed = true),
            Step::SyncDir(dir) => stick.sync_dir(dir).map(|()| durable |= committed),
        };
        match result {
            Ok(()) => {}
            Err(e) if durable && matches!(step, Step::Remove(_) | Step::SyncDir(_)) => {
                eprintln!("saver: warning: {e:#} (the next save retries)");
            }
            Err(e) => {
                if let Step::WriteLayer { name, .. } = step {
                    // Free the room now (a full stick); a file left behind
                    // is unreferenced and removed by the next save anyway.
                    let _ = stick.remove(&layer_path(name));
                }
                return Err(e).context(if committed {
                    "after the commit"
                } else {
                    "the saved state on the stick is unchanged"
                });
            }
        }
    }
    if committed {
        done.manifest = pending;
    }
    Ok(done)
}

//! What `saver profile create|copy|delete` does, as a plan of steps run
//! over [`ProfileFs`] (the stick, or a recording fake in the tests).
//!
//! A profile appears and disappears whole under its name: it is built
//! under a temporary name in `profiles/` (`.new-<name>`: not a profile name,
//! so neither boot, the GRUB menu nor `saver profile list` takes it for one),
//! synced, and renamed into place; a profile deleted is renamed aside
//! (`.del-<name>`) first, then removed. A power cut leaves at most such a
//! leftover, which the next profile command removes first. A copy's layers
//! are hard links of the source's (layers are never rewritten in place, so
//! the two chains share them safely); nothing of the source is written.

use anyhow::{bail, Result};
use ramstick_common::chain::Saved;
use ramstick_common::manifest::{Manifest, LAYERS_DIR, MANIFEST};
use ramstick_common::place::{self, Slot, DEFAULT_PROFILE, PROFILES_DIR};

/// Prefix of a profile being built.
pub const NEW_PREFIX: &str = ".new-";
/// Prefix of a profile being deleted.
pub const DEL_PREFIX: &str = ".del-";

/// One step of a plan; paths relative to the persist root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Creates a directory (its parent exists).
    MkDir(String),
    /// A hard link `to` of the file `from`.
    Link {
        from: String,
        to: String,
    },
    /// Writes a file and syncs it.
    Write {
        path: String,
        text: String,
    },
    /// Makes a directory's entries durable.
    SyncDir(String),
    Rename {
        from: String,
        to: String,
    },
    /// Removes a directory and everything in it (a missing one is no error).
    RemoveTree(String),
}

/// What the plans need to know of the slot's profiles.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub slot: Slot,
    /// Whether `profiles/` exists in the slot.
    pub profiles_dir: bool,
    /// The names in `profiles/`, leftovers included.
    pub entries: Vec<String>,
    /// The running profile.
    pub running: String,
}

impl Facts {
    /// `profiles/` of the slot.
    fn dir(&self) -> String {
        place::join(self.slot.dir(), PROFILES_DIR)
    }

    fn in_dir(&self, name: &str) -> String {
        place::join(&self.dir(), name)
    }

    /// Whether the profile `name` exists (`default` always does).
    pub fn exists(&self, name: &str) -> bool {
        name == DEFAULT_PROFILE || self.entries.iter().any(|e| e == name)
    }

    /// Removes the leftovers of cut commands; creates `profiles/`.
    fn prepare(&self, steps: &mut Vec<Step>) {
        if !self.profiles_dir {
            steps.push(Step::MkDir(self.dir()));
            steps.push(Step::SyncDir(self.slot.dir().to_string()));
        }
        let leftovers: Vec<&String> = self
            .entries
            .iter()
            .filter(|e| e.starts_with(NEW_PREFIX) || e.starts_with(DEL_PREFIX))
            .collect();
        for e in &leftovers {
            steps.push(Step::RemoveTree(self.in_dir(e)));
        }
        if !leftovers.is_empty() {
            steps.push(Step::SyncDir(self.dir()));
        }
    }

    /// Builds `name` from `manifest` (`None`: an empty chain) under its
    /// temporary name, then renames it into place.
    fn build(&self, name: &str, from: Option<(&str, &Manifest)>, steps: &mut Vec<Step>) {
        let tmp = self.in_dir(&format!("{NEW_PREFIX}{name}"));
        let layers = place::join(&tmp, LAYERS_DIR);
        steps.push(Step::MkDir(tmp.clone()));
        steps.push(Step::MkDir(layers.clone()));
        if let Some((src_layers, m)) = from {
            for layer in &m.current {
                steps.push(Step::Link {
                    from: place::join(src_layers, layer),
                    to: place::join(&layers, layer),
                });
            }
            steps.push(Step::Write {
                path: place::join(&layers, MANIFEST),
                text: m.render(),
            });
        }
        steps.push(Step::SyncDir(layers));
        steps.push(Step::SyncDir(tmp.clone()));
        steps.push(Step::SyncDir(self.dir()));
        steps.push(Step::Rename {
            from: tmp,
            to: self.in_dir(name),
        });
        steps.push(Step::SyncDir(self.dir()));
    }
}

/// Refuses a name that cannot be a new profile.
fn check_new(facts: &Facts, name: &str) -> Result<()> {
    if !place::is_profile_name(name) {
        bail!(
            "`{name}` cannot name a profile: use 1 to 32 characters, a lowercase letter or \
             digit first, then lowercase letters, digits, '_' or '-'"
        );
    }
    if facts.exists(name) {
        bail!("profile {name} exists already");
    }
    Ok(())
}

/// The plan that creates the profile `name` with an empty chain.
pub fn plan_create(facts: &Facts, name: &str) -> Result<Vec<Step>> {
    check_new(facts, name)?;
    let mut steps = Vec::new();
    facts.prepare(&mut steps);
    facts.build(name, None, &mut steps);
    Ok(steps)
}

/// The chain a copy starts with: the source's current chain, which is
/// also its backup (a backup boot of the copy shows what it was copied as).
pub fn copied(source: &Manifest) -> Manifest {
    let mut m = Manifest::empty();
    m.next_layer = source.next_layer;
    m.generation = 1;
    m.current = source.current.clone();
    m.backup = source.current.clone();
    m.layers = source
        .current
        .iter()
        .filter_map(|n| source.layers.get(n).map(|i| (n.clone(), i.clone())))
        .collect();
    m
}

/// The plan that makes `to` a copy of `from`'s current chain; `saved` is
/// what `from` holds.
pub fn plan_copy(facts: &Facts, from: &str, saved: &Saved, to: &str) -> Result<Vec<Step>> {
    if !facts.exists(from) {
        bail!("there is no profile {from} (`saver profile list` shows them)");
    }
    check_new(facts, to)?;
    let manifest = match saved {
        Saved::Manifest(m) => Some(copied(m)),
        Saved::Nothing => None,
        Saved::Legacy { .. } => bail!(
            "profile {from} is in the layout of before layers: save once (`saver save`) to \
             convert it, then copy it"
        ),
        Saved::Damaged(why) => bail!("profile {from}'s manifest cannot be used ({why})"),
    };
    let src_layers = place::join(&place::state_dir(facts.slot, Some(from)), LAYERS_DIR);
    let mut steps = Vec::new();
    facts.prepare(&mut steps);
    facts.build(
        to,
        manifest.as_ref().map(|m| (src_layers.as_str(), m)),
        &mut steps,
    );
    Ok(steps)
}

/// The plan that deletes the profile `name`: never `default`, never the
/// running one.
pub fn plan_delete(facts: &Facts, name: &str) -> Result<Vec<Step>> {
    if name == DEFAULT_PROFILE {
        bail!("the default profile is the stick's own saved state: it is never deleted");
    }
    if name == facts.running {
        bail!("profile {name} is running: boot another profile (or the default) to delete it");
    }
    let aside_name = format!("{DEL_PREFIX}{name}");
    let mut steps = Vec::new();
    if place::is_profile_name(name) && !facts.exists(name) && facts.entries.contains(&aside_name) {
        // A delete cut after its rename: finishing it is removing the leftover.
        facts.prepare(&mut steps);
        return Ok(steps);
    }
    if !place::is_profile_name(name) || !facts.exists(name) {
        bail!("there is no profile {name} (`saver profile list` shows them)");
    }
    let aside = facts.in_dir(&aside_name);
    facts.prepare(&mut steps);
    steps.extend([
        Step::Rename {
            from: facts.in_dir(name),
            to: aside.clone(),
        },
        Step::SyncDir(facts.dir()),
        Step::RemoveTree(aside),
        Step::SyncDir(facts.dir()),
    ]);
    Ok(steps)
}

/// Where the steps act.
pub trait ProfileFs {
    fn mkdir(&mut self, dir: &str) -> Result<()>;
    fn link(&mut self, from: &str, to: &str) -> Result<()>;
    fn write(&mut self, path: &str, text: &str) -> Result<()>;
    fn sync_dir(&mut self, dir: &str) -> Result<()>;
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    fn remove_tree(&mut self, dir: &str) -> Result<()>;
}

/// Runs `steps`, stopping at the first error.
pub fn run(fs: &mut dyn ProfileFs, steps: &[Step]) -> Result<()> {
    for step in steps {
        match step {
            Step::MkDir(d) => fs.mkdir(d)?,
            Step::Link { from, to } => fs.link(from, to)?,
            Step::Write { path, text } => fs.write(path, text)?,
            Step::SyncDir(d) => fs.sync_dir(d)?,
            Step::Rename { from, to } => fs.rename(from, to)?,
            Step::RemoveTree(d) => fs.remove_tree(d)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

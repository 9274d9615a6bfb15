//! `saver profile list|create|copy|delete`: the independent saved states
//! of the stick's base (`ramstick.profile=NAME` boots one; see
//! `ramstick_common::place`). The changes are planned in [`plan`] and run
//! here on the stick, under the saver's lock (so that no save of the running
//! profile commits meanwhile).

pub mod plan;

use crate::running::{self, Running};
use crate::session::Paths;
use crate::space::human;
use anyhow::{Context, Result};
use plan::{Facts, ProfileFs};
use ramstick_common::chain::Saved;
use ramstick_common::manifest::{LAYERS_DIR, LEGACY_BACKUP_IMAGE, LEGACY_IMAGE, MANIFEST};
use ramstick_common::place::{self, Slot, DEFAULT_PROFILE, PROFILES_DIR};
use std::path::{Path, PathBuf};

/// What `saver profile` does.
#[derive(clap::Subcommand, Debug)]
pub enum ProfileCmd {
    /// List the stick's profiles: name, layers in the current chain, their
    /// size, when last saved; `*` marks the running one.
    ///
    /// Example: `saver profile list`
    List,
    /// Create a profile with nothing saved: booted (GRUB's "ramstick
    /// (profile NAME)" entry, or `ramstick.profile=NAME`), it starts from the
    /// base, and its first save starts its own chain.
    ///
    /// Example: `saver profile create work`
    Create {
        /// 1 to 32 characters: a lowercase letter or digit, then lowercase
        /// letters, digits, '_' or '-'.
        name: String,
    },
    /// Create profile TO as a copy of FROM's current chain (its layers are
    /// shared on the stick, not copied); each then saves on its own.
    ///
    /// Example: `saver profile copy default experiment`
    Copy {
        /// The profile to copy (`default`: the stick's own saved state).
        from: String,
        /// The new profile's name.
        to: String,
    },
    /// Delete a profile and its saved state (never `default`, never the
    /// running profile).
    ///
    /// Example: `saver profile delete experiment`
    Delete {
        /// The profile to delete.
        name: String,
    },
}

/// Runs `cmd` on the stick at /persist, for the session of `paths`.
pub fn profile(cmd: &ProfileCmd, paths: &Paths) -> Result<()> {
    // Only on a system ramstick booted: /persist is then the stick.
    crate::session::Session::load(paths)?;
    let _lock = crate::save::lock(&paths.state)?;
    let now = running::running(&paths.boot_json, &paths.cmdline);
    let root = Path::new(running::PERSIST);
    match cmd {
        ProfileCmd::List => {
            print!("{}", list(root, now.slot, &now)?);
            Ok(())
        }
        _ => change(cmd, root, now.slot, &now),
    }
}

/// Plans and runs a create, copy or delete on the stick at `root`.
pub fn change(cmd: &ProfileCmd, root: &Path, slot: Slot, now: &Running) -> Result<()> {
    let facts = facts(root, slot, &now.profile)?;
    let (steps, done) = match cmd {
        ProfileCmd::List => return Ok(()),
        ProfileCmd::Create { name } => (
            plan::plan_create(&facts, name)?,
            format!(
                "created profile {name} (nothing saved yet): boot it with ramstick.profile={name}"
            ),
        ),
        ProfileCmd::Copy { from, to } => {
            let saved = read_saved(root, slot, from);
            (
                plan::plan_copy(&facts, from, &saved, to)?,
                format!("created profile {to} as a copy of {from}'s current chain"),
            )
        }
        ProfileCmd::Delete { name } => (
            plan::plan_delete(&facts, name)?,
            format!("deleted profile {name} and its saved state"),
        ),
    };
    plan::run(&mut StickFs { root: root.into() }, &steps)?;
    println!("saver: {done}");
    Ok(())
}

/// The names in the slot's `profiles/` (none when it does not exist).
fn facts(root: &Path, slot: Slot, running: &str) -> Result<Facts> {
    let dir = root.join(place::join(slot.dir(), PROFILES_DIR));
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<String>>>()
            .with_context(|| format!("cannot list {}", dir.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    Ok(Facts {
        slot,
        profiles_dir: dir.is_dir(),
        entries,
        running: running.to_string(),
    })
}

/// What the profile `name` holds.
fn read_saved(root: &Path, slot: Slot, name: &str) -> Saved {
    let state = root.join(place::state_dir(slot, Some(name)));
    let manifest = state.join(LAYERS_DIR).join(MANIFEST);
    // Legacy images only mean something in the persist root's state.
    let legacy = if place::state_dir(slot, Some(name)).is_empty() {
        [LEGACY_IMAGE, LEGACY_BACKUP_IMAGE].map(|n| root.join(n).exists())
    } else {
        [false, false]
    };
    Saved::from_read(
        std::fs::read_to_string(&manifest),
        legacy,
        &manifest.to_string_lossy(),
    )
}

/// The profiles of the slot, one a line, the running one marked.
pub fn list(root: &Path, slot: Slot, now: &Running) -> Result<String> {
    let facts = facts(root, slot, &now.profile)?;
    let mut names: Vec<String> = facts
        .entries
        .iter()
        .filter(|e| place::is_profile_name(e) && e.as_str() != DEFAULT_PROFILE)
        .cloned()
        .collect();
    names.sort();
    names.insert(0, DEFAULT_PROFILE.to_string());
    let mut out = format!(
        "  {:<32}  {:>6}  {:>10}  last saved\n",
        "profile", "layers", "size"
    );
    for name in names {
        let mark = if name == now.profile { '*' } else { ' ' };
        let (layers, size, last) = match read_saved(root, slot, &name) {
            Saved::Manifest(m) => {
                let infos: Vec<_> = m.current.iter().filter_map(|n| m.layers.get(n)).collect();
                let last = infos.iter().map(|i| i.saved.clone()).max();
                (
                    m.current.len().to_string(),
                    human(infos.iter().map(|i| i.size).sum()),
                    last.unwrap_or_else(|| "never".into()),
                )
            }
            Saved::Nothing => ("0".into(), human(0), "never".into()),
            Saved::Legacy { .. } => ("1".into(), "?".into(), "before layers".into()),
            Saved::Damaged(_) => ("?".into(), "?".into(), "UNREADABLE manifest".into()),
        };
        out.push_str(&format!(
            "{mark} {name:<32}  {layers:>6}  {size:>10}  {last}\n"
        ));
    }
    Ok(out)
}

/// The stick, at `root` (the persist partition's root).
struct StickFs {
    root: PathBuf,
}

impl StickFs {
    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

impl ProfileFs for StickFs {
    fn mkdir(&mut self, dir: &str) -> Result<()> {
        let p = self.path(dir);
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))
    }
    fn link(&mut self, from: &str, to: &str) -> Result<()> {
        crate::stick::hard_link(&self.path(from), &self.path(to))
    }
    fn write(&mut self, path: &str, text: &str) -> Result<()> {
        crate::stick::write_synced(&self.path(path), text)
    }
    fn sync_dir(&mut self, dir: &str) -> Result<()> {
        crate::stick::sync_dir(&self.path(dir))
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        crate::stick::rename(&self.path(from), &self.path(to))
    }
    fn remove_tree(&mut self, dir: &str) -> Result<()> {
        crate::stick::remove_tree(&self.path(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_testkit::TempDir;

    fn running(profile: &str) -> Running {
        Running {
            slot: Slot::A,
            profile: profile.into(),
            state_dir: place::state_dir(Slot::A, Some(profile)),
        }
    }

    #[test]
    fn create_copy_list_and_delete_on_a_real_directory() {
        let dir = TempDir::new("saver-profile");
        let root = dir.path();
        let m = plan::copied(&ramstick_common::manifest::Manifest::empty());
        std::fs::create_dir(root.join("layers")).unwrap();
        std::fs::write(root.join("layers/manifest.json"), m.render()).unwrap();
        let now = running("default");
        let create = ProfileCmd::Create {
            name: "work".into(),
        };
        change(&create, root, Slot::A, &now).unwrap();
        assert!(root.join("profiles/work/layers").is_dir());
        assert!(change(&create, root, Slot::A, &now).is_err());
        let copy = ProfileCmd::Copy {
            from: "default".into(),
            to: "copy".into(),
        };
        change(&copy, root, Slot::A, &now).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("profiles/copy/layers/manifest.json")).unwrap(),
            m.render()
        );
        let text = list(root, Slot::A, &running("work")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("  default "), "{text}");
        assert!(lines[2].starts_with("  copy "), "{text}");
        assert!(
            lines[3].starts_with("* work ") && lines[3].ends_with("never"),
            "{text}"
        );
        let delete = ProfileCmd::Delete {
            name: "work".into(),
        };
        assert!(change(&delete, root, Slot::A, &running("work")).is_err());
        change(&delete, root, Slot::A, &now).unwrap();
        assert!(!root.join("profiles/work").exists());
        assert_eq!(
            std::fs::read_dir(root.join("profiles")).unwrap().count(),
            1,
            "only copy is left"
        );
    }
}

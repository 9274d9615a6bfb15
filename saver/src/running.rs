//! Which saved state this session belongs to: the running profile and its
//! state directory on the stick (see `ramstick_common::place`).
//!
//! [`running`] is the one place the saver learns it; every path that joins
//! `layers/...` starts from the state directory it returns (through
//! [`crate::session::Paths::persist`]), so a save, a checkpoint, a
//! compaction, `status`, `check` and `diff` all work on the chain this
//! session booted, never another profile's.

use anyhow::{Context, Result};
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::place::{self, Slot, DEFAULT_PROFILE};
use std::path::{Path, PathBuf};

/// The persist partition in the running system.
pub const PERSIST: &str = "/persist";

/// The saved state a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The slot booted (`ramstick.slot`).
    pub slot: Slot,
    /// `default` or a profile name.
    pub profile: String,
    /// Its state directory, relative to the persist root ("" for the root).
    pub state_dir: String,
}

impl Default for Running {
    fn default() -> Running {
        Running {
            slot: Slot::A,
            profile: DEFAULT_PROFILE.to_string(),
            state_dir: String::new(),
        }
    }
}

impl Running {
    /// The state directory under the persist partition mounted at `persist`.
    pub fn state_root(&self, persist: &Path) -> PathBuf {
        if self.state_dir.is_empty() {
            persist.to_path_buf()
        } else {
            persist.join(&self.state_dir)
        }
    }
}

/// The running profile: what init recorded in `boot_json` (it planned the
/// boot), else what the command line `cmdline` asks (as init would have
/// planned it: a bad name is the default profile), else the default.
pub fn running(boot_json: &Path, cmdline: &Path) -> Running {
    if let Ok(info) = std::fs::read_to_string(boot_json)
        .map_err(anyhow::Error::from)
        .and_then(|t| BootInfo::from_json(&t).map_err(anyhow::Error::from))
    {
        return Running {
            slot: info.slot.slot,
            profile: info.profile,
            state_dir: info.state_dir,
        };
    }
    match std::fs::read_to_string(cmdline) {
        Ok(line) => {
            let (cfg, _) = ramstick_common::cmdline::parse(&line);
            let state_dir = place::state_dir(cfg.slot, Some(&cfg.profile));
            Running {
                slot: cfg.slot,
                profile: cfg.profile,
                state_dir,
            }
        }
        Err(_) => Running::default(),
    }
}

/// The persist partition's root, from a state directory `state_root` that
/// is `state_dir` below it (what [`Running::state_root`] made).
pub fn partition_root(state_root: &Path, state_dir: &str) -> PathBuf {
    let depth = Path::new(state_dir).components().count();
    state_root
        .ancestors()
        .nth(depth)
        .unwrap_or(state_root)
        .to_path_buf()
}

/// Creates `dir` and each missing parent, each made durable in its parent
/// before the next is made: a power cut leaves a prefix of the directories,
/// each either absent or whole (a new profile's state directory before its
/// first layer).
pub fn create_dir_synced(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .with_context(|| format!("{} has no parent directory", dir.display()))?;
    create_dir_synced(parent)?;
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("cannot create {}", dir.display()));
        }
        _ => {}
    }
    crate::stick::sync_dir(parent)
}

/// `path` or its nearest ancestor that exists (a new profile's state
/// directory is on the same filesystem as its parent).
pub fn existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_testkit::TempDir;

    #[test]
    fn the_partition_root_is_above_the_state_directory() {
        for dir in ["", "profiles/work", "slot-b", "slot-b/profiles/work"] {
            let running = Running {
                state_dir: dir.into(),
                ..Running::default()
            };
            let state = running.state_root(Path::new("/persist"));
            assert_eq!(partition_root(&state, dir), Path::new("/persist"), "{dir}");
        }
    }

    #[test]
    fn boot_json_first_then_the_command_line_then_the_default() {
        let dir = TempDir::new("running");
        let (json, line) = (dir.path().join("boot.json"), dir.path().join("cmdline"));
        assert_eq!(running(&json, &line), Running::default());
        std::fs::write(&line, "quiet ramstick.profile=work\n").unwrap();
        let work = running(&json, &line);
        assert_eq!(
            (work.profile.as_str(), work.state_dir.as_str()),
            ("work", "profiles/work")
        );
        assert_eq!(
            work.state_root(Path::new("/persist")),
            Path::new("/persist/profiles/work")
        );
        std::fs::write(&line, "ramstick.profile=../x\n").unwrap();
        assert_eq!(running(&json, &line), Running::default());
        // boot.json says what init did, whatever the command line says.
        let mut info: serde_json::Value = serde_json::from_str(
            &ramstick_common::bootinfo::BootInfo::chosen(
                &ramstick_common::chain::Saved::Nothing,
                ramstick_common::chain::choose(
                    &ramstick_common::chain::Saved::Nothing,
                    ramstick_common::cmdline::BootType::Default,
                    |_| Ok(()),
                ),
                ramstick_common::cmdline::LayersMode::Mount,
            )
            .to_json(),
        )
        .unwrap();
        info["profile"] = "home".into();
        info["state_dir"] = "profiles/home".into();
        std::fs::write(&json, info.to_string()).unwrap();
        std::fs::write(&line, "ramstick.profile=work\n").unwrap();
        let home = running(&json, &line);
        assert_eq!(
            (home.profile.as_str(), home.state_dir.as_str()),
            ("home", "profiles/home")
        );
        assert_eq!(
            Running::default().state_root(Path::new("/persist")),
            Path::new("/persist")
        );
    }

    #[test]
    fn state_directories_are_made_parent_first() {
        let dir = TempDir::new("running");
        let state = dir.path().join("profiles/work/layers");
        create_dir_synced(&state).unwrap();
        assert!(state.is_dir());
        create_dir_synced(&state).unwrap();
        assert_eq!(
            existing(&dir.path().join("profiles/x/layers")),
            dir.path().join("profiles")
        );
    }
}

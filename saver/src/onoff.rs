//! Saving on and off: `saver off` marks this session "never save" with a
//! flag file in the saver's run-time directory (`/run/ramstick/saver`, a
//! tmpfs: it outlives a restart of the daemon, not a reboot); `saver on`
//! removes it. `ramstick.save=off` on the kernel command line turns saving
//! off for the whole boot, and `saver on` cannot undo that. Every save
//! (shutdown, checkpoint, `saver save`, SIGUSR1) and the idle compaction
//! ask [`why_off`] first.

use crate::clock;
use crate::session::Paths;
use anyhow::{bail, Context, Result};
use ramstick_common::cmdline::{self, SaveMode};
use std::path::PathBuf;
use std::time::SystemTime;

/// Why saving is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    /// `ramstick.save=off` on the kernel command line.
    CommandLine,
    /// `saver off`; what the flag file says (when it was turned off).
    Flag(String),
}

impl std::fmt::Display for Off {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Off::CommandLine => f.write_str(
                "ramstick.save=off on the kernel command line; reboot without it to save again",
            ),
            Off::Flag(when) => write!(f, "{when}; `saver on` turns it back on"),
        }
    }
}

/// The flag file of `saver off`.
pub fn flag(paths: &Paths) -> PathBuf {
    paths.state.join("saving-off")
}

/// Whether the command line `text` turns saving off.
pub fn off_by_cmdline(text: &str) -> bool {
    cmdline::parse(text).0.save == SaveMode::Off
}

/// Why saving is off, or `None` when it is on. The command line comes
/// first (it cannot be undone in the session). An unreadable command line
/// or flag counts as off: refusing a save is undone by `saver on` or a
/// reboot, a save the user turned off is not undone at all.
pub fn why_off(paths: &Paths) -> Option<Off> {
    match std::fs::read_to_string(&paths.cmdline) {
        Ok(text) if off_by_cmdline(&text) => return Some(Off::CommandLine),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Some(Off::Flag(format!(
                "cannot read {} ({e}), taken as ramstick.save=off",
                paths.cmdline.display()
            )))
        }
    }
    match std::fs::read_to_string(flag(paths)) {
        Ok(text) => Some(Off::Flag(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Off::Flag(format!(
            "{} exists but cannot be read ({e})",
            flag(paths).display()
        ))),
    }
}

/// `saver off`: the flag file, written whole (tmp + rename) so that a save
/// never reads half of it. Returns what `saver status` will say.
pub fn turn_off(paths: &Paths) -> Result<String> {
    std::fs::create_dir_all(&paths.state)
        .with_context(|| format!("cannot create {}", paths.state.display()))?;
    let path = flag(paths);
    let text = format!(
        "turned off by `saver off` at {}",
        clock::display(SystemTime::now())
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(text)
}

/// `saver on`: removes the flag; refused when the command line turned
/// saving off (the flag is removed anyway, so a reboot without the
/// parameter saves).
pub fn turn_on(paths: &Paths) -> Result<()> {
    let path = flag(paths);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    if let Some(Off::CommandLine) = why_off(paths) {
        bail!("saving stays off: {}", Off::CommandLine);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &ramstick_testkit::TempDir) -> Paths {
        Paths {
            cmdline: dir.join("cmdline"),
            state: dir.join("state"),
            ..Paths::system()
        }
    }

    #[test]
    fn off_and_on_by_the_flag() {
        let dir = ramstick_testkit::TempDir::new("saver-onoff");
        let p = paths(&dir);
        std::fs::write(&p.cmdline, "quiet ramstick.checkpoint=5\n").unwrap();
        assert_eq!(why_off(&p), None);
        let said = turn_off(&p).unwrap();
        assert!(said.starts_with("turned off by `saver off` at "), "{said}");
        assert_eq!(why_off(&p), Some(Off::Flag(said.clone())));
        assert!(Off::Flag(said)
            .to_string()
            .ends_with("`saver on` turns it back on"));
        turn_off(&p).unwrap();
        turn_on(&p).unwrap();
        assert_eq!(why_off(&p), None);
        // On when already on is no error.
        turn_on(&p).unwrap();
        assert_eq!(why_off(&p), None);
    }

    #[test]
    fn the_command_line_wins_and_cannot_be_undone() {
        let dir = ramstick_testkit::TempDir::new("saver-onoff-cmdline");
        let p = paths(&dir);
        std::fs::write(&p.cmdline, "ro ramstick.save=off quiet\n").unwrap();
        assert_eq!(why_off(&p), Some(Off::CommandLine));
        turn_off(&p).unwrap();
        assert_eq!(why_off(&p), Some(Off::CommandLine));
        let err = format!("{:#}", turn_on(&p).unwrap_err());
        assert!(err.contains("ramstick.save=off"), "{err}");
        assert!(!flag(&p).exists());
        for on in [
            "ramstick.save=on",
            "ramstick.save=bogus",
            "",
            "ramstick.saved=off",
        ] {
            std::fs::write(&p.cmdline, on).unwrap();
            assert_eq!(why_off(&p), None, "{on}");
        }
        std::fs::remove_file(&p.cmdline).unwrap();
        assert_eq!(why_off(&p), None);
    }
}

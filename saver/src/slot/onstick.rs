//! The real [`SlotFs`]: GRUB's environment block on the mounted ESP and the
//! trial's watchdog; and what the persist partition holds of each slot.

use super::plan::SlotFs;
use super::state::GRUBENV;
use crate::clock;
use anyhow::{Context, Result};
use ramstick_common::grubenv::{self, Env};
use ramstick_common::manifest::{Manifest, LAYERS_DIR, MANIFEST};
use ramstick_common::place::{self, Slot};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The watchdog device init armed for the trial.
pub const WATCHDOG: &str = "/dev/watchdog";

/// GRUB's environment block of the ESP mounted at `esp`.
pub fn read_env(esp: &Path) -> Result<Env> {
    let path = esp.join(GRUBENV);
    Env::read(&path).with_context(|| {
        format!(
            "cannot read GRUB's environment block {} (a stick made before slots has none: \
             rebuild it with `cargo xtask image` to use slots)",
            path.display()
        )
    })
}

/// The ESP's block and the watchdog.
pub struct OnStick {
    pub grubenv: PathBuf,
    pub watchdog: PathBuf,
}

impl OnStick {
    /// The block of the ESP mounted at `esp`, and the system's watchdog.
    pub fn new(esp: &Path) -> OnStick {
        OnStick {
            grubenv: esp.join(GRUBENV),
            watchdog: PathBuf::from(WATCHDOG),
        }
    }
}

impl SlotFs for OnStick {
    fn write_env(&mut self, env: &Env) -> Result<()> {
        grubenv::write_in_place(&self.grubenv, env)
            .with_context(|| format!("cannot rewrite {}", self.grubenv.display()))
    }

    /// The magic close: `V` written, then the file closed, stops the timer
    /// (softdog is loaded without nowayout).
    fn disarm_watchdog(&mut self) -> Result<()> {
        let mut dev = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.watchdog)
            .with_context(|| format!("cannot open {} to disarm it", self.watchdog.display()))?;
        dev.write_all(b"V")
            .with_context(|| format!("cannot write to {}", self.watchdog.display()))
    }
}

/// What the stick holds of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    pub slot: String,
    /// Its base image exists: it can boot.
    pub complete: bool,
    /// The base image's size in bytes.
    pub base_size: Option<u64>,
    /// When the base image was written (UTC).
    pub base_date: Option<String>,
    /// Layers in its default profile's chain (`None`: nothing saved, or an
    /// unreadable manifest — see `chain_note`).
    pub chain: Option<usize>,
    pub chain_note: Option<String>,
    /// How its base was made, from its `slot.json` (written by `saver fold`
    /// and `cargo xtask update-stick`; absent for a slot made by `cargo
    /// xtask image` or before slots).
    pub made: Option<String>,
}

/// A slot's record, read as plain JSON for the status.
// INTEGRATOR: the slotwrite branch's `slotwrite::record::SlotRecord` is
// the record's type; read it with that once merged.
const RECORD: &str = "slot.json";

/// "fold of slot a, 2026-12-07 02:00:00 UTC" from a `slot.json` text.
fn made(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let origin = v.get("origin")?.as_str()?;
    let from = v
        .get("source_slot")
        .and_then(|s| s.as_str())
        .map(|s| format!(" of slot {s}"))
        .unwrap_or_default();
    let date = v
        .get("date")
        .and_then(|d| d.as_str())
        .map(|d| format!(", {d}"))
        .unwrap_or_default();
    Some(format!("{origin}{from}{date}"))
}

/// Whether `slot` has its base image under `persist`.
pub fn is_complete(persist: &Path, slot: Slot) -> bool {
    persist.join(slot.base_image()).is_file()
}

/// What `persist` holds of `slot`.
pub fn slot_info(persist: &Path, slot: Slot) -> SlotInfo {
    let base = std::fs::metadata(persist.join(slot.base_image()))
        .ok()
        .filter(|m| m.is_file());
    let manifest = persist.join(place::join(
        &place::state_dir(slot, None),
        &place::join(LAYERS_DIR, MANIFEST),
    ));
    let (chain, chain_note) = match std::fs::read_to_string(&manifest) {
        Ok(text) => match Manifest::parse(&text) {
            Ok(m) => (Some(m.current.len()), None),
            Err(e) => (None, Some(format!("unreadable manifest: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Some("nothing saved".into())),
        Err(e) => (
            None,
            Some(format!("cannot read {}: {e}", manifest.display())),
        ),
    };
    SlotInfo {
        slot: slot.name().into(),
        complete: base.is_some(),
        base_size: base.as_ref().map(|m| m.len()),
        base_date: base
            .as_ref()
            .and_then(|m| m.modified().ok())
            .map(clock::display),
        chain,
        chain_note,
        made: std::fs::read_to_string(persist.join(place::join(slot.dir(), RECORD)))
            .ok()
            .and_then(|t| made(&t)),
    }
}

impl SlotInfo {
    /// One line for people.
    pub fn describe(&self) -> String {
        let base = match (&self.base_date, self.base_size) {
            (_, None) => "no base image (incomplete: it cannot boot)".to_string(),
            (Some(date), Some(size)) => format!("base of {date}, {}", crate::space::human(size)),
            (None, Some(size)) => format!("base of {}", crate::space::human(size)),
        };
        let chain = match (self.chain, &self.chain_note) {
            (Some(n), _) => format!("a chain of {n} layers"),
            (None, Some(note)) => note.clone(),
            (None, None) => "nothing saved".into(),
        };
        match &self.made {
            Some(made) => format!("{base} (made by {made}); {chain}"),
            None => format!("{base}; {chain}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_common::grubenv::BLOCK_SIZE;

    #[test]
    fn slots_are_complete_with_their_base_and_report_their_chain() {
        let dir = ramstick_testkit::TempDir::new("saver-slotinfo");
        dir.file("rootfs.squashfs", "base a", 0o644);
        dir.file("layers/manifest.json", "not a manifest", 0o644);
        dir.mkdir("slot-b/layers");
        assert!(is_complete(&dir, Slot::A));
        assert!(!is_complete(&dir, Slot::B));
        let a = slot_info(&dir, Slot::A);
        assert_eq!((a.complete, a.base_size, a.chain), (true, Some(6), None));
        assert!(a.chain_note.unwrap().contains("unreadable manifest"));
        assert_eq!(a.made, None);
        let b = slot_info(&dir, Slot::B);
        assert!(!b.complete && b.base_date.is_none());
        assert_eq!(
            b.describe(),
            "no base image (incomplete: it cannot boot); nothing saved"
        );
        dir.file("slot-b/rootfs.squashfs", "b", 0o644);
        dir.file(
            "slot-b/slot.json",
            r#"{"format": 1, "origin": "fold", "date": "2026-12-07 02:00:00 UTC", "base": "x", "source_slot": "a"}"#,
            0o644,
        );
        let b = slot_info(&dir, Slot::B);
        assert_eq!(
            b.made.as_deref(),
            Some("fold of slot a, 2026-12-07 02:00:00 UTC")
        );
        assert!(
            b.describe().contains("(made by fold of slot a, 2026-12-07"),
            "{}",
            b.describe()
        );
        assert_eq!(made(r#"{"origin": "update"}"#).as_deref(), Some("update"));
        assert_eq!(made("not json"), None);
    }

    /// What we write, GRUB's `grub-editenv` reads, and the reverse: the
    /// variables of a try and of a commit, and GRUB's consuming the trial.
    #[test]
    fn grub_editenv_reads_our_blocks_and_we_read_its() {
        use super::super::plan::{self, Step};
        use super::super::state::{self, SlotVars};
        use std::process::Command;
        if !ramstick_testkit::have("grub-editenv") {
            ramstick_testkit::skip("grub-editenv is not installed: apt-get install grub-common");
            return;
        }
        let dir = ramstick_testkit::TempDir::new("saver-grubenv");
        let block = dir.join(GRUBENV);
        std::fs::create_dir_all(block.parent().unwrap()).unwrap();
        let editenv = |args: &[&str]| {
            let out = Command::new("grub-editenv")
                .arg(&block)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "grub-editenv {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        editenv(&["create"]);
        editenv(&["set", "ramstick_slot=a", "other=kept"]);
        let mut fs = OnStick {
            watchdog: dir.join("watchdog"),
            ..OnStick::new(&dir)
        };
        std::fs::write(&fs.watchdog, "").unwrap();
        let env = read_env(&dir).unwrap();
        let steps = plan::plan_try(&env, Slot::B, true).unwrap();
        plan::run(&mut fs, &steps).unwrap();
        let listed = editenv(&["list"]);
        assert_eq!(
            listed,
            "other=kept\nramstick_slot=a\nramstick_trial=b\nramstick_tried=\n"
        );
        // GRUB's script consumes the trial (save_env, as grub-editenv set).
        editenv(&["set", "ramstick_tried=b", "ramstick_trial="]);
        let env = read_env(&dir).unwrap();
        let running = state::running("ramstick.slot=b ramstick.trial=on");
        let steps = plan::plan_commit(&env, &running).unwrap();
        assert_eq!(steps.last(), Some(&Step::Disarm));
        plan::run(&mut fs, &steps).unwrap();
        assert_eq!(
            editenv(&["list"]),
            "other=kept\nramstick_slot=b\nramstick_trial=\nramstick_tried=\n"
        );
        assert_eq!(
            SlotVars::of(&read_env(&dir).unwrap()),
            SlotVars {
                committed: Slot::B,
                trial: None,
                tried: None
            }
        );
        assert_eq!(std::fs::read(&fs.watchdog).unwrap(), b"V");
    }

    #[test]
    fn the_real_block_is_rewritten_in_place_and_the_watchdog_gets_its_v() {
        let dir = ramstick_testkit::TempDir::new("saver-slotfs");
        let mut block = b"# GRUB Environment Block\nramstick_slot=a\n".to_vec();
        block.resize(BLOCK_SIZE, b'#');
        dir.file("grub/grubenv", "", 0o644);
        std::fs::write(dir.join("grub/grubenv"), &block).unwrap();
        dir.file("watchdog", "", 0o644);
        let mut fs = OnStick {
            watchdog: dir.join("watchdog"),
            ..OnStick::new(&dir)
        };
        let mut env = read_env(&dir).unwrap();
        env.set("ramstick_slot", "b");
        fs.write_env(&env).unwrap();
        assert_eq!(read_env(&dir).unwrap().get("ramstick_slot"), Some("b"));
        fs.disarm_watchdog().unwrap();
        assert_eq!(std::fs::read(dir.join("watchdog")).unwrap(), b"V");
        let err = format!("{:#}", read_env(&dir.join("none")).unwrap_err());
        assert!(err.contains("made before slots"), "{err}");
        fs.watchdog = dir.join("missing");
        assert!(fs.disarm_watchdog().is_err());
    }
}

//! The plan's order, its refusals, and a power cut after every step.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

const NEW_BASE: &str = "new base";
const NEW_FIRMWARE: &str = "new firmware";
const PARTIAL: &str = "partial";

/// How to undo one change of the namespace: each path's previous content
/// (`None`: absent).
type Undo = Vec<(String, Option<String>)>;

/// A persist partition whose writes stop ("power cut") after `budget`
/// operations; an image write is two (created partial, then complete).
/// Changes of the namespace (a file created, removed, renamed) are durable
/// only once a directory is synced: until then a cut may lose any suffix
/// of them (ext4's journal keeps their order), which `pending` can undo.
#[derive(Debug, Clone, Default)]
struct Fake {
    files: BTreeMap<String, String>,
    dirs: BTreeSet<String>,
    budget: usize,
    pending: Vec<Undo>,
}

impl Fake {
    /// A stick with both slots, each with chains and a record, and the
    /// shared files.
    fn stick() -> Fake {
        let mut files = BTreeMap::new();
        for (path, content) in [
            ("rootfs.squashfs", "a base"),
            ("firmware.squashfs", "a firmware"),
            ("modules-6.1.0-57-amd64.squashfs", "modules"),
            ("swapfile", "swap"),
            ("user/notes.txt", "mine"),
            ("layers/manifest.json", "a chain"),
            ("layers/layer-000001.squashfs", "a layer"),
            ("profiles/work/layers/manifest.json", "a work chain"),
            ("upperfs.squashfs", "a legacy state"),
            ("slot-b/rootfs.squashfs", "b base"),
            ("slot-b/firmware.squashfs", "b firmware"),
            ("slot-b/slot.json", "b record"),
            ("slot-b/layers/manifest.json", "b chain"),
            ("slot-b/layers/layer-000004.squashfs", "b layer"),
            ("slot-b/profiles/x/layers/manifest.json", "b x chain"),
        ] {
            files.insert(path.to_string(), content.to_string());
        }
        let dirs = ["user", "layers", "profiles", "slot-b", "slot-b/layers"]
            .map(String::from)
            .into();
        Fake {
            files,
            dirs,
            budget: usize::MAX,
            pending: Vec::new(),
        }
    }

    fn spend(&mut self) -> Result<()> {
        if self.budget == 0 {
            bail!("power cut");
        }
        self.budget -= 1;
        Ok(())
    }

    /// Records the change of `paths` as one namespace operation.
    fn change(&mut self, paths: &[&str]) {
        let undo = paths
            .iter()
            .map(|p| (p.to_string(), self.files.get(*p).cloned()))
            .collect();
        self.pending.push(undo);
    }

    /// The state after the last `lost` namespace changes not yet synced
    /// were lost.
    fn losing(&self, lost: usize) -> Fake {
        let mut f = self.clone();
        for undo in f
            .pending
            .split_off(f.pending.len() - lost)
            .into_iter()
            .rev()
        {
            for (path, before) in undo.into_iter().rev() {
                match before {
                    Some(c) => f.files.insert(path, c),
                    None => f.files.remove(&path),
                };
            }
        }
        f
    }

    /// The files in a slot's own place (for slot a: not `slot-b/`).
    fn slot_files(&self, slot: Slot) -> BTreeMap<String, String> {
        self.files
            .iter()
            .filter(|(p, _)| (slot == Slot::B) == p.starts_with("slot-b/"))
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect()
    }
}

impl SlotFs for Fake {
    fn ensure_dir(&mut self, dir: &str) -> Result<()> {
        self.spend()?;
        self.dirs.insert(dir.to_string());
        Ok(())
    }
    fn remove(&mut self, path: &str) -> Result<()> {
        self.spend()?;
        self.change(&[path]);
        self.files.remove(path);
        Ok(())
    }
    fn remove_tree(&mut self, path: &str) -> Result<()> {
        self.spend()?;
        let prefix = format!("{path}/");
        let inside: Vec<String> = (self.files.keys())
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect();
        // The tree's entry goes at once: all of it or nothing is lost.
        self.change(&inside.iter().map(String::as_str).collect::<Vec<_>>());
        self.files.retain(|p, _| !p.starts_with(&prefix));
        self.dirs.retain(|d| d != path && !d.starts_with(&prefix));
        Ok(())
    }
    fn write_image(&mut self, path: &str, payload: Payload) -> Result<()> {
        self.spend()?;
        self.change(&[path]);
        self.files.insert(path.to_string(), PARTIAL.into());
        self.spend()?;
        let content = match payload {
            Payload::Base => NEW_BASE,
            Payload::Firmware => NEW_FIRMWARE,
        };
        self.files.insert(path.to_string(), content.into());
        Ok(())
    }
    fn verify_image(&mut self, path: &str, _: Payload) -> Result<String> {
        self.spend()?;
        match self.files.get(path).map(String::as_str) {
            Some(NEW_BASE | NEW_FIRMWARE) => Ok("digest".into()),
            other => bail!("{path} reads back as {other:?}"),
        }
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.spend()?;
        self.change(&[from, to]);
        let Some(content) = self.files.remove(from) else {
            bail!("no {from}");
        };
        self.files.insert(to.to_string(), content);
        Ok(())
    }
    fn sync_dir(&mut self, _: &str) -> Result<()> {
        self.spend()?;
        // One directory per slot: its sync makes every change durable.
        self.pending.clear();
        Ok(())
    }
    fn write_record(&mut self, path: &str, tmp: &str, text: &str) -> Result<()> {
        self.spend()?;
        self.change(&[tmp]);
        self.files.insert(tmp.to_string(), text.to_string());
        self.spend()?;
        self.change(&[tmp, path]);
        let text = self.files.remove(tmp).unwrap_or_default();
        self.files.insert(path.to_string(), text);
        self.spend()?;
        self.pending.clear();
        Ok(())
    }
}

fn seed() -> RecordSeed {
    RecordSeed {
        origin: SlotOrigin::Fold,
        date: "2026-12-07 02:30:00 UTC".into(),
        source: Some(Slot::A),
        note: String::new(),
    }
}

fn target(slot: Slot, firmware: bool) -> Target {
    Target {
        slot,
        running: Some(slot.other()),
        committed: slot.other(),
        firmware,
        b_has_own_firmware: true,
    }
}

#[test]
fn the_running_and_the_committed_slot_are_refused() {
    let mut t = target(Slot::B, false);
    t.running = Some(Slot::B);
    let err = plan(&t).unwrap_err().to_string();
    assert!(err.contains("slot b is the running system"), "{err}");
    // Running a, but b committed (its trial passed): b is not written.
    let t = Target {
        running: Some(Slot::A),
        committed: Slot::B,
        ..target(Slot::B, false)
    };
    let err = plan(&t).unwrap_err().to_string();
    assert!(err.contains("slot b is the committed slot"), "{err}");
    // From outside: only the committed slot counts.
    let t = Target {
        running: None,
        committed: Slot::A,
        ..target(Slot::A, false)
    };
    assert!(plan(&t).is_err());
}

#[test]
fn slot_b_is_cleared_then_written_and_recorded_last() {
    let p = plan(&target(Slot::B, false)).unwrap();
    let s = |x: &str| x.to_string();
    assert_eq!(
        p.steps,
        [
            Step::EnsureDir(s("slot-b")),
            Step::Remove(s("slot-b/slot.json")),
            Step::Remove(s("slot-b/rootfs.squashfs")),
            Step::Remove(s("slot-b/firmware.squashfs")),
            Step::RemoveTree(s("slot-b/layers")),
            Step::RemoveTree(s("slot-b/profiles")),
            Step::Remove(s("slot-b/slot.json.tmp")),
            Step::Remove(s("slot-b/rootfs.squashfs.tmp")),
            Step::Remove(s("slot-b/firmware.squashfs.tmp")),
            Step::SyncDir(s("slot-b")),
            Step::Write {
                path: s("slot-b/rootfs.squashfs.tmp"),
                payload: Payload::Base
            },
            Step::Verify {
                path: s("slot-b/rootfs.squashfs.tmp"),
                payload: Payload::Base
            },
            Step::Rename {
                from: s("slot-b/rootfs.squashfs.tmp"),
                to: s("slot-b/rootfs.squashfs")
            },
            Step::SyncDir(s("slot-b")),
            Step::WriteRecord {
                path: s("slot-b/slot.json"),
                tmp: s("slot-b/slot.json.tmp")
            },
        ]
    );
    assert!(p.notes.is_empty());
}

#[test]
fn slot_a_keeps_the_shared_firmware_slot_b_uses() {
    let t = Target {
        b_has_own_firmware: false,
        ..target(Slot::A, true)
    };
    let p = plan(&t).unwrap();
    assert!(p.notes[0].contains("also slot b's"), "{:?}", p.notes);
    let touched: Vec<&Step> = p
        .steps
        .iter()
        .filter(|s| format!("{s:?}").contains("firmware.squashfs\""))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    // With its own firmware in b, a's is replaced.
    let p = plan(&target(Slot::A, true)).unwrap();
    assert!(p.steps.contains(&Step::Rename {
        from: "firmware.squashfs.tmp".into(),
        to: "firmware.squashfs".into()
    }));
}

/// Whether the target slot is still the old one whole (its base and
/// chains as they were, only its record possibly gone), incomplete (no
/// base: never booted) or complete (the new base, an empty chain, and the
/// new firmware when one is written).
fn target_state(fake: &Fake, start: &Fake, t: &Target) -> Result<&'static str, String> {
    let base = fake.files.get(&t.slot.base_image()).map(String::as_str);
    match base {
        None => Ok("incomplete"),
        Some(old) if Some(old) == start.files.get(&t.slot.base_image()).map(String::as_str) => {
            let record = place::join(t.slot.dir(), RECORD);
            let mut was = start.slot_files(t.slot);
            was.remove(&record);
            let mut now = fake.slot_files(t.slot);
            now.remove(&record);
            if now != was {
                return Err(format!("the old base stands with changed files: {now:?}"));
            }
            Ok("old")
        }
        Some(NEW_BASE) => {
            let dir = t.slot.dir();
            for chain in ["layers/", "profiles/"] {
                let prefix = place::join(dir, chain);
                if let Some(p) = fake.files.keys().find(|p| p.starts_with(&prefix)) {
                    return Err(format!("the new base stands with an old chain: {p}"));
                }
            }
            if t.slot == Slot::A && fake.files.contains_key(LEGACY_IMAGE) {
                return Err("the new base stands with a legacy state".into());
            }
            let fw = fake.files.get(&place::join(dir, FIRMWARE_IMAGE));
            if t.firmware && fw.map(String::as_str) != Some(NEW_FIRMWARE) {
                return Err(format!("the new base stands with firmware {fw:?}"));
            }
            Ok("complete")
        }
        Some(other) => Err(format!("the base is {other:?}")),
    }
}

/// Cuts the power after 0, 1, … every operation of writing `t` on `start`,
/// and at each cut loses any suffix of the changes not yet synced: only
/// the whole run succeeds; at every cut the other slot and the shared files
/// are byte-identical, and the target is the old one, incomplete or
/// complete.
fn cut_after_every_step(start: &Fake, t: &Target) {
    let p = plan(t).unwrap();
    let mut full = start.clone();
    run(&mut full, &p.steps, &seed()).unwrap();
    let ops = usize::MAX - full.budget;
    let other = t.slot.other();
    let shared = |f: &Fake| -> BTreeMap<String, String> {
        f.files
            .iter()
            .filter(|(p, _)| {
                p.starts_with("user/")
                    || p.starts_with("modules-")
                    || p.as_str() == "swapfile"
                    || (p.as_str() == FIRMWARE_IMAGE && !t.firmware)
            })
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect()
    };
    let mut states = BTreeSet::new();
    for cut in 0..=ops {
        let mut cut_fake = Fake {
            budget: cut,
            ..start.clone()
        };
        let result = run(&mut cut_fake, &p.steps, &seed());
        assert_eq!(result.is_ok(), cut == ops, "cut after {cut} of {ops}");
        for lost in 0..=cut_fake.pending.len() {
            let fake = cut_fake.losing(lost);
            let what = format!(
                "slot {} cut after {cut} of {ops}, {lost} changes lost",
                t.slot
            );
            assert_eq!(
                fake.slot_files(other),
                start.slot_files(other),
                "{what}: the other slot changed"
            );
            assert_eq!(
                shared(&fake),
                shared(start),
                "{what}: a shared file changed"
            );
            states.insert(target_state(&fake, start, t).unwrap_or_else(|e| panic!("{what}: {e}")));
            if cut == ops {
                let record = fake.files.get(&place::join(t.slot.dir(), RECORD)).unwrap();
                let record = SlotRecord::parse(record).unwrap();
                assert_eq!(record.base, "digest");
                assert_eq!(record.origin, SlotOrigin::Fold);
            }
        }
    }
    let mut expected = BTreeSet::from(["complete", "incomplete"]);
    if start.files.contains_key(&t.slot.base_image()) {
        expected.insert("old");
    }
    assert_eq!(states, expected);
}

#[test]
fn a_power_cut_at_any_step_leaves_the_other_slot_and_a_complete_or_unbooted_target() {
    let stick = Fake::stick();
    cut_after_every_step(&stick, &target(Slot::B, false));
    cut_after_every_step(&stick, &target(Slot::B, true));
    cut_after_every_step(&stick, &target(Slot::A, false));
    cut_after_every_step(&stick, &target(Slot::A, true));
    // A stick that never had a slot b.
    let mut fresh = Fake::stick();
    fresh.files.retain(|p, _| !p.starts_with("slot-b/"));
    fresh.dirs.retain(|d| !d.starts_with("slot-b"));
    cut_after_every_step(&fresh, &target(Slot::B, false));
}

#[test]
fn writing_slot_a_never_touches_slot_b_user_modules_or_swap() {
    let stick = Fake::stick();
    let t = target(Slot::A, false);
    let mut done = stick.clone();
    run(&mut done, &plan(&t).unwrap().steps, &seed()).unwrap();
    for path in [
        "user/notes.txt",
        "modules-6.1.0-57-amd64.squashfs",
        "swapfile",
        "firmware.squashfs",
        "slot-b/rootfs.squashfs",
        "slot-b/layers/manifest.json",
        "slot-b/slot.json",
    ] {
        assert_eq!(done.files.get(path), stick.files.get(path), "{path}");
    }
    assert_eq!(done.files["rootfs.squashfs"], NEW_BASE);
    assert!(!done.files.contains_key("layers/manifest.json"));
    assert!(!done
        .files
        .contains_key("profiles/work/layers/manifest.json"));
    assert!(done.files.contains_key("slot.json"));
}

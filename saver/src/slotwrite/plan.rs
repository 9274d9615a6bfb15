//! Writing a new base into a slot, as a plan of steps run over [`SlotFs`]
//! (the persist partition, or a recording fake in the tests).
//!
//! Only the slot that is neither running nor committed is written. Its
//! record (`slot.json`), its base, its own firmware (slot `b`) and its
//! chains go first — a slot without a base is never booted — then the new
//! images are written under temporary names, synced, read back and
//! verified, renamed into place (the firmware before the base, so a base
//! never stands without its firmware), the directory synced, and the record
//! written last. So a power cut at any step leaves the target slot without
//! a base (never booted) or complete with an empty chain, and the other
//! slot's files — and everything shared: `user/`, the modules images, the
//! swapfile — untouched. Setting GRUB's one-shot trial comes after the run,
//! never inside it.

use super::record::{SlotOrigin, SlotRecord, RECORD, RECORD_TMP};
use anyhow::{bail, Result};
use ramstick_common::manifest::{LAYERS_DIR, LEGACY_BACKUP_IMAGE, LEGACY_IMAGE};
use ramstick_common::place::{self, Slot, PROFILES_DIR};

/// A slot's own firmware image (slot `a`'s is the root's, which slot `b`
/// uses when it has none of its own).
pub const FIRMWARE_IMAGE: &str = "firmware.squashfs";

/// What an image file is written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The new base system.
    Base,
    /// The new firmware image.
    Firmware,
}

/// One step of a plan. Paths are relative to the persist partition's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Creates a directory if it is missing (and syncs its parent).
    EnsureDir(String),
    /// Removes a file (a missing one is no error).
    Remove(String),
    /// Removes a directory with everything in it (a missing one is no error).
    RemoveTree(String),
    /// Writes the image of `payload` to `path` and syncs it.
    Write {
        path: String,
        payload: Payload,
    },
    /// Reads `path` back from the device and compares it with its source;
    /// the base's metadata digest goes into the record.
    Verify {
        path: String,
        payload: Payload,
    },
    Rename {
        from: String,
        to: String,
    },
    /// Syncs a directory ("" is the partition's root).
    SyncDir(String),
    /// Writes the slot's record under a temporary name, syncs it, renames it
    /// to `slot.json` and syncs the directory: the slot is complete.
    WriteRecord {
        path: String,
        tmp: String,
    },
}

/// What to write where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The slot to write.
    pub slot: Slot,
    /// The slot the running system booted (`None`: written from outside,
    /// `cargo xtask update-stick`).
    pub running: Option<Slot>,
    /// The committed slot (GRUB's `ramstick_slot`, default `a`).
    pub committed: Slot,
    /// Write the slot's own firmware image too.
    pub firmware: bool,
    /// Whether slot `b` has its own firmware image (else it uses the root's,
    /// which writing slot `a`'s firmware would change under it).
    pub b_has_own_firmware: bool,
}

/// The steps and what the user should know about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// The plan that replaces `target.slot`'s base, record and chains.
pub fn plan(target: &Target) -> Result<Plan> {
    let slot = target.slot;
    if target.running == Some(slot) {
        bail!("slot {slot} is the running system: it is never written while it runs");
    }
    if target.committed == slot {
        bail!(
            "slot {slot} is the committed slot (the one the stick boots): it is never written; \
             commit the other slot first (boot it and let its trial commit)"
        );
    }
    let dir = slot.dir();
    let at = |name: &str| place::join(dir, name);
    let base = slot.base_image();
    let base_tmp = format!("{base}.tmp");
    let firmware = at(FIRMWARE_IMAGE);
    let firmware_tmp = format!("{firmware}.tmp");
    let mut notes = Vec::new();
    // Slot a's firmware is the root's: replace it only when slot b does not use it.
    let write_firmware = match (target.firmware, slot) {
        (false, _) => false,
        (true, Slot::B) => true,
        (true, Slot::A) if target.b_has_own_firmware => true,
        (true, Slot::A) => {
            notes.push(format!(
                "the firmware is not replaced: slot a's {FIRMWARE_IMAGE} is also slot b's \
                 (it has none of its own)"
            ));
            false
        }
    };
    let mut steps = Vec::new();
    if !dir.is_empty() {
        steps.push(Step::EnsureDir(dir.to_string()));
    }
    // The record first (the slot is no longer complete), then the base (the
    // slot is no longer booted), then what belonged to the old base.
    steps.push(Step::Remove(at(RECORD)));
    steps.push(Step::Remove(base.clone()));
    if slot == Slot::B && !write_firmware {
        // Without its own, slot b uses the root's firmware.
        steps.push(Step::Remove(firmware.clone()));
    }
    if slot == Slot::A {
        // The saved state of a stick older than layers: boot would stack it
        // on the new base, whose chain must start empty.
        steps.push(Step::Remove(LEGACY_IMAGE.to_string()));
        steps.push(Step::Remove(LEGACY_BACKUP_IMAGE.to_string()));
    }
    steps.push(Step::RemoveTree(at(LAYERS_DIR)));
    steps.push(Step::RemoveTree(at(PROFILES_DIR)));
    steps.push(Step::Remove(at(RECORD_TMP)));
    steps.push(Step::Remove(base_tmp.clone()));
    steps.push(Step::Remove(firmware_tmp.clone()));
    steps.push(Step::SyncDir(dir.to_string()));
    if write_firmware {
        steps.push(Step::Write {
            path: firmware_tmp.clone(),
            payload: Payload::Firmware,
        });
        steps.push(Step::Verify {
            path: firmware_tmp.clone(),
            payload: Payload::Firmware,
        });
    }
    steps.push(Step::Write {
        path: base_tmp.clone(),
        payload: Payload::Base,
    });
    steps.push(Step::Verify {
        path: base_tmp.clone(),
        payload: Payload::Base,
    });
    if write_firmware {
        steps.push(Step::Rename {
            from: firmware_tmp,
            to: firmware,
        });
    }
    steps.push(Step::Rename {
        from: base_tmp,
        to: base,
    });
    steps.push(Step::SyncDir(dir.to_string()));
    steps.push(Step::WriteRecord {
        path: at(RECORD),
        tmp: at(RECORD_TMP),
    });
    Ok(Plan { steps, notes })
}

/// Where the steps act.
pub trait SlotFs {
    fn ensure_dir(&mut self, dir: &str) -> Result<()>;
    fn remove(&mut self, path: &str) -> Result<()>;
    fn remove_tree(&mut self, path: &str) -> Result<()>;
    /// Writes the image (created or truncated) and syncs it.
    fn write_image(&mut self, path: &str, payload: Payload) -> Result<()>;
    /// Reads the image back and compares it with its source; returns its
    /// metadata digest (as a manifest's `meta_digest`).
    fn verify_image(&mut self, path: &str, payload: Payload) -> Result<String>;
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    fn sync_dir(&mut self, dir: &str) -> Result<()>;
    /// Writes `text` to `tmp`, syncs it, renames it to `path`, syncs the directory.
    fn write_record(&mut self, path: &str, tmp: &str, text: &str) -> Result<()>;
}

/// What the record says besides the base's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSeed {
    pub origin: SlotOrigin,
    /// UTC, for people.
    pub date: String,
    /// The slot a fold packed (none for an update from the host).
    pub source: Option<Slot>,
    /// Free text: the tree an update was built from, the kernel.
    pub note: String,
}

/// Runs `steps`, stopping at the first error; returns the record written.
pub fn run(fs: &mut dyn SlotFs, steps: &[Step], seed: &RecordSeed) -> Result<SlotRecord> {
    let mut base_digest = None;
    let mut written = None;
    for step in steps {
        match step {
            Step::EnsureDir(d) => fs.ensure_dir(d)?,
            Step::Remove(p) => fs.remove(p)?,
            Step::RemoveTree(p) => fs.remove_tree(p)?,
            Step::Write { path, payload } => fs.write_image(path, *payload)?,
            Step::Verify { path, payload } => {
                let digest = fs.verify_image(path, *payload)?;
                if *payload == Payload::Base {
                    base_digest = Some(digest);
                }
            }
            Step::Rename { from, to } => fs.rename(from, to)?,
            Step::SyncDir(d) => fs.sync_dir(d)?,
            Step::WriteRecord { path, tmp } => {
                let Some(base) = base_digest.clone() else {
                    bail!("the plan writes {path} before it verified a base");
                };
                let record = SlotRecord::new(seed, base);
                fs.write_record(path, tmp, &record.to_json())?;
                written = Some(record);
            }
        }
    }
    match written {
        Some(r) => Ok(r),
        None => bail!("the plan wrote no slot record"),
    }
}

#[cfg(test)]
mod tests;

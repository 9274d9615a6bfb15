//! The plan run on a persist partition (the running stick's `/persist`, or
//! a stick image mounted on a host), and what a slot holds before it is
//! replaced.

use super::plan::{Payload, SlotFs, FIRMWARE_IMAGE};
use super::record::{SlotRecord, RECORD};
use crate::space::human;
use crate::stick::{sync_dir, sync_file};
use anyhow::{bail, Context, Result};
use ramstick_common::manifest::{LAYERS_DIR, LEGACY_BACKUP_IMAGE, LEGACY_IMAGE};
use ramstick_common::place::{self, Slot, PROFILES_DIR};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the images come from.
pub trait ImageSource {
    /// Writes the image of `payload` to `image` (created or truncated).
    fn write(&mut self, payload: Payload, image: &Path) -> Result<()>;
    /// Reads `image` back (its cached pages dropped) and compares it with
    /// its source; an error when it differs.
    fn verify(&mut self, payload: Payload, image: &Path) -> Result<()>;
}

/// A persist partition mounted at `persist`.
pub struct OnStick<'a> {
    pub persist: PathBuf,
    pub source: &'a mut dyn ImageSource,
}

impl OnStick<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.persist.clone()
        } else {
            self.persist.join(rel)
        }
    }
}

impl SlotFs for OnStick<'_> {
    fn ensure_dir(&mut self, dir: &str) -> Result<()> {
        let p = self.path(dir);
        if !p.is_dir() {
            std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
            let parent = p.parent().unwrap_or(&self.persist).to_path_buf();
            sync_dir(&parent)?;
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        crate::stick::remove_file(&self.path(path))
    }

    fn remove_tree(&mut self, path: &str) -> Result<()> {
        // Only a slot's chains are ever removed whole.
        let name = path.rsplit('/').next().unwrap_or(path);
        if name != LAYERS_DIR && name != PROFILES_DIR {
            bail!("refusing to remove {path}: not a slot's {LAYERS_DIR}/ or {PROFILES_DIR}/");
        }
        crate::stick::remove_tree(&self.path(path))
    }

    fn write_image(&mut self, path: &str, payload: Payload) -> Result<()> {
        let p = self.path(path);
        self.source.write(payload, &p)?;
        sync_file(&p)
    }

    fn verify_image(&mut self, path: &str, payload: Payload) -> Result<String> {
        let p = self.path(path);
        ramstick_squash::drop_cache(&p)?;
        self.source.verify(payload, &p)?;
        let (_, digest) = ramstick_squash::meta_digest(&p)
            .with_context(|| format!("cannot read back {}", p.display()))?;
        Ok(digest)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        crate::stick::rename(&self.path(from), &self.path(to))
    }

    fn sync_dir(&mut self, dir: &str) -> Result<()> {
        sync_dir(&self.path(dir))
    }

    fn write_record(&mut self, path: &str, tmp: &str, text: &str) -> Result<()> {
        let (p, t) = (self.path(path), self.path(tmp));
        let mut f = File::create(&t).with_context(|| format!("cannot create {}", t.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", t.display()))?;
        self.rename(tmp, path)?;
        let dir = p.parent().unwrap_or(&self.persist).to_path_buf();
        sync_dir(&dir)
    }
}

/// What a slot holds, as writing it would replace it.
#[derive(Debug, Clone, Default)]
pub struct SlotContents {
    pub record: Option<SlotRecord>,
    /// The base's size, when there is one.
    pub base: Option<u64>,
    /// The slot's own firmware image's size (slot b).
    pub firmware: Option<u64>,
    /// Each saved state (`default`, or a profile's name) with its bytes.
    pub chains: Vec<(String, u64)>,
}

impl SlotContents {
    pub fn is_empty(&self) -> bool {
        self.base.is_none() && self.chains.is_empty()
    }

    /// The bytes writing the slot frees before it writes.
    pub fn bytes(&self) -> u64 {
        self.base.unwrap_or(0)
            + self.firmware.unwrap_or(0)
            + self.chains.iter().map(|(_, b)| b).sum::<u64>()
    }

    /// What is there, for people.
    pub fn lines(&self, slot: Slot) -> Vec<String> {
        let mut out = Vec::new();
        match (&self.base, &self.record) {
            (Some(size), Some(r)) => out.push(format!(
                "slot {slot}'s base system ({}), {}",
                human(*size),
                r.describe()
            )),
            (Some(size), None) => out.push(format!("slot {slot}'s base system ({})", human(*size))),
            (None, _) => {}
        }
        for (name, bytes) in &self.chains {
            out.push(format!(
                "slot {slot}'s saved state `{name}` ({})",
                human(*bytes)
            ));
        }
        out
    }
}

/// Bytes of the files under `dir` (none when it does not exist).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// What `slot` holds on the stick mounted at `persist`.
pub fn inspect(persist: &Path, slot: Slot) -> SlotContents {
    let at = |name: &str| persist.join(place::join(slot.dir(), name));
    let size = |p: PathBuf| std::fs::metadata(p).ok().map(|m| m.len());
    let record = std::fs::read_to_string(at(RECORD))
        .ok()
        .and_then(|t| SlotRecord::parse(&t).ok());
    let firmware = match slot {
        Slot::A => None,
        Slot::B => size(at(FIRMWARE_IMAGE)),
    };
    let mut chains = Vec::new();
    if slot == Slot::A {
        for name in [LEGACY_IMAGE, LEGACY_BACKUP_IMAGE] {
            if let Some(bytes) = size(persist.join(name)) {
                chains.push((format!("default ({name}, before layers)"), bytes));
            }
        }
    }
    if at(LAYERS_DIR).is_dir() {
        chains.push(("default".to_string(), tree_bytes(&at(LAYERS_DIR))));
    }
    if let Ok(rd) = std::fs::read_dir(at(PROFILES_DIR)) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let bytes = tree_bytes(&at(PROFILES_DIR).join(&name));
            chains.push((name, bytes));
        }
    }
    SlotContents {
        record,
        base: size(persist.join(slot.base_image())),
        firmware,
        chains,
    }
}

/// Whether slot b has its own firmware image.
pub fn b_has_own_firmware(persist: &Path) -> bool {
    persist
        .join(place::join(Slot::B.dir(), FIRMWARE_IMAGE))
        .is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_lists_what_a_slot_holds() {
        let t = ramstick_testkit::TempDir::new("slot-inspect");
        assert!(inspect(&t, Slot::B).is_empty());
        t.file("slot-b/rootfs.squashfs", "0123456789", 0o644);
        t.file("slot-b/layers/manifest.json", "12345", 0o644);
        t.file("slot-b/profiles/work/layers/manifest.json", "123", 0o644);
        t.file("slot-b/firmware.squashfs", "12", 0o644);
        t.file("layers/manifest.json", "not b's", 0o644);
        let c = inspect(&t, Slot::B);
        assert_eq!(c.base, Some(10));
        assert_eq!(c.firmware, Some(2));
        assert_eq!(c.chains, [("default".into(), 5), ("work".into(), 3)]);
        assert_eq!(c.bytes(), 20);
        let lines = c.lines(Slot::B);
        assert!(lines[0].starts_with("slot b's base system"), "{lines:?}");
        assert!(lines[2].contains("`work`"), "{lines:?}");
        assert!(b_has_own_firmware(&t));
        let a = inspect(&t, Slot::A);
        assert_eq!(a.chains, [("default".into(), 7)]);
        assert_eq!(a.base, None);
    }
}

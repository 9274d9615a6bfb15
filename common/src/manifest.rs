//! The saved state on the stick: an ordered chain of immutable squashfs
//! layers in `/persist/layers/`, described by `layers/manifest.json`, the
//! single commit point of every save and compaction.
//!
//! A layer is an overlayfs upperdir packed by our codec: new and modified
//! entries, whiteouts (char 0:0) for deletions, opaque directories. Stacked
//! as overlay lowers above `rootfs.squashfs` (the first layer lowest), a
//! chain shows the saved system. The manifest names three kinds of chains:
//!
//! - `current`: what a default boot uses;
//! - `backup`: the state before the last session's save (its layers are
//!   normally a prefix of `current`, so a backup costs no second copy);
//! - `kept`: states set aside because boot could not use them whole (never
//!   deleted by the saver; `saver status` lists them).
//!
//! The file is the JSON body followed by one trailer line `xxh3 <hex>` over
//! the body, so damage is detected rather than half-read. Writers replace it
//! by writing `manifest.json.tmp`, fsyncing it, renaming it over and fsyncing
//! the directory (see the saver's `commit` module).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::digest;

/// Directory of the layers and the manifest, in the persist partition's root.
pub const LAYERS_DIR: &str = "layers";
/// The manifest's name inside [`LAYERS_DIR`].
pub const MANIFEST: &str = "manifest.json";
/// The name a new manifest is written under before it is renamed over.
pub const MANIFEST_TMP: &str = "manifest.json.tmp";
/// The manifest format this code reads and writes.
pub const FORMAT: u32 = 1;
/// The longest chain a manifest may describe (the compaction policy keeps
/// `current` at [`crate::manifest::MAX_CHAIN`] or below; parsing accepts a
/// little more so that a stick is never refused for one extra layer).
const MAX_PARSED_CHAIN: usize = 64;
/// The compaction bound: `current` never holds more layers than this.
pub const MAX_CHAIN: usize = 16;

/// The layout before layered saves: one full upper image and its backup, in
/// the persist partition's root. Boot reads them while no manifest exists;
/// the first save converts them.
pub const LEGACY_IMAGE: &str = "upperfs.squashfs";
/// The legacy backup image.
pub const LEGACY_BACKUP_IMAGE: &str = "upperfs-backup.squashfs";

/// How a layer came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The changes of one session (checkpoints replace it within the session).
    Session,
    /// Consecutive layers merged into one.
    Compacted,
    /// A legacy `upperfs*.squashfs` taken over by the first layered save.
    Migrated,
}

/// What the manifest knows of one layer file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// File size in bytes.
    pub size: u64,
    /// xxh3-128 of the superblock and the metadata tables (checked at every
    /// boot: cheap, and a torn or damaged layer fails it).
    pub meta_digest: String,
    /// xxh3-128 of the whole file (checked by `saver check`, compaction and
    /// the crash tests).
    pub digest: String,
    /// When it was written, UTC `YYYYMMDD-HHMMSS`.
    pub saved: String,
    /// Directory entries in the layer.
    pub entries: u64,
    /// Uncompressed file data in the layer (what unpacking it into RAM costs).
    pub data_bytes: u64,
    /// 0 for a session's layer; a merge of layers is one more than the
    /// highest of its inputs (the compaction policy merges by level).
    pub level: u32,
    pub origin: Origin,
}

/// A chain set aside, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub why: String,
    /// When it was set aside, UTC `YYYYMMDD-HHMMSS`.
    pub stamp: String,
    pub layers: Vec<String>,
}

/// The manifest's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Incremented by every commit.
    pub generation: u64,
    /// The number of the next layer file to create.
    pub next_layer: u64,
    pub layers: BTreeMap<String, LayerInfo>,
    /// Bottom first.
    pub current: Vec<String>,
    /// Bottom first.
    pub backup: Vec<String>,
    pub kept: Vec<Kept>,
    /// The metadata digest of the base image the chains were made on (the
    /// digest a layer's `meta_digest` is): boot applies them only on that
    /// base (see [`crate::slotboot`]). Absent in manifests written before
    /// slots, whose chains apply on any base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// Why a manifest could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest has no `xxh3` trailer line (truncated or not a ramstick manifest)")]
    NoTrailer,
    #[error("the manifest's checksum does not match its contents (damaged)")]
    Checksum,
    #[error("the manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest format {0} is not supported (this ramstick reads format {FORMAT})")]
    Format(u32),
    #[error("the manifest is inconsistent: {0}")]
    Invalid(String),
}

/// `layer-000042.squashfs`.
pub fn layer_name(number: u64) -> String {
    format!("layer-{number:06}.squashfs")
}

/// The number of a layer file name, if it is one.
pub fn layer_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("layer-")?.strip_suffix(".squashfs")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name a damaged layer is kept under: `layer-000003.squashfs` →
/// `layer-000003-corrupt-<stamp>.squashfs` (not a layer name, so it is
/// never taken for garbage).
pub fn aside_name(name: &str, stamp: &str) -> String {
    let stem = name.strip_suffix(".squashfs").unwrap_or(name);
    format!("{stem}-corrupt-{stamp}.squashfs")
}

impl LayerInfo {
    /// The record of a layer not written yet: the run that writes it fills
    /// in what the write returns, keeping `level` and `origin`.
    pub fn planned(level: u32, origin: Origin) -> LayerInfo {
        LayerInfo {
            size: 0,
            meta_digest: String::new(),
            digest: String::new(),
            saved: String::new(),
            entries: 0,
            data_bytes: 0,
            level,
            origin,
        }
    }
}

impl Manifest {
    /// A manifest with no layers (before the first commit).
    pub fn empty() -> Manifest {
        Manifest {
            format: FORMAT,
            generation: 0,
            next_layer: 1,
            layers: BTreeMap::new(),
            current: Vec::new(),
            backup: Vec::new(),
            kept: Vec::new(),
            base: None,
        }
    }

    /// Reads a manifest file's text, checking its trailer and consistency.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .ok_or(ManifestError::NoTrailer)?;
        let (body, trailer) = text.split_at(body_end + 1);
        let sum = trailer
            .trim_end_matches('\n')
            .strip_prefix("xxh3 ")
            .ok_or(ManifestError::NoTrailer)?;
        if sum != digest::xxh3_hex(body.as_bytes()) {
            return Err(ManifestError::Checksum);
        }
        let m: Manifest =
            serde_json::from_str(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// The file text: the JSON body and its checksum trailer.
    pub fn render(&self) -> String {
        // Serialising plain owned data cannot fail.
        let mut body = serde_json::to_string_pretty(self).unwrap_or_default();
        body.push('\n');
        let sum = digest::xxh3_hex(body.as_bytes());
        format!("{body}xxh3 {sum}\n")
    }

    /// Every chain is made of known, well-named layers without repeats, and
    /// `next_layer` is above every layer number.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format(self.format));
        }
        let invalid = |what: String| Err(ManifestError::Invalid(what));
        for name in self.layers.keys() {
            match layer_number(name) {
                None => return invalid(format!("`{name}` is not a layer file name")),
                Some(n) if n >= self.next_layer => {
                    return invalid(format!(
                        "`{name}` is not below next_layer {}",
                        self.next_layer
                    ))
                }
                Some(_) => {}
            }
        }
        let kept = self.kept.iter().map(|k| ("kept", &k.layers));
        for (what, chain) in [("current", &self.current), ("backup", &self.backup)]
            .into_iter()
            .chain(kept)
        {
            if chain.len() > MAX_PARSED_CHAIN {
                return invalid(format!("the {what} chain has {} layers", chain.len()));
            }
            let mut seen = BTreeSet::new();
            for name in chain {
                if !self.layers.contains_key(name) {
                    return invalid(format!("the {what} chain names unknown layer `{name}`"));
                }
                if !seen.insert(name) {
                    return invalid(format!("the {what} chain names `{name}` twice"));
                }
            }
        }
        Ok(())
    }

    /// Every layer some chain uses.
    pub fn referenced(&self) -> BTreeSet<&str> {
        self.current
            .iter()
            .chain(&self.backup)
            .chain(self.kept.iter().flat_map(|k| &k.layers))
            .map(String::as_str)
            .collect()
    }

    /// How many layers `current` and `backup` share at their bottom.
    pub fn shared_prefix(&self) -> usize {
        self.current
            .iter()
            .zip(&self.backup)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Drops layer records no chain uses any more.
    pub fn prune(&mut self) {
        let used: BTreeSet<String> = self.referenced().into_iter().map(String::from).collect();
        self.layers.retain(|name, _| used.contains(name));
    }

    /// Replaces the consecutive run `run` by `merged` in every chain that
    /// holds it (the merged layer shows exactly what the run showed).
    pub fn substitute(&mut self, run: &[String], merged: &str) {
        let kept = self.kept.iter_mut().map(|k| &mut k.layers);
        for chain in [&mut self.current, &mut self.backup]
            .into_iter()
            .chain(kept)
        {
            substitute_run(chain, run, merged);
        }
    }
}

/// Replaces the first occurrence of the consecutive `run` in `chain` by `merged`.
pub fn substitute_run(chain: &mut Vec<String>, run: &[String], merged: &str) {
    if run.is_empty() || run.len() > chain.len() {
        return;
    }
    if let Some(at) = chain.windows(run.len()).position(|w| w == run) {
        chain.splice(at..at + run.len(), [merged.to_string()]);
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Session => "session",
            Origin::Compacted => "compacted",
            Origin::Migrated => "migrated",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn info(size: u64) -> LayerInfo {
        LayerInfo {
            size,
            meta_digest: "00".into(),
            digest: "11".into(),
            saved: "20261129-120000".into(),
            entries: 3,
            data_bytes: size,
            level: 0,
            origin: Origin::Session,
        }
    }

    fn sample() -> Manifest {
        let mut m = Manifest::empty();
        for n in 1..=3 {
            m.layers.insert(layer_name(n), info(n * 100));
        }
        m.next_layer = 4;
        m.generation = 7;
        m.current = vec![layer_name(1), layer_name(2), layer_name(3)];
        m.backup = vec![layer_name(1), layer_name(2)];
        m
    }

    #[test]
    fn names_round_trip_and_asides_are_not_layers() {
        assert_eq!(layer_name(42), "layer-000042.squashfs");
        assert_eq!(layer_number("layer-000042.squashfs"), Some(42));
        assert_eq!(layer_number("layer-1234567.squashfs"), Some(1_234_567));
        assert_eq!(layer_number("layer-42.squashfs"), None);
        assert_eq!(layer_number("layer-000042.squashfs.tmp"), None);
        assert_eq!(layer_number("upperfs.squashfs"), None);
        let aside = aside_name(&layer_name(3), "20261129-120000");
        assert_eq!(aside, "layer-000003-corrupt-20261129-120000.squashfs");
        assert_eq!(layer_number(&aside), None);
    }

    #[test]
    fn render_then_parse_is_identity() {
        let m = sample();
        let text = m.render();
        assert!(text.ends_with('\n') && text.contains("\nxxh3 "), "{text}");
        assert_eq!(Manifest::parse(&text), Ok(m));
    }

    #[test]
    fn the_base_is_optional_and_kept() {
        let mut m = sample();
        let old = m.render();
        assert!(!old.contains("\"base\""), "{old}");
        m.base = Some("0123".into());
        let text = m.render();
        assert!(text.contains("\"base\": \"0123\""), "{text}");
        assert_eq!(Manifest::parse(&text), Ok(m));
        assert_eq!(Manifest::parse(&old).map(|m| m.base), Ok(None));
    }

    #[test]
    fn damage_is_detected() {
        let text = sample().render();
        // A flipped digit inside the body.
        let flipped = text.replacen("\"generation\": 7", "\"generation\": 8", 1);
        assert_eq!(Manifest::parse(&flipped), Err(ManifestError::Checksum));
        // Cut anywhere: no valid trailer, or a trailer over less text.
        for cut in [0, 1, text.len() / 2, text.len() - 3] {
            assert!(Manifest::parse(&text[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(Manifest::parse(""), Err(ManifestError::NoTrailer));
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let reparse = |m: &Manifest| Manifest::parse(&m.render());
        let mut m = sample();
        m.current.push("layer-000099.squashfs".into());
        assert!(matches!(reparse(&m), Err(ManifestError::Invalid(w)) if w.contains("unknown")));
        let mut m = sample();
        m.backup.push(layer_name(1));
        assert!(matches!(reparse(&m), Err(ManifestError::Invalid(w)) if w.contains("twice")));
        let mut m = sample();
        m.next_layer = 3;
        assert!(matches!(reparse(&m), Err(ManifestError::Invalid(_))));
        let mut m = sample();
        m.layers.insert("../etc/passwd".into(), info(1));
        assert!(matches!(reparse(&m), Err(ManifestError::Invalid(_))));
        let mut m = sample();
        m.format = 2;
        assert_eq!(reparse(&m), Err(ManifestError::Format(2)));
    }

    #[test]
    fn substitution_replaces_the_run_in_every_chain() {
        let mut m = sample();
        m.kept.push(Kept {
            why: "x".into(),
            stamp: "s".into(),
            layers: vec![layer_name(1), layer_name(2)],
        });
        let run = [layer_name(1), layer_name(2)];
        m.substitute(&run, "layer-000004.squashfs");
        assert_eq!(
            m.current,
            ["layer-000004.squashfs", "layer-000003.squashfs"]
        );
        assert_eq!(m.backup, ["layer-000004.squashfs"]);
        assert_eq!(m.kept[0].layers, ["layer-000004.squashfs"]);
        // A run that is not consecutive in a chain leaves it alone.
        let mut chain = vec![layer_name(1), layer_name(3), layer_name(2)];
        substitute_run(&mut chain, &run, "m");
        assert_eq!(chain.len(), 3);
    }

    #[test]
    fn prune_keeps_only_referenced_layers() {
        let mut m = sample();
        m.current.pop();
        m.prune();
        assert_eq!(
            m.layers.keys().cloned().collect::<Vec<_>>(),
            [layer_name(1), layer_name(2)]
        );
    }
}

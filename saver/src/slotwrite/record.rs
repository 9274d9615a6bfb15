//! `slot.json`: what a written slot holds, in the slot's directory. It is
//! written last, so a slot with a record is complete; a slot without one
//! is either incomplete (no base: never booted) or was made before slots
//! (slot `a` of every older stick) or by `cargo xtask image`.

use super::plan::RecordSeed;
use ramstick_common::place::Slot;
use serde::{Deserialize, Serialize};

/// The record's name in a slot's directory.
pub const RECORD: &str = "slot.json";
/// Its temporary name while it is written.
pub const RECORD_TMP: &str = "slot.json.tmp";
/// The record's format.
pub const FORMAT: u32 = 1;

/// How a slot's base was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotOrigin {
    /// `saver fold`: the running system packed as a base.
    Fold,
    /// `cargo xtask update-stick`: a root filesystem built on a host.
    Update,
}

/// `slot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub format: u32,
    pub origin: SlotOrigin,
    /// When it was written (UTC).
    pub date: String,
    /// The base image's metadata digest (a manifest's `meta_digest` kind):
    /// a chain saved on this base names it.
    pub base: String,
    /// The slot a fold packed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_slot: Option<String>,
    /// Free text (the host tree of an update, its kernel).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl SlotRecord {
    pub fn new(seed: &RecordSeed, base: String) -> SlotRecord {
        SlotRecord {
            format: FORMAT,
            origin: seed.origin,
            date: seed.date.clone(),
            base,
            source_slot: seed.source.map(|s| s.name().to_string()),
            note: seed.note.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn parse(text: &str) -> Result<SlotRecord, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// One line for people: "folded from slot a on 2026-12-07 02:30:00 UTC".
    pub fn describe(&self) -> String {
        let how = match (self.origin, &self.source_slot) {
            (SlotOrigin::Fold, Some(s)) => format!("folded from slot {s}"),
            (SlotOrigin::Fold, None) => "folded".to_string(),
            (SlotOrigin::Update, _) => "updated from a host".to_string(),
        };
        let mut line = format!("{how} on {}", self.date);
        if !self.note.is_empty() {
            line.push_str(&format!(" ({})", self.note));
        }
        line
    }

    /// The slot a fold packed, if it names a valid one.
    pub fn source(&self) -> Option<Slot> {
        self.source_slot.as_deref().and_then(Slot::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_reads_as_a_line() {
        let seed = RecordSeed {
            origin: SlotOrigin::Fold,
            date: "2026-12-07 02:30:00 UTC".into(),
            source: Some(Slot::A),
            note: String::new(),
        };
        let r = SlotRecord::new(&seed, "abc".into());
        let text = r.to_json();
        assert!(text.contains("\"origin\": \"fold\""), "{text}");
        assert!(text.contains("\"source_slot\": \"a\""), "{text}");
        assert!(!text.contains("note"), "{text}");
        let back = SlotRecord::parse(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.source(), Some(Slot::A));
        assert_eq!(
            back.describe(),
            "folded from slot a on 2026-12-07 02:30:00 UTC"
        );
        let update = SlotRecord::new(
            &RecordSeed {
                origin: SlotOrigin::Update,
                source: None,
                note: "tree /x".into(),
                ..seed
            },
            "d".into(),
        );
        assert_eq!(
            update.describe(),
            "updated from a host on 2026-12-07 02:30:00 UTC (tree /x)"
        );
        assert!(SlotRecord::parse("{\"format\":1}").is_err());
    }
}

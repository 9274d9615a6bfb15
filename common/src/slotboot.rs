//! The boot of a slot (see [`crate::place`]): the names GRUB's environment
//! block uses for the slots, the check that a saved chain is applied only on
//! the base it was made on, and what boot records of both for the saver.
//!
//! A manifest names the base its chain was made on (`base`: the base image's
//! metadata digest, the digest a layer's `meta_digest` is). At boot init
//! reads the slot's base digest (its superblock and metadata tables, a few
//! KiB) and applies the chain only when they agree; a manifest without
//! `base` (written before slots) applies as before. A chain made on another
//! base is not applied and never touched: the base boots clean, and the
//! saver refuses to save over that chain ([`BaseCheck::blocks_saving`]).

use crate::place::Slot;
use serde::{Deserialize, Serialize};

/// The grubenv variable naming the committed slot (`a` or `b`; absent: `a`).
pub const ENV_SLOT: &str = "ramstick_slot";
/// The grubenv variable naming a slot to boot once on trial (`a`, `b` or
/// empty). GRUB empties it, and sets [`ENV_TRIED`], before booting it.
pub const ENV_TRIAL: &str = "ramstick_trial";
/// The grubenv variable naming the slot whose trial is in progress or did
/// not commit (`a`, `b` or empty). A commit empties it.
pub const ENV_TRIED: &str = "ramstick_tried";

/// The module of the trial watchdog and its timeout parameter.
pub const TRIAL_WATCHDOG_MODULE: &str = "softdog";
/// The watchdog device a trial boot arms.
pub const WATCHDOG_DEVICE: &str = "/dev/watchdog";

/// How the saved chain's base compares with the slot's base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", tag = "result")]
pub enum BaseCheck {
    /// Not compared: no manifest, or a manifest without `base` (older
    /// sticks), or a clean boot. The chain applies as before.
    #[default]
    Unchecked,
    /// The chain was made on this base.
    Same,
    /// The chain was made on another base: it is not applied (and kept).
    Other { saved_on: String, found: String },
    /// The slot's base could not be read to compare: the chain is not
    /// applied (and kept); the base's mount says what is wrong with it.
    Unreadable { why: String },
}

impl BaseCheck {
    /// Compares the manifest's `base` with the slot's base digest as read
    /// (`found`, only read when the manifest names a base).
    pub fn compare(saved_on: Option<&str>, found: impl FnOnce() -> Result<String, String>) -> Self {
        let Some(saved_on) = saved_on else {
            return BaseCheck::Unchecked;
        };
        match found() {
            Ok(found) if found == saved_on => BaseCheck::Same,
            Ok(found) => BaseCheck::Other {
                saved_on: saved_on.to_string(),
                found,
            },
            Err(why) => BaseCheck::Unreadable { why },
        }
    }

    /// Whether the chain may be applied on this boot.
    pub fn applies(&self) -> bool {
        matches!(self, BaseCheck::Unchecked | BaseCheck::Same)
    }

    /// Whether the saver must refuse to save: the booted chain is not the
    /// saved one, and a save would put the session's layer over a chain made
    /// on another base (or replace it).
    pub fn blocks_saving(&self) -> bool {
        !self.applies()
    }

    /// The console's message when the chain is not applied.
    pub fn message(&self, slot: Slot) -> Option<String> {
        match self {
            BaseCheck::Unchecked | BaseCheck::Same => None,
            BaseCheck::Other { .. } => Some(format!(
                "the saved state of slot {slot} was made on another base: booted the base \
                 without it; the state is kept (nothing will be saved over it)"
            )),
            BaseCheck::Unreadable { why } => Some(format!(
                "the base of slot {slot} cannot be read to check the saved state against it \
                 ({why}): booted without the saved state; the state is kept (nothing will be \
                 saved over it)"
            )),
        }
    }
}

/// What boot.json says of the slot booted (absent in records before slots:
/// slot `a`, no trial, nothing checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlotBoot {
    #[serde(with = "serde_slot")]
    pub slot: Slot,
    /// Booted with `ramstick.trial=on`.
    pub trial: bool,
    /// Whether the trial watchdog was armed (a trial boot whose watchdog
    /// could not be armed is not restarted by it).
    pub watchdog_armed: bool,
    /// The slot's base image, relative to the persist root.
    pub base_image: String,
    /// The base's metadata digest as read at boot, when it was (what a save
    /// writes as the manifest's `base`).
    pub base_digest: Option<String>,
    /// The saved chain against the base.
    pub base_check: BaseCheck,
}

impl Default for SlotBoot {
    /// A boot before slots: slot `a`, its base in the persist root.
    fn default() -> SlotBoot {
        SlotBoot {
            slot: Slot::A,
            trial: false,
            watchdog_armed: false,
            base_image: Slot::A.base_image(),
            base_digest: None,
            base_check: BaseCheck::Unchecked,
        }
    }
}

/// `Slot` as its name (`"a"`, `"b"`) in JSON, for `#[serde(with)]`.
pub mod serde_slot {
    use crate::place::Slot;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(slot: &Slot, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(slot.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Slot, D::Error> {
        let name = String::deserialize(d)?;
        Slot::parse(&name).ok_or_else(|| D::Error::custom(format!("no slot {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_base_named_and_different_stops_the_chain() {
        let never = || -> Result<String, String> { panic!("read without a base to compare") };
        assert_eq!(BaseCheck::compare(None, never), BaseCheck::Unchecked);
        let same = BaseCheck::compare(Some("d1"), || Ok("d1".into()));
        assert_eq!(same, BaseCheck::Same);
        assert!(same.applies() && same.message(Slot::B).is_none());
        let other = BaseCheck::compare(Some("d1"), || Ok("d2".into()));
        assert!(!other.applies() && other.blocks_saving());
        let text = other.message(Slot::B).unwrap_or_default();
        assert!(
            text.starts_with("the saved state of slot b was made on another base: booted the base without it; the state is kept"),
            "{text}"
        );
        let unreadable = BaseCheck::compare(Some("d1"), || Err("i/o error".into()));
        assert!(!unreadable.applies());
        assert!(unreadable
            .message(Slot::A)
            .unwrap_or_default()
            .contains("i/o error"));
    }

    #[test]
    fn the_record_reads_back_and_defaults_to_slot_a() {
        let rec = SlotBoot {
            slot: Slot::B,
            trial: true,
            watchdog_armed: true,
            base_image: "slot-b/rootfs.squashfs".into(),
            base_digest: Some("d".into()),
            base_check: BaseCheck::Other {
                saved_on: "x".into(),
                found: "d".into(),
            },
        };
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains("\"slot\":\"b\""), "{json}");
        assert!(json.contains("\"result\":\"other\""), "{json}");
        assert_eq!(serde_json::from_str::<SlotBoot>(&json).unwrap(), rec);
        assert!(serde_json::from_str::<SlotBoot>(&json.replace("\"b\"", "\"c\"")).is_err());
        assert_eq!(SlotBoot::default().slot, Slot::A);
        let partial: SlotBoot = serde_json::from_str(r#"{"slot":"b"}"#).unwrap();
        assert_eq!(partial.base_image, "rootfs.squashfs");
    }
}

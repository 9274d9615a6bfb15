//! `/run/ramstick/boot.json`: what init did, for the saver and `saver status`.

use crate::chain::{Choice, LayerFailure, Saved};
use crate::cmdline::{BootType, LayersMode};
use crate::initsys::HookCheck;
use crate::slotboot::SlotBoot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where init records the boot for the saver.
pub const BOOT_JSON: &str = "/run/ramstick/boot.json";
/// Where init leaves a copy of its initramfs without the kernel modules
/// (what `saver kernel add` builds a new kernel's initramfs from).
pub const INITRAMFS_KIT: &str = "/run/ramstick/initramfs";

/// What the stick held of the saved state when it booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SavedState {
    /// The layered layout; the manifest generation that was read.
    Manifest { generation: u64 },
    /// `upperfs.squashfs` / `upperfs-backup.squashfs` (converted by the first save).
    Legacy,
    /// A manifest that could not be read: nothing may be saved over it.
    Damaged { why: String },
    /// Nothing saved yet.
    Nothing,
}

/// One layer the boot uses, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedLayer {
    pub name: String,
    /// Path relative to /persist.
    pub file: String,
    pub size: u64,
    /// Loop-mounted from the stick, or unpacked into RAM.
    pub how: LayersMode,
}

/// Whether something saves the session at shutdown: the saver hook of the
/// booted root's init system (see [`crate::initsys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaverHook {
    /// The init system found ("systemd", "OpenRC", …); `None` when not recognised.
    pub init: Option<String>,
    /// Why this session will not be saved at shutdown, and the fix; `None`
    /// when the hook is there.
    pub warning: Option<String>,
}

impl From<HookCheck> for SaverHook {
    fn from(c: HookCheck) -> SaverHook {
        SaverHook {
            init: c.init.map(|i| i.to_string()),
            warning: c.warning,
        }
    }
}

/// The record init writes at the end of a boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// Boot type asked on the command line.
    pub asked: BootType,
    /// The boot type whose chain is used (`clean` when no layer is).
    pub used: BootType,
    /// How the command line asked the layers to be assembled.
    pub layers_mode: LayersMode,
    pub saved: SavedState,
    /// The chain the asked boot type names (bottom first).
    pub asked_chain: Vec<String>,
    /// The layers in use (the longest prefix that worked).
    pub layers: Vec<UsedLayer>,
    /// Layers tried and not used, with the failure class of each.
    pub failures: Vec<LayerFailure>,
    /// Other notes on the boot, for people (e.g. a fall back from ram to mount).
    pub notes: Vec<String>,
    /// Milliseconds spent in each phase, plus "total".
    pub timings_ms: BTreeMap<String, u64>,
    /// Kernel version the boot ran.
    pub kernel: String,
    /// "zram0", "tmpfs", …
    pub upper: String,
    /// Command-line problems reported during the boot.
    pub problems: Vec<String>,
    /// The saver hook check of the booted root (absent in older records).
    #[serde(default)]
    pub saver_hook: SaverHook,
    /// The profile booted (`ramstick.profile`; absent in older records: `default`).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Its state directory, relative to /persist ("" for the default
    /// profile of slot a; absent in older records: "").
    #[serde(default)]
    pub state_dir: String,
    /// The slot booted, its base and whether the saved chain was made on
    /// it (absent in older records: slot `a`, nothing checked).
    #[serde(default)]
    pub slot: SlotBoot,
}

fn default_profile() -> String {
    crate::place::DEFAULT_PROFILE.to_string()
}

impl SavedState {
    /// What boot.json says of what the stick held.
    pub fn of(saved: &Saved) -> SavedState {
        match saved {
            Saved::Manifest(m) => SavedState::Manifest {
                generation: m.generation,
            },
            Saved::Legacy { .. } => SavedState::Legacy,
            Saved::Damaged(why) => SavedState::Damaged { why: why.clone() },
            Saved::Nothing => SavedState::Nothing,
        }
    }
}

impl BootInfo {
    /// The record of a boot of `saved` that chose `choice`, every layer
    /// assembled `how` (for the tools that act as if the stick had just
    /// booted: `saver add-layer`, the crash tests); no timings.
    pub fn chosen(saved: &Saved, choice: Choice, how: LayersMode) -> BootInfo {
        BootInfo {
            asked: choice.asked,
            used: choice.used,
            layers_mode: how,
            saved: SavedState::of(saved),
            asked_chain: choice.asked_chain,
            layers: choice
                .layers
                .iter()
                .map(|c| UsedLayer {
                    name: c.name.clone(),
                    file: c.file.clone(),
                    size: c.info.as_ref().map_or(0, |i| i.size),
                    how,
                })
                .collect(),
            failures: choice.failures,
            notes: Vec::new(),
            timings_ms: BTreeMap::new(),
            kernel: String::new(),
            upper: String::new(),
            problems: Vec::new(),
            saver_hook: SaverHook::default(),
            profile: default_profile(),
            state_dir: String::new(),
            slot: SlotBoot::default(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain owned data cannot fail; fall back to an empty object anyway.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The names of the layers in use, bottom first.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.name.clone()).collect()
    }

    /// True when boot used less than the asked chain (a layer failed).
    pub fn partial(&self) -> bool {
        !self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::FailureClass;

    #[test]
    fn round_trips_through_json() {
        let mut timings = BTreeMap::new();
        timings.insert("modules".to_string(), 120);
        let info = BootInfo {
            asked: BootType::Default,
            used: BootType::Default,
            layers_mode: LayersMode::Mount,
            saved: SavedState::Manifest { generation: 4 },
            asked_chain: vec![
                "layer-000001.squashfs".into(),
                "layer-000002.squashfs".into(),
            ],
            layers: vec![UsedLayer {
                name: "layer-000001.squashfs".into(),
                file: "layers/layer-000001.squashfs".into(),
                size: 4096,
                how: LayersMode::Ram,
            }],
            failures: vec![LayerFailure {
                layer: "layer-000002.squashfs".into(),
                class: FailureClass::Corrupt,
                message: "metadata digest mismatch".into(),
            }],
            notes: vec![],
            timings_ms: timings,
            kernel: "6.1.0-56-amd64".into(),
            upper: "zram0".into(),
            problems: vec![],
            saver_hook: SaverHook {
                init: Some("systemd".into()),
                warning: None,
            },
            profile: "work".into(),
            state_dir: "profiles/work".into(),
            slot: SlotBoot::default(),
        };
        let json = info.to_json();
        assert!(json.contains("\"class\": \"corrupt\""), "{json}");
        assert!(json.contains("\"kind\": \"manifest\""), "{json}");
        assert!(info.partial());
        assert_eq!(info.layer_names(), ["layer-000001.squashfs"]);
        assert_eq!(BootInfo::from_json(&json).ok(), Some(info.clone()));
        // A record written before the hook check reads as "not checked".
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value.as_object_mut().unwrap().remove("saver_hook");
        value.as_object_mut().unwrap().remove("slot");
        let old = BootInfo::from_json(&value.to_string()).unwrap();
        assert_eq!(old.saver_hook, SaverHook::default());
        // One written before profiles is the default profile's.
        value.as_object_mut().unwrap().remove("profile");
        value.as_object_mut().unwrap().remove("state_dir");
        let old = BootInfo::from_json(&value.to_string()).unwrap();
        assert_eq!(
            (old.profile.as_str(), old.state_dir.as_str()),
            ("default", "")
        );
        assert_eq!(old.slot, SlotBoot::default());
    }
}

//! `/run/ramstick/boot.json`: what init did, for the saver and `saver status`.

use crate::cmdline::BootType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where init records the boot for the saver.
pub const BOOT_JSON: &str = "/run/ramstick/boot.json";

/// The record init writes at the end of a boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// Boot type asked on the command line.
    pub asked: BootType,
    /// Boot type actually used after the fallback chain.
    pub used: BootType,
    /// Image unpacked into the upper (relative to /persist), if any.
    pub image: Option<String>,
    /// Size in bytes of that image.
    pub image_size: Option<u64>,
    /// Why an image was skipped, in fallback order (e.g. "upperfs.squashfs: missing").
    pub reasons: Vec<String>,
    /// Milliseconds spent in each phase, plus "total".
    pub timings_ms: BTreeMap<String, u64>,
    /// Kernel version the boot ran.
    pub kernel: String,
    /// "zram" or "tmpfs".
    pub upper: String,
    /// Command-line problems reported during the boot.
    pub problems: Vec<String>,
}

impl BootInfo {
    pub fn to_json(&self) -> String {
        // Serialising plain owned data cannot fail; fall back to an empty object anyway.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut timings = BTreeMap::new();
        timings.insert("modules".to_string(), 120);
        let info = BootInfo {
            asked: BootType::Default,
            used: BootType::Backup,
            image: Some("upperfs-backup.squashfs".into()),
            image_size: Some(4096),
            reasons: vec!["upperfs.squashfs: cannot read: Input/output error".into()],
            timings_ms: timings,
            kernel: "6.1.0-56-amd64".into(),
            upper: "zram".into(),
            problems: vec![],
        };
        let json = info.to_json();
        assert!(json.contains("\"used\": \"backup\""), "{json}");
        assert_eq!(BootInfo::from_json(&json).ok(), Some(info));
    }
}

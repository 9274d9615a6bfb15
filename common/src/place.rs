//! Where a saved state lives on the stick: its slot and its profile.
//!
//! A stick holds up to two **slots**, each a base system (`rootfs.squashfs`,
//! optionally its own `firmware.squashfs`) with its own saved states. Slot
//! `a` is the persist partition's root — where every stick before slots keeps
//! its files, so those sticks are slot `a` unchanged — and slot `b` is the
//! directory `slot-b/`. Kernels (on the ESP) and `modules-<kver>.squashfs`
//! are named by kernel release and shared by both slots.
//!
//! Inside a slot, the **default profile**'s saved state is `layers/` (today's
//! state); another profile's is `profiles/<name>/layers/`. A state directory
//! is laid out like the persist root of a stick without slots, so the code
//! that saves, compacts and boots a chain runs on it unchanged.
//!
//! Every path here is relative to the persist partition's root, `/`-joined,
//! without a leading `/`; the root itself is the empty string.

use std::fmt;

/// The directory of slot `b`, in the persist partition's root.
pub const SLOT_B_DIR: &str = "slot-b";
/// The directory of a slot's named profiles, in the slot's directory.
pub const PROFILES_DIR: &str = "profiles";
/// The name that means a slot's own `layers/` (no `profiles/` entry).
pub const DEFAULT_PROFILE: &str = "default";
/// The base image of a slot, in the slot's directory.
pub const BASE_IMAGE: &str = "rootfs.squashfs";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Slot {
    /// The persist partition's root: the slot of every stick made before slots.
    #[default]
    A,
    /// `slot-b/`.
    B,
}

impl Slot {
    /// Both slots, `a` first.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// `a` or `b`, as on the command line and in GRUB's environment.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The slot named `a` or `b`.
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot's directory ("" for the root).
    pub fn dir(self) -> &'static str {
        match self {
            Slot::A => "",
            Slot::B => SLOT_B_DIR,
        }
    }

    /// The slot's base image.
    pub fn base_image(self) -> String {
        join(self.dir(), BASE_IMAGE)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `name` can name a profile: 1 to 32 characters, a lowercase letter
/// or digit first, then lowercase letters, digits, '_' or '-' (it becomes a
/// directory name and a GRUB menu title, so nothing that needs quoting).
pub fn is_profile_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The directory of a saved state: the slot's own for the default profile
/// (`None` or [`DEFAULT_PROFILE`]), else `profiles/<name>` in the slot.
pub fn state_dir(slot: Slot, profile: Option<&str>) -> String {
    match profile {
        None | Some(DEFAULT_PROFILE) => slot.dir().to_string(),
        Some(name) => join(&join(slot.dir(), PROFILES_DIR), name),
    }
}

/// `dir/name`, or `name` when `dir` is the root ("").
pub fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => dir.to_string(),
        _ => format!("{dir}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_a_is_the_root_and_b_its_own_directory() {
        assert_eq!(Slot::A.base_image(), "rootfs.squashfs");
        assert_eq!(Slot::B.base_image(), "slot-b/rootfs.squashfs");
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::parse("b"), Some(Slot::B));
        assert_eq!(Slot::parse("B"), None);
        assert_eq!(Slot::parse(""), None);
    }

    #[test]
    fn state_dirs() {
        assert_eq!(state_dir(Slot::A, None), "");
        assert_eq!(state_dir(Slot::A, Some("default")), "");
        assert_eq!(state_dir(Slot::A, Some("work")), "profiles/work");
        assert_eq!(state_dir(Slot::B, None), "slot-b");
        assert_eq!(state_dir(Slot::B, Some("work")), "slot-b/profiles/work");
        assert_eq!(join("", "layers"), "layers");
        assert_eq!(join("slot-b", "layers"), "slot-b/layers");
    }

    #[test]
    fn profile_names() {
        for ok in ["work", "a", "0", "my-profile_2", "x".repeat(32).as_str()] {
            assert!(is_profile_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "_x",
            "Work",
            "a b",
            "a/b",
            "..",
            ".x",
            "x".repeat(33).as_str(),
            "é",
        ] {
            assert!(!is_profile_name(bad), "{bad}");
        }
    }
}

//! Writing a slot: a new base system into the slot that is neither running
//! nor committed, for `saver fold` (the running system packed as a base)
//! and `cargo xtask update-stick` (a root filesystem built on a host).
//!
//! [`plan`] is the pure plan and its runner over [`plan::SlotFs`];
//! [`onstick`] runs it on a persist partition, the images coming from an
//! [`onstick::ImageSource`]; [`record`] is the slot's `slot.json`; [`fold`]
//! is `saver fold`.

pub mod fold;
pub mod onstick;
pub mod plan;
pub mod record;

//! ramstick's PID 1, as a library so the pieces are unit-tested; `main.rs`
//! is the thin entry point and `boot.rs` the boot sequence in one function.

// PID 1 never panics (the standards): these lints make that checked,
// outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod background;
pub mod boot;
pub mod consoles;
pub mod devices;
pub mod ext2;
pub mod extras;
pub mod failure;
pub mod fsck;
pub mod images;
pub mod kit;
pub mod kmsg;
pub mod layers;
pub mod luks;
pub mod modload;
pub mod mountpoints;
pub mod mounts;
pub mod settle;
pub mod stopwatch;
pub mod switchroot;
pub mod sys;
#[cfg(test)]
mod testplan;
pub mod trial;
pub mod warm;

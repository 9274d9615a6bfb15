//! ramstick-common: the pure logic shared by `init`, `saver` and `xtask`.
//!
//! Everything here is free of side effects on the running system (it reads
//! files only where a function says so), so it is unit- and golden-tested.

// This code runs in PID 1, the saver and the codec, which never panic on
// bad input (the standards): these lints make that checked, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod blkid;
pub mod bootinfo;
pub mod chain;
pub mod cmdline;
pub mod digest;
pub mod elf;
pub mod human;
pub mod io;
pub mod manifest;
pub mod meminfo;
pub mod modules;
pub mod plan;
pub mod tree;
pub mod xattr;

//! ramstick-common: the logic shared by `init`, `saver`, the codec and
//! `xtask`.
//!
//! Almost everything here is pure: it reads files only where a function
//! says so, and only [`tree::remove_contents`] changes the running system;
//! so it is unit- and golden-tested.

// This code runs in PID 1, the saver and the codec, which never panic on
// bad input (the standards): these lints make that checked, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod blkid;
pub mod bootinfo;
pub mod bootmenu;
pub mod chain;
pub mod cmdline;
pub mod digest;
pub mod elf;
pub mod grubenv;
pub mod human;
pub mod initsys;
pub mod io;
pub mod manifest;
pub mod meminfo;
pub mod modules;
pub mod place;
pub mod plan;
pub mod slotboot;
pub mod tree;
pub mod xattr;

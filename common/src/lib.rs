//! ramstick-common: the pure logic shared by `init`, `saver` and `xtask`.
//!
//! Everything here is free of side effects on the running system (it reads
//! files only where a function says so), so it is unit- and golden-tested.

pub mod blkid;
pub mod bootinfo;
pub mod bootmenu;
pub mod chain;
pub mod cmdline;
pub mod digest;
pub mod elf;
pub mod human;
pub mod initsys;
pub mod manifest;
pub mod modules;
pub mod plan;
pub mod tree;
pub mod xattr;

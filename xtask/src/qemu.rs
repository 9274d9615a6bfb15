//! Booting a disk image in QEMU.
//!
//! `cargo xtask qemu DISK` boots it interactively under OVMF with the serial
//! console on this terminal (quit with Ctrl-A X); `cargo xtask demo` builds a
//! busybox stick first ([`interactive`]). [`Vm`] is the expect-style serial
//! console driver the e2e suite, the bench and the crashtest use
//! ([`console`]). Both start QEMU from a [`Machine`] ([`machine`]), pick GRUB
//! entries by typing keys ([`menu`]) and read the guest's output without its
//! terminal escapes ([`ansi`]). A boot QEMU itself failed (hung or crashed) is a
//! [`QemuFault`] ([`fault`]).

mod ansi;
mod console;
mod fault;
mod interactive;
mod machine;
mod menu;

pub use console::Vm;
pub use fault::{again_after_fault, QemuFault, KERNEL_RUNS_INIT};
pub use interactive::{demo, run, Args, DemoArgs};
pub use machine::{ensure_tools, Machine, CPUS};

//! ramstick-saver: persisting the RAM session to the stick as a chain of
//! layers, as a library for the `saver` binary and its privileged test.
//!
//! [`save`] is the save sequence: [`saveplan`] plans it (pure), [`commit`]
//! runs the steps of any change of the saved state over a [`commit::Stick`]
//! with the manifest as the single commit point, [`stick`] is the real
//! stick that writes and reads back a layer ([`verifymount`] is the
//! kernel's half of the read-back), [`space`] checks the room. [`compact`] plans merging layers and
//! [`maintain`] runs it. [`session`] is what boot.json and the saver's own
//! records say about this session; [`onoff`] whether it may be saved;
//! [`diff`] compares the upper with the lowers (`saver diff`, printed by
//! [`diffshow`]); [`slot`] manages the stick's two slots and a trial boot; [`watch`] decides what the daemon does about a filling RAM upper, which
//! [`pressure`] measures; [`daemon`], [`status`], [`check`], [`addlayer`] and
//! [`codec`] are the other commands.

// The saver never panics on bad input (the standards): these lints make
// that checked, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod addlayer;
#[cfg(test)]
mod basetest;
pub mod check;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod compact;
#[cfg(test)]
mod crashtest;
pub mod daemon;
pub mod diff;
pub mod diffshow;
pub mod kernel;
pub mod maintain;
pub mod onoff;
pub mod pressure;
pub mod profile;
pub mod progress;
pub mod running;
pub mod save;
pub mod saveplan;
pub mod session;
pub mod slot;
pub mod slotwrite;
pub mod space;
pub mod status;
pub mod stick;
pub mod verifymount;
pub mod watch;

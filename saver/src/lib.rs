//! ramstick-saver: persisting the RAM session to the stick, as a library
//! for the `saver` binary and its privileged test.
//!
//! [`save`] is the save sequence, [`rotate`] its crash-safe image rotation,
//! [`verifymount`] the kernel test mount, [`space`] the space check,
//! [`session`] what boot.json says about this session, [`status`] and
//! [`daemon`] the other commands, [`codec`] the squashfs codec's commands.

pub mod addlayer;
pub mod check;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod compact;
#[cfg(test)]
mod crashtest;
pub mod daemon;
pub mod kernel;
pub mod maintain;
pub mod progress;
pub mod save;
pub mod saveplan;
pub mod session;
pub mod space;
pub mod status;
pub mod stick;
pub mod verifymount;

//! `cargo xtask fuzz`: fuzzes the squashfs reader (issue 4).

use anyhow::{bail, Result};

/// `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

pub fn run(_a: &Args) -> Result<()> {
    bail!("cargo xtask fuzz is not written yet")
}

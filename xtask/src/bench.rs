//! `cargo xtask bench`: one side-by-side table of speed, size and writes (issue 7).

use anyhow::{bail, Result};

/// `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    /// A reduced run (under 2 minutes) that checks every row produces a number.
    #[arg(long)]
    pub quick: bool,
}

pub fn run(_a: &Args) -> Result<()> {
    bail!("cargo xtask bench is not written yet")
}

//! `saver daemon`: started at boot by the init system, it waits for
//! signals. SIGTERM/SIGINT (the system stops): save, then exit with the
//! save's result. SIGUSR1: save now and keep running, whatever the result.

use crate::save::save;
use crate::session::Paths;
use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

pub fn daemon(paths: &Paths) -> Result<()> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGUSR1]).context("cannot install signal handlers")?;
    eprintln!("saver: waiting (SIGTERM/SIGINT: save and exit; SIGUSR1: save now)");
    for signal in signals.forever() {
        if signal != SIGUSR1 {
            eprintln!("saver: the system is stopping: saving the session");
            return save(paths, false).map(drop);
        }
        if let Err(e) = save(paths, false) {
            eprintln!("saver: error: {e:#}");
        }
    }
    Ok(())
}

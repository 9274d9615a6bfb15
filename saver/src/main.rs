//! `saver`: persists the RAM session of a ramstick system to the stick
//! (`save`, `daemon`), reports on it (`status`), and offers the squashfs
//! codec on the command line (`pack`, `unpack`, `verify`).
//!
//! Exit status: 0 on success, 1 when `verify` finds differences, 2 on an error.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ramstick_saver::session::Paths;
use ramstick_saver::{codec, daemon, save, status};

#[derive(Parser)]
#[command(
    name = "saver",
    about = "ramstick session saver and squashfs tool",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show how this system booted, the images on the stick, the upper's
    /// usage and how much changed since boot.
    Status,
    /// Save the session to the stick now: pack the RAM upper into a new
    /// upperfs.squashfs, test it, keep the previous one as the backup.
    Save {
        /// Save even when nothing changed.
        #[arg(long)]
        force: bool,
    },
    /// Run until SIGTERM/SIGINT (then save and exit); SIGUSR1 saves and keeps running.
    Daemon,
    /// Pack a directory tree into a squashfs image.
    Pack(codec::PackArgs),
    /// Unpack a squashfs image into a directory.
    Unpack(codec::UnpackArgs),
    /// Compare an image with a directory; exit 0 only when identical.
    Verify(codec::VerifyArgs),
}

fn main() {
    let cli = Cli::parse();
    let paths = Paths::system();
    let result: Result<bool> = match &cli.cmd {
        Cmd::Status => status::status(&paths).map(|()| true),
        Cmd::Save { force } => save::save(&paths, *force).map(|_| true),
        Cmd::Daemon => daemon::daemon(&paths).map(|()| true),
        Cmd::Pack(a) => codec::pack(a).map(|()| true),
        Cmd::Unpack(a) => codec::unpack(a).map(|()| true),
        Cmd::Verify(a) => codec::verify(a),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("saver: error: {e:#}");
            std::process::exit(2);
        }
    }
}

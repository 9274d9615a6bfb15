//! `saver`: persists the RAM session of a ramstick system to the stick
//! (`save`, `daemon`), keeps the saved chain short (`compact`), reports on
//! it (`status`, `check`), adds a tree to a stick mounted elsewhere
//! (`add-layer`), and offers the squashfs codec on the command line
//! (`pack`, `merge`, `unpack`, `verify`).
//!
//! Exit status: 0 on success, 1 when `verify` or `check` finds differences,
//! 2 on an error.

// The saver never panics on bad input (the standards): these lints make
// that checked, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use ramstick_saver::session::Paths;
use ramstick_saver::{addlayer, check, codec, daemon, kernel, maintain, save, status};

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
    /// Show how this system booted, the saved chain on the stick, the
    /// upper's usage and how much changed since the last save.
    Status,
    /// Save the session to the stick now: pack the RAM upper into a new
    /// layer, read it back, commit it to the chain (a second save in one
    /// session replaces the session's layer).
    ///
    /// Example: `saver save` (or `kill -USR1` the daemon).
    Save {
        /// Save even when nothing changed.
        #[arg(long)]
        force: bool,
        /// Save although boot could only use part of the chain for a reason
        /// that is not proven damage (the whole chain is kept aside).
        #[arg(long)]
        onto_partial: bool,
    },
    /// Run until SIGTERM/SIGINT (then save and exit); SIGUSR1 saves and
    /// keeps running; checkpoints every `ramstick.checkpoint` minutes.
    ///
    /// Example: `saver daemon --log /run/ramstick/saver/daemon.log`
    Daemon {
        /// Write the messages to this file; those of the shutdown save go
        /// to the console (for init systems without a journal).
        #[arg(long)]
        log: Option<std::path::PathBuf>,
    },
    /// Merge every layer below the latest session's into one (the policy
    /// also does this by itself, a few layers at a time).
    ///
    /// Example: `saver compact`
    Compact,
    /// Read every layer on the stick whole and compare it with the
    /// manifest's digests; exit 1 if one differs.
    ///
    /// Example: `saver check`
    Check,
    /// Append a directory tree (read like an overlay upperdir) as a new layer
    /// to the saved state of a stick mounted elsewhere.
    ///
    /// Example: `saver add-layer --persist /mnt/stick ./my-files`
    AddLayer(addlayer::AddLayerArgs),
    /// A kernel package was installed or removed in the running stick (the
    /// kernel hooks in /etc/kernel/postinst.d and postrm.d call this).
    #[command(subcommand)]
    Kernel(kernel::KernelCmd),
    /// Pack a directory tree into a squashfs image.
    Pack(codec::PackArgs),
    /// Merge overlay layer images into one, bottom first.
    ///
    /// Example: `saver merge merged.squashfs l1.squashfs l2.squashfs`
    Merge(codec::MergeArgs),
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
        Cmd::Save {
            force,
            onto_partial,
        } => {
            let opts = save::SaveOptions {
                force: *force,
                onto_partial: *onto_partial,
                trigger: save::Trigger::Demand,
            };
            save::save(&paths, opts).map(|_| true)
        }
        Cmd::Daemon { log } => daemon::daemon(&paths, log.as_deref()).map(|()| true),
        Cmd::Compact => maintain::compact(&paths).map(|()| true),
        Cmd::Check => check::check(&paths),
        Cmd::AddLayer(a) => addlayer::add_layer(a).map(|_| true),
        Cmd::Kernel(k) => kernel::kernel(k).map(|()| true),
        Cmd::Pack(a) => codec::pack(a).map(|()| true),
        Cmd::Merge(a) => codec::merge(a).map(|()| true),
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

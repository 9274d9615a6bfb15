//! `saver`: persists the RAM session of a ramstick system to the stick
//! (`save`, `daemon`), keeps the saved chain short (`compact`), reports on
//! it (`status`, `check`), adds a tree to a stick mounted elsewhere
//! (`add-layer`), and offers the squashfs codec on the command line
//! (`pack`, `merge`, `unpack`, `verify`).
//!
//! Exit status: 0 on success, 1 when `verify` or `check` finds differences,
//! `diff` finds something to save or `slot commit`'s health check fails, 2 on an error, 3 when `save` is
//! refused because saving is off (`saver off`, `ramstick.save=off`).

// The saver never panics on bad input (the standards): these lints make
// that checked, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use ramstick_saver::session::Paths;
use ramstick_saver::{
    addlayer, check, codec, daemon, diffshow, kernel, maintain, onoff, profile, save, slot,
    slotwrite, status,
};

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
    ///
    /// Example: `saver status` (`saver status --json | jq .saving`)
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show what the next save would write: paths added, modified (content,
    /// mode, owner, xattrs, or metadata only), deleted, and those the
    /// exclusion list leaves out with the pattern that matched. Exit 0 when
    /// nothing would be saved, 1 when something would.
    ///
    /// Example: `saver diff --all | less`
    Diff {
        /// List every path, not only the counts.
        #[arg(long)]
        all: bool,
        /// Print JSON (every path) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Do not save this session: the shutdown save, checkpoints and `saver
    /// save` refuse until `saver on` (a reboot turns saving on again).
    ///
    /// Example: `saver off`, then try things out and power off
    Off,
    /// Undo `saver off`: the session is saved again at shutdown.
    ///
    /// Example: `saver on && saver save`
    On,
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
    ///
    /// Example: `saver kernel add 6.1.0-57-amd64 /boot/vmlinuz-6.1.0-57-amd64`
    #[command(subcommand)]
    Kernel(kernel::KernelCmd),
    /// The stick's two slots: which boots, a trial boot of the other, its
    /// commit, a rollback (exit 1 when `commit`'s health check fails).
    ///
    /// Example: `saver slot try b && reboot`, then `saver slot status`
    #[command(subcommand)]
    Slot(slot::SlotCmd),
    /// Pack the running system (its base, saved layers and this session,
    /// minus the exclusion list, kernels, modules and firmware) as a new base
    /// into the other slot, whose saved state starts empty; the running
    /// slot is never touched. Then `saver slot try <slot>` boots it once.
    ///
    /// Example: `saver fold --yes`
    Fold(slotwrite::fold::FoldArgs),
    /// The stick's profiles: independent saved states of the same base,
    /// each booted by its GRUB entry or `ramstick.profile=NAME`.
    ///
    /// Example: `saver profile create work`, then `saver profile list`
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    /// Pack a directory tree into a squashfs image.
    ///
    /// Example: `saver pack --exclude-from /etc/ramstick/exclude ./tree tree.squashfs`
    Pack(codec::PackArgs),
    /// Merge overlay layer images into one, bottom first.
    ///
    /// Example: `saver merge merged.squashfs l1.squashfs l2.squashfs`
    Merge(codec::MergeArgs),
    /// Unpack a squashfs image into a directory.
    ///
    /// Example: `saver unpack /persist/layers/layer-000003.squashfs /tmp/layer3`
    Unpack(codec::UnpackArgs),
    /// Compare an image with a directory; exit 0 only when identical.
    ///
    /// Example: `saver verify tree.squashfs ./tree`
    Verify(codec::VerifyArgs),
}

fn main() {
    let cli = Cli::parse();
    let paths = Paths::system();
    let result: Result<bool> = match &cli.cmd {
        Cmd::Status { json } => status::status(&paths, *json).map(|()| true),
        Cmd::Save {
            force,
            onto_partial,
        } => {
            let opts = save::SaveOptions {
                force: *force,
                onto_partial: *onto_partial,
                trigger: save::Trigger::Demand,
            };
            match save::save(&paths, opts) {
                Ok(save::Outcome::Off(_)) => std::process::exit(3),
                other => other.map(|_| true),
            }
        }
        Cmd::Diff { all, json } => diffshow::diff_command(&paths, *all, *json),
        Cmd::Off => onoff::turn_off(&paths).map(|said| {
            println!("saving is off for this session ({said}): nothing is saved at shutdown");
            true
        }),
        Cmd::On => onoff::turn_on(&paths).map(|()| {
            println!("saving is on: the session is saved at shutdown");
            true
        }),
        Cmd::Daemon { log } => daemon::daemon(&paths, log.as_deref()).map(|()| true),
        Cmd::Compact => maintain::compact(&paths).map(|()| true),
        Cmd::Check => check::check(&paths),
        Cmd::AddLayer(a) => addlayer::add_layer(a).map(|_| true),
        Cmd::Kernel(k) => kernel::kernel(k).map(|()| true),
        Cmd::Slot(s) => slot::slot(&paths, s),
        Cmd::Fold(a) => slotwrite::fold::fold(&slotwrite::fold::FoldPaths::system(&paths), a.yes),
        Cmd::Profile(p) => profile::profile(p, &paths).map(|()| true),
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

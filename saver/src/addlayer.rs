//! `saver add-layer --persist DIR TREE`: from another machine, appends a
//! directory tree to the saved state of a stick whose data partition is
//! mounted at DIR — as if a session had made exactly those changes. TREE is
//! read like an overlay upperdir (a `c 0 0` device is a whiteout, a
//! directory with `trusted.overlay.opaque=y` hides what is below it). The
//! same plan and checks as a save, and the compaction policy after it; the
//! backup becomes the chain before.
//! `cargo xtask` uses it to build sticks with a saved state for the tests
//! and the bench.

use crate::clock;
use crate::commit;
use crate::maintain::{self, Budget};
use crate::saveplan::{self, SessionState, Situation};
use crate::session::{self, Paths, Session};
use crate::space::human;
use crate::stick::{say, PersistStick};
use anyhow::{bail, Context, Result};
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::chain::{self, Saved};
use ramstick_common::cmdline::{BootType, LayersMode};
use ramstick_squash::Exclude;
use std::path::PathBuf;
use std::time::SystemTime;

/// `saver add-layer`.
#[derive(clap::Args, Debug)]
pub struct AddLayerArgs {
    /// Where the stick's data partition is mounted (or a copy of its files).
    #[arg(long)]
    pub persist: PathBuf,
    /// The tree to add, like an overlay upperdir.
    pub tree: PathBuf,
}

/// Appends the tree as a new layer; returns its name.
pub fn add_layer(a: &AddLayerArgs) -> Result<String> {
    let state = std::env::temp_dir().join(format!("saver-add-layer-{}", std::process::id()));
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    let paths = Paths {
        persist: a.persist.clone(),
        upper_mount: a.tree.clone(),
        upperdir: a.tree.clone(),
        exclude: state.join("no-exclusions"),
        boot_json: state.join("no-boot.json"),
        state: state.clone(),
        cmdline: state.join("no-cmdline"),
        rootfs: state.join("no-rootfs"),
        layer_mounts: state.join("no-layers"),
    };
    let result = add(&paths);
    let _ = std::fs::remove_dir_all(&state);
    result
}

fn add(paths: &Paths) -> Result<String> {
    let saved = session::read_saved(paths);
    if let Saved::Damaged(why) = &saved {
        bail!("the stick's manifest cannot be read ({why}): not adding to it");
    }
    // The chain a default boot would use, every layer taken as it is.
    let choice = chain::choose(&saved, BootType::Default, |_| Ok(()));
    let boot = BootInfo::chosen(&saved, choice, LayersMode::Mount);
    let stamp = clock::stamp(SystemTime::now());
    let plan = saveplan::plan(&Situation {
        saved: &saved,
        boot: &boot,
        session: &SessionState::booted(&boot),
        layer_files: &session::layer_files(paths)?,
        legacy_present: session::legacy_present(paths),
        stamp: &stamp,
        onto_partial: false,
        reclaim_corrupt: false,
    })?;
    for note in &plan.notes {
        say(note);
    }
    let none = Exclude::none();
    let mut stick = PersistStick::new(paths, &none);
    // Only root can loop-mount the new layer for the kernel's read-back.
    stick.kernel_check = nix::unistd::geteuid().is_root();
    if !stick.kernel_check {
        say("not root: the new layer is read back by our codec only, not by the kernel");
    }
    commit::run(&mut stick, &plan.steps)?;
    // As after a save: merge what the compaction policy asks for.
    let mut session = Session {
        info: boot,
        state: plan.session.clone(),
    };
    maintain::compact_if_due(paths, &mut session, Budget::Save)?;
    let chain = match session::read_saved(paths) {
        Saved::Manifest(m) => m.current.len(),
        _ => 0,
    };
    say(&format!(
        "added {} as layers/{} ({}); the chain has {chain} layers",
        paths.upperdir.display(),
        plan.layer,
        human(stick.written)
    ));
    Ok(plan.layer)
}

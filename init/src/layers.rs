//! The saved state at boot: read the manifest (or find the legacy images),
//! let [`ramstick_common::chain::choose`] pick the chain for the boot type,
//! and check and assemble each layer in turn:
//!
//! - check: the file's size and metadata digest against the manifest (a
//!   legacy image, which has no record, is probed by the codec instead);
//! - `mount` mode: loop-mount it read-only under `/run/ramstick/layers/`;
//! - `ram` mode: unpack it into the upper filesystem under `layers/`. A
//!   layer that does not fit (or that the upper cannot hold, like `user.*`
//!   xattrs on an old tmpfs) is loop-mounted instead, and so are the layers
//!   after it: a saved state is never dropped because this machine's RAM is
//!   small.
//!
//! The first layer that fails ends the chain (the longest valid prefix is
//! booted), loudly, with the failure's class recorded for the saver. The
//! overlay then stacks the layers above the rootfs.

use ramstick_common::bootinfo::{SavedState, UsedLayer};
use ramstick_common::chain::{self, Candidate, FailureClass, LayerFailure, Saved};
use ramstick_common::cmdline::{BootType, LayersMode};
use ramstick_common::manifest::LayerInfo;
use ramstick_common::plan::Plan;
use ramstick_common::slotboot::BaseCheck;
use std::cell::{Cell, RefCell};
use std::path::Path;

use crate::images::Images;
use crate::mounts::{self, at};
use crate::sys::Sys;

/// Space a layer's entry may take in the upper besides its data (an ext2
/// block for a small file, its inode and directory entry).
const PER_ENTRY: u64 = 4096;

/// What the boot assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub saved: SavedState,
    pub used: BootType,
    pub asked_chain: Vec<String>,
    pub layers: Vec<UsedLayer>,
    /// The layers' directories in the initramfs, bottom first.
    pub dirs: Vec<String>,
    pub failures: Vec<LayerFailure>,
    pub notes: Vec<String>,
    /// The saved chain against the slot's base.
    pub base_check: BaseCheck,
    /// The slot's base digest, when it was read (to compare).
    pub base_digest: Option<String>,
}

/// Reads what the persist partition holds of the saved state.
pub fn read_saved(sys: &dyn Sys, root: &Path, plan: &Plan) -> Saved {
    let path = at(root, &plan.layers.manifest);
    let persist = at(root, &plan.persist_mount);
    let legacy = plan.legacy_present(|n| sys.exists(&persist.join(n)));
    Saved::from_read(sys.read_file(&path), legacy, &path.to_string_lossy())
}

/// The class of a codec error.
pub fn classify(e: &ramstick_squash::Error) -> FailureClass {
    use ramstick_squash::Error as E;
    match e {
        E::Corrupt { .. } | E::Unsafe { .. } => FailureClass::Corrupt,
        E::Unsupported { .. } => FailureClass::Unsupported,
        E::Io { error, .. } => match error.raw_os_error() {
            Some(nix::libc::ENOSPC | nix::libc::EDQUOT) => FailureClass::NoSpace,
            Some(nix::libc::EOPNOTSUPP) => FailureClass::Unsupported,
            Some(nix::libc::ENOENT) => FailureClass::Missing,
            _ => FailureClass::Io,
        },
        _ => FailureClass::Io,
    }
}

/// Chooses and assembles the chain of `plan.boot_asked`.
pub fn assemble(sys: &dyn Sys, images: &dyn Images, root: &Path, plan: &Plan) -> Assembled {
    let saved = read_saved(sys, root, plan);
    let state = SavedState::of(&saved);
    let mut notes = Vec::new();
    match &saved {
        Saved::Damaged(why) => {
            log::error!(
                "!!! the saved state's manifest cannot be used ({why}): booting clean. The layers \
                 stay on the stick untouched, and this session will not be saved over them !!!"
            );
            notes.push(format!("manifest unusable: {why}"));
        }
        Saved::Nothing
            if plan.boot_asked != BootType::Clean
                && plan.profile != ramstick_common::place::DEFAULT_PROFILE =>
        {
            let note = format!(
                "profile {} has no saved state yet: the first save creates it",
                plan.profile
            );
            log::info!("{note}: starting the base with an empty upper");
            notes.push(note);
        }
        Saved::Nothing if plan.boot_asked != BootType::Clean => {
            log::info!("no saved state on the stick (first boot?): starting with an empty upper");
            notes.push("no saved state on the stick".into());
        }
        _ => {}
    }
    if plan.boot_asked == BootType::Clean {
        log::info!("clean boot: no saved layer is used; nothing will be saved");
    }
    let persist = at(root, &plan.persist_mount);
    let (base_check, base_digest) = check_base(images, &persist, plan, &saved);
    let asked = match base_check.message(plan.slot) {
        None => plan.boot_asked,
        Some(message) => {
            log::error!("!!! {message} !!!");
            notes.push(message);
            BootType::Clean
        }
    };
    // Once a layer had to be mounted in ram mode, the rest are mounted too.
    let mode = Cell::new(plan.layers.mode);
    let used = RefCell::new(Vec::<(UsedLayer, String)>::new());
    let choice = chain::choose(&saved, asked, |c| {
        let image = persist.join(plan.layers.file(&c.file));
        check(sys, images, &image, c)?;
        let size = c.info.as_ref().map_or(0, |i| i.size);
        let how = match mode.get() {
            LayersMode::Mount => LayersMode::Mount,
            LayersMode::Ram => match unpack(sys, images, root, plan, &image, c) {
                Ok(()) => LayersMode::Ram,
                Err(f) if matches!(f.class, FailureClass::NoSpace | FailureClass::Unsupported) => {
                    let note = format!(
                        "ram mode: {} cannot be unpacked into the RAM upper ({}): it and the \
                         layers after it are loop-mounted from the stick instead",
                        c.name, f.message
                    );
                    log::warn!("{note}");
                    mode.set(LayersMode::Mount);
                    LayersMode::Mount
                }
                Err(f) => return Err(f),
            },
        };
        let target = plan.layers.target(&c.name, how);
        if how == LayersMode::Mount {
            mounts::mount_squashfs(sys, &image, &at(root, &target))
                .map_err(|e| failure(c, FailureClass::Io, format!("{e:#}")))?;
        }
        log::info!(
            "layer {}: {}",
            c.name,
            if how == LayersMode::Mount {
                "mounted"
            } else {
                "unpacked into RAM"
            }
        );
        used.borrow_mut().push((
            UsedLayer {
                name: c.name.clone(),
                file: plan.layers.file(&c.file),
                size,
                how,
            },
            target,
        ));
        Ok(())
    });
    if mode.get() != plan.layers.mode {
        notes.push("ram mode fell back to mounting layers from the stick (see the log)".into());
    }
    for f in &choice.failures {
        log::error!(
            "!!! saved layer {} cannot be used ({}: {}). It is left untouched on the stick !!!",
            f.layer,
            f.class,
            f.message
        );
    }
    if !choice.failures.is_empty() {
        let (k, n) = (choice.layers.len(), choice.asked_chain.len());
        match choice.used {
            BootType::Clean => log::error!(
                "!!! no saved layer is usable: booting clean (the layers stay on the stick) !!!"
            ),
            used if used == plan.boot_asked => log::error!(
                "!!! booting the first {k} of the {n} saved layers of the {used} chain: it stops \
                 below the layer that failed !!!"
            ),
            used => log::error!("!!! falling back to the {used} chain ({k} layers) !!!"),
        }
    }
    // A chain is only given up on when none of its layers worked, so every
    // layer assembled is one the choice uses.
    let (layers, dirs): (Vec<UsedLayer>, Vec<String>) = used.into_inner().into_iter().unzip();
    Assembled {
        saved: state,
        used: choice.used,
        asked_chain: choice.asked_chain,
        layers,
        dirs,
        failures: choice.failures,
        notes,
        base_check,
        base_digest,
    }
}

/// Compares the base the manifest's chains were made on with the slot's
/// base, read only when the manifest names one (a clean boot applies no
/// chain: nothing to compare).
fn check_base(
    images: &dyn Images,
    persist: &Path,
    plan: &Plan,
    saved: &Saved,
) -> (BaseCheck, Option<String>) {
    let saved_on = match saved {
        Saved::Manifest(m) if plan.boot_asked != BootType::Clean => m.base.as_deref(),
        _ => None,
    };
    let mut digest = None;
    let check = BaseCheck::compare(saved_on, || {
        let found = images
            .meta_digest(&persist.join(&plan.base_image))
            .map(|(_, d)| d)
            .map_err(|e| e.to_string());
        digest = found.clone().ok();
        found
    });
    (check, digest)
}

/// A failure of the candidate `c`.
fn failure(c: &Candidate, class: FailureClass, message: String) -> LayerFailure {
    LayerFailure {
        layer: c.name.clone(),
        class,
        message,
    }
}

/// The layer's size and metadata digest against its record; a legacy image
/// is probed.
fn check(
    sys: &dyn Sys,
    images: &dyn Images,
    image: &Path,
    c: &Candidate,
) -> Result<(), LayerFailure> {
    if !sys.exists(image) {
        return Err(failure(
            c,
            FailureClass::Missing,
            format!("{} is not on the stick", c.file),
        ));
    }
    let codec = |e: ramstick_squash::Error| failure(c, classify(&e), e.to_string());
    let Some(LayerInfo {
        size, meta_digest, ..
    }) = &c.info
    else {
        return images.probe(image).map_err(codec);
    };
    let (found_size, found_digest) = images.meta_digest(image).map_err(codec)?;
    if found_size != *size {
        return Err(failure(
            c,
            FailureClass::Corrupt,
            format!("{found_size} bytes on the stick, the manifest says {size}"),
        ));
    }
    if &found_digest != meta_digest {
        return Err(failure(
            c,
            FailureClass::Corrupt,
            "its metadata does not match the manifest's digest".into(),
        ));
    }
    Ok(())
}

/// Unpacks a layer into the upper filesystem, if it fits; a failed unpack
/// removes what it wrote.
fn unpack(
    sys: &dyn Sys,
    images: &dyn Images,
    root: &Path,
    plan: &Plan,
    image: &Path,
    c: &Candidate,
) -> Result<(), LayerFailure> {
    let dir = at(root, &plan.layers.target(&c.name, LayersMode::Ram));
    if let Some(info) = &c.info {
        let need = info
            .data_bytes
            .saturating_add(info.entries.saturating_mul(PER_ENTRY));
        let free = images
            .free_bytes(&at(root, &plan.upper_mount))
            .map_err(|e| failure(c, FailureClass::Io, format!("cannot stat the upper: {e}")))?;
        if need > free {
            return Err(failure(
                c,
                FailureClass::NoSpace,
                format!(
                    "it needs about {} MiB, {} MiB are free",
                    need >> 20,
                    free >> 20
                ),
            ));
        }
    }
    sys.mkdir_all(&dir).map_err(|e| {
        failure(
            c,
            FailureClass::Io,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    images.unpack(image, &dir).map_err(|e| {
        if let Err(err) = images.remove_tree(&dir) {
            log::error!("cannot remove the partial copy {}: {err}", dir.display());
        }
        failure(c, classify(&e), e.to_string())
    })
}

#[cfg(test)]
mod basetests;
#[cfg(test)]
mod tests;

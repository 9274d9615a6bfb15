//! Filling the RAM upper from the chosen image, with the fallback chain
//! default → backup → clean. The image is unpacked by `ramstick_squash`
//! (parallel decompression, full fidelity: xattrs, hardlinks, device nodes,
//! sparse files; never writing outside the upper); any error — a damaged
//! image included — wipes the partial copy and moves on down the chain.

use anyhow::{Context, Result};
use ramstick_common::cmdline::BootType;
use ramstick_common::plan::Plan;
use ramstick_common::tree;
use ramstick_squash::{UnpackOptions, UnpackStats};
use std::path::Path;

use crate::mounts::at;
use crate::sys::Sys;

/// What the chain ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub used: BootType,
    pub image: Option<String>,
    pub image_size: Option<u64>,
    pub reasons: Vec<String>,
}

/// Human name of the next step after `i` in the chain.
fn next_name(plan: &Plan, i: usize) -> String {
    match plan.upper_images.get(i + 1) {
        Some((bt, _)) => bt.to_string(),
        None => "clean".to_string(),
    }
}

/// Try each planned image in turn; the first that copies completely wins.
pub fn fill_upper(sys: &dyn Sys, root: &Path, plan: &Plan) -> Outcome {
    let persist = at(root, &plan.persist_mount);
    let upperdir = at(root, &plan.upper_mount).join("upper");
    let mut reasons = Vec::new();
    let none_present = plan
        .upper_images
        .iter()
        .all(|(_, name)| !sys.exists(&persist.join(name)));
    if plan.upper_images.is_empty() {
        log::info!("clean boot: starting with an empty upper; nothing will be saved");
    } else if none_present {
        let names: Vec<&str> = plan.upper_images.iter().map(|(_, n)| n.as_str()).collect();
        log::info!(
            "no {} on the stick (first boot?): starting with an empty upper",
            names.join(" or ")
        );
        reasons.push(format!("{}: not on the stick", names.join(", ")));
        return Outcome {
            used: BootType::Clean,
            image: None,
            image_size: None,
            reasons,
        };
    }
    for (i, (boot_type, name)) in plan.upper_images.iter().enumerate() {
        let image = persist.join(name);
        let Ok(meta) = std::fs::metadata(&image) else {
            log::warn!(
                "!!! {name} is missing; falling back to {} !!!",
                next_name(plan, i)
            );
            reasons.push(format!("{name}: not on the stick"));
            continue;
        };
        match unpack_image(&image, &upperdir) {
            Ok(stats) => {
                log::info!(
                    "unpacked {name}: {} entries, {} bytes of file data",
                    stats.entries,
                    stats.bytes
                );
                return Outcome {
                    used: *boot_type,
                    image: Some(name.clone()),
                    image_size: Some(meta.len()),
                    reasons,
                };
            }
            Err(e) => {
                log::error!(
                    "!!! {name} could not be read: {e:#}. It is left untouched on the stick; falling back to {} !!!",
                    next_name(plan, i)
                );
                reasons.push(format!("{name}: {e:#}"));
                if let Err(e) = tree::remove_contents(&upperdir, true) {
                    log::error!("cannot wipe the partial upper {}: {e}", upperdir.display());
                }
            }
        }
    }
    if !plan.upper_images.is_empty() {
        log::warn!("!!! no usable upper image: booting clean (the images stay on the stick) !!!");
    }
    Outcome {
        used: BootType::Clean,
        image: None,
        image_size: None,
        reasons,
    }
}

fn unpack_image(image: &Path, upperdir: &Path) -> Result<UnpackStats> {
    ramstick_squash::unpack(image, upperdir, &UnpackOptions::default())
        .with_context(|| format!("cannot unpack {} into the upper", image.display()))
}

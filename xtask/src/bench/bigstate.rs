//! A save on a big saved state, on a busybox stick in QEMU (our kernel). The
//! state is the generated tree (the codec's, about 300 MB; 10 MB in
//! `--quick`) under `/root/state`, put on the stick as one layer by the
//! host's `saver add-layer`; the boot loop-mounts it (`ramstick.layers=mount`,
//! the default). Each run writes 1 MiB of new random bytes to
//! `/root/bench-1m`, then measures (see [`guest::measure`]: bytes written
//! to the persist partition, guest time):
//!
//! * ours: `saver save` (a second save in the session replaces the
//!   session's layer, so every run is a session of a 1 MB change);
//! * reference, today's full-image save: before layered saves the saver
//!   packed the whole upper — the state and the change — into one zstd-15
//!   image at every save. Measured in the same guest, once after the first
//!   save, as `saver pack /root /persist/bench-full.squashfs --level 15`
//!   (the state and the change are all of /root), then the image is
//!   removed. It reads the state from the loop-mounted layer (a
//!   decompression the old zram upper also paid).

use super::boot::{BOOT_TIMEOUT, CMD_TIMEOUT, FULL_IMAGE, FULL_IMAGE_TIMEOUT};
use super::guest::{self, Cost, SAVER};
use super::sticks::{self, BUSYBOX_PROMPT};
use super::table::Series;
use crate::build::Binaries;
use crate::{deps, image};
use anyhow::{Context, Result};
use ramstick_common::bootmenu::GrubEntry;
use ramstick_common::cmdline::LayersMode;
use std::fs;
use std::path::Path;

/// The change of every run.
pub const CHANGE: &str = "dd if=/dev/urandom of=/root/bench-1m bs=1M count=1 2>/dev/null";

/// The saves' and the full-image save's series: [bytes written, seconds] per run.
pub struct Runs {
    pub save: Series<2>,
    /// Measured once: it takes minutes under TCG and hardly varies.
    pub full_image: Series<2>,
}

/// Measure `runs` saves on a stick whose saved state is `state`.
pub fn measure(
    bins: &Binaries,
    saver: &Path,
    state: &Path,
    work: &Path,
    runs: usize,
) -> Result<Runs> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let tree = sticks::rooted(state, &work.join("state-tree"), "root/state")?;
    println!("bench: adding {} as a saved layer", state.display());
    let persist = sticks::added(saver, &work.join("persist"), std::slice::from_ref(&tree))?;
    // Room for the rootfs, the state's layer, the full image and the sessions.
    let size = image::round_up_mib(image::dir_size(state)? * 2) + 768 * image::MIB;
    let disk = work.join("busybox-state.img");
    sticks::busybox(bins, &disk, size, persist)?;
    deps::remove_if_exists(&tree)?;

    let machine = super::boot::machine(&disk, work, "busybox-state");
    let mut b = super::boot::boot(
        &machine,
        &work.join("busybox-state.log"),
        GrubEntry::Default,
        BUSYBOX_PROMPT,
    )?;
    guest::expect_layers(&mut b.vm, 1, LayersMode::Mount, CMD_TIMEOUT)?;
    let mut save = Series::default();
    let mut full_image = Series::default();
    for run in 0..runs {
        save.record(|| {
            b.vm.run(CHANGE, CMD_TIMEOUT)?;
            let c = guest::save(&mut b.vm, BOOT_TIMEOUT)?;
            Ok([c.written, c.seconds])
        });
        if run == 0 {
            full_image.record(|| {
                let c = full_image_save(&mut b.vm)?;
                Ok([c.written, c.seconds])
            });
        }
    }
    b.vm.kill();
    deps::remove_if_exists(&disk)?;
    Ok(Runs { save, full_image })
}

/// The reference: the whole state packed as one zstd-15 image on the stick.
fn full_image_save(vm: &mut crate::qemu::Vm) -> Result<Cost> {
    let pack = format!("{SAVER} pack /root {FULL_IMAGE} --level 15 --quiet");
    let cost = guest::measure(vm, &pack, FULL_IMAGE_TIMEOUT)?;
    vm.run(&format!("rm -f {FULL_IMAGE}; sync"), CMD_TIMEOUT)?;
    Ok(cost)
}

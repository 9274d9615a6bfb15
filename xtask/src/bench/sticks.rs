//! Sticks for the bench: the busybox stick, and saved states made on the
//! host and put on a stick's persist partition as `layers/…` files (as
//! `cargo xtask e2e` does):
//!
//! * [`added`]: trees appended one after the other by the host's own
//!   `saver add-layer` (the same plan and checks as a save, then the
//!   compaction policy);
//! * [`chain`]: one layer per tree, packed by `saver pack` at the session
//!   level, and a manifest written here naming them all as `current` — a
//!   chain as long as wanted, which `add-layer` never leaves (its policy
//!   merges at 9 layers).

use crate::build::Binaries;
use crate::{deps, image, kernel, rootfs, target_dir};
use anyhow::{bail, ensure, Context, Result};
use ramstick_common::manifest::{self, LayerInfo, Manifest, Origin, LAYERS_DIR, MANIFEST};
use std::fs;
use std::path::{Path, PathBuf};

/// The busybox rootfs's root shell prompt on ttyS0.
pub const BUSYBOX_PROMPT: &str = "ramstick:/# ";
/// Every bench boot's extra command line: a kernel log big enough to keep the early lines.
pub const KERNEL_LOG: &str = "log_buf_len=4M";
/// And every ramstick boot's: no checkpoints (a save by the saver daemon in
/// the middle of a measurement would be counted in it; saves are run by hand).
pub const NO_CHECKPOINTS: &str = "ramstick.checkpoint=off";

/// The extra command line of a bench stick, with `more` parameters.
pub fn cmdline(more: &str) -> String {
    format!("{KERNEL_LOG} {NO_CHECKPOINTS} {more}")
        .trim_end()
        .to_string()
}
/// The zstd level of a session's layer (the saver's SESSION_COMPRESSOR).
pub const SESSION_LEVEL: &str = "3";

/// Files for [`image::Spec::persist_extra`]: (host file, name on the persist partition).
pub type PersistFiles = Vec<(PathBuf, String)>;

/// Build a busybox stick (our kernel) of `size` bytes at `out`, with `persist` files.
pub fn busybox(bins: &Binaries, out: &Path, size: u64, persist: PersistFiles) -> Result<()> {
    let rootfs_dir = target_dir().join("rootfs-busybox");
    if !rootfs_dir.join(rootfs::MARKER).is_file() {
        rootfs::build(rootfs::Kind::Busybox, &rootfs_dir)?;
    }
    println!("bench: building {}", out.display());
    image::build(&image::Spec {
        rootfs: rootfs_dir,
        out: out.to_path_buf(),
        size: Some(size),
        kernel: kernel::fetch_debian()?,
        bins: bins.clone(),
        extra_cmdline: cmdline(""),
        persist_extra: persist,
        omit: Vec::new(),
    })
}

/// `dir/under`, made of hard links to `src`'s files (cheap: the generated
/// trees are big and the copies read-only); `dir` is replaced.
pub fn rooted(src: &Path, dir: &Path, under: &str) -> Result<PathBuf> {
    let dest = dir.join(under);
    deps::remove_if_exists(dir)?;
    let parent = dest.parent().unwrap_or(dir);
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    deps::run(deps::cmd("cp").arg("-al").arg(src).arg(&dest))?;
    Ok(dir.to_path_buf())
}

/// A fresh persist directory at `persist` with `trees` added by `saver add-layer`.
pub fn added(saver: &Path, persist: &Path, trees: &[PathBuf]) -> Result<PersistFiles> {
    fresh(persist)?;
    for tree in trees {
        deps::output(
            deps::cmd(&saver.to_string_lossy())
                .arg("add-layer")
                .arg("--persist")
                .arg(persist)
                .arg(tree),
        )?;
    }
    files(persist)
}

/// A fresh persist directory at `persist` whose chain is one layer per tree
/// of `trees` (bottom first), with no compaction; backup is the chain
/// without its top, as after a save.
pub fn chain(saver: &Path, persist: &Path, trees: &[PathBuf]) -> Result<PersistFiles> {
    ensure!(!trees.is_empty(), "a chain needs a layer");
    fresh(persist)?;
    let layers = persist.join(LAYERS_DIR);
    fs::create_dir_all(&layers).with_context(|| format!("creating {}", layers.display()))?;
    let stamp = deps::output(deps::cmd("date").args(["-u", "+%Y%m%d-%H%M%S"]))?;
    let mut m = Manifest::empty();
    for tree in trees {
        let name = manifest::layer_name(m.next_layer);
        let image = layers.join(&name);
        deps::output(
            deps::cmd(&saver.to_string_lossy())
                .arg("pack")
                .arg(tree)
                .arg(&image)
                .args(["--level", SESSION_LEVEL, "--quiet"]),
        )?;
        m.layers.insert(name.clone(), record(&image, stamp.trim())?);
        m.current.push(name);
        m.next_layer += 1;
        m.generation += 1;
    }
    m.backup = m.current[..m.current.len() - 1].to_vec();
    m.check()
        .map_err(|e| anyhow::anyhow!("the hand-made manifest: {e}"))?;
    let path = layers.join(MANIFEST);
    fs::write(&path, m.render()).with_context(|| format!("writing {}", path.display()))?;
    files(persist)
}

/// The manifest's record of a session's layer file.
fn record(image: &Path, stamp: &str) -> Result<LayerInfo> {
    let d = ramstick_squash::digests(image)
        .with_context(|| format!("reading back {}", image.display()))?;
    let s = ramstick_squash::summary(image)
        .with_context(|| format!("reading back {}", image.display()))?;
    Ok(LayerInfo {
        size: d.size,
        meta_digest: d.meta,
        digest: d.full,
        saved: stamp.to_string(),
        entries: s.entries,
        data_bytes: s.data_bytes,
        level: 0,
        origin: Origin::Session,
    })
}

/// The manifest of the persist directory at `persist`.
pub fn read_manifest(persist: &Path) -> Result<Manifest> {
    let path = persist.join(LAYERS_DIR).join(MANIFEST);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The manifest and every layer it records, as persist files.
fn files(persist: &Path) -> Result<PersistFiles> {
    let m = read_manifest(persist)?;
    let on_stick = |name: &str| format!("{LAYERS_DIR}/{name}");
    let mut out = vec![(persist.join(LAYERS_DIR).join(MANIFEST), on_stick(MANIFEST))];
    for name in m.layers.keys() {
        let file = persist.join(LAYERS_DIR).join(name);
        if !file.is_file() {
            bail!("the manifest names {} but it is missing", file.display());
        }
        out.push((file, on_stick(name)));
    }
    Ok(out)
}

/// An empty directory at `dir`.
fn fresh(dir: &Path) -> Result<()> {
    deps::remove_if_exists(dir)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

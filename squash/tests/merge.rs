//! Privileged tests of `ramstick_squash::merge` against the kernel's
//! overlayfs: layers are built as directories holding what overlay uppers
//! hold (whiteouts, opaque directories, directories replacing files and
//! back, hardlinks, symlinks, fifos, devices, xattrs of every namespace,
//! sparse and multi-block files), packed with `pack`, loop-mounted and
//! stacked (`lowerdir=L3:L2:L1:BASE`); the merged image stacked alone
//! (`lowerdir=MERGED:BASE`) must show the same tree (`tree_listing`: names,
//! types, modes, owners, sizes, mtimes, targets, xattrs, content hashes,
//! hardlink groups), and so must the merged image unpacked by our reader.
//!
//! Needs root (loop devices, `trusted.*` xattrs; the harness says why each
//! case is skipped otherwise); runs in a private mount namespace on a
//! scratch tmpfs (testkit's harness).

mod merge_layers;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use merge_layers::{build_base, build_hand_layers, build_random_layers};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use ramstick_common::tree::tree_listing;
use ramstick_squash::{merge, pack, unpack, Compressor, PackOptions, UnpackOptions};
use ramstick_testkit::{
    ensure, ensure_same, main_with, Case, CaseResult, Ctx, Mounted, Outcome, Root, MKFS_EXT4,
};

/// Layers hold device nodes, foreign owners and `trusted.*` xattrs, and
/// are loop-mounted.
const LAYERS: &[Root] = &[
    Root::DeviceNodes,
    Root::ForeignOwners,
    Root::TrustedXattrs,
    Root::LoopDevices,
];

fn main() -> ExitCode {
    main_with(
        "squash_merge",
        &[
            Case::new("hand_built_layers", hand_built_layers)
                .root(LAYERS)
                .tools(&[MKFS_EXT4]),
            Case::new("random_layers", random_layers)
                .root(LAYERS)
                .tools(&[MKFS_EXT4]),
            Case::new("single_layer_is_itself", single_layer_is_itself).root(LAYERS),
            Case::new("merging_a_merged_layer", merging_a_merged_layer).root(LAYERS),
            Case::new("damaged_layers_fail_cleanly", damaged_layers_fail_cleanly).root(LAYERS),
        ],
    )
}

/// Small blocks and a fast compressor: several blocks per file, quick.
fn options() -> PackOptions<'static> {
    PackOptions {
        compressor: Compressor::Zstd(3),
        block_size: 16 << 10,
        threads: 2,
        ..PackOptions::default()
    }
}

/// A mount point made and unmounted by the test (overlay mounts).
struct Overlay(PathBuf);

impl Drop for Overlay {
    fn drop(&mut self) {
        if umount2(&self.0, MntFlags::empty()).is_err() {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}

/// A scratch area: every mount made through it lives below `dir`.
struct Lab {
    dir: PathBuf,
    next: std::cell::Cell<u32>,
}

impl Lab {
    fn new(dir: &Path) -> Lab {
        Lab {
            dir: dir.to_path_buf(),
            next: std::cell::Cell::new(0),
        }
    }

    /// A fresh directory below `dir`.
    fn fresh(&self, tag: &str) -> Result<PathBuf, String> {
        let n = self.next.get();
        self.next.set(n + 1);
        let p = self.dir.join(format!("{tag}-{n}"));
        std::fs::create_dir_all(&p).ctx(format!("mkdir {}", p.display()))?;
        Ok(p)
    }

    /// Packs `src` into an image.
    fn pack(&self, src: &Path) -> Result<PathBuf, String> {
        let image = self.fresh("img")?.join("layer.sqfs");
        pack(src, &image, &options()).ctx(format!("pack {}", src.display()))?;
        Ok(image)
    }

    /// Merges `layers` (bottom first) into a new image.
    fn merge(&self, layers: &[&Path]) -> Result<PathBuf, String> {
        let image = self.fresh("merged")?.join("merged.sqfs");
        merge(layers, &image, &options()).ctx("merge")?;
        Ok(image)
    }

    /// Loop-mounts an image read-only.
    fn mount(&self, image: &Path) -> Result<(Mounted, PathBuf), String> {
        let mnt = self.fresh("mnt")?;
        Ok((Mounted::image(image, "squashfs", &mnt, true)?, mnt))
    }

    /// `tree_listing` of an image as the kernel mounts it.
    fn image_listing(&self, image: &Path) -> Result<Vec<String>, String> {
        let (_m, mnt) = self.mount(image)?;
        tree_listing(&mnt).ctx("listing of an image")
    }

    /// What overlayfs shows for `lowers` (mounted directories, top first)
    /// over the directory `base`, as a `tree_listing`.
    fn view(&self, lowers: &[&Path], base: &Path) -> Result<Vec<String>, String> {
        let target = self.fresh("overlay")?;
        let mut dirs: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        dirs.push(base.display().to_string());
        // xino=on: one st_dev for every layer, so that tree_listing sees
        // them all and hardlink groups stay recognisable.
        let opts = format!(
            "lowerdir={},redirect_dir=off,metacopy=off,index=off,xino=on",
            dirs.join(":")
        );
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .ctx(format!("mount overlay {opts}"))?;
        let _guard = Overlay(target.clone());
        tree_listing(&target).ctx("listing of the overlay")
    }

    /// The stacked view of `layers` (images, bottom first) over `base`.
    fn stacked(&self, layers: &[&Path], base: &Path) -> Result<Vec<String>, String> {
        let mut mounts = Vec::new();
        for layer in layers.iter().rev() {
            mounts.push(self.mount(layer)?);
        }
        let dirs: Vec<&Path> = mounts.iter().map(|(_, p)| p.as_path()).collect();
        self.view(&dirs, base)
    }
}

/// The base and layers (directories) packed; the base is mounted (a
/// squashfs, so that xino has room for its inode numbers).
struct Chain {
    base: (Mounted, PathBuf),
    layers: Vec<PathBuf>,
}

fn chain(lab: &Lab, base_src: &Path, layer_srcs: &[PathBuf]) -> Result<Chain, String> {
    let base = lab.mount(&lab.pack(base_src)?)?;
    let layers = layer_srcs
        .iter()
        .map(|src| lab.pack(src))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Chain { base, layers })
}

impl Chain {
    fn refs(&self) -> Vec<&Path> {
        self.layers.iter().map(|p| p.as_path()).collect()
    }

    /// Merges all layers and checks: the merged image over the base shows
    /// what the stack shows, and so does the merged image unpacked by our
    /// reader. Returns the merged image and the stacked view.
    fn check_merge(&self, lab: &Lab, what: &str) -> Result<(PathBuf, Vec<String>), String> {
        let base = self.base.1.as_path();
        let stacked = lab.stacked(&self.refs(), base)?;
        let merged = lab.merge(&self.refs())?;
        let (_m, mnt) = lab.mount(&merged)?;
        let got = lab.view(&[&mnt], base)?;
        ensure_same(
            &format!("{what}: merged image over the base"),
            &stacked,
            &got,
        )?;
        // Our reader on ext4 (32-bit inode numbers for xino, every xattr).
        let ext4 = lab.fresh("ext4")?;
        let fs = Mounted::ext4(&ext4.join("fs.img"), 512 << 20, &ext4.join("fs"))?;
        let out = fs.target.join("unpacked");
        std::fs::create_dir(&out).ctx("mkdir unpacked")?;
        unpack(&merged, &out, &UnpackOptions::default()).ctx("unpack merged")?;
        let got = lab.view(&[&out], base)?;
        ensure_same(&format!("{what}: merged image unpacked"), &stacked, &got)?;
        Ok((merged, stacked))
    }
}

/// Layers built by hand, one case of each rule (see `merge_layers`).
fn hand_built_layers(dir: &Path) -> CaseResult {
    let lab = Lab::new(dir);
    let src = lab.fresh("src")?;
    build_base(&src.join("base"))?;
    let layers = build_hand_layers(&src)?;
    let chain = chain(&lab, &src.join("base"), &layers)?;
    let (merged, stacked) = chain.check_merge(&lab, "hand-built")?;
    // The stacked view hides and shows what the layers say.
    for (line, want) in [
        ("/d1/a ", false),
        ("/d1/new ", true),
        ("/d1/new2 ", true),
        ("/gone ", false),
        ("/mixed/m0 ", false),
        ("/mixed/m1 ", false),
        ("/mixed/m3 ", true),
        ("/plain/p0 ", true),
        ("/plain/p3 ", true),
        ("/d2/x ", false),
        ("/d2/again ", true),
        ("/wdir ", false),
        ("/ld/x ", false),
        ("/ld/y ", false),
        ("/ld/z ", true),
        ("/ld/w ", true),
        ("/plain/p1 ", false),
        ("/fresh ", true),
        ("/fresh/f1 ", false),
        ("/od/x ", false),
        ("/keep/k1 ", false),
        ("/keep/k2 ", true),
    ] {
        let found = stacked.iter().any(|l| l.starts_with(line));
        ensure(
            found == want,
            format!("stacked view: {line:?} shown: {found}"),
        )?;
    }
    // The merged image itself: opacity only where a stop happened, the
    // whiteouts kept, the partly shadowed hardlink group still linked.
    let (_m, mnt) = lab.mount(&merged)?;
    let listing = tree_listing(&mnt).ctx("listing of the merged image")?;
    let line = |path: &str| {
        listing
            .iter()
            .find(|l| l.starts_with(&format!("{path} ")))
            .cloned()
            .unwrap_or_default()
    };
    // (path, opaque, origin mark: merged from several layers, whiteouts in it)
    for (path, opaque, origin) in [
        ("/d1", true, false),
        ("/d2", true, false),
        ("/ld", true, false),
        ("/mixed", true, false),
        ("/od", true, true),
        ("/plain", false, true),
        ("/keep", false, true),
        ("/fresh", false, true),
        ("/", false, false),
    ] {
        let l = line(path);
        let empty_origin = ["trusted.overlay.origin=,", "trusted.overlay.origin= "]
            .iter()
            .any(|x| l.contains(x));
        ensure(
            l.contains("trusted.overlay.opaque=79") == opaque && empty_origin == origin,
            format!("{path}: opaque {opaque}, origin {origin} expected: {l}"),
        )?;
    }
    for path in [
        "/gone",
        "/wdir",
        "/plain/p1",
        "/fresh/f1",
        "/od/x",
        "/keep/k1",
    ] {
        let l = line(path);
        ensure(
            l.contains(" char 0000 0 0 0:0 "),
            format!("whiteout {path}: {l}"),
        )?;
    }
    let (hl, hl2) = (
        std::fs::symlink_metadata(mnt.join("hl")).ctx("stat hl")?,
        std::fs::symlink_metadata(mnt.join("hdir/hl2")).ctx("stat hl2")?,
    );
    ensure(
        hl.ino() == hl2.ino() && hl.nlink() == 2,
        format!(
            "hl: ino {} nlink {}, hl2: ino {}",
            hl.ino(),
            hl.nlink(),
            hl2.ino()
        ),
    )?;
    let hl3 = std::fs::symlink_metadata(mnt.join("hdir/hl3")).ctx("stat hl3")?;
    ensure(
        hl3.ino() != hl.ino() && hl3.nlink() == 1,
        "hl3 is the top layer's own file",
    )?;
    let sparse = std::fs::symlink_metadata(mnt.join("sparse")).ctx("stat sparse")?;
    ensure(
        sparse.len() == 64 << 20,
        format!("sparse size {}", sparse.len()),
    )?;
    let image_size = std::fs::metadata(&merged).ctx("stat merged")?.len();
    ensure(
        image_size < 16 << 20,
        format!("merged image of {image_size} bytes: holes written?"),
    )?;
    Ok(Outcome::Passed)
}

/// Seeded random layers: a few hundred operations over 3–6 layers.
fn random_layers(dir: &Path) -> CaseResult {
    for (seed, count, ops) in [(1u64, 3usize, 200usize), (2, 5, 300), (3, 6, 360)] {
        let scratch = dir.join(format!("seed{seed}"));
        {
            let lab = Lab::new(&scratch);
            let src = lab.fresh("src")?;
            let (base, layers) = build_random_layers(&src, seed, count, ops)?;
            let chain = chain(&lab, &base, &layers)?;
            let (_, stacked) = chain.check_merge(&lab, &format!("seed {seed}"))?;
            let n = stacked.len();
            ensure(n > 40, format!("seed {seed}: only {n} entries"))?;
            println!("note: seed {seed}: {count} layers, {n} entries in the stacked view");
        }
        std::fs::remove_dir_all(&scratch).ctx("clean")?;
    }
    Ok(Outcome::Passed)
}

/// The merge of one layer is that layer: same tree, xattrs (whiteouts,
/// opaque marks) and hardlinks, as the kernel mounts both.
fn single_layer_is_itself(dir: &Path) -> CaseResult {
    let lab = Lab::new(dir);
    let src = lab.fresh("src")?;
    build_base(&src.join("base"))?;
    let layers = build_hand_layers(&src)?;
    for layer in &layers {
        let image = lab.pack(layer)?;
        let merged = lab.merge(&[&image])?;
        ensure_same(
            &format!("merge of {} alone", layer.display()),
            &lab.image_listing(&image)?,
            &lab.image_listing(&merged)?,
        )?;
    }
    Ok(Outcome::Passed)
}

/// merge([merge([a, b]), c]) = merge([a, b, c]), image for image (the
/// kernel's view of both, trusted xattrs included) and over the base.
fn merging_a_merged_layer(dir: &Path) -> CaseResult {
    let lab = Lab::new(dir);
    let src = lab.fresh("src")?;
    let (base, layers) = build_random_layers(&src, 7, 4, 300)?;
    let mut sources = vec![base];
    sources.extend(layers);
    let mut hand = build_hand_layers(&src.join("hand"))?;
    sources.append(&mut hand);
    let chain = chain(&lab, &sources[0], &sources[1..])?;
    let all = chain.refs();
    let (a, b, c) = (all[0], all[1], &all[2..]);
    let ab = lab.merge(&[a, b])?;
    let mut rest: Vec<&Path> = vec![&ab];
    rest.extend_from_slice(c);
    let two_steps = lab.merge(&rest)?;
    let one_step = lab.merge(&all)?;
    ensure_same(
        "merge of a merge vs one merge",
        &lab.image_listing(&one_step)?,
        &lab.image_listing(&two_steps)?,
    )?;
    let base = chain.base.1.as_path();
    let stacked = lab.stacked(&all, base)?;
    let (_m, mnt) = lab.mount(&two_steps)?;
    ensure_same(
        "merge of a merge over the base",
        &stacked,
        &lab.view(&[&mnt], base)?,
    )?;
    Ok(Outcome::Passed)
}

/// A truncated or bit-flipped layer: an `Err` (truncation) or any result
/// (flips), never a panic (which aborts this binary) or a hang.
fn damaged_layers_fail_cleanly(dir: &Path) -> CaseResult {
    let lab = Lab::new(dir);
    let src = lab.fresh("src")?;
    build_base(&src.join("base"))?;
    let layers = build_hand_layers(&src)?;
    let good_path = lab.pack(&layers[1])?;
    let other = lab.pack(&layers[0])?;
    let good = std::fs::read(&good_path).ctx("read layer")?;
    let used = u64::from_le_bytes(good[40..48].try_into().ctx("superblock")?) as usize;
    let bad = dir.join("bad.sqfs");
    let out = dir.join("out.sqfs");
    let attempt = |bytes: &[u8]| -> Result<bool, String> {
        std::fs::write(&bad, bytes).ctx("write bad layer")?;
        Ok(merge(&[&other, &bad], &out, &options()).is_err())
    };
    for cut in (0..used).step_by(used / 60 + 1).chain([used - 1]) {
        ensure(attempt(&good[..cut])?, format!("layer cut at {cut} merged"))?;
    }
    let (mut seed, mut refused) = (0x2545_f491_4f6c_dd1du64, 0);
    for _ in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes = good.clone();
        bytes[(seed % used as u64) as usize] ^= 1 << ((seed >> 32) % 8);
        refused += usize::from(attempt(&bytes)?);
    }
    ensure(refused > 0, "no bit flip was noticed")?;
    println!("note: {refused} of 300 flipped layers refused");
    // The output may never be one of the inputs.
    let same = merge(&[&other, &good_path], &good_path, &options());
    ensure(same.is_err(), "merged into its own input")?;
    ensure(
        std::fs::read(&good_path).ctx("reread")? == good,
        "input changed",
    )?;
    Ok(Outcome::Passed)
}

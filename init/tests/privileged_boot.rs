//! Privileged integration test of init's real mount sequence on this host:
//! tmpfs and zram uppers, loop-mounted squashfs lowers, saved layer chains
//! (mounted, unpacked, cut short, legacy) and the overlay with its hand-over moves — all under a scratch root
//! in a private mount namespace, with the same functions init runs at boot.
//!
//! Needs root and `mksquashfs` (the zram case also e2fsck, which checks the
//! ext2 init lays out): testkit's harness says why each case is skipped
//! otherwise.

use nix::mount::{mount, MsFlags};
use ramstick_common::chain::FailureClass;
use ramstick_common::cmdline::{BootType, LayersMode};
use ramstick_common::manifest::{layer_name, LayerInfo, Manifest, Origin, LAYERS_DIR, MANIFEST};
use ramstick_common::plan::{plan_of, Facts, Plan};
use ramstick_init::images::LinuxImages;
use ramstick_init::layers;
use ramstick_init::mountpoints;
use ramstick_init::mounts::{self, at};
use ramstick_init::sys::{LinuxSys, Sys};
use ramstick_testkit::{
    ensure, main_with, noise, run, Case, CaseResult, Ctx, Outcome, Root, E2FSCK, GETFATTR,
    MKSQUASHFS, SETFATTR,
};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const KVER: &str = "6.1.0-test";

/// A case of the boot sequence: it loop-mounts a rootfs made by mksquashfs
/// and mounts the API filesystems.
fn boot_case(name: &'static str, run: fn(&Path) -> CaseResult) -> Case {
    Case::new(name, run)
        .root(&[Root::LoopDevices, Root::ApiFilesystems])
        .tools(&[MKSQUASHFS])
}

fn main() -> ExitCode {
    main_with(
        "privileged_boot",
        &[
            boot_case("mount mode: a chain of two layers", case_mount_chain),
            boot_case(
                "ram mode: the chain unpacked into the upper",
                case_ram_chain,
            ),
            boot_case(
                "ram mode: a layer too big for the upper is mounted",
                case_ram_too_small,
            ),
            boot_case(
                "a truncated middle layer boots the prefix",
                case_truncated_middle_layer,
            ),
            boot_case(
                "a truncated legacy upperfs falls back to its backup",
                case_legacy_fallback,
            ),
            boot_case("clean boot ignores the layers", case_clean),
            Case::new(
                "zram upper is ext2 with xattrs, clean under e2fsck",
                case_zram,
            )
            .root(&[
                Root::LoopDevices,
                Root::ApiFilesystems,
                Root::Zram,
                Root::TrustedXattrs,
            ])
            .tools(&[MKSQUASHFS, SETFATTR, GETFATTR, E2FSCK]),
            boot_case("missing rootfs names the image", case_missing_rootfs),
            boot_case(
                "a kernel the rootfs has no modules directory for leaves the upper empty",
                case_new_kernel_mount_point,
            ),
        ],
    )
}

fn plan_for(line: &str) -> Plan {
    let facts = Facts {
        kernel_version: KVER.into(),
        mem_total_bytes: 1 << 30,
    };
    plan_of(line, &facts)
}

/// One saved layer of a scratch stick: its marker, and whether the file is
/// cut in half after the manifest recorded it.
struct LayerSpec {
    marker: &'static str,
    /// Bytes of noise (so a cut layer fails while its data is read).
    noise: usize,
    truncate: bool,
}

const fn layer(marker: &'static str) -> LayerSpec {
    LayerSpec {
        marker,
        noise: 1 << 20,
        truncate: false,
    }
}

/// A scratch root on its own tmpfs with a stick's data partition in
/// `sysroot/persist`: rootfs, modules, and either a manifest chain of the
/// given layers (packed by our codec) or the given legacy images.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// On its own tmpfs on `dir` (the case's directory), so that one
    /// recursive unmount undoes every mount the sequence made below it.
    fn new(
        dir: &Path,
        chain: &[LayerSpec],
        legacy: &[(&str, &'static str, bool)],
    ) -> Result<Self, String> {
        let root = dir.to_path_buf();
        mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=512m"),
        )
        .map_err(|e| format!("tmpfs: {e}"))?;
        let persist = root.join("sysroot/persist");
        let src = root.join("src");
        std::fs::create_dir_all(&persist).map_err(|e| e.to_string())?;
        // The persist partition is a mount point at boot; a bind mount stands in.
        mount(
            Some(&persist),
            &persist,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind persist: {e}"))?;
        // rootfs with a file the layers will change and one they will delete.
        let rootfs = src.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(rootfs.join("lib/modules")).map_err(|e| e.to_string())?;
        std::fs::write(rootfs.join("etc/os-release"), "NAME=lower\n").map_err(|e| e.to_string())?;
        std::fs::write(rootfs.join("etc/doomed"), "x\n").map_err(|e| e.to_string())?;
        squash(&rootfs, &persist.join("rootfs.squashfs"))?;
        let modules = src.join("modules");
        std::fs::create_dir_all(modules.join("kernel")).map_err(|e| e.to_string())?;
        squash(&modules, &persist.join(format!("modules-{KVER}.squashfs")))?;
        for (image, marker, truncate) in legacy {
            let spec = LayerSpec {
                marker,
                noise: 4 << 20,
                truncate: *truncate,
            };
            upper_image(&src.join(image), &persist.join(image), &spec)?;
        }
        if !chain.is_empty() {
            let layers = persist.join(LAYERS_DIR);
            std::fs::create_dir_all(&layers).map_err(|e| e.to_string())?;
            let mut m = Manifest::empty();
            for (i, spec) in chain.iter().enumerate() {
                let name = layer_name(i as u64 + 1);
                let image = layers.join(&name);
                let record = upper_image(&src.join(&name), &image, spec)?;
                m.layers.insert(name.clone(), record);
                m.current.push(name);
            }
            m.backup = m.current[..m.current.len() - 1].to_vec();
            m.next_layer = chain.len() as u64 + 1;
            m.generation = 1;
            std::fs::write(layers.join(MANIFEST), m.render()).map_err(|e| e.to_string())?;
        }
        // The API filesystems, mounted by init's own code, so hand_over can move them.
        mounts::mount_api_filesystems(&LinuxSys::new(), &root, &ramstick_common::plan::API_MOUNTS)
            .map_err(|e| format!("{e:#}"))?;
        Ok(Scratch { root })
    }
}

/// An upper as overlayfs leaves it (a marker, a changed and a deleted
/// rootfs file, noise), packed by our codec into `image`; its manifest
/// record (taken before a requested cut).
fn upper_image(dir: &Path, image: &Path, spec: &LayerSpec) -> Result<LayerInfo, String> {
    std::fs::create_dir_all(dir.join("etc")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("etc/marker"), spec.marker).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("etc/os-release"), "NAME=upper\n").map_err(|e| e.to_string())?;
    // A whiteout deleting etc/doomed, as overlayfs writes it.
    nix::sys::stat::mknod(
        &dir.join("etc/doomed"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o000),
        0,
    )
    .map_err(|e| format!("mknod whiteout: {e}"))?;
    std::fs::write(
        dir.join(format!("noise-{}.bin", spec.marker)),
        noise(spec.noise, false),
    )
    .map_err(|e| e.to_string())?;
    ramstick_squash::pack(dir, image, &Default::default()).map_err(|e| e.to_string())?;
    let d = ramstick_squash::digests(image).map_err(|e| e.to_string())?;
    let sum = ramstick_squash::summary(image).map_err(|e| e.to_string())?;
    if spec.truncate {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| e.to_string())?;
        f.set_len(d.size / 2).map_err(|e| e.to_string())?;
    }
    Ok(LayerInfo {
        size: d.size,
        meta_digest: d.meta,
        digest: d.full,
        saved: "20261129-120000".into(),
        entries: sum.entries,
        data_bytes: sum.data_bytes,
        level: 0,
        origin: Origin::Session,
    })
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&self.root)
            .status();
    }
}

fn squash(dir: &Path, image: &Path) -> Result<(), String> {
    run(Command::new("mksquashfs").arg(dir).arg(image).args([
        "-noappend",
        "-quiet",
        "-comp",
        "zstd",
        "-no-progress",
    ]))
    .map(|_| ())
}

/// The sequence init runs from the upper to the hand-over.
fn run_sequence(s: &Scratch, plan: &Plan) -> Result<layers::Assembled, String> {
    let sys = LinuxSys::new();
    let root = &s.root;
    mounts::setup_upper(&sys, root, plan).map_err(|e| format!("{e:#}"))?;
    let chain = layers::assemble(&sys, &LinuxImages, root, plan);
    let skipped = mounts::mount_lowers(&sys, root, plan).map_err(|e| format!("{e:#}"))?;
    let below =
        mountpoints::missing_mount_points(root, plan, &skipped).map_err(|e| format!("{e:#}"))?;
    mounts::mount_overlay(&sys, root, plan, &chain.dirs, below.as_deref())
        .map_err(|e| format!("{e:#}"))?;
    mounts::hand_over(&sys, root, plan, &skipped).map_err(|e| format!("{e:#}"))?;
    Ok(chain)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
}

/// The filesystem type mounted at `dir`, if any.
fn fstype_at(dir: &Path) -> Option<String> {
    let dir = dir.to_string_lossy().to_string();
    read(Path::new("/proc/self/mounts")).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&dir.as_str())).then(|| f.get(2).map(|t| t.to_string()))?
    })
}

/// The new root shows the chain: the top layer's marker, both layers' files,
/// the whiteout hiding the rootfs's file.
fn shows_chain(newroot: &Path, top: &str, markers: &[&str]) -> Result<(), String> {
    ensure(
        read(&newroot.join("etc/marker")) == top,
        format!(
            "etc/marker is {:?}, not {top:?}",
            read(&newroot.join("etc/marker"))
        ),
    )?;
    ensure(
        read(&newroot.join("etc/os-release")) == "NAME=upper\n",
        "a layer must win over the rootfs",
    )?;
    ensure(
        !newroot.join("etc/doomed").exists(),
        "the whiteout did not hide etc/doomed",
    )?;
    for m in markers {
        let len = std::fs::metadata(newroot.join(format!("noise-{m}.bin"))).map_or(0, |m| m.len());
        ensure(len == 1 << 20, format!("noise-{m}.bin has {len} bytes"))?;
    }
    Ok(())
}

fn case_mount_chain(dir: &Path) -> CaseResult {
    let s = Scratch::new(dir, &[layer("one"), layer("two")], &[])?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=256M");
    let chain = run_sequence(&s, &plan)?;
    ensure(
        chain.used == BootType::Default && chain.layers.len() == 2 && chain.failures.is_empty(),
        format!("{chain:?}"),
    )?;
    let newroot = at(&s.root, &plan.overlay_root);
    shows_chain(&newroot, "two", &["one", "two"])?;
    for (dir, fstype) in [
        (newroot.join("persist"), "tmpfs"),
        (newroot.join("run"), "tmpfs"),
        (newroot.join("run/ramstick/upper"), "tmpfs"),
        (newroot.join("run/ramstick/lower"), "squashfs"),
        (newroot.join("run/ramstick/layers/layer-000001"), "squashfs"),
        (newroot.join("run/ramstick/layers/layer-000002"), "squashfs"),
        (newroot.join(format!("lib/modules/{KVER}")), "squashfs"),
    ] {
        ensure(
            fstype_at(&dir).as_deref() == Some(fstype),
            format!("{} is not a {fstype} mount", dir.display()),
        )?;
    }
    // New files go to the RAM upper, which starts empty: only this session.
    std::fs::write(newroot.join("etc/new"), "n").map_err(|e| e.to_string())?;
    let upper = newroot.join("run/ramstick/upper/upper");
    ensure(
        upper.join("etc/new").exists(),
        "write did not land in the upper",
    )?;
    ensure(
        !upper.join("etc/marker").exists(),
        "the upper holds saved layers",
    )?;
    Ok(Outcome::Passed)
}

/// The scratch rootfs has no `lib/modules/<kver>` (a kernel installed after
/// the stick was built): the modules image is mounted there all the same,
/// from a mount point below the rootfs, and the upper holds nothing.
fn case_new_kernel_mount_point(dir: &Path) -> CaseResult {
    let s = Scratch::new(dir, &[], &[])?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=64M");
    run_sequence(&s, &plan)?;
    let newroot = at(&s.root, &plan.overlay_root);
    let modules = newroot.join(format!("lib/modules/{KVER}"));
    ensure(
        fstype_at(&modules).as_deref() == Some("squashfs"),
        format!("{} is not the modules image", modules.display()),
    )?;
    let upper = newroot.join("run/ramstick/upper/upper");
    let left: Vec<String> = std::fs::read_dir(&upper)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure(left.is_empty(), format!("the upper holds {left:?}"))?;
    Ok(Outcome::Passed)
}

fn case_ram_chain(dir: &Path) -> CaseResult {
    let s = Scratch::new(dir, &[layer("one"), layer("two")], &[])?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=256M ramstick.layers=ram");
    let chain = run_sequence(&s, &plan)?;
    let how: Vec<LayersMode> = chain.layers.iter().map(|l| l.how).collect();
    ensure(how == [LayersMode::Ram; 2], format!("{chain:?}"))?;
    let newroot = at(&s.root, &plan.overlay_root);
    shows_chain(&newroot, "two", &["one", "two"])?;
    let unpacked = newroot.join("run/ramstick/upper/layers/layer-000001/etc/marker");
    ensure(
        read(&unpacked) == "one",
        format!("{} is not unpacked", unpacked.display()),
    )?;
    ensure(
        fstype_at(&newroot.join("run/ramstick/layers/layer-000001")).is_none(),
        "a ram-mode layer is also mounted",
    )?;
    Ok(Outcome::Passed)
}

fn case_ram_too_small(dir: &Path) -> CaseResult {
    let big = LayerSpec {
        marker: "big",
        noise: 24 << 20,
        truncate: false,
    };
    let s = Scratch::new(dir, &[layer("one"), big], &[])?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=16M ramstick.layers=ram");
    let chain = run_sequence(&s, &plan)?;
    let how: Vec<LayersMode> = chain.layers.iter().map(|l| l.how).collect();
    ensure(
        how == [LayersMode::Ram, LayersMode::Mount] && chain.failures.is_empty(),
        format!("{chain:?}"),
    )?;
    ensure(!chain.notes.is_empty(), "the fall back is not noted")?;
    let newroot = at(&s.root, &plan.overlay_root);
    let len = std::fs::metadata(newroot.join("noise-big.bin")).map_or(0, |m| m.len());
    ensure(len == 24 << 20, format!("noise-big.bin has {len} bytes"))?;
    Ok(Outcome::Passed)
}

fn case_truncated_middle_layer(dir: &Path) -> CaseResult {
    let cut = LayerSpec {
        truncate: true,
        ..layer("two")
    };
    let s = Scratch::new(dir, &[layer("one"), cut, layer("three")], &[])?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=256M");
    let chain = run_sequence(&s, &plan)?;
    ensure(
        chain.layers.len() == 1
            && chain.failures.len() == 1
            && chain.failures[0].class == FailureClass::Corrupt,
        format!("{chain:?}"),
    )?;
    shows_chain(&at(&s.root, &plan.overlay_root), "one", &["one"])?;
    Ok(Outcome::Passed)
}

fn case_legacy_fallback(dir: &Path) -> CaseResult {
    let s = Scratch::new(
        dir,
        &[],
        &[
            ("upperfs.squashfs", "from-default", true),
            ("upperfs-backup.squashfs", "from-backup", false),
        ],
    )?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=256M ramstick.layers=ram");
    let chain = run_sequence(&s, &plan)?;
    ensure(
        chain.used == BootType::Backup && chain.failures[0].layer == "upperfs.squashfs",
        format!("{chain:?}"),
    )?;
    let newroot = at(&s.root, &plan.overlay_root);
    ensure(
        read(&newroot.join("etc/marker")) == "from-backup",
        "backup marker not visible",
    )?;
    let noise = std::fs::metadata(newroot.join("noise-from-backup.bin")).map_or(0, |m| m.len());
    ensure(noise == 4 << 20, format!("backup noise has {noise} bytes"))?;
    Ok(Outcome::Passed)
}

fn case_clean(dir: &Path) -> CaseResult {
    let s = Scratch::new(dir, &[layer("one")], &[])?;
    let plan = plan_for("ramstick.boot=clean ramstick.upper=tmpfs");
    let chain = run_sequence(&s, &plan)?;
    ensure(
        chain.used == BootType::Clean,
        format!("used {:?}", chain.used),
    )?;
    let newroot = at(&s.root, &plan.overlay_root);
    ensure(
        !newroot.join("etc/marker").exists(),
        "clean boot shows a layer",
    )?;
    ensure(
        read(&newroot.join("etc/os-release")) == "NAME=lower\n",
        "lower not visible",
    )?;
    Ok(Outcome::Passed)
}

fn case_zram(dir: &Path) -> CaseResult {
    if !Path::new("/sys/class/zram-control").exists() {
        let _ = Command::new("modprobe").arg("zram").status();
    }
    if !Path::new("/sys/class/zram-control").exists() {
        return Ok(Outcome::Skipped(
            "zram unavailable on this host kernel".into(),
        ));
    }
    let s = Scratch::new(dir, &[layer("one")], &[])?;
    let plan = plan_for(
        "ramstick.upper=zram ramstick.upper.size=64M ramstick.zram.alg=lz4 ramstick.layers=ram",
    );
    let sys = LinuxSys::new();
    let dev = mounts::setup_upper(&sys, &s.root, &plan).map_err(|e| format!("{e:#}"))?;
    let upper = at(&s.root, &plan.upper_mount);
    let result: Result<(), String> = (|| {
        let chain = layers::assemble(&sys, &LinuxImages, &s.root, &plan);
        ensure(
            chain.used == BootType::Default && chain.layers[0].how == LayersMode::Ram,
            format!("{chain:?}"),
        )?;
        // trusted.* xattrs (what overlayfs writes) must work on the upper.
        run(Command::new("setfattr")
            .args(["-n", "trusted.overlay.opaque", "-v", "y"])
            .arg(upper.join("upper")))?;
        // The unpacked layer kept its whiteout and no opaque mark.
        let etc = upper.join("layers/layer-000001/etc");
        let opaque = run(Command::new("getfattr")
            .args(["-n", "trusted.overlay.opaque"])
            .arg(&etc));
        ensure(
            opaque.as_ref().is_err_and(|e| e.contains("No such attr")),
            format!("{}: {opaque:?}", etc.display()),
        )?;
        let doomed = std::fs::symlink_metadata(etc.join("doomed")).ctx("doomed")?;
        ensure(
            doomed.file_type().is_char_device(),
            format!("etc/doomed is {:?}", doomed.file_type()),
        )?;
        let perms = std::fs::metadata(upper.join("upper"))
            .map_err(|e| e.to_string())?
            .permissions();
        ensure(
            perms.mode() & 0o7777 == 0o755,
            format!("the upperdir has mode {:o}, not 755", perms.mode() & 0o7777),
        )?;
        run(Command::new("umount").arg(&upper))?;
        run(Command::new("e2fsck").arg("-fn").arg(format!("/dev/{dev}")))?;
        Ok(())
    })();
    // Already unmounted unless the checks failed.
    let _ = run(Command::new("umount").arg(&upper));
    let _ = sys.write_file(Path::new(&format!("/sys/block/{dev}/reset")), "1");
    if let Some(n) = dev.strip_prefix("zram") {
        if n != "0" {
            let _ = sys.write_file(Path::new("/sys/class/zram-control/hot_remove"), n);
        }
    }
    result?;
    Ok(Outcome::Passed)
}

fn case_missing_rootfs(dir: &Path) -> CaseResult {
    let s = Scratch::new(dir, &[], &[])?;
    std::fs::remove_file(s.root.join("sysroot/persist/rootfs.squashfs"))
        .map_err(|e| e.to_string())?;
    let plan = plan_for("ramstick.upper=tmpfs");
    let err = match run_sequence(&s, &plan) {
        Ok(_) => return Err("boot went on without rootfs.squashfs".into()),
        Err(e) => e,
    };
    ensure(err.contains("rootfs.squashfs is missing"), err)?;
    Ok(Outcome::Passed)
}

//! The mount sequence: early API filesystems, the persist partition, the
//! upper (zram or tmpfs), the squashfs lowers, the overlay and the moves that
//! hand everything over to the new root. Every path is taken relative to a
//! `root` prefix ("/" at boot, a scratch dir in the privileged tests).

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use ramstick_common::cmdline::UpperKind;
use ramstick_common::plan::{overlay_options, ApiMount, Plan};
use std::path::{Path, PathBuf};

use crate::ext2;
use crate::stopwatch::timed;
use crate::sys::Sys;

/// `root` + absolute `path`.
pub fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The API filesystems `mounts` (the plan's [`ramstick_common::plan::API_MOUNTS`]),
/// in order.
pub fn mount_api_filesystems(sys: &dyn Sys, root: &Path, mounts: &[ApiMount]) -> Result<()> {
    for m in mounts {
        let target = at(root, m.target);
        let (flags, data) = mount_options(m.options);
        sys.mkdir_all(&target)
            .with_context(|| format!("cannot create {}", target.display()))?;
        match sys.mount(m.source, &target, m.fstype, flags, &data) {
            Ok(()) => {}
            // Already mounted (e.g. the kernel mounted devtmpfs itself).
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot mount {} on {}", m.fstype, target.display()))
            }
        }
    }
    Ok(())
}

/// mount(8)-style `options` as mount(2) takes them: the flags, and the
/// filesystem's own options.
fn mount_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for word in options.split(',').filter(|w| !w.is_empty()) {
        match word {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mount the persist partition (ext4) read-write, with the plan's options
/// (`persist_options`, each with its reason there). It stays mounted all
/// session and holds only images, the swapfile and the user's files.
pub fn mount_persist(sys: &dyn Sys, root: &Path, device: &Path, plan: &Plan) -> Result<()> {
    let target = at(root, &plan.persist_mount);
    sys.mkdir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let (flags, data) = mount_options(plan.persist_options);
    sys.mount(&device.to_string_lossy(), &target, "ext4", flags, &data)
        .with_context(|| {
            format!(
                "cannot mount {} (ext4) at {}",
                device.display(),
                target.display()
            )
        })
}

/// Make the upper filesystem (zram formatted with ext2, or tmpfs) and create
/// `upper/` and `work/` in it. Returns a description ("zram1", "tmpfs").
pub fn setup_upper(sys: &dyn Sys, root: &Path, plan: &Plan) -> Result<String> {
    let target = at(root, &plan.upper_mount);
    sys.mkdir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let what = match plan.upper_kind {
        UpperKind::Tmpfs => {
            let (flags, data) = mount_options(&plan.upper_options);
            sys.mount("tmpfs", &target, "tmpfs", flags, &data)
                .with_context(|| format!("cannot mount tmpfs at {}", target.display()))?;
            "tmpfs".to_string()
        }
        UpperKind::Zram => {
            let dev = timed("upper: zram device", || zram_device(sys, root, plan))?;
            let devpath = at(root, &format!("/dev/{dev}"));
            let devtext = devpath.to_string_lossy().to_string();
            // A fresh zram device reads as zeros: only ext2's metadata is
            // written (see ext2.rs for the format and why).
            let writes = ext2::layout(plan.upper_size_bytes, UPPER_LABEL, &fresh_ids())
                .with_context(|| format!("cannot lay out ext2 on {devtext}"))?;
            timed("upper: format", || sys.write_blocks(&devpath, &writes))
                .with_context(|| format!("cannot format {devtext} for the upper"))?;
            timed("upper: mount", || {
                let (flags, data) = mount_options(&plan.upper_options);
                sys.mount(&devtext, &target, "ext4", flags, &data)
            })
            .with_context(|| format!("cannot mount {devtext} at {}", target.display()))?;
            dev
        }
    };
    for sub in ["upper", "work"] {
        let dir = target.join(sub);
        sys.mkdir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(what)
}

/// The label of the zram upper's filesystem.
const UPPER_LABEL: &str = "ramstick-upper";

/// A new filesystem's UUID and directory-hash seed, and the time. The
/// bytes come from getrandom(GRND_INSECURE), which never waits: early in a
/// boot /dev/urandom first gathers jitter entropy, which cost a second
/// under emulation. The upper lives for one boot, so the values only need
/// to differ; where the call fails, the clock stands in.
fn fresh_ids() -> ext2::Ids {
    /// Not in the libc crate for musl; Linux 5.6 and later.
    const GRND_INSECURE: nix::libc::c_uint = 0x0004;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut bytes = [0u8; 32];
    // SAFETY: the kernel writes at most `bytes.len()` bytes into `bytes`.
    let got =
        unsafe { nix::libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), GRND_INSECURE) };
    if got != bytes.len() as isize {
        for (i, b) in now
            .as_nanos()
            .to_le_bytes()
            .iter()
            .cycle()
            .take(32)
            .enumerate()
        {
            bytes[i] = *b ^ (i as u8);
        }
    }
    let mut ids = ext2::Ids {
        uuid: [0; 16],
        hash_seed: [0; 16],
        now: now.as_secs() as u32,
    };
    ids.uuid.copy_from_slice(&bytes[..16]);
    ids.hash_seed.copy_from_slice(&bytes[16..]);
    // An RFC 4122 random (version 4) UUID, as mke2fs writes.
    ids.uuid[6] = (ids.uuid[6] & 0x0F) | 0x40;
    ids.uuid[8] = (ids.uuid[8] & 0x3F) | 0x80;
    ids
}

/// Pick a free zram device (zram0 if unused, else hot-add one), set its
/// algorithm and size. Returns its name.
fn zram_device(sys: &dyn Sys, root: &Path, plan: &Plan) -> Result<String> {
    let zram0_size = at(root, "/sys/block/zram0/disksize");
    let free0 = sys
        .read_file(&zram0_size)
        .map(|s| s.trim() == "0")
        .unwrap_or(false);
    let name = if free0 {
        "zram0".to_string()
    } else {
        let hot_add = at(root, "/sys/class/zram-control/hot_add");
        let n = sys
            .read_file(&hot_add)
            .with_context(|| format!("cannot add a zram device via {}", hot_add.display()))?;
        format!("zram{}", n.trim())
    };
    let sysdir = at(root, &format!("/sys/block/{name}"));
    if let Some(alg) = &plan.zram_alg {
        let set = timed("upper: zram algorithm", || {
            sys.write_file(&sysdir.join("comp_algorithm"), alg)
        });
        if let Err(e) = set {
            log::warn!(
                "zram algorithm `{alg}` is not available ({e}); using the kernel default (see /sys/block/{name}/comp_algorithm for choices)"
            );
        }
    }
    timed("upper: zram disksize", || {
        sys.write_file(&sysdir.join("disksize"), &plan.upper_size_bytes.to_string())
    })
    .with_context(|| format!("cannot set {name} size to {} bytes", plan.upper_size_bytes))?;
    Ok(name)
}

/// Loop-mount the read-only squashfs lowers. A missing required image is an
/// error naming it and the files present; a missing optional one is skipped
/// (its mount point is returned, so the hand-over leaves it alone).
pub fn mount_lowers(sys: &dyn Sys, root: &Path, plan: &Plan) -> Result<Vec<String>> {
    let persist = at(root, &plan.persist_mount);
    let mut skipped = Vec::new();
    for lower in &plan.lowers {
        // The image, or the one used instead when it is absent.
        let image = std::iter::once(&lower.image)
            .chain(&lower.or_else)
            .map(|name| persist.join(name))
            .find(|path| sys.exists(path))
            .unwrap_or_else(|| persist.join(&lower.image));
        let target = at(root, &lower.target);
        if !sys.exists(&image) {
            if lower.required {
                let mut present: Vec<String> = sys
                    .list_dir(&persist)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| n != "lost+found")
                    .collect();
                present.sort();
                bail!(
                    "{} is missing on the stick (files present: {})",
                    lower.image,
                    if present.is_empty() {
                        "none".to_string()
                    } else {
                        present.join(", ")
                    }
                );
            }
            log::info!("{} not present; skipping {}", lower.image, lower.target);
            skipped.push(lower.target.clone());
            continue;
        }
        mount_squashfs(sys, &image, &target)?;
    }
    Ok(skipped)
}

/// Attach `image` to a loop device and mount it read-only at `target`.
pub(crate) fn mount_squashfs(sys: &dyn Sys, image: &Path, target: &Path) -> Result<()> {
    sys.mkdir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let dev = sys
        .loop_attach(image)
        .with_context(|| format!("cannot attach {} to a loop device", image.display()))?;
    sys.mount(
        &dev.to_string_lossy(),
        target,
        "squashfs",
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        "",
    )
    .with_context(|| {
        format!(
            "cannot mount {} ({}) at {}: is it a squashfs image?",
            image.display(),
            dev.display(),
            target.display()
        )
    })
}

/// The overlay root: `below` (the mount points the rootfs lacks) lowest,
/// the rootfs above it, the saved layers at `layer_dirs` (bottom first)
/// above that, the RAM upper on top.
pub fn mount_overlay(
    sys: &dyn Sys,
    root: &Path,
    plan: &Plan,
    layer_dirs: &[String],
    below: Option<&Path>,
) -> Result<()> {
    let target = at(root, &plan.overlay_root);
    sys.mkdir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    // The plan's options, with the paths taken under `root`.
    let rootfs = at(root, &plan.rootfs);
    let lowers: Vec<String> = layer_dirs
        .iter()
        .rev()
        .map(|d| at(root, d))
        .chain([rootfs])
        .chain(below.map(Path::to_path_buf))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let lowers: Vec<&str> = lowers.iter().map(String::as_str).collect();
    let data = overlay_options(&lowers, &at(root, &plan.upper_mount).to_string_lossy());
    sys.mount("overlay", &target, "overlay", MsFlags::empty(), &data)
        .with_context(|| format!("cannot mount the overlay at {} ({data})", target.display()))
}

/// Move the planned mounts (but those in `skipped`, never mounted) into the
/// new root, in the plan's order (/run last).
pub fn hand_over(sys: &dyn Sys, root: &Path, plan: &Plan, skipped: &[String]) -> Result<()> {
    for m in plan.moves.iter().filter(|m| !skipped.contains(&m.from)) {
        let from = at(root, &m.from);
        let to = at(root, &m.at);
        if !sys.exists(&to) {
            sys.mkdir_all(&to)
                .with_context(|| format!("cannot create mount point {}", to.display()))?;
        }
        sys.move_mount(&from, &to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RecordingSys;
    use crate::testplan::plan_for;

    #[test]
    fn run_ramstick_is_an_executable_tmpfs_of_its_own() {
        let sys = RecordingSys::new();
        mount_api_filesystems(&sys, Path::new("/"), &plan_for("").api_mounts).unwrap();
        let mounts: Vec<String> = sys
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("mount "))
            .collect();
        assert_eq!(
            mounts[3..],
            [
                "mount tmpfs tmpfs /run NOSUID|NODEV mode=0755",
                "mount tmpfs tmpfs /run/ramstick NOSUID|NODEV mode=0755",
            ]
        );
    }

    #[test]
    fn persist_is_mounted_nosuid_nodev_noatime_remount_ro_on_errors() {
        let sys = RecordingSys::new();
        let plan = plan_for("");
        mount_persist(
            &sys,
            Path::new("/"),
            Path::new("/dev/mapper/ramstick"),
            &plan,
        )
        .map_err(|e| format!("{e:#}"))
        .unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "mkdir /sysroot/persist",
                "mount ext4 /dev/mapper/ramstick /sysroot/persist NOSUID|NODEV|NOATIME errors=remount-ro",
            ]
        );
    }

    #[test]
    fn tmpfs_upper_is_sized_and_gets_upper_and_work() {
        let sys = RecordingSys::new();
        let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=256M");
        let what = setup_upper(&sys, Path::new("/"), &plan).ok();
        assert_eq!(what.as_deref(), Some("tmpfs"));
        assert_eq!(
            sys.calls(),
            vec![
                "mkdir /sysroot/upper",
                "mount tmpfs tmpfs /sysroot/upper NODEV size=268435456,mode=0755",
                "mkdir /sysroot/upper/upper",
                "mkdir /sysroot/upper/work",
            ]
        );
    }

    #[test]
    fn zram_upper_uses_free_zram0_sets_alg_and_formats() {
        let mut sys = RecordingSys::new();
        sys.files
            .insert(PathBuf::from("/sys/block/zram0/disksize"), "0\n".into());
        let plan = plan_for("ramstick.upper.size=1G ramstick.zram.alg=zstd");
        let what = setup_upper(&sys, Path::new("/"), &plan).ok();
        assert_eq!(what.as_deref(), Some("zram0"));
        assert_eq!(
            sys.calls(),
            vec![
                "mkdir /sysroot/upper",
                "read /sys/block/zram0/disksize",
                "write /sys/block/zram0/comp_algorithm zstd",
                "write /sys/block/zram0/disksize 1073741824",
                "write-blocks /dev/zram0 29 writes 103424 bytes",
                "mount ext4 /dev/zram0 /sysroot/upper NODEV|NOATIME discard",
                "mkdir /sysroot/upper/upper",
                "mkdir /sysroot/upper/work",
            ]
        );
    }

    #[test]
    fn zram_hot_adds_when_zram0_is_busy() {
        let mut sys = RecordingSys::new();
        sys.files
            .insert(PathBuf::from("/sys/block/zram0/disksize"), "4096\n".into());
        sys.files.insert(
            PathBuf::from("/sys/class/zram-control/hot_add"),
            "1\n".into(),
        );
        let plan = plan_for("");
        assert_eq!(
            setup_upper(&sys, Path::new("/"), &plan).ok().as_deref(),
            Some("zram1")
        );
        assert!(sys
            .calls()
            .contains(&"write /sys/block/zram1/disksize 1073741824".to_string()));
    }

    #[test]
    fn a_bad_zram_algorithm_falls_back_to_the_default() {
        let mut sys = RecordingSys::new();
        sys.files
            .insert(PathBuf::from("/sys/block/zram0/disksize"), "0".into());
        sys.fail_on
            .push("write /sys/block/zram0/comp_algorithm".into());
        let plan = plan_for("ramstick.zram.alg=nope");
        let what = setup_upper(&sys, Path::new("/"), &plan)
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        assert_eq!(what, "zram0");
        // The refused algorithm is tried, then the upper is made as usual.
        assert_eq!(
            sys.calls(),
            vec![
                "mkdir /sysroot/upper",
                "read /sys/block/zram0/disksize",
                "write /sys/block/zram0/comp_algorithm nope",
                "write /sys/block/zram0/disksize 1073741824",
                "write-blocks /dev/zram0 29 writes 103424 bytes",
                "mount ext4 /dev/zram0 /sysroot/upper NODEV|NOATIME discard",
                "mkdir /sysroot/upper/upper",
                "mkdir /sysroot/upper/work",
            ]
        );
    }

    #[test]
    fn lowers_are_loop_mounted_read_only_and_missing_firmware_is_skipped() {
        let mut sys = RecordingSys::new();
        for f in ["rootfs.squashfs", "modules-6.1.0-56-amd64.squashfs"] {
            sys.files
                .insert(PathBuf::from("/sysroot/persist").join(f), String::new());
        }
        let plan = plan_for("");
        let skipped = mount_lowers(&sys, Path::new("/"), &plan)
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        assert_eq!(skipped, vec!["/sysroot/firmware"]);
        assert_eq!(
            sys.calls(),
            vec![
                "mkdir /sysroot/rootfs",
                "loop /sysroot/persist/rootfs.squashfs",
                "mount squashfs /dev/loop0 /sysroot/rootfs RDONLY|NODEV ",
                "mkdir /sysroot/modules-6.1.0-56-amd64",
                "loop /sysroot/persist/modules-6.1.0-56-amd64.squashfs",
                "mount squashfs /dev/loop1 /sysroot/modules-6.1.0-56-amd64 RDONLY|NODEV ",
            ]
        );
    }

    #[test]
    fn slot_b_mounts_its_base_and_its_firmware_else_the_roots() {
        let mut sys = RecordingSys::new();
        for f in [
            "slot-b/rootfs.squashfs",
            "rootfs.squashfs",
            "modules-6.1.0-56-amd64.squashfs",
            "firmware.squashfs",
        ] {
            sys.files
                .insert(PathBuf::from("/sysroot/persist").join(f), String::new());
        }
        let plan = plan_for("ramstick.slot=b");
        mount_lowers(&sys, Path::new("/"), &plan)
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        let loops: Vec<String> = sys
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("loop "))
            .collect();
        assert_eq!(
            loops,
            [
                "loop /sysroot/persist/slot-b/rootfs.squashfs",
                "loop /sysroot/persist/modules-6.1.0-56-amd64.squashfs",
                "loop /sysroot/persist/firmware.squashfs",
            ]
        );
        // Its own firmware, when it has one.
        sys.files.insert(
            PathBuf::from("/sysroot/persist/slot-b/firmware.squashfs"),
            String::new(),
        );
        sys.calls.borrow_mut().clear();
        mount_lowers(&sys, Path::new("/"), &plan)
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        assert!(sys
            .calls()
            .contains(&"loop /sysroot/persist/slot-b/firmware.squashfs".to_string()));
    }

    #[test]
    fn a_missing_rootfs_names_the_image_and_what_is_there() {
        let mut sys = RecordingSys::new();
        sys.files.insert(
            PathBuf::from("/sysroot/persist/firmware.squashfs"),
            String::new(),
        );
        let plan = plan_for("");
        let err = mount_lowers(&sys, Path::new("/"), &plan)
            .map_err(|e| format!("{e:#}"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("rootfs.squashfs is missing"), "{err}");
        assert!(err.contains("files present: firmware.squashfs"), "{err}");
    }

    #[test]
    fn an_unmounted_optional_lower_is_not_moved() {
        let sys = RecordingSys::new();
        let plan = plan_for("");
        hand_over(
            &sys,
            Path::new("/"),
            &plan,
            &["/sysroot/firmware".to_string()],
        )
        .map_err(|e| format!("{e:#}"))
        .unwrap();
        assert!(!sys
            .calls()
            .iter()
            .any(|c| c.starts_with("move /sysroot/firmware")));
        assert!(sys
            .calls()
            .iter()
            .any(|c| c == "move /run /sysroot/overlay_root/run"));
    }

    #[test]
    fn saved_layers_go_between_the_rootfs_and_the_upper() {
        let sys = RecordingSys::new();
        let plan = plan_for("");
        let dirs = [
            "/run/ramstick/layers/layer-000001".to_string(),
            "/sysroot/upper/layers/layer-000002".to_string(),
        ];
        mount_overlay(&sys, Path::new("/"), &plan, &dirs, None)
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        assert_eq!(
            sys.calls()[1],
            format!(
                "mount overlay overlay /sysroot/overlay_root - {}",
                plan.overlay_options_with(&dirs)
            )
        );
        assert!(sys.calls()[1].contains(
            "lowerdir=/sysroot/upper/layers/layer-000002:/run/ramstick/layers/layer-000001:/sysroot/rootfs,"
        ));
    }

    #[test]
    fn overlay_and_hand_over_follow_the_plan() {
        let sys = RecordingSys::new();
        let plan = plan_for("");
        mount_overlay(&sys, Path::new("/"), &plan, &[], None)
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        hand_over(&sys, Path::new("/"), &plan, &[])
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], "mkdir /sysroot/overlay_root");
        assert_eq!(
            calls[1],
            format!(
                "mount overlay overlay /sysroot/overlay_root - {}",
                plan.overlay_options
            )
        );
        assert!(plan.overlay_options.starts_with(
            "lowerdir=/sysroot/rootfs,upperdir=/sysroot/upper/upper,workdir=/sysroot/upper/work"
        ));
        let moves: Vec<&String> = calls.iter().filter(|c| c.starts_with("move ")).collect();
        assert_eq!(
            moves,
            vec![
                "move /sysroot/persist /sysroot/overlay_root/persist",
                "move /sysroot/upper /run/ramstick/upper",
                "move /sysroot/rootfs /run/ramstick/lower",
                "move /sysroot/modules-6.1.0-56-amd64 /sysroot/overlay_root/lib/modules/6.1.0-56-amd64",
                "move /sysroot/firmware /sysroot/overlay_root/lib/firmware",
                "move /proc /sysroot/overlay_root/proc",
                "move /sys /sysroot/overlay_root/sys",
                "move /dev /sysroot/overlay_root/dev",
                "move /run /sysroot/overlay_root/run",
            ]
        );
    }
}

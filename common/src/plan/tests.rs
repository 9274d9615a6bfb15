//! The plan's unit tests.
use super::*;

fn facts() -> Facts {
    Facts {
        kernel_version: "6.1.0-56-amd64".to_string(),
        mem_total_bytes: 2 << 30,
    }
}

fn plan_for(cmdline: &str) -> Plan {
    plan_of(cmdline, &facts())
}

#[test]
fn default_plan() {
    let plan = plan_for("");
    assert_eq!(
        plan.modules,
        ["loop", "squashfs", "overlay", "ext4", "zram"]
    );
    assert_eq!(plan.persist_device, DeviceSpec::Label("RAMSTICK".into()));
    assert_eq!(plan.device_timeout_secs, 30);
    assert_eq!(plan.upper_kind, UpperKind::Zram);
    assert_eq!(plan.upper_size_bytes, 1 << 30);
    assert_eq!(plan.layers.mode, LayersMode::Mount);
    assert_eq!(
        plan.layers.manifest,
        "/sysroot/persist/layers/manifest.json"
    );
    assert_eq!(
        plan.layers
            .target("layer-000003.squashfs", LayersMode::Mount),
        "/run/ramstick/layers/layer-000003"
    );
    assert_eq!(
        plan.layers.target("upperfs.squashfs", LayersMode::Ram),
        "/sysroot/upper/layers/upperfs"
    );
    let lowers: Vec<(&str, &str, bool)> = plan
        .lowers
        .iter()
        .map(|l| (l.image.as_str(), l.target.as_str(), l.required))
        .collect();
    assert_eq!(
        lowers,
        [
            ("rootfs.squashfs", "/sysroot/rootfs", true),
            (
                "modules-6.1.0-56-amd64.squashfs",
                "/sysroot/modules-6.1.0-56-amd64",
                true
            ),
            ("firmware.squashfs", "/sysroot/firmware", false),
        ]
    );
    assert!(plan.overlay_options.starts_with(
        "lowerdir=/sysroot/rootfs,upperdir=/sysroot/upper/upper,workdir=/sysroot/upper/work,"
    ));
    let moves: Vec<(&str, &str, &str)> = plan
        .moves
        .iter()
        .map(|m| (m.from.as_str(), m.to.as_str(), m.at.as_str()))
        .collect();
    assert_eq!(
        moves,
        [
            (
                "/sysroot/persist",
                "/persist",
                "/sysroot/overlay_root/persist"
            ),
            (
                "/sysroot/upper",
                "/run/ramstick/upper",
                "/run/ramstick/upper"
            ),
            (
                "/sysroot/rootfs",
                "/run/ramstick/lower",
                "/run/ramstick/lower"
            ),
            (
                "/sysroot/modules-6.1.0-56-amd64",
                "/lib/modules/6.1.0-56-amd64",
                "/sysroot/overlay_root/lib/modules/6.1.0-56-amd64"
            ),
            (
                "/sysroot/firmware",
                "/lib/firmware",
                "/sysroot/overlay_root/lib/firmware"
            ),
            ("/proc", "/proc", "/sysroot/overlay_root/proc"),
            ("/sys", "/sys", "/sysroot/overlay_root/sys"),
            ("/dev", "/dev", "/sysroot/overlay_root/dev"),
            ("/run", "/run", "/sysroot/overlay_root/run"),
        ]
    );
    assert_eq!(plan.rootfs, "/sysroot/rootfs");
    let api: Vec<&str> = plan.api_mounts.iter().map(|a| a.target).collect();
    assert_eq!(api, ["/proc", "/sys", "/dev", "/run", "/run/ramstick"]);
    assert_eq!(plan.swap_bytes, None);
    assert_eq!(plan.swappiness, 1);
    assert_eq!(plan.user, "user");
    assert_eq!(plan.init, "/sbin/init");
    assert!(!plan.has_fatal());
}

#[test]
fn every_move_source_is_mounted_by_the_plan() {
    let plan = plan_for("");
    for m in &plan.moves {
        let mounted = m.from == plan.persist_mount
            || m.from == plan.upper_mount
            || plan.lowers.iter().any(|l| l.target == m.from)
            || plan.api_mounts.iter().any(|a| a.target == m.from);
        assert!(mounted, "{} is never mounted", m.from);
        assert!(m.to.starts_with('/'));
    }
}

#[test]
fn what_lands_on_run_moves_before_run_and_run_moves_last() {
    let plan = plan_for("");
    let last = plan.moves.last().map(|m| m.from.as_str());
    assert_eq!(last, Some("/run"));
    for m in &plan.moves {
        match m.landing {
            Landing::Run => assert!(m.at.starts_with("/run/") && m.at == m.to, "{m:?}"),
            Landing::NewRoot => assert_eq!(m.at, format!("{}{}", plan.overlay_root, m.to)),
        }
    }
    // /run/ramstick is inside /run: it goes along, it is not moved itself.
    assert!(!plan.moves.iter().any(|m| m.from == RUN_RAMSTICK));
}

#[test]
fn boot_types_are_shown_with_their_chain() {
    let text = plan_for("ramstick.boot=backup").to_string();
    assert!(
        text.contains("saved layers: backup: the backup chain of "),
        "{text}"
    );
    assert!(text.contains("without a manifest upperfs-backup.squashfs; else clean"));
    let text = plan_for("ramstick.boot=clean").to_string();
    assert!(text.contains("saved layers: none (clean boot; nothing is saved)\n"));
    assert!(!text.contains("\nlayers: "));
    assert_eq!(plan_for("ramstick.boot=clean").boot_asked, BootType::Clean);
}

#[test]
fn layers_go_above_the_rootfs_top_first() {
    let plan = plan_for("");
    let dirs = ["/a/l1".to_string(), "/a/l2".to_string()];
    assert!(plan
        .overlay_options_with(&dirs)
        .starts_with("lowerdir=/a/l2:/a/l1:/sysroot/rootfs,upperdir=/sysroot/upper/upper,"));
    assert_eq!(plan.overlay_options_with(&[]), plan.overlay_options);
}

#[test]
fn upper_kind_decides_modules_and_algorithm() {
    let plan = plan_for("ramstick.upper=tmpfs ramstick.zram.alg=lz4");
    assert_eq!(plan.modules, ["loop", "squashfs", "overlay", "ext4"]);
    assert_eq!(plan.zram_alg, None);
    let plan = plan_for("ramstick.zram.alg=lz4 ramstick.luks=LABEL=x");
    assert_eq!(
        plan.modules[..5],
        ["loop", "squashfs", "overlay", "ext4", "zram"]
    );
    assert_eq!(plan.modules[5..], *LUKS_MODULES);
    assert_eq!(plan.zram_alg.as_deref(), Some("lz4"));
}

#[test]
fn luks_container_becomes_the_default_persist_device() {
    let plan = plan_for("ramstick.luks=PARTLABEL=data ramstick.luks.tries=5");
    assert_eq!(
        plan.persist_device,
        DeviceSpec::Path("/dev/mapper/ramstick".into())
    );
    assert_eq!(
        plan.luks.container,
        Some(DeviceSpec::PartLabel("data".into()))
    );
    assert_eq!(plan.luks.tries, 5);
    // An explicit persist spec other than the default stays.
    let plan = plan_for("ramstick.luks=/dev/sda2 ramstick.persist=UUID=ab12");
    assert_eq!(plan.persist_device, DeviceSpec::Uuid("ab12".into()));
    // Without ramstick.luks: auto-detection on the persist device, with the
    // key file and tries given.
    let plan = plan_for("ramstick.luks.keyfile=/etc/key ramstick.luks.tries=1");
    assert_eq!(plan.persist_device, DeviceSpec::Label("RAMSTICK".into()));
    assert_eq!(plan.luks.container, None);
    assert_eq!(plan.luks.keyfile.as_deref(), Some("/etc/key"));
    assert_eq!(plan.luks.tries, 1);
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert!(!plan.modules.iter().any(|m| m == "dm_crypt"));
    assert_eq!(plan.luks.modules, *LUKS_MODULES);
}

#[test]
fn upper_size_is_whole_pages_and_at_least_one() {
    assert_eq!(upper_size_bytes(Size::Percent(1), 2 << 30), 21_471_232);
    assert_eq!(upper_size_bytes(Size::Bytes(8191), 0), 4096);
    assert_eq!(upper_size_bytes(Size::Bytes(1), 0), 4096);
    assert_eq!(upper_size_bytes(Size::Percent(50), 0), 4096);
    assert_eq!(upper_size_bytes(Size::Bytes(u64::MAX), 0), u64::MAX - 4095);
}

#[test]
fn fatal_problems_are_flagged_and_shown() {
    let plan = plan_for("ramstick.persist=nowhere ramstick.boot=fast");
    assert!(plan.has_fatal());
    let text = plan.to_string();
    assert!(text.contains("problems: 2 (1 fatal)\n"), "{text}");
    assert!(text.contains("\n  - FATAL: `ramstick.persist=nowhere` is not valid"));
    assert!(text.contains("\n  - non-fatal: `ramstick.boot=fast` is not valid"));
    assert!(!plan_for("ramstick.boot=fast").has_fatal());
}

#[test]
fn display_is_line_per_fact() {
    let text = plan_for("ramstick.swap=1G ramstick.luks=/dev/sdb2 console=ttyS0").to_string();
    assert!(text.starts_with("ramstick boot plan\nproblems: none\n"));
    assert!(text.ends_with("consoles: ttyS0\n"));
    assert!(text.contains("\nswap: 1073741824 bytes (1G), swappiness 1\n"));
    assert!(text.contains("\nluks: /dev/sdb2 -> /dev/mapper/ramstick (passphrase, 3 tries;"));
    assert!(text.lines().all(|l| !l.ends_with(' ') && !l.is_empty()));
}

#[test]
fn a_profile_reads_its_own_chain_and_no_legacy_image() {
    let plan = plan_for("ramstick.profile=work");
    assert_eq!(
        (plan.profile.as_str(), plan.layers.state_dir.as_str()),
        ("work", "profiles/work")
    );
    assert_eq!(
        plan.layers.manifest,
        "/sysroot/persist/profiles/work/layers/manifest.json"
    );
    assert_eq!(plan.state_root(), "/sysroot/persist/profiles/work");
    assert_eq!(plan.legacy_present(|_| true), [false, false]);
    let default = plan_for("ramstick.profile=default");
    assert_eq!(default.layers.state_dir, "");
    assert_eq!(default.state_root(), "/sysroot/persist");
    assert_eq!(
        default.legacy_present(|n| n == "upperfs.squashfs"),
        [true, false]
    );
    assert_eq!(default.layers.manifest, plan_for("").layers.manifest);
}

#[test]
fn init_mounts_only_below_sysroot_and_run() {
    for line in [
        "",
        "ramstick.luks ramstick.upper=tmpfs ramstick.profile=work",
    ] {
        let plan = plan_for(line);
        let mut targets = vec![
            plan.persist_mount.clone(),
            plan.upper_mount.clone(),
            plan.overlay_root.clone(),
        ];
        targets.extend(plan.lowers.iter().map(|l| l.target.clone()));
        for t in targets {
            assert!(t.starts_with(&format!("{SYSROOT}/")), "{t} ({line})");
        }
        assert!(LAYER_MOUNTS.starts_with("/run/"));
    }
}

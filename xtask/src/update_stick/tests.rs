//! update-stick on a stick's partitions as plain directories: the
//! committed slot's files, its saved states and `user/` stay byte-identical,
//! the other slot gets the new base (and firmware) and its record, and GRUB's
//! trial names it; a slot holding something is replaced only with `--yes`;
//! a stick without grubenv is refused before anything is written.

use super::*;
use ramstick_common::slotboot::ENV_TRIAL;
use ramstick_testkit::{have, skip, TempDir, MKSQUASHFS};
use std::collections::BTreeMap;

const ELF: &str = "\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";
const INITTAB: &str = "id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\n\
    l0:0:wait:/etc/init.d/rc 0\nl6:6:wait:/etc/init.d/rc 6\n";
const KVER: &str = "6.1.0-57-amd64";

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The files of `slot`'s own place, and the shared ones, of `persist`.
fn slot_and_shared(persist: &Path, slot: Slot) -> BTreeMap<String, Vec<u8>> {
    files(persist)
        .into_iter()
        .filter(|(p, _)| (slot == Slot::B) == p.starts_with("slot-b/") || p.starts_with("user/"))
        .collect()
}

struct Stick {
    _t: TempDir,
    esp: PathBuf,
    persist: PathBuf,
    tree: PathBuf,
    work: PathBuf,
}

fn stick(committed: &str) -> Stick {
    let t = TempDir::new("update-stick");
    let mut env = Env::default();
    env.set("ramstick_slot", committed);
    env.set(ENV_TRIAL, "");
    t.file("esp/grub/grubenv", env.to_block().unwrap(), 0o644)
        .file(
            &format!("esp/{MENU_RECORD}"),
            Menu::new(KVER, "").unwrap().to_json(),
            0o644,
        )
        .file(
            &format!("esp/{}", bootmenu::ESP_ID),
            "ramstick ESP\n",
            0o644,
        )
        .file("persist/rootfs.squashfs", "slot a's base", 0o644)
        .file("persist/firmware.squashfs", "shared firmware", 0o644)
        .file(&format!("persist/modules-{KVER}.squashfs"), "mods", 0o644)
        .file("persist/layers/manifest.json", "a's chain", 0o644)
        .file("persist/layers/layer-000001.squashfs", "a's layer", 0o644)
        .file(
            "persist/profiles/work/layers/manifest.json",
            "a's work",
            0o644,
        )
        .file("persist/user/notes.txt", "mine", 0o644)
        .file("persist/swapfile", "swap", 0o644)
        .file("tree/sbin/init", ELF, 0o755)
        .file("tree/etc/inittab", INITTAB, 0o644)
        .file("tree/etc/init.d/rc", "#!/bin/sh\n", 0o755)
        .file("tree/etc/marker", "the new system\n", 0o644)
        .file("tree/lib/firmware/fw.bin", "new firmware", 0o644)
        .file("tree/boot/vmlinuz-x", "not in the base", 0o644)
        .file("tree/lib/modules/5.10.0-old/modules.dep", "", 0o644);
    Stick {
        esp: t.join("esp"),
        persist: t.join("persist"),
        tree: t.join("tree"),
        work: t.join("work"),
        _t: t,
    }
}

fn update(s: &Stick, yes: bool) -> Update {
    Update {
        rootfs: s.tree.clone(),
        kernel: None,
        yes,
        work: s.work.clone(),
        kernel_check: false,
    }
}

fn env_of(s: &Stick) -> Env {
    Env::read(&s.esp.join(GRUBENV)).unwrap()
}

#[test]
fn update_writes_the_other_slot_and_never_the_committed_ones_state() {
    if !have(MKSQUASHFS.0) {
        skip("no mksquashfs");
        return;
    }
    let s = stick("a");
    let before = slot_and_shared(&s.persist, Slot::A);
    let slot = update_mounted(&mut DirEsp(s.esp.clone()), &s.persist, &update(&s, false)).unwrap();
    assert_eq!(slot, Slot::B);
    assert_eq!(slot_and_shared(&s.persist, Slot::A), before);
    let base = s.persist.join("slot-b/rootfs.squashfs");
    let summary = ramstick_squash::summary(&base).unwrap();
    assert!(summary.entries > 3, "{summary:?}");
    let unpacked = s.work.join("check");
    fs::create_dir_all(&unpacked).unwrap();
    ramstick_squash::unpack(&base, &unpacked, &Default::default()).unwrap();
    assert_eq!(
        fs::read_to_string(unpacked.join("etc/marker")).unwrap(),
        "the new system\n"
    );
    assert!(unpacked.join("boot").is_dir() && !unpacked.join("boot/vmlinuz-x").exists());
    // The stick's kernel's mount point, and no modules.
    assert!(unpacked.join(format!("lib/modules/{KVER}")).is_dir());
    assert!(!unpacked.join("lib/modules/5.10.0-old").exists());
    assert!(s.persist.join("slot-b/firmware.squashfs").is_file());
    let record = fs::read_to_string(s.persist.join("slot-b/slot.json")).unwrap();
    let record = ramstick_saver::slotwrite::record::SlotRecord::parse(&record).unwrap();
    assert_eq!(record.origin, SlotOrigin::Update);
    assert_eq!(record.base, ramstick_squash::meta_digest(&base).unwrap().1);
    let env = env_of(&s);
    assert_eq!(env.get(ENV_TRIAL), Some("b"));
    assert_eq!(env.get("ramstick_slot"), Some("a"));

    // Slot b holds something now: only with --yes.
    fs::create_dir_all(s.persist.join("slot-b/layers")).unwrap();
    fs::write(s.persist.join("slot-b/layers/manifest.json"), "b's chain").unwrap();
    let all = files(&s.persist);
    let err =
        update_mounted(&mut DirEsp(s.esp.clone()), &s.persist, &update(&s, false)).unwrap_err();
    assert!(format!("{err:#}").contains("--yes"), "{err:#}");
    assert_eq!(files(&s.persist), all);
    update_mounted(&mut DirEsp(s.esp.clone()), &s.persist, &update(&s, true)).unwrap();
    assert_eq!(slot_and_shared(&s.persist, Slot::A), before);
    assert!(!s.persist.join("slot-b/layers").exists());
}

#[test]
fn with_b_committed_slot_a_is_written_and_b_kept() {
    if !have(MKSQUASHFS.0) {
        skip("no mksquashfs");
        return;
    }
    let s = stick("b");
    fs::create_dir_all(s.persist.join("slot-b/layers")).unwrap();
    fs::write(s.persist.join("slot-b/rootfs.squashfs"), "b's base").unwrap();
    fs::write(s.persist.join("slot-b/layers/manifest.json"), "b's chain").unwrap();
    let b = slot_and_shared(&s.persist, Slot::B);
    let modules = fs::read(s.persist.join(format!("modules-{KVER}.squashfs"))).unwrap();
    let slot = update_mounted(&mut DirEsp(s.esp.clone()), &s.persist, &update(&s, true)).unwrap();
    assert_eq!(slot, Slot::A);
    assert_eq!(slot_and_shared(&s.persist, Slot::B), b);
    assert_eq!(
        fs::read(s.persist.join(format!("modules-{KVER}.squashfs"))).unwrap(),
        modules
    );
    // b uses the root's firmware: kept.
    assert_eq!(
        fs::read_to_string(s.persist.join("firmware.squashfs")).unwrap(),
        "shared firmware"
    );
    assert!(!s.persist.join("layers").exists() && !s.persist.join("profiles").exists());
    assert_eq!(env_of(&s).get(ENV_TRIAL), Some("a"));
}

#[test]
fn a_stick_without_grubenv_is_refused_before_writing() {
    let s = stick("a");
    fs::remove_file(s.esp.join(GRUBENV)).unwrap();
    let all = files(&s.persist);
    let err =
        update_mounted(&mut DirEsp(s.esp.clone()), &s.persist, &update(&s, true)).unwrap_err();
    assert!(format!("{err:#}").contains("no grub/grubenv"), "{err:#}");
    assert_eq!(files(&s.persist), all);
}

#[test]
fn sfdisk_json_gives_partition_offsets() {
    let text = r#"{"partitiontable": {"label": "gpt", "sectorsize": 512,
        "partitions": [{"node": "d1", "start": 2048, "size": 131072},
                       {"node": "d2", "start": 133120, "size": 4096}]}}"#;
    assert_eq!(
        parse_sfdisk(text).unwrap(),
        [(2048 * 512, 131072 * 512), (133120 * 512, 4096 * 512)]
    );
    assert!(parse_sfdisk("{}").is_err());
}

#[test]
fn a_new_kernel_is_added_beside_the_others_and_an_existing_release_kept() {
    if !have(MKSQUASHFS.0) {
        skip("no mksquashfs");
        return;
    }
    const NEW: &str = "6.2.0-1-amd64";
    let s = stick("a");
    let host = TempDir::new("update-stick-kernel");
    host.file("vmlinuz", "new kernel", 0o644)
        .file("initramfs.img", "new initramfs", 0o644)
        .file("modules.squashfs", "new modules", 0o644);
    let mut u = update(&s, true);
    u.kernel = Some(KernelFiles {
        version: NEW.into(),
        vmlinuz: host.join("vmlinuz"),
        initramfs: host.join("initramfs.img"),
        modules_image: host.join("modules.squashfs"),
    });
    let esp = |name: &str| fs::read_to_string(s.esp.join(name)).unwrap();
    // A release the stick has already keeps its files (slot a boots them).
    fs::write(s.esp.join(format!("vmlinuz-{NEW}")), "the stick's own").unwrap();
    let before = slot_and_shared(&s.persist, Slot::A);
    update_mounted(&mut DirEsp(s.esp.clone()), &s.persist, &u).unwrap();
    assert_eq!(esp(&format!("vmlinuz-{NEW}")), "the stick's own");
    assert_eq!(esp(&format!("initramfs-{NEW}.img")), "new initramfs");
    let menu = Menu::from_json(&esp(MENU_RECORD)).unwrap();
    assert_eq!(menu.kernels, [NEW, KVER]);
    assert_eq!(esp(GRUB_CFG), menu.render());
    let modules = |k: &str| fs::read_to_string(s.persist.join(format!("modules-{k}.squashfs")));
    assert_eq!(modules(NEW).unwrap(), "new modules");
    assert_eq!(modules(KVER).unwrap(), "mods");
    // Slot a's own files and user/ as they were, the new module image beside them.
    let mut after = slot_and_shared(&s.persist, Slot::A);
    assert!(after.remove(&format!("modules-{NEW}.squashfs")).is_some());
    assert_eq!(after, before);
    let unpacked = s.work.join("check-kernel");
    fs::create_dir_all(&unpacked).unwrap();
    let base = s.persist.join("slot-b/rootfs.squashfs");
    ramstick_squash::unpack(&base, &unpacked, &Default::default()).unwrap();
    assert!(unpacked.join(format!("lib/modules/{NEW}")).is_dir());
}

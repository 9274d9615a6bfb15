//! A save records the base its chain is made on, and never saves over a
//! chain boot did not apply because it was made on another base.

use crate::saveplan::{self, SessionState, Situation};
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::chain::{self, Saved};
use ramstick_common::cmdline::{BootType, LayersMode};
use ramstick_common::manifest::{layer_name, LayerInfo, Manifest, Origin};
use ramstick_common::slotboot::BaseCheck;

fn manifest(base: Option<&str>) -> Saved {
    let mut m = Manifest::empty();
    let mut info = LayerInfo::planned(0, Origin::Session);
    info.size = 1;
    m.layers.insert(layer_name(1), info);
    m.current = vec![layer_name(1)];
    m.next_layer = 2;
    m.generation = 3;
    m.base = base.map(String::from);
    Saved::Manifest(m)
}

/// The plan of a first save of a session booted from `saved` (every layer
/// usable), with boot.json's slot record changed by `slot`.
fn plan(saved: &Saved, slot: impl FnOnce(&mut BootInfo)) -> anyhow::Result<saveplan::SavePlan> {
    let choice = chain::choose(saved, BootType::Default, |_| Ok(()));
    let mut boot = BootInfo::chosen(saved, choice, LayersMode::Mount);
    slot(&mut boot);
    let session = SessionState::booted(&boot);
    saveplan::plan(&Situation {
        saved,
        boot: &boot,
        session: &session,
        layer_files: &[layer_name(1)],
        legacy_present: [false, false],
        stamp: "20261207-020000",
        onto_partial: false,
        reclaim_corrupt: false,
    })
}

#[test]
fn a_save_records_the_base_it_runs_on() {
    // An older manifest without a base gets the running base's digest.
    let p = plan(&manifest(None), |b| b.slot.base_digest = Some("new".into())).unwrap();
    assert_eq!(p.manifest.base.as_deref(), Some("new"));
    assert_eq!(p.manifest.current, [layer_name(1), layer_name(2)]);
    // Boot compared them and they agree.
    let p = plan(&manifest(Some("same")), |b| {
        b.slot.base_digest = Some("same".into());
        b.slot.base_check = BaseCheck::Same;
    })
    .unwrap();
    assert_eq!(p.manifest.base.as_deref(), Some("same"));
    // The base digest unknown (an older init): the manifest's stays.
    let p = plan(&manifest(Some("old")), |_| {}).unwrap();
    assert_eq!(p.manifest.base.as_deref(), Some("old"));
    // The first save of a stick records it too.
    let p = plan(&Saved::Nothing, |b| b.slot.base_digest = Some("d".into())).unwrap();
    assert_eq!(p.manifest.base.as_deref(), Some("d"));
}

#[test]
fn a_chain_made_on_another_base_is_never_saved_over() {
    for check in [
        BaseCheck::Other {
            saved_on: "old".into(),
            found: "new".into(),
        },
        BaseCheck::Unreadable {
            why: "i/o error".into(),
        },
    ] {
        // What init records: the chain not applied (a clean-like boot).
        let saved = manifest(Some("old"));
        let err = plan(&saved, |b| {
            b.used = BootType::Clean;
            b.layers.clear();
            b.slot.base_check = check.clone();
        })
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("made on another base"), "{err}");
    }
}

#[test]
fn a_save_in_another_state_directory_reads_the_slots_base() {
    // Slot b's profile: the state directory is two levels below slot b's
    // directory, and the base is named from the partition's root.
    let dir = ramstick_testkit::TempDir::new("base-digest");
    dir.file("tree/etc/hostname", "b\n", 0o644);
    let image = dir.join("persist/slot-b/rootfs.squashfs");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    ramstick_squash::pack(
        &dir.join("tree"),
        &image,
        &ramstick_squash::PackOptions::default(),
    )
    .unwrap();
    let (_, want) = ramstick_squash::meta_digest(&image).unwrap();
    let paths = crate::session::Paths {
        persist: dir.join("persist/slot-b/profiles/work"),
        ..crate::session::Paths::system()
    };
    let mut info = BootInfo::chosen(
        &Saved::Nothing,
        chain::choose(&Saved::Nothing, BootType::Default, |_| Ok(())),
        LayersMode::Mount,
    );
    info.state_dir = "slot-b/profiles/work".into();
    info.slot.base_image = "slot-b/rootfs.squashfs".into();
    assert_eq!(info.slot.base_digest, None);
    assert_eq!(crate::save::base_digest(&paths, &info), Some(want));
}

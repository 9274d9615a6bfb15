//! A slot's chain against its base, through the recording fakes: applied
//! on the base it was made on, never on another (booted clean, untouched).

use super::*;
use crate::images::fake::RecordingImages;
use crate::sys::RecordingSys;
use crate::testplan::plan_for;
use ramstick_common::manifest::{layer_name, Manifest, Origin};
use std::path::PathBuf;

const PERSIST: &str = "/sysroot/persist";

/// A stick whose slot directory `dir` ("" or "slot-b") holds a base of
/// digest `base_found` and a two-layer chain made on `saved_on`.
fn stick(dir: &str, saved_on: Option<&str>, base_found: &str) -> (RecordingSys, RecordingImages) {
    let slot = PathBuf::from(PERSIST).join(dir);
    let mut m = Manifest::empty();
    let mut images = RecordingImages {
        free: 1 << 30,
        ..RecordingImages::default()
    };
    let mut sys = RecordingSys::new();
    for n in 1..=2 {
        let mut info = LayerInfo::planned(0, Origin::Session);
        info.size = 4096;
        info.meta_digest = format!("d{n}");
        let path = slot.join("layers").join(layer_name(n));
        sys.files.insert(path.clone(), String::new());
        images
            .digests
            .insert(path, (4096, info.meta_digest.clone()));
        m.layers.insert(layer_name(n), info);
        m.current.push(layer_name(n));
    }
    m.next_layer = 3;
    m.base = saved_on.map(String::from);
    sys.files
        .insert(slot.join("layers/manifest.json"), m.render());
    let base = slot.join("rootfs.squashfs");
    sys.files.insert(base.clone(), String::new());
    images.digests.insert(base, (1 << 20, base_found.into()));
    (sys, images)
}

#[test]
fn a_chain_applies_on_its_own_base() {
    let (sys, images) = stick("", Some("base1"), "base1");
    let a = assemble(&sys, &images, Path::new("/"), &plan_for(""));
    assert_eq!(a.used, BootType::Default);
    assert_eq!(a.layers.len(), 2);
    assert_eq!(a.base_check, BaseCheck::Same);
    assert_eq!(a.base_digest.as_deref(), Some("base1"));
    assert_eq!(images.calls()[0], "digest /sysroot/persist/rootfs.squashfs");
}

#[test]
fn a_chain_made_on_another_base_is_not_applied_nor_touched() {
    let (sys, images) = stick("slot-b", Some("old"), "new");
    let a = assemble(&sys, &images, Path::new("/"), &plan_for("ramstick.slot=b"));
    assert_eq!((a.used, a.layers.len()), (BootType::Clean, 0));
    assert!(a.dirs.is_empty() && a.failures.is_empty());
    assert_eq!(
        a.base_check,
        BaseCheck::Other {
            saved_on: "old".into(),
            found: "new".into()
        }
    );
    assert!(
        a.notes[0].starts_with("the saved state of slot b was made on another base"),
        "{:?}",
        a.notes
    );
    // Only the manifest and the base were read: no layer checked or mounted.
    assert_eq!(
        sys.calls(),
        ["read /sysroot/persist/slot-b/layers/manifest.json"]
    );
    assert_eq!(
        images.calls(),
        ["digest /sysroot/persist/slot-b/rootfs.squashfs"]
    );
}

#[test]
fn an_unreadable_base_applies_no_chain_that_names_one() {
    let (sys, mut images) = stick("", Some("base1"), "base1");
    images
        .digests
        .remove(&PathBuf::from("/sysroot/persist/rootfs.squashfs"));
    let a = assemble(&sys, &images, Path::new("/"), &plan_for(""));
    assert_eq!((a.used, a.layers.len()), (BootType::Clean, 0));
    assert!(matches!(a.base_check, BaseCheck::Unreadable { .. }));
    assert_eq!(a.base_digest, None);
}

#[test]
fn an_older_manifest_applies_without_reading_the_base() {
    let (sys, images) = stick("slot-b", None, "whatever");
    let a = assemble(&sys, &images, Path::new("/"), &plan_for("ramstick.slot=b"));
    assert_eq!((a.used, a.layers.len()), (BootType::Default, 2));
    assert_eq!(a.base_check, BaseCheck::Unchecked);
    assert_eq!(a.layers[0].file, "slot-b/layers/layer-000001.squashfs");
    assert!(sys
        .calls()
        .contains(&"loop /sysroot/persist/slot-b/layers/layer-000001.squashfs".to_string()));
    assert!(!images.calls().iter().any(|c| c.contains("rootfs")));
    // A clean boot compares nothing.
    let (sys, images) = stick("", Some("old"), "new");
    let a = assemble(
        &sys,
        &images,
        Path::new("/"),
        &plan_for("ramstick.boot=clean"),
    );
    assert_eq!(a.base_check, BaseCheck::Unchecked);
    assert!(images.calls().is_empty());
}

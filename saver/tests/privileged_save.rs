//! The save sequence on real files, as root in a private mount namespace
//! (testkit's harness): real packing, both readers' read-back (the kernel's
//! over a loop device), the layer chain across sessions, checkpoints that
//! replace the session's layer, the conversion of a legacy stick, a corrupt
//! layer set aside, a transient failure refused, automatic compaction, a
//! clean boot, full sticks (small tmpfs mounts as /persist), and a file
//! that keeps growing while the session is saved. Each state
//! is checked the way boot shows it: the chain stacked by a kernel overlay.
//! Needs root (the harness says why each case is skipped otherwise).

use nix::sys::stat::SFlag;
use ramstick_common::bootinfo::{BootInfo, SavedState, UsedLayer};
use ramstick_common::chain::{FailureClass, LayerFailure};
use ramstick_common::cmdline::{BootType, LayersMode};
use ramstick_common::manifest::{layer_name, Manifest};
use ramstick_saver::diff::{diff, Change, Patterns, What};
use ramstick_saver::onoff::{self, Off};
use ramstick_saver::save::{save, Outcome, SaveOptions, Trigger};
use ramstick_saver::session::Paths;
use ramstick_squash::Exclude;
use ramstick_testkit::{
    ensure, lsetxattr, main_with, make_node, noise, run, Case, CaseResult, Ctx, Mounted, Root,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every case's upper holds `trusted.*` xattrs, and each layer saved is
/// read back by the kernel over a loop device.
const UPPER: &[Root] = &[Root::TrustedXattrs, Root::LoopDevices];

fn main() -> ExitCode {
    main_with(
        "privileged_save",
        &[
            Case::new("sessions", sessions).root(UPPER),
            Case::new("legacy-conversion", legacy_conversion).root(UPPER),
            Case::new("corrupt-layer", corrupt_layer).root(UPPER),
            Case::new("compaction", compaction).root(UPPER),
            Case::new("full-stick", full_stick).root(UPPER),
            Case::new("no-room", no_room).root(UPPER),
            Case::new("save-waiting-for-the-lock", save_waiting_for_the_lock).root(UPPER),
            Case::new("file-keeps-changing", file_keeps_changing).root(UPPER),
            Case::new("kernel-files-never-saved", kernel_files_never_saved).root(UPPER),
            Case::new("diff-over-an-overlay", diff_over_an_overlay).root(UPPER),
            Case::new("saving-off", saving_off).root(UPPER),
            Case::new("new-profile", new_profile).root(UPPER),
        ],
    )
}

/// VFS_CAP_REVISION_2 + effective, CAP_NET_RAW permitted.
const CAP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// user::rw-, group::r--, group 4: r--, mask::r--, other::---.
const ACL: [u8; 44] = [
    2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 8, 0, 4, 0, 4, 0,
    0, 0, 16, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255, 255,
];

/// Paths under `root`, with an upper holding every overlay kind and an
/// exclusion list, as after a first boot (nothing on the stick).
fn scratch(root: &Path) -> Result<Paths, String> {
    let paths = Paths {
        persist: root.join("persist"),
        upper_mount: root.join("upper"),
        upperdir: root.join("upper/upper"),
        exclude: root.join("exclude"),
        boot_json: root.join("boot.json"),
        state: root.join("state"),
        cmdline: root.join("cmdline"),
        rootfs: root.join("rootfs"),
        layer_mounts: root.join("layer-mounts"),
    };
    let u = &paths.upperdir;
    for d in ["etc/opaque", "tmp", "bin", "root"] {
        fs::create_dir_all(u.join(d)).ctx(d)?;
    }
    fs::create_dir_all(&paths.persist).ctx("persist")?;
    fs::write(u.join("etc/hostname"), "one\n").ctx("hostname")?;
    fs::write(u.join("root/a"), "linked\n").ctx("root/a")?;
    fs::hard_link(u.join("root/a"), u.join("root/b")).ctx("hardlink")?;
    fs::write(u.join("tmp/junk"), "not saved\n").ctx("tmp/junk")?;
    make_node(&u.join("bin/rev"), SFlag::S_IFCHR, 0, (0, 0))?;
    lsetxattr(&u.join("etc/opaque"), "trusted.overlay.opaque", b"y")?;
    lsetxattr(&u.join("root/a"), "security.capability", &CAP)?;
    // A POSIX ACL (squashfs cannot store it: never a difference).
    lsetxattr(&u.join("etc/hostname"), "system.posix_acl_access", &ACL)?;
    fs::write(&paths.exclude, "# test\n/tmp/*\n").ctx("exclude")?;
    new_session(&paths, BootType::Default, &[], vec![])?;
    Ok(paths)
}

/// A new boot: boot.json using `layers`, no session record, an empty upper
/// (but for what the caller puts there).
fn new_session(
    paths: &Paths,
    asked: BootType,
    layers: &[&str],
    failures: Vec<LayerFailure>,
) -> Result<(), String> {
    let info = BootInfo {
        asked,
        used: if layers.is_empty() {
            BootType::Clean
        } else {
            asked
        },
        layers_mode: LayersMode::Mount,
        saved: SavedState::Nothing,
        asked_chain: layers.iter().map(|s| s.to_string()).collect(),
        layers: layers
            .iter()
            .map(|n| UsedLayer {
                name: n.to_string(),
                file: format!("layers/{n}"),
                size: 0,
                how: LayersMode::Mount,
            })
            .collect(),
        failures,
        notes: vec![],
        timings_ms: BTreeMap::new(),
        kernel: "test".into(),
        upper: "tmpfs".into(),
        problems: vec![],
        saver_hook: Default::default(),
        profile: "default".into(),
        state_dir: String::new(),
        slot: Default::default(),
    };
    let _ = fs::remove_file(paths.session_json());
    fs::write(&paths.boot_json, info.to_json()).ctx("boot.json")
}

/// Empties the upper (a reboot) and puts `files` in it.
fn fresh_upper(paths: &Paths, files: &[(&str, &str)]) -> Result<(), String> {
    fs::remove_dir_all(&paths.upperdir).ctx("clear upper")?;
    fs::create_dir_all(&paths.upperdir).ctx("upper")?;
    for (path, text) in files {
        let p = paths.upperdir.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).ctx("dirs")?;
        }
        fs::write(&p, text).ctx(path)?;
    }
    Ok(())
}

fn save_now(paths: &Paths) -> Result<Outcome, String> {
    save(paths, SaveOptions::new(Trigger::Demand)).map_err(|e| format!("save: {e:#}"))
}

fn manifest(paths: &Paths) -> Result<Manifest, String> {
    let text = fs::read_to_string(paths.layers().join("manifest.json")).ctx("manifest")?;
    Manifest::parse(&text).ctx("parse manifest")
}

/// The names in `layers/`, sorted.
fn layer_files(paths: &Paths) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = fs::read_dir(paths.layers())
        .ctx("list layers")?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .ctx("list layers")?;
    v.sort();
    Ok(v)
}

/// `layers/` holds the manifest and the layers it names, nothing else.
fn only_the_chain(paths: &Paths) -> Result<(), String> {
    let mut expected: Vec<String> = manifest(paths)?.layers.keys().cloned().collect();
    expected.push("manifest.json".into());
    expected.sort();
    let files = layer_files(paths)?;
    ensure(
        files == expected,
        format!("{files:?}, expected {expected:?}"),
    )
}

/// `chain` (bottom first) stacked by a kernel overlay over an empty rootfs:
/// `path` → its content ("" when absent).
fn shown(paths: &Paths, chain: &[String], files: &[&str]) -> Result<Vec<String>, String> {
    let base = paths.state.join("view");
    let rootfs = base.join("rootfs");
    fs::create_dir_all(&rootfs).ctx("rootfs")?;
    let mut mounts = Vec::new();
    let mut dirs = Vec::new();
    for (i, name) in chain.iter().enumerate() {
        let dir = base.join(format!("l{i}"));
        fs::create_dir_all(&dir).ctx("layer dir")?;
        mounts.push(Mounted::image(
            &paths.layers().join(name),
            "squashfs",
            &dir,
            true,
        )?);
        dirs.push(dir.to_string_lossy().into_owned());
    }
    dirs.reverse();
    dirs.push(rootfs.to_string_lossy().into_owned());
    let merged = base.join("merged");
    fs::create_dir_all(&merged).ctx("merged")?;
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", dirs.join(":")))
        .arg(&merged))?;
    let out = files
        .iter()
        .map(|f| fs::read_to_string(merged.join(f)).unwrap_or_default())
        .collect();
    run(Command::new("umount").arg(&merged))?;
    drop(mounts);
    Ok(out)
}

fn sessions(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let hostname = paths.upperdir.join("etc/hostname");
    // First boot (nothing saved): one layer, /tmp contents left out.
    let first = save_now(paths)?;
    ensure(
        matches!(first, Outcome::Saved { bytes, .. } if bytes > 0),
        format!("{first:?}"),
    )?;
    let m = manifest(paths)?;
    ensure(
        m.current == [layer_name(1)] && m.backup.is_empty(),
        format!("{m:?}"),
    )?;
    let got = shown(paths, &m.current, &["etc/hostname", "root/b", "tmp/junk"])?;
    ensure(
        got == ["one\n", "linked\n", ""],
        format!("first layer shows {got:?}"),
    )?;
    let layer1 = paths.layers().join(layer_name(1));
    let ino = fs::metadata(&layer1).ctx("layer")?.ino();

    // Saved already and unchanged: nothing written.
    ensure(
        save_now(paths)? == Outcome::Unchanged,
        "unchanged but saved",
    )?;
    ensure(
        fs::metadata(&layer1).ctx("layer")?.ino() == ino,
        "layer rewritten",
    )?;

    // A second save in the same session replaces its layer; the backup
    // stays the state before the session (here: nothing).
    fs::write(&hostname, "two\n").ctx("hostname")?;
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "not saved",
    )?;
    let m = manifest(paths)?;
    ensure(
        m.current == [layer_name(2)] && m.backup.is_empty(),
        format!("{m:?}"),
    )?;
    ensure(
        layer_files(paths)? == [layer_name(2), "manifest.json".into()],
        "layer 1 left",
    )?;

    // The next session: its changes go on top; backup = the chain before.
    new_session(paths, BootType::Default, &[&layer_name(2)], vec![])?;
    fresh_upper(paths, &[("etc/hostname", "three\n"), ("root/new", "n\n")])?;
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "not saved",
    )?;
    let m = manifest(paths)?;
    ensure(
        m.current == [layer_name(2), layer_name(3)],
        format!("{m:?}"),
    )?;
    ensure(m.backup == [layer_name(2)], format!("{m:?}"))?;
    let files = ["etc/hostname", "root/a", "root/new"];
    ensure(
        shown(paths, &m.current, &files)? == ["three\n", "linked\n", "n\n"],
        "current",
    )?;
    ensure(
        shown(paths, &m.backup, &files)? == ["two\n", "linked\n", ""],
        "backup",
    )?;

    // A clean boot writes nothing, even with changes.
    new_session(paths, BootType::Clean, &[], vec![])?;
    fs::write(paths.upperdir.join("etc/hostname"), "four\n").ctx("hostname")?;
    let before = fs::read(paths.layers().join("manifest.json")).ctx("manifest")?;
    ensure(save_now(paths)? == Outcome::CleanBoot, "clean boot saved")?;
    ensure(
        fs::read(paths.layers().join("manifest.json")).ctx("m")? == before,
        "changed",
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

fn legacy_conversion(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    // Yesterday's layout: a full upper image and its backup.
    let old = paths.state.join("old");
    fs::create_dir_all(old.join("etc")).ctx("old")?;
    fs::write(old.join("etc/saved"), "before\n").ctx("saved")?;
    let legacy = paths.persist.join("upperfs.squashfs");
    ramstick_squash::pack(&old, &legacy, &Default::default()).ctx("pack legacy")?;
    fs::copy(&legacy, paths.persist.join("upperfs-backup.squashfs")).ctx("backup")?;
    let ino = fs::metadata(&legacy).ctx("legacy")?.ino();
    new_session(paths, BootType::Default, &["upperfs.squashfs"], vec![])?;
    fresh_upper(paths, &[("etc/new", "after\n")])?;
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "not saved",
    )?;
    let m = manifest(paths)?;
    ensure(
        m.current == [layer_name(1), layer_name(2)],
        format!("{m:?}"),
    )?;
    ensure(m.backup == [layer_name(1)], format!("{m:?}"))?;
    // Converted by a hard link: the legacy image's bytes were not copied.
    let converted = fs::metadata(paths.layers().join(layer_name(1))).ctx("layer 1")?;
    ensure(
        converted.ino() == ino && converted.nlink() == 1,
        "not the same inode",
    )?;
    ensure(!legacy.exists(), "upperfs.squashfs left")?;
    ensure(
        !paths.persist.join("upperfs-backup.squashfs").exists(),
        "backup left",
    )?;
    let got = shown(paths, &m.current, &["etc/saved", "etc/new"])?;
    ensure(got == ["before\n", "after\n"], format!("{got:?}"))?;
    Ok(ramstick_testkit::Outcome::Passed)
}

fn corrupt_layer(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    // Three sessions: layers 1, 2, 3.
    let mut chain: Vec<String> = Vec::new();
    for n in 1..=3 {
        let names: Vec<&str> = chain.iter().map(String::as_str).collect();
        new_session(paths, BootType::Default, &names, vec![])?;
        fresh_upper(paths, &[(&format!("etc/s{n}"), "x\n")])?;
        save_now(paths)?;
        chain = manifest(paths)?.current;
    }
    // A transient read error on layer 2: refused, nothing written.
    let failure = |class| LayerFailure {
        layer: layer_name(2),
        class,
        message: "test".into(),
    };
    new_session(
        paths,
        BootType::Default,
        &[&layer_name(1)],
        vec![failure(FailureClass::Io)],
    )?;
    fresh_upper(paths, &[("etc/s4", "x\n")])?;
    let before = fs::read(paths.layers().join("manifest.json")).ctx("manifest")?;
    let err = match save(paths, SaveOptions::new(Trigger::Shutdown)) {
        Ok(o) => return Err(format!("saved over a transient failure: {o:?}")),
        Err(e) => format!("{e:#}"),
    };
    ensure(err.contains("not proof"), err)?;
    ensure(
        fs::read(paths.layers().join("manifest.json")).ctx("m")? == before,
        "written",
    )?;
    // Proven corruption: built on layer 1, layer 2 aside, layer 3 kept aside.
    new_session(
        paths,
        BootType::Default,
        &[&layer_name(1)],
        vec![failure(FailureClass::Corrupt)],
    )?;
    fresh_upper(paths, &[("etc/s4", "x\n")])?;
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "not saved",
    )?;
    let m = manifest(paths)?;
    ensure(
        m.current == [layer_name(1), layer_name(4)],
        format!("{m:?}"),
    )?;
    ensure(
        m.kept.len() == 1 && m.kept[0].layers == [layer_name(3)],
        format!("{m:?}"),
    )?;
    let files = layer_files(paths)?;
    ensure(
        files.iter().any(|f| f.starts_with("layer-000002-corrupt-"))
            && files.contains(&layer_name(3)),
        format!("{files:?}"),
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

fn compaction(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    // Ten sessions, each changing its own file and the shared one: the
    // tenth save merges the eight session layers below its own.
    let mut chain: Vec<String> = Vec::new();
    for n in 1..=10 {
        let names: Vec<&str> = chain.iter().map(String::as_str).collect();
        new_session(paths, BootType::Default, &names, vec![])?;
        fresh_upper(
            paths,
            &[
                (&format!("etc/s{n}"), "x\n"),
                ("etc/last", &format!("{n}\n")),
            ],
        )?;
        save_now(paths)?;
        chain = manifest(paths)?.current;
    }
    let m = manifest(paths)?;
    ensure(m.current.len() <= 3, format!("not compacted: {m:?}"))?;
    let merged = m.current.iter().filter(|n| m.layers[*n].level == 1).count();
    ensure(merged == 1, format!("{m:?}"))?;
    let want: Vec<String> = (1..=10).map(|n| format!("etc/s{n}")).collect();
    let mut files: Vec<&str> = want.iter().map(String::as_str).collect();
    files.push("etc/last");
    let got = shown(paths, &m.current, &files)?;
    ensure(
        got[..10].iter().all(|c| c == "x\n") && got[10] == "10\n",
        format!("{got:?}"),
    )?;
    let backup = shown(paths, &m.backup, &files)?;
    ensure(
        backup[9].is_empty() && backup[10] == "9\n",
        format!("backup {backup:?}"),
    )?;
    only_the_chain(paths)?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// A first save, then a tmpfs of `size` as /persist holding what it wrote,
/// and 3 MiB that do not compress in the upper. Returns the manifest text.
fn small_persist(paths: &Paths, size: &str) -> Result<(Mounted, Vec<u8>), String> {
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "first save",
    )?;
    let m = fs::read(paths.layers().join("manifest.json")).ctx("manifest")?;
    let layer = fs::read(paths.layers().join(layer_name(1))).ctx("layer")?;
    let mounted = Mounted::tmpfs_sized(&paths.persist, size)?;
    fs::create_dir_all(paths.layers()).ctx("layers")?;
    fs::write(paths.layers().join("manifest.json"), &m).ctx("manifest")?;
    fs::write(paths.layers().join(layer_name(1)), &layer).ctx("layer")?;
    // The next session.
    new_session(paths, BootType::Default, &[&layer_name(1)], vec![])?;
    fs::write(paths.upperdir.join("root/big"), noise(3 << 20, false)).ctx("big")?;
    Ok((mounted, m))
}

/// The save fails with `message`; the manifest and layer 1 are intact and
/// nothing else is left behind.
fn refused(paths: &Paths, manifest_text: &[u8], message: &str) -> CaseResult {
    let err = match save_now(paths) {
        Ok(o) => return Err(format!("saved on a full stick: {o:?}")),
        Err(e) => e,
    };
    ensure(err.contains(message), format!("unclear error: {err}"))?;
    ensure(
        fs::read(paths.layers().join("manifest.json")).ctx("m")? == manifest_text,
        "manifest changed",
    )?;
    let files = layer_files(paths)?;
    // A partial layer may be left (unreferenced: the next save removes it).
    ensure(files.contains(&layer_name(1)), format!("{files:?}"))?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// Room above the floor: tried, the stick fills up.
fn full_stick(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let (_mounted, m) = small_persist(paths, "1m")?;
    refused(paths, &m, "the stick is full")?;
    // The next save (with room) removes what the failed one left.
    fs::remove_file(paths.upperdir.join("root/big")).ctx("big")?;
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "not saved",
    )?;
    only_the_chain(paths)?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// Room below the floor: refused before writing, with the numbers.
/// A session that installed a kernel (its image in /boot, its modules under
/// /usr/lib/modules), removed the running kernel's modules directory (a
/// whiteout), made /lib/firmware opaque and changed one ordinary file:
/// the layer holds the ordinary file and nothing of the rest, even with an
/// exclusion list that names none of it.
fn kernel_files_never_saved(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    fs::write(&paths.exclude, "# the user's own list\n").ctx("exclude")?;
    fresh_upper(
        paths,
        &[
            ("boot/vmlinuz-6.2.0-new", "kernel"),
            ("usr/lib/modules/6.2.0-new/kernel/x.ko", "module"),
            ("etc/kept", "kept\n"),
        ],
    )?;
    let u = &paths.upperdir;
    fs::create_dir_all(u.join("lib/modules")).ctx("lib/modules")?;
    make_node(&u.join("lib/modules/6.1.0-old"), SFlag::S_IFCHR, 0, (0, 0))?;
    fs::create_dir_all(u.join("lib/firmware")).ctx("lib/firmware")?;
    lsetxattr(&u.join("lib/firmware"), "trusted.overlay.opaque", b"y")?;
    save_now(paths)?;
    let m = manifest(paths)?;
    let image = paths.layers().join(&m.current[0]);
    let view = paths.state.join("layer");
    fs::create_dir_all(&view).ctx("view")?;
    let mounted = Mounted::image(&image, "squashfs", &view, true)?;
    let mut found = Vec::new();
    for path in ["boot", "usr/lib/modules", "lib/modules", "lib/firmware"] {
        if view.join(path).symlink_metadata().is_ok() {
            found.push(path);
        }
    }
    let kept = fs::read_to_string(view.join("etc/kept")).unwrap_or_default();
    drop(mounted);
    ensure(found.is_empty(), format!("the layer holds {found:?}"))?;
    ensure(kept == "kept\n", format!("etc/kept is {kept:?}"))?;
    Ok(ramstick_testkit::Outcome::Passed)
}

fn no_room(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let (_mounted, m) = small_persist(paths, "200k")?;
    refused(paths, &m, "is free")
}

/// A save that waits for another one (the daemon's checkpoint and `saver
/// save` at once) reads the session as the other left it: the lock is
/// taken first. Here the test holds the lock, puts back the session record
/// of before the first save while the second save waits, then the real one
/// before releasing: a save that read the record before locking would see
/// a session that saved nothing and write it again.
fn save_waiting_for_the_lock(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "first save",
    )?;
    let saved = fs::read(paths.session_json()).ctx("session record")?;
    let lock = ramstick_saver::save::lock(&paths.state).map_err(|e| format!("{e:#}"))?;
    fs::remove_file(paths.session_json()).ctx("stale view")?;
    let outcome = std::thread::scope(|s| {
        let waiting = s.spawn(|| save_now(paths));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let restored = fs::write(paths.session_json(), &saved).ctx("restore");
        drop(lock);
        restored.and_then(|()| {
            waiting
                .join()
                .unwrap_or_else(|_| Err("the save panicked".into()))
        })
    })?;
    ensure(outcome == Outcome::Unchanged, format!("{outcome:?}"))?;
    let m = manifest(paths)?;
    ensure(
        m.current == [layer_name(1)] && m.generation == 1,
        format!("{m:?}"),
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// A log of the upper that a thread keeps appending to while the session
/// is saved, fast (it changes while it is packed) then slowly (a line every
/// 10 ms: read at rest, changed by the time it is read back, so the last
/// attempt lets it off): each save succeeds; the layer holds every other
/// entry exactly (our codec's verify) and the log as one read of it saw it:
/// at least what it held before, and a prefix of what it holds after (the
/// kernel's mount).
fn file_keeps_changing(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let log = paths.upperdir.join("var/log/busy.log");
    fs::create_dir_all(paths.upperdir.join("var/log")).ctx("var/log")?;
    fs::write(&log, lines(0..40_000)).ctx("log")?;
    save_while_appending(paths, &log, 40_000, Duration::from_micros(200), 16)?;
    let n = fs::read(&log).ctx("log")?.len() / lines(0..1).len();
    save_while_appending(paths, &log, n as u64, Duration::from_millis(10), 1)
}

/// Lines `range` of the test log (all of one length).
fn lines(range: std::ops::Range<u64>) -> String {
    range
        .map(|n| format!("{n:08} the daemon says something\n"))
        .collect()
}

/// Saves while a thread appends lines `from..` to `log`, pausing `pause`
/// every `every` lines; checks the layer (see [`file_keeps_changing`]).
fn save_while_appending(
    paths: &Paths,
    log: &Path,
    from: u64,
    pause: Duration,
    every: u64,
) -> CaseResult {
    let before = fs::read(log).ctx("log")?;
    let stop = AtomicBool::new(false);
    let (outcome, appended) = std::thread::scope(|s| {
        let writer = s.spawn(|| -> std::io::Result<u64> {
            let mut f = fs::OpenOptions::new().append(true).open(log)?;
            let mut n = from;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(lines(n..n + 1).as_bytes())?;
                n += 1;
                if n.is_multiple_of(every) {
                    std::thread::sleep(pause);
                }
            }
            Ok(n - from)
        });
        let outcome = save_now(paths);
        stop.store(true, Ordering::Relaxed);
        (outcome, writer.join())
    });
    let appended = match appended {
        Ok(Ok(n)) => n,
        other => return Err(format!("the writer failed: {other:?}")),
    };
    let outcome = outcome?;
    ensure(
        matches!(outcome, Outcome::Saved { .. }),
        format!("{outcome:?}"),
    )?;
    let m = manifest(paths)?;
    let layer = paths
        .layers()
        .join(m.current.last().ok_or("no layer in the manifest")?);
    let skip = Exclude::parse("/tmp/*\n/var/log/busy.log\n").ctx("exclude")?;
    let diffs = ramstick_squash::verify(&layer, &paths.upperdir, &skip).ctx("verify")?;
    ensure(
        diffs.is_empty(),
        format!("the other entries differ: {diffs:?}"),
    )?;
    let mnt = paths.state.join("layer");
    fs::create_dir_all(&mnt).ctx("mnt")?;
    let mounted = Mounted::image(&layer, "squashfs", &mnt, true)?;
    let saved = fs::read(mnt.join("var/log/busy.log")).ctx("saved log")?;
    drop(mounted);
    let after = fs::read(log).ctx("log")?;
    println!(
        "note: {appended} lines appended during the save; {} of {} bytes saved",
        saved.len(),
        after.len()
    );
    ensure(
        saved.len() >= before.len() && after.starts_with(&saved),
        format!(
            "saved {} bytes: not a prefix of the log's {} bytes",
            saved.len(),
            after.len()
        ),
    )?;
    ensure(appended > 0, "the writer never ran")?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// `saver diff` of an upperdir the kernel's overlay wrote (copy-ups,
/// whiteouts, an opaque directory) over a saved layer and a rootfs, as
/// `Paths::lowers` finds them from boot.json.
fn diff_over_an_overlay(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    fresh_upper(paths, &[])?;
    let layer = layer_name(1);
    new_session(paths, BootType::Default, &[&layer], vec![])?;
    let saved = paths.layer_mounts.join(&layer);
    for (dir, files) in [
        (
            &paths.rootfs,
            &[
                ("etc/hostname", "base\n"),
                ("etc/motd", "hello\n"),
                ("bin/tool", "#!/bin/sh\n"),
                ("bin/rev", "x\n"),
                ("usr/sbin/chroot", "x\n"),
            ][..],
        ),
        (&saved, &[("etc/hostname", "saved\n")][..]),
    ] {
        for (f, text) in files {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().unwrap_or(dir)).ctx(f)?;
            fs::write(&p, text).ctx(f)?;
        }
    }
    let work = paths.upper_mount.join("work");
    let merged = root.join("merged");
    fs::create_dir_all(&work).ctx("work")?;
    fs::create_dir_all(&merged).ctx("merged")?;
    let lowers = paths.lowers(
        &ramstick_common::bootinfo::BootInfo::from_json(
            &fs::read_to_string(&paths.boot_json).ctx("boot.json")?,
        )
        .ctx("boot.json")?,
    );
    ensure(
        lowers == [saved.clone(), paths.rootfs.clone()],
        format!("lowers {lowers:?}"),
    )?;
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off",
            lowerdir.join(":"),
            paths.upperdir.display(),
            work.display()
        ))
        .arg(&merged))?;
    let changed = run(Command::new("sh").current_dir(&merged).arg("-c").arg(
        "echo changed-host > etc/hostname && chmod 755 bin/tool && rm bin/rev \
         && touch -d '2001-01-01' etc/motd && rm -r usr/sbin && mkdir usr/sbin \
         && echo fresh > usr/sbin/fresh && mkdir -p root tmp && echo new > root/new \
         && echo junk > tmp/junk",
    ));
    run(Command::new("umount").arg(&merged))?;
    changed?;
    let patterns = Patterns::new(
        &ramstick_saver::session::session_patterns(&paths.exclude).map_err(|e| format!("{e:#}"))?,
    )
    .map_err(|e| format!("{e:#}"))?;
    let report = diff(&paths.upperdir, &lowers, &patterns).map_err(|e| format!("{e:#}"))?;
    let got: BTreeMap<&str, &Change> = report
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.change))
        .collect();
    let want: BTreeMap<&str, Change> = [
        ("/bin/rev", Change::Deleted),
        ("/bin/tool", Change::Modified(vec![What::Mode])),
        ("/etc/hostname", Change::Modified(vec![What::Content])),
        ("/etc/motd", Change::Modified(vec![What::Mtime])),
        ("/root", Change::Added),
        ("/root/new", Change::Added),
        ("/tmp", Change::Added),
        ("/usr/sbin", Change::Replaced),
        ("/usr/sbin/fresh", Change::Added),
    ]
    .into_iter()
    .collect();
    ensure(
        got == want.iter().map(|(k, v)| (*k, v)).collect(),
        format!("diff {got:#?}"),
    )?;
    let excluded: Vec<(&str, &str)> = report
        .excluded
        .iter()
        .map(|x| (x.path.as_str(), x.pattern.as_str()))
        .collect();
    ensure(
        excluded == [("/tmp/junk", "/tmp/*")],
        format!("excluded {excluded:?}"),
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// `saver off` and `ramstick.save=off`: a save writes nothing and says why;
/// `saver on` (or a command line without the parameter) saves again.
fn saving_off(root: &Path) -> CaseResult {
    let paths = &scratch(root)?;
    let said = onoff::turn_off(paths).map_err(|e| format!("{e:#}"))?;
    for trigger in [Trigger::Shutdown, Trigger::Checkpoint, Trigger::Demand] {
        let got = save(paths, SaveOptions::new(trigger)).map_err(|e| format!("{e:#}"))?;
        ensure(
            got == Outcome::Off(Off::Flag(said.clone())),
            format!("{trigger:?}: {got:?}"),
        )?;
    }
    ensure(!paths.layers().exists(), "written while saving was off")?;
    onoff::turn_on(paths).map_err(|e| format!("{e:#}"))?;
    fs::write(&paths.cmdline, "quiet ramstick.save=off\n").ctx("cmdline")?;
    ensure(
        save_now(paths)? == Outcome::Off(Off::CommandLine),
        "saved with ramstick.save=off",
    )?;
    ensure(!paths.layers().exists(), "written with ramstick.save=off")?;
    fs::write(&paths.cmdline, "quiet\n").ctx("cmdline")?;
    ensure(
        matches!(save_now(paths)?, Outcome::Saved { .. }),
        "not saved once saving is on",
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

/// A save in a profile with nothing saved yet creates its state directory
/// and chain, and leaves the default profile's chain and a legacy image in
/// the persist root alone.
fn new_profile(root: &Path) -> CaseResult {
    let default = scratch(root)?;
    ensure(
        matches!(save_now(&default)?, Outcome::Saved { .. }),
        "default not saved",
    )?;
    let before = fs::read(default.layers().join("manifest.json")).ctx("manifest")?;
    fs::write(default.persist.join("upperfs.squashfs"), "legacy").ctx("legacy")?;
    let work = Paths {
        persist: default.persist.join("profiles/work"),
        ..default.clone()
    };
    new_session(&work, BootType::Default, &[], vec![])?;
    fresh_upper(&work, &[("etc/hostname", "work\n")])?;
    ensure(
        matches!(save_now(&work)?, Outcome::Saved { .. }),
        "profile not saved",
    )?;
    let m = manifest(&work)?;
    ensure(m.current == [layer_name(1)], format!("{m:?}"))?;
    only_the_chain(&work)?;
    ensure(
        shown(&work, &m.current, &["etc/hostname"])? == ["work\n"],
        "the profile's chain",
    )?;
    ensure(
        fs::read(default.layers().join("manifest.json")).ctx("manifest")? == before,
        "the default profile's manifest changed",
    )?;
    ensure(
        fs::read(default.persist.join("upperfs.squashfs")).ctx("legacy")? == b"legacy",
        "the legacy image was touched",
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

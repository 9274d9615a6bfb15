//! `saver fold` on real files, as root in a private mount namespace
//! (testkit's harness): a stick's persist directory with slot a (a base, a
//! layer chain, a profile's chain, the shared files) and a running root —
//! the kernel's overlay of that base and layer with a session's upper, with
//! mounts on it (a tmpfs on /run, the persist directory on /persist) — is
//! folded into slot b. The new base, mounted by the kernel, is the merged
//! view minus the exclusion list, with the kernels, modules and firmware
//! directories empty and no mount crossed; slot a's files are byte-identical
//! before and after; the running or committed slot is refused; a slot that
//! holds something is replaced only with `--yes`.

use ramstick_common::bootmenu::slots::GRUBENV;
use ramstick_common::grubenv::Env;
use ramstick_common::tree::tree_listing;
use ramstick_saver::slotwrite::fold::{fold, fold_exclude, FoldPaths};
use ramstick_saver::slotwrite::record::{SlotOrigin, SlotRecord};
use ramstick_saver::verifymount::comparable;
use ramstick_squash::{Exclude, PackOptions};
use ramstick_testkit::{ensure, ensure_same, main_with, run, Case, CaseResult, Ctx, Mounted, Root};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    main_with(
        "privileged_fold",
        &[
            Case::new("fold-into-slot-b", fold_into_slot_b).root(&[Root::LoopDevices]),
            Case::new("fold-refuses-running-or-committed", refuses).root(&[Root::LoopDevices]),
        ],
    )
}

/// Packs `files` (path, content) into the image `out` with our codec.
fn image(scratch: &Path, out: &Path, files: &[(&str, &str)]) -> Result<(), String> {
    let tree = scratch.join(format!(
        "tree-{}",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    for (path, content) in files {
        let p = tree.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).ctx("mkdir")?;
        }
        if path.ends_with('/') {
            fs::create_dir_all(&p).ctx("mkdir")?;
        } else {
            fs::write(&p, content).ctx(path)?;
        }
    }
    fs::create_dir_all(&tree).ctx("tree")?;
    ramstick_squash::pack(&tree, out, &PackOptions::default()).ctx("pack")?;
    Ok(())
}

/// Every file under `dir` (not under `leave_out`) with its bytes.
fn files(dir: &Path, leave_out: &str) -> Result<BTreeMap<PathBuf, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).ctx(d.display())? {
            let e = e.ctx("entry")?;
            let rel = e.path().strip_prefix(dir).ctx("rel")?.to_path_buf();
            if rel.starts_with(leave_out) {
                continue;
            }
            if e.file_type().ctx("type")?.is_dir() {
                todo.push(e.path());
            } else {
                out.insert(rel, fs::read(e.path()).ctx("read")?);
            }
        }
    }
    Ok(out)
}

/// A mount made by `mount(8)`, undone on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A mount undone on drop, either kind.
enum Guard {
    Testkit(#[allow(dead_code)] Mounted),
    Made(#[allow(dead_code)] Unmount),
}

/// A stick and a running system on it, as after a few sessions.
struct Setup {
    paths: FoldPaths,
    /// The mounts of the running root, undone in reverse order.
    mounts: Vec<Guard>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            drop(m);
        }
    }
}

fn grubenv(path: &Path, committed: &str) -> Result<(), String> {
    let mut env = Env::default();
    env.set("ramstick_slot", committed);
    env.set("ramstick_trial", "");
    fs::write(path, env.to_block().ctx("block")?).ctx("grubenv")
}

fn setup(root: &Path, running: &str, committed: &str) -> Result<Setup, String> {
    let persist = root.join("persist");
    fs::create_dir_all(persist.join("layers")).ctx("layers")?;
    fs::create_dir_all(persist.join("user")).ctx("user")?;
    image(
        root,
        &persist.join("rootfs.squashfs"),
        &[
            ("etc/hostname", "base\n"),
            ("etc/removed", "deleted by the layer\n"),
            ("bin/sh", "a shell"),
            ("boot/vmlinuz-6.1.0-57-amd64", "kernel"),
            ("lib/modules/6.1.0-57-amd64/", ""),
            ("lib/firmware/", ""),
            ("persist/", ""),
            ("run/", ""),
            ("tmp/", ""),
        ],
    )?;
    image(
        root,
        &persist.join("layers/layer-000001.squashfs"),
        &[("etc/saved", "from an earlier session\n")],
    )?;
    fs::write(persist.join("layers/manifest.json"), "{ a chain }\n").ctx("manifest")?;
    fs::create_dir_all(persist.join("profiles/work/layers")).ctx("profile")?;
    fs::write(persist.join("profiles/work/layers/manifest.json"), "{}\n").ctx("profile")?;
    fs::write(persist.join("firmware.squashfs"), "firmware").ctx("firmware")?;
    fs::write(persist.join("modules-6.1.0-57-amd64.squashfs"), "mods").ctx("modules")?;
    fs::write(persist.join("user/notes.txt"), "mine\n").ctx("user")?;
    fs::write(persist.join("swapfile"), "swap").ctx("swap")?;

    // The running root: base + layer + this session's upper.
    let mut mounts = Vec::new();
    let lower = root.join("lower");
    let layer = root.join("layer");
    for d in [&lower, &layer] {
        fs::create_dir_all(d).ctx("mkdir")?;
    }
    mounts.push(Guard::Testkit(Mounted::image(
        &persist.join("rootfs.squashfs"),
        "squashfs",
        &lower,
        true,
    )?));
    mounts.push(Guard::Testkit(Mounted::image(
        &persist.join("layers/layer-000001.squashfs"),
        "squashfs",
        &layer,
        true,
    )?));
    let (upper, work, merged) = (root.join("upper"), root.join("work"), root.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).ctx("mkdir")?;
    }
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            layer.display(),
            lower.display(),
            upper.display(),
            work.display()
        ))
        .arg(&merged))?;
    mounts.push(Guard::Made(Unmount(merged.clone())));
    // This session.
    fs::write(merged.join("etc/hostname"), "this session\n").ctx("hostname")?;
    fs::remove_file(merged.join("etc/removed")).ctx("rm")?;
    fs::write(merged.join("tmp/junk"), "excluded\n").ctx("junk")?;
    fs::create_dir_all(merged.join("lib/modules/6.2.0-new")).ctx("modules")?;
    fs::write(merged.join("lib/modules/6.2.0-new/x.ko"), "module").ctx("ko")?;
    fs::write(merged.join("boot/vmlinuz-6.2.0-new"), "kernel").ctx("kernel")?;
    fs::create_dir_all(merged.join("home/user")).ctx("home")?;
    fs::write(merged.join("home/user/.bashrc"), "alias ll='ls -l'\n").ctx("bashrc")?;
    // Mounts on the running root, never folded.
    mounts.push(Guard::Testkit(Mounted::tmpfs_sized(
        &merged.join("run"),
        "16m",
    )?));
    fs::write(merged.join("run/pid"), "1").ctx("run/pid")?;
    run(Command::new("mount")
        .arg("--bind")
        .arg(&persist)
        .arg(merged.join("persist")))?;
    mounts.push(Guard::Made(Unmount(merged.join("persist"))));

    let exclude = root.join("exclude");
    fs::write(&exclude, "/tmp/*\n").ctx("exclude")?;
    let cmdline = root.join("cmdline");
    fs::write(&cmdline, format!("quiet ramstick.slot={running}\n")).ctx("cmdline")?;
    let esp = root.join("esp");
    fs::create_dir_all(esp.join("grub")).ctx("esp")?;
    grubenv(&esp.join(GRUBENV), committed)?;
    Ok(Setup {
        paths: FoldPaths {
            root: merged,
            persist,
            exclude,
            state: root.join("state"),
            cmdline,
            esp: Some(esp),
        },
        mounts,
    })
}

fn fold_into_slot_b(root: &Path) -> CaseResult {
    let s = setup(root, "a", "a")?;
    let p = &s.paths;
    let slot_a = files(&p.persist, "slot-b")?;
    ensure(
        fold(p, false).ctx("fold")?,
        "a fold into an empty slot needs no --yes",
    )?;
    ensure(
        files(&p.persist, "slot-b")? == slot_a,
        "slot a's files changed",
    )?;
    // Then GRUB tries slot b once; slot a stays the committed one.
    let env = Env::read(&p.esp.as_deref().ok_or("no ESP")?.join(GRUBENV)).ctx("grubenv")?;
    ensure(
        env.get("ramstick_trial") == Some("b") && env.get("ramstick_slot") == Some("a"),
        format!(
            "grubenv after the fold: {:?}",
            env.vars().collect::<Vec<_>>()
        ),
    )?;

    // The merged view alone (as the fold saw it), minus the exclusions.
    let view = root.join("view");
    fs::create_dir_all(&view).ctx("view")?;
    run(Command::new("mount").arg("--bind").arg(&p.root).arg(&view))?;
    let bound = Unmount(view.clone());
    // Copied to one filesystem first: the listing stays on its root's, and
    // the overlay shows its lowers' and upper's files with their devices.
    let copy = root.join("expected");
    fs::create_dir_all(&copy).ctx("copy")?;
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", view.display()))
        .arg(&copy))?;
    drop(bound);
    let exclude = fold_exclude(&p.exclude).ctx("exclude")?;
    let want = comparable(tree_listing(&copy).ctx("listing")?, &exclude);
    let base = p.persist.join("slot-b/rootfs.squashfs");
    let mnt = root.join("slot-b-base");
    fs::create_dir_all(&mnt).ctx("mnt")?;
    let mounted = Mounted::image(&base, "squashfs", &mnt, true)?;
    let got = comparable(tree_listing(&mnt).ctx("listing")?, &Exclude::none());
    let hostname = fs::read_to_string(mnt.join("etc/hostname")).unwrap_or_default();
    let mut leaks = Vec::new();
    for path in [
        "run/pid",
        "persist/user",
        "tmp/junk",
        "etc/removed",
        "boot/vmlinuz-6.1.0-57-amd64",
        "lib/modules/6.2.0-new",
        "lib/modules/6.1.0-57-amd64",
    ] {
        if mnt.join(path).symlink_metadata().is_ok() {
            leaks.push(path);
        }
    }
    let kept: Vec<bool> = [
        "boot",
        "lib/modules",
        "lib/firmware",
        "tmp",
        "run",
        "persist",
    ]
    .iter()
    .map(|d| mnt.join(d).is_dir())
    .collect();
    let saved = fs::read_to_string(mnt.join("etc/saved")).unwrap_or_default();
    drop(mounted);
    ensure_same("the folded base (kernel mount)", &want, &got)?;
    ensure(leaks.is_empty(), format!("the base holds {leaks:?}"))?;
    ensure(
        kept.iter().all(|k| *k),
        format!("mount points kept: {kept:?}"),
    )?;
    ensure(
        hostname == "this session\n",
        format!("hostname {hostname:?}"),
    )?;
    ensure(
        saved == "from an earlier session\n",
        "the saved layer folded",
    )?;

    let text = fs::read_to_string(p.persist.join("slot-b/slot.json")).ctx("slot.json")?;
    let record = SlotRecord::parse(&text).ctx("slot.json")?;
    let (_, digest) = ramstick_squash::meta_digest(&base).ctx("digest")?;
    ensure(record.origin == SlotOrigin::Fold, "origin")?;
    ensure(record.source_slot.as_deref() == Some("a"), "source slot")?;
    ensure(record.base == digest, "the record names the base's digest")?;
    let entries: Vec<String> = fs::read_dir(p.persist.join("slot-b"))
        .ctx("slot-b")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut entries = entries;
    entries.sort();
    ensure(
        entries == ["rootfs.squashfs", "slot.json"],
        format!("slot-b holds {entries:?} (its chain starts empty)"),
    )?;

    // Slot b holds something now: without --yes, nothing is written.
    fs::create_dir_all(p.persist.join("slot-b/layers")).ctx("b layers")?;
    fs::write(p.persist.join("slot-b/layers/manifest.json"), "b\n").ctx("b chain")?;
    let before = files(&p.persist, "")?;
    ensure(!fold(p, false).ctx("fold")?, "a second fold without --yes")?;
    ensure(
        files(&p.persist, "")? == before,
        "a fold without --yes wrote",
    )?;
    ensure(fold(p, true).ctx("fold --yes")?, "fold --yes")?;
    ensure(
        files(&p.persist, "slot-b")? == slot_a,
        "slot a's files changed",
    )?;
    // Then GRUB tries slot b once; slot a stays the committed one.
    let env = Env::read(&p.esp.as_deref().ok_or("no ESP")?.join(GRUBENV)).ctx("grubenv")?;
    ensure(
        env.get("ramstick_trial") == Some("b") && env.get("ramstick_slot") == Some("a"),
        format!(
            "grubenv after the fold: {:?}",
            env.vars().collect::<Vec<_>>()
        ),
    )?;
    ensure(
        !p.persist.join("slot-b/layers").exists(),
        "the replaced slot's chain is gone",
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

fn refuses(root: &Path) -> CaseResult {
    // Running b, a committed (b on trial): the target is a, the committed slot.
    let s = setup(root, "b", "a")?;
    let before = files(&s.paths.persist, "")?;
    let err = format!(
        "{:#}",
        fold(&s.paths, true).err().ok_or("folded into slot a")?
    );
    ensure(err.contains("slot a is the committed slot"), &err)?;
    // Running a, b committed (its trial passed, a not yet rebooted).
    fs::write(&s.paths.cmdline, "ramstick.slot=a").ctx("cmdline")?;
    grubenv(&s.paths.esp.as_deref().ok_or("no ESP")?.join(GRUBENV), "b")?;
    let err = format!(
        "{:#}",
        fold(&s.paths, true).err().ok_or("folded into slot b")?
    );
    ensure(err.contains("slot b is the committed slot"), &err)?;
    ensure(
        files(&s.paths.persist, "")? == before,
        "a refused fold wrote",
    )?;
    Ok(ramstick_testkit::Outcome::Passed)
}

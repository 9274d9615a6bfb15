//! Hook selection per init system on small trees, the inittab edits, and
//! the pseudo files through a real mksquashfs.

use super::*;
use ramstick_testkit::TempDir;

/// The paths of the plan's entries.
fn paths(plan: &Plan) -> Vec<String> {
    plan.entries.iter().map(|e| e.path.clone()).collect()
}

/// The plan's entry for `path`.
fn entry<'a>(plan: &'a Plan, path: &str) -> &'a Entry {
    plan.entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path} in {:?}", paths(plan)))
}

const ELF: &str = "\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";
const DEBIAN_INITTAB: &str = "id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\n\
    ~~:S:wait:/sbin/sulogin --force\nl0:0:wait:/etc/init.d/rc 0\nl1:1:wait:/etc/init.d/rc 1\n\
    l2:2:wait:/etc/init.d/rc 2\nl6:6:wait:/etc/init.d/rc 6\n\
    1:2345:respawn:/sbin/getty --noclear 38400 tty1\n";

/// A Debian tree with systemd and dpkg, with /etc/init.d a link (to check
/// that paths are taken through symlinked directories).
fn debian_systemd() -> TempDir {
    let t = TempDir::new("systemd");
    t.file("lib/systemd/systemd", ELF, 0o755)
        .link("sbin/init", "/lib/systemd/systemd")
        .file("var/lib/dpkg/status", "", 0o644)
        .file(
            "etc/kernel/postinst.d/initramfs-tools",
            "#!/bin/sh\n",
            0o755,
        );
    t
}

#[test]
fn systemd_gets_its_unit_enabled_the_exclusions_and_the_kernel_hooks() {
    let t = debian_systemd();
    let plan = plan(t.path(), Saver::Required).unwrap();
    assert_eq!(plan.init, Some(InitSystem::Systemd));
    assert_eq!(
        paths(&plan),
        [
            "etc/systemd",
            "etc/systemd/system",
            "etc/systemd/system/ramstick-saver.service",
            "etc/systemd/system/multi-user.target.wants",
            "etc/systemd/system/multi-user.target.wants/ramstick-saver.service",
            "etc/ramstick",
            "etc/ramstick/exclude",
            "etc/kernel/postinst.d/zz-ramstick",
            "etc/kernel/postrm.d",
            "etc/kernel/postrm.d/zz-ramstick",
        ]
    );
    let link = &plan.entries[4];
    assert_eq!(
        link.body,
        Body::Symlink("/etc/systemd/system/ramstick-saver.service".into())
    );
    let lines = plan.describe();
    assert!(
        lines.contains(&"added /etc/systemd/system/ramstick-saver.service (file)".to_string()),
        "{lines:?}"
    );
    // Applied, the tree has the hook, and a second plan adds nothing.
    plan.apply(t.path()).unwrap();
    assert_eq!(initsys::hook_present(t.path(), InitSystem::Systemd), Ok(()));
    let again = plan_of(&t);
    assert!(again.entries.is_empty(), "{:?}", again.entries);
    assert_eq!(again.notes, ["the tree has the systemd saver hook already"]);
}

fn plan_of(t: &TempDir) -> Plan {
    plan(t.path(), Saver::Required).unwrap()
}

#[test]
fn openrc_gets_its_service_in_the_default_runlevel_through_a_linked_init_d() {
    let t = TempDir::new("openrc");
    t.file("bin/busybox", ELF, 0o755)
        .link("sbin/init", "/bin/busybox")
        .file("etc/inittab", "::sysinit:/sbin/openrc sysinit\n", 0o644)
        .file("etc/rc.d/init.d/localmount", "#!/sbin/openrc-run\n", 0o755)
        .link("etc/init.d", "rc.d/init.d")
        .file("etc/runlevels/boot/.keep", "", 0o644)
        .file("etc/ramstick/exclude", "/tmp/*\n", 0o644);
    let plan = plan_of(&t);
    assert_eq!(plan.init, Some(InitSystem::OpenRc));
    assert_eq!(
        paths(&plan),
        [
            "etc/rc.d/init.d/ramstick-saver",
            "etc/runlevels/default",
            "etc/runlevels/default/ramstick-saver",
        ]
    );
    plan.apply(t.path()).unwrap();
    assert_eq!(initsys::hook_present(t.path(), InitSystem::OpenRc), Ok(()));
    // The tree's own exclusion list is kept.
    assert_eq!(
        std::fs::read_to_string(t.path().join("etc/ramstick/exclude")).unwrap(),
        "/tmp/*\n"
    );
}

#[test]
fn sysvinit_and_busybox_get_the_script_and_their_inittab_edited() {
    let t = TempDir::new("sysv");
    t.file("sbin/init", ELF, 0o755)
        .file("etc/inittab", DEBIAN_INITTAB, 0o644)
        .file("etc/init.d/rc", "#!/bin/sh\n", 0o755);
    let plan = plan_of(&t);
    assert_eq!(plan.init, Some(InitSystem::SysVinit));
    let inittab = entry(&plan, "etc/inittab");
    assert!(inittab.replaces);
    plan.apply(t.path()).unwrap();
    assert_eq!(
        initsys::hook_present(t.path(), InitSystem::SysVinit),
        Ok(())
    );
    assert_eq!(
        std::fs::metadata(t.path().join(SERVICE_PATH))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );

    let b = TempDir::new("busybox");
    b.file("bin/busybox", ELF, 0o755)
        .link("sbin/init", "../bin/busybox");
    let plan = plan_of(&b);
    assert_eq!(plan.init, Some(InitSystem::Busybox));
    let inittab = entry(&plan, "etc/inittab");
    assert!(!inittab.replaces);
    plan.apply(b.path()).unwrap();
    assert_eq!(initsys::hook_present(b.path(), InitSystem::Busybox), Ok(()));
}

#[test]
fn the_sysvinit_lines_go_before_the_halt_and_reboot_runlevels() {
    let out = sysvinit_inittab(DEBIAN_INITTAB).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).unwrap();
    assert_eq!(
        at("rsS:2345:once:/etc/init.d/ramstick-saver start"),
        at("l0:") - 2
    );
    assert_eq!(
        at("rsK:06:wait:/etc/init.d/ramstick-saver stop"),
        at("l0:") - 1
    );
    // Everything else is as it was, in order.
    let rest: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("rs") && !l.starts_with("# ramstick"))
        .collect();
    assert_eq!(rest, DEBIAN_INITTAB.lines().collect::<Vec<_>>());
    let taken = format!("{DEBIAN_INITTAB}rsK:3:respawn:/bin/other\n");
    assert!(sysvinit_inittab(&taken)
        .unwrap_err()
        .to_string()
        .contains("id rsK"));
}

#[test]
fn the_busybox_lines_go_after_sysinit_and_before_the_unmount() {
    let skel =
        std::fs::read_to_string(crate::workspace_root().join("rootfs-skel/busybox/etc/inittab"))
            .unwrap();
    let out = busybox_inittab(Some(&skel));
    let entries: Vec<String> = initsys::inittab_lines(&out)
        .map(|l| format!("{}:{}", l.action, l.process))
        .collect();
    assert_eq!(
        entries,
        [
            "sysinit:/etc/init.d/rcS",
            "sysinit:/etc/init.d/ramstick-saver start",
            "respawn:-/bin/sh",
            "respawn:-/bin/sh",
            "ctrlaltdel:/sbin/reboot",
            "shutdown:/etc/init.d/ramstick-saver stop",
            "shutdown:/bin/umount -a -r",
        ]
    );
    // Without an inittab: busybox's built-in table plus ours.
    let builtin = busybox_inittab(None);
    assert!(builtin
        .starts_with("::sysinit:/etc/init.d/rcS\n::sysinit:/etc/init.d/ramstick-saver start\n"));
    assert!(builtin
        .contains("::shutdown:/etc/init.d/ramstick-saver stop\n::shutdown:/sbin/swapoff -a\n"));
    // No sysinit or shutdown lines at all: ours still come first and last.
    let bare = busybox_inittab(Some("ttyS0::respawn:-/bin/sh\n"));
    assert!(bare.starts_with("::sysinit:/etc/init.d/ramstick-saver start\n"));
    assert!(bare.ends_with("::shutdown:/etc/init.d/ramstick-saver stop\n"));
}

#[test]
fn an_unknown_init_is_refused_unless_no_saver() {
    let t = TempDir::new("unknown");
    t.file("bin/bash", ELF, 0o755)
        .link("sbin/init", "/bin/bash");
    let err = plan(t.path(), Saver::Required).unwrap_err().to_string();
    assert!(
        err.contains("looked for systemd") && err.contains("--no-saver"),
        "{err}"
    );
    let plan = plan(t.path(), Saver::None).unwrap();
    assert_eq!(plan.init, None);
    assert_eq!(
        paths(&plan),
        ["etc", "etc/ramstick", "etc/ramstick/exclude"]
    );
    assert!(plan.notes[0].contains("sessions are not saved"), "{plan:?}");
    // --no-saver on a known init adds no hook either.
    let d = debian_systemd();
    let none = super::plan(d.path(), Saver::None).unwrap();
    assert!(!paths(&none).iter().any(|p| p.contains("ramstick-saver")));
}

/// The pseudo files through the host's mksquashfs: the image holds the
/// hook (the replaced inittab with its new content), the tree is unchanged.
#[test]
fn mksquashfs_puts_the_entries_into_the_image_and_leaves_the_tree() {
    use ramstick_testkit::{have, skip, MKSQUASHFS, UNSQUASHFS};
    if !have(MKSQUASHFS.0) || !have(UNSQUASHFS.0) {
        skip("no mksquashfs/unsquashfs");
        return;
    }
    let t = TempDir::new("squash");
    t.file("sbin/init", ELF, 0o755)
        .file("etc/inittab", DEBIAN_INITTAB, 0o644)
        .file("etc/init.d/rc", "#!/bin/sh\n", 0o755);
    let plan = plan_of(&t);
    let work = TempDir::new("squash-work");
    let (pseudo, excludes) = plan.mksquashfs_args(work.path()).unwrap();
    assert_eq!(excludes, ["etc/inittab"]);
    let image = work.path().join("root.squashfs");
    let mut cmd = crate::deps::cmd("mksquashfs");
    cmd.arg(t.path())
        .arg(&image)
        .args(["-noappend", "-quiet", "-no-progress", "-all-root"]);
    for p in &pseudo {
        cmd.args(["-p", p]);
    }
    cmd.args(["-wildcards", "-e"]).args(&excludes);
    crate::deps::run(&mut cmd).unwrap();
    let out = work.path().join("out");
    crate::deps::run(
        crate::deps::cmd("unsquashfs")
            .args(["-q", "-no-progress", "-d"])
            .arg(&out)
            .arg(&image),
    )
    .unwrap();
    assert_eq!(initsys::hook_present(&out, InitSystem::SysVinit), Ok(()));
    let inittab = std::fs::read_to_string(out.join("etc/inittab")).unwrap();
    assert!(inittab.contains("rsK:06:wait:"), "{inittab}");
    assert_eq!(
        std::fs::read_to_string(t.path().join("etc/inittab")).unwrap(),
        DEBIAN_INITTAB
    );
    assert!(!t.path().join(SERVICE_PATH).exists());
}

//! Detection and hook checks on small trees shaped like the real ones
//! (Debian with systemd, merged /usr, Alpine, Debian with OpenRC or
//! sysvinit, busybox).

use super::*;
use ramstick_testkit::TempDir;

/// What init detects in the tree `t`.
fn detected(t: &Path) -> Result<InitSystem, Unrecognised> {
    detect(t, "/sbin/init")
}

/// The start of an ELF program (what `is_elf` looks at).
const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";
/// Debian's sysvinit-core inittab, shortened.
const SYSV_INITTAB: &str = "# /etc/inittab: init(8) configuration.\nid:2:initdefault:\n\
    si::sysinit:/etc/init.d/rcS\nl0:0:wait:/etc/init.d/rc 0\nl2:2:wait:/etc/init.d/rc 2\n\
    l6:6:wait:/etc/init.d/rc 6\n1:2345:respawn:/sbin/getty --noclear 38400 tty1\n";

#[test]
fn systemd_with_absolute_and_merged_usr_links() {
    let t = TempDir::new("systemd");
    t.file("lib/systemd/systemd", ELF, 0o755)
        .link("sbin/init", "/lib/systemd/systemd");
    assert_eq!(detected(&t), Ok(InitSystem::Systemd));
    let merged = TempDir::new("merged");
    merged
        .link("sbin", "usr/sbin")
        .link("lib", "usr/lib")
        .file("usr/lib/systemd/systemd", ELF, 0o755)
        .link("usr/sbin/init", "../lib/systemd/systemd");
    assert_eq!(detected(&merged), Ok(InitSystem::Systemd));
}

#[test]
fn systemd_hook_must_be_installed_unmasked_and_enabled() {
    let t = TempDir::new("systemd-hook");
    t.file("lib/systemd/systemd", ELF, 0o755)
        .link("sbin/init", "/lib/systemd/systemd");
    let err = hook_present(&t, InitSystem::Systemd).unwrap_err();
    assert!(err.contains("not installed"), "{err}");
    t.link(SYSTEMD_UNIT_PATH, "/dev/null");
    assert!(hook_present(&t, InitSystem::Systemd)
        .unwrap_err()
        .contains("masked"));
    t.file(SYSTEMD_UNIT_PATH, b"[Unit]\n", 0o644);
    let err = hook_present(&t, InitSystem::Systemd).unwrap_err();
    assert!(err.contains("not enabled"), "{err}");
    t.link(
        &format!("{SYSTEMD_WANTS}/{SYSTEMD_UNIT}"),
        "/etc/systemd/system/ramstick-saver.service",
    );
    assert_eq!(hook_present(&t, InitSystem::Systemd), Ok(()));
    // A unit shipped in /usr/lib, enabled by another target, counts too.
    let other = TempDir::new("systemd-usr");
    other
        .file("usr/lib/systemd/system/ramstick-saver.service", b"x", 0o644)
        .link(
            "etc/systemd/system/basic.target.wants/ramstick-saver.service",
            "/usr/lib/systemd/system/ramstick-saver.service",
        );
    assert_eq!(hook_present(&other, InitSystem::Systemd), Ok(()));
}

#[test]
fn openrc_on_alpine_debian_and_openrc_init() {
    let alpine = TempDir::new("alpine");
    alpine
        .file("bin/busybox", ELF, 0o755)
        .link("sbin/init", "/bin/busybox")
        .file(
            "etc/inittab",
            b"::sysinit:/sbin/openrc sysinit\n::wait:/sbin/openrc default\n",
            0o644,
        );
    assert_eq!(detected(&alpine), Ok(InitSystem::OpenRc));
    let debian = TempDir::new("debian-openrc");
    debian
        .file("sbin/init", ELF, 0o755)
        .file("etc/inittab", SYSV_INITTAB.as_bytes(), 0o644)
        .file(
            "etc/init.d/rcS",
            b"#!/bin/sh\n# Wrapper of OpenRC called from inittab\nexec /sbin/openrc sysinit\n",
            0o755,
        );
    assert_eq!(detected(&debian), Ok(InitSystem::OpenRc));
    let openrc_init = TempDir::new("openrc-init");
    openrc_init
        .file("sbin/openrc-init", ELF, 0o755)
        .link("sbin/init", "openrc-init");
    assert_eq!(detected(&openrc_init), Ok(InitSystem::OpenRc));
}

#[test]
fn openrc_hook_is_an_executable_service_in_a_runlevel() {
    let t = TempDir::new("openrc-hook");
    assert!(hook_present(&t, InitSystem::OpenRc)
        .unwrap_err()
        .contains("/etc/init.d/ramstick-saver is missing"));
    t.file(SERVICE_PATH, b"#!/sbin/openrc-run\n", 0o644);
    assert!(hook_present(&t, InitSystem::OpenRc)
        .unwrap_err()
        .contains("not an executable"));
    t.file(SERVICE_PATH, b"#!/sbin/openrc-run\n", 0o755);
    std::fs::create_dir_all(t.path().join("etc/runlevels/boot")).unwrap();
    assert!(hook_present(&t, InitSystem::OpenRc)
        .unwrap_err()
        .contains("in no runlevel"));
    t.link(
        "etc/runlevels/default/ramstick-saver",
        "/etc/init.d/ramstick-saver",
    );
    assert_eq!(hook_present(&t, InitSystem::OpenRc), Ok(()));
}

#[test]
fn sysvinit_is_init_with_an_inittab_and_no_openrc() {
    let t = TempDir::new("sysvinit");
    t.file("sbin/init", ELF, 0o755)
        .file("etc/inittab", SYSV_INITTAB.as_bytes(), 0o644)
        .file(
            "etc/init.d/rcS",
            b"#! /bin/sh\nexec /etc/init.d/rc S\n",
            0o755,
        )
        .file("etc/init.d/rc", b"#! /bin/sh\n# sysv-rc\n", 0o755);
    assert_eq!(detected(&t), Ok(InitSystem::SysVinit));
    let err = hook_present(&t, InitSystem::SysVinit).unwrap_err();
    assert!(
        err.contains("/etc/init.d/ramstick-saver is missing"),
        "{err}"
    );
    t.file(SERVICE_PATH, b"#!/bin/sh\n", 0o755);
    let stop_at_0 = format!("{SYSV_INITTAB}rsK:0:wait:{INITTAB_STOP}\n");
    t.file("etc/inittab", stop_at_0.as_bytes(), 0o644);
    let err = hook_present(&t, InitSystem::SysVinit).unwrap_err();
    assert!(err.contains("runlevels 0 and 6"), "{err}");
    let both = format!("{SYSV_INITTAB}rsK:06:wait:{INITTAB_STOP}\n");
    t.file("etc/inittab", both.as_bytes(), 0o644);
    assert_eq!(hook_present(&t, InitSystem::SysVinit), Ok(()));
    // A commented-out line does not count.
    let commented = format!("{SYSV_INITTAB}#rsK:06:wait:{INITTAB_STOP}\n");
    t.file("etc/inittab", commented.as_bytes(), 0o644);
    assert!(hook_present(&t, InitSystem::SysVinit).is_err());
}

#[test]
fn busybox_by_name_or_by_content() {
    let t = TempDir::new("busybox");
    t.file("bin/busybox", ELF, 0o755)
        .link("sbin/init", "../bin/busybox");
    assert_eq!(detected(&t), Ok(InitSystem::Busybox));
    let err = hook_present(&t, InitSystem::Busybox).unwrap_err();
    assert!(err.contains("no /etc/inittab"), "{err}");
    t.file(
        "etc/inittab",
        b"::sysinit:/etc/init.d/rcS\n::shutdown:/bin/umount -a -r\n",
        0o644,
    );
    assert!(hook_present(&t, InitSystem::Busybox).is_err());
    t.file(
        "etc/inittab",
        format!("::shutdown:{INITTAB_STOP}\n::shutdown:/bin/umount -a -r\n").as_bytes(),
        0o644,
    );
    assert_eq!(hook_present(&t, InitSystem::Busybox), Ok(()));
    // The line of older busybox trees, which ran the saver directly.
    t.file(
        "etc/inittab",
        b"::shutdown:/bin/sh -c \"test -x /run/ramstick/bin/saver && timeout 900 \
          /run/ramstick/bin/saver save\"\n",
        0o644,
    );
    assert_eq!(hook_present(&t, InitSystem::Busybox), Ok(()));
    // A hard-linked busybox named init, without an inittab.
    let copy = TempDir::new("busybox-copy");
    let mut program = ELF.to_vec();
    program.extend_from_slice(b"...BusyBox v1.35.0 (Debian 1:1.35.0-4+b3)...");
    copy.file("sbin/init", &program, 0o755);
    assert_eq!(detected(&copy), Ok(InitSystem::Busybox));
}

#[test]
fn unrecognised_inits_say_what_was_looked_for() {
    let t = TempDir::new("unknown");
    let e = detected(&t).unwrap_err();
    assert!(e.why.contains("does not exist"), "{e}");
    t.file("bin/bash", ELF, 0o755)
        .link("sbin/init", "/bin/bash");
    let e = detected(&t).unwrap_err();
    assert_eq!(e.why, "it is /bin/bash");
    let text = e.to_string();
    assert!(
        text.contains("/sbin/init") && text.contains(LOOKED_FOR),
        "{text}"
    );
    let script = TempDir::new("script");
    script.file("sbin/init", b"#!/bin/sh\nexec /bin/sh\n", 0o755);
    assert!(detected(&script)
        .unwrap_err()
        .why
        .contains("without /etc/inittab"));
}

#[test]
fn the_boot_check_gives_a_warning_with_a_fix_or_none() {
    let t = TempDir::new("check");
    t.file("bin/busybox", ELF, 0o755)
        .link("sbin/init", "../bin/busybox")
        .file("etc/inittab", b"::sysinit:/etc/init.d/rcS\n", 0o644);
    let c = check(t.path(), "/sbin/init");
    assert_eq!(c.init, Some(InitSystem::Busybox));
    let w = c.warning.unwrap();
    assert!(
        w.starts_with("this session will not be saved: the init system is busybox init and ")
            && w.contains("fix: rebuild the stick with `cargo xtask image"),
        "{w}"
    );
    t.file(
        "etc/inittab",
        format!("::shutdown:{INITTAB_STOP}\n").as_bytes(),
        0o644,
    );
    assert_eq!(
        check(t.path(), "/sbin/init"),
        HookCheck {
            init: Some(InitSystem::Busybox),
            warning: None
        }
    );
    let c = check(t.path(), "/bin/sh");
    assert_eq!(c.init, None);
    let w = c.warning.unwrap();
    assert!(
        w.contains("cannot tell the init system of /bin/sh") && w.contains("fix: run"),
        "{w}"
    );
}

#[test]
fn inittab_lines_keep_colons_in_the_command() {
    let text = "# comment\n\nid:2:initdefault:\nbad line\n\
                ::shutdown:/bin/sh -c \"a:b\"\n";
    let lines: Vec<InittabLine> = inittab_lines(text).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].action, "initdefault");
    assert_eq!(
        (lines[1].id, lines[1].runlevels, lines[1].process),
        ("", "", "/bin/sh -c \"a:b\"")
    );
}

//! The archive read back member by member: content, modes, device nodes,
//! the module closure and its index, order and inode numbers, and the
//! library closure against `ldd`.

use super::*;
use ramstick_testkit::{skip, tool, TempDir, CRYPTSETUP, LDD};

/// A scratch directory with fake programs, a skel tree and a tiny modules dir.
struct Fixture {
    root: TempDir,
}

const KVER: &str = "6.1.0-test";

impl Fixture {
    fn new(name: &str) -> Fixture {
        let root = TempDir::new(name);
        let m = format!("modules/{KVER}");
        for ko in [
            "kernel/fs/ext4/ext4.ko",
            "kernel/lib/crc16.ko",
            "kernel/crypto/crc32c_generic.ko",
            "kernel/lib/unrelated.ko",
            "kernel/drivers/md/dm-mod.ko",
            "kernel/drivers/md/dm-crypt.ko",
        ] {
            root.file(&format!("{m}/{ko}"), format!("module {ko}"), 0o644);
        }
        root.mkdir(format!("{m}/kernel/fs/squashfs"));
        root.file(
            &format!("{m}/modules.dep"),
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko\nkernel/lib/crc16.ko:\n\
             kernel/crypto/crc32c_generic.ko:\nkernel/lib/unrelated.ko:\n\
             kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\n\
             kernel/drivers/md/dm-mod.ko:\n",
            0o644,
        )
        .file(
            &format!("{m}/modules.softdep"),
            "softdep ext4 pre: crypto-crc32c\n",
            0o644,
        )
        .file(
            &format!("{m}/modules.alias"),
            "alias crypto-crc32c crc32c_generic\nalias fs-unrelated unrelated\n",
            0o644,
        )
        .file(
            &format!("{m}/modules.builtin"),
            "kernel/fs/squashfs/squashfs.ko\n",
            0o644,
        )
        .file(
            &format!("{m}/modules.order"),
            "kernel/lib/unrelated.ko\n",
            0o644,
        )
        .file("skel/etc/initrd-release", "NAME=test\n", 0o644);
        for bin in ["init", "saver"] {
            root.file(bin, format!("binary {bin}"), 0o644);
        }
        Fixture { root }
    }

    fn modules(&self) -> PathBuf {
        self.root.join("modules").join(KVER)
    }

    fn build(&self) -> Vec<u8> {
        let mut a = Archive::new();
        a.file("init", 0o755, &self.root.join("init"));
        a.file("bin/saver", 0o755, &self.root.join("saver"));
        a.host_tree(&self.root.join("skel"), "", Perms::Normalize)
            .unwrap();
        let warnings = a.modules(&self.modules(), KVER, false).unwrap();
        // The fixture has three of the boot modules.
        assert!(warnings.iter().any(|w| w.contains("boot module zram")));
        assert!(!warnings.iter().any(|w| w.contains("module ext4 ")));
        a.to_bytes(12, 0).unwrap()
    }
}

/// One member read back: (name, mode, ino, rdev, content).
type Archived = (String, u32, u32, (u32, u32), Vec<u8>);

fn members(archive: &[u8], mtime: u32) -> Vec<Archived> {
    let cpio = zstd::stream::decode_all(archive).unwrap();
    let mut rest: &[u8] = &cpio[..];
    let mut out = Vec::new();
    loop {
        let mut reader = cpio::newc::Reader::new(rest).unwrap();
        let e = reader.entry();
        if e.is_trailer() {
            break;
        }
        let meta = (
            e.name().to_string(),
            e.mode(),
            e.ino(),
            (e.rdev_major(), e.rdev_minor()),
        );
        assert_eq!((e.uid(), e.gid(), e.mtime()), (0, 0, mtime));
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
        out.push((meta.0, meta.1, meta.2, meta.3, data));
        rest = reader.finish().unwrap();
    }
    out
}

fn find<'a>(members: &'a [Archived], name: &str) -> &'a Archived {
    members
        .iter()
        .find(|m| m.0 == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn two_builds_are_byte_identical() {
    let fixture = Fixture::new("initrd-repro");
    assert_eq!(fixture.build(), fixture.build());
}

#[test]
fn archive_holds_files_nodes_skel_and_the_module_closure() {
    let fixture = Fixture::new("initrd-content");
    let members = members(&fixture.build(), 0);
    assert_eq!(find(&members, "init").1, 0o100755);
    assert_eq!(find(&members, "init").4, b"binary init");
    assert_eq!(find(&members, "bin/saver").4, b"binary saver");
    assert_eq!(
        (find(&members, "bin/sh").1, &find(&members, "bin/sh").4[..]),
        (0o120777, &b"busybox"[..])
    );
    assert_eq!(
        (
            find(&members, "dev/console").1,
            find(&members, "dev/console").3
        ),
        (0o020600, (5, 1))
    );
    assert_eq!(find(&members, "dev/null").3, (1, 3));
    assert_eq!(find(&members, "tmp").1, 0o041777);
    assert_eq!(find(&members, "sysroot").1, 0o040755);
    assert_eq!(find(&members, "etc/initrd-release").4, b"NAME=test\n");
    let m = format!("lib/modules/{KVER}/");
    for ko in [
        "kernel/fs/ext4/ext4.ko",
        "kernel/lib/crc16.ko",
        "kernel/crypto/crc32c_generic.ko",
    ] {
        assert_eq!(
            find(&members, &format!("{m}{ko}")).4,
            format!("module {ko}").as_bytes()
        );
    }
    assert!(members.iter().all(|x| !x.0.contains("unrelated.ko")));
    assert!(members.iter().all(|x| !x.0.ends_with("modules.order")));
    let dep = String::from_utf8(find(&members, &format!("{m}modules.dep")).4.clone()).unwrap();
    assert!(!dep.contains("unrelated"));
    let alias = String::from_utf8(find(&members, &format!("{m}modules.alias")).4.clone()).unwrap();
    assert_eq!(alias, "alias crypto-crc32c crc32c_generic\n");
    assert_eq!(
        find(&members, &format!("{m}modules.builtin")).4,
        b"kernel/fs/squashfs/squashfs.ko\n"
    );
    // The archived index resolves to the same closure.
    let db = ModDb::parse(
        &dep,
        &String::from_utf8_lossy(&find(&members, &format!("{m}modules.softdep")).4),
        &alias,
        "",
    );
    let order: Vec<String> = db
        .load_order(&["ext4"])
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(order, ["crc16", "crc32c_generic", "ext4"]);
    // Sorted, parents present, sequential inodes.
    let names: Vec<&String> = members.iter().map(|m| &m.0).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names
        .iter()
        .any(|n| *n == &format!("lib/modules/{KVER}/kernel/fs")));
    let inos: Vec<u32> = members.iter().map(|m| m.2).collect();
    assert_eq!(inos, (1..=members.len() as u32).collect::<Vec<_>>());
}

/// What the saver does on the stick: a copy of an archive (with a 0400 key
/// file) plus another kernel's modules.
#[test]
fn a_copy_keeps_its_modes_and_gets_new_modules() {
    let fixture = Fixture::new("initrd-kit");
    let kit = fixture.root.join("kit");
    for (path, mode) in [
        ("init", 0o755),
        ("bin/busybox", 0o755),
        (KEYFILE_IN_ARCHIVE, 0o400),
    ] {
        fixture.root.file(&format!("kit/{path}"), path, mode);
    }
    fixture.root.link("kit/bin/sh", "busybox");
    let mut a = Archive::new();
    a.host_tree(&kit, "", Perms::Keep).unwrap();
    a.modules(&fixture.modules(), "6.2.0-new", false).unwrap();
    let copy = members(&a.to_bytes(3, 7).unwrap(), 7);
    assert_eq!(find(&copy, KEYFILE_IN_ARCHIVE).1, 0o100400);
    assert_eq!(find(&copy, "init").4, b"init");
    assert_eq!(find(&copy, "bin/sh").4, b"busybox");
    assert!(copy
        .iter()
        .any(|m| m.0 == "lib/modules/6.2.0-new/kernel/fs/ext4/ext4.ko"));
    assert!(!copy.iter().any(|m| m.0.contains(KVER)));
    // Normalised, the same file is 0644.
    let mut b = Archive::new();
    b.host_tree(&kit, "", Perms::Normalize).unwrap();
    let normalised = members(&b.to_bytes(3, 0).unwrap(), 0);
    assert_eq!(find(&normalised, KEYFILE_IN_ARCHIVE).1, 0o100644);
}

#[test]
fn library_closure_matches_ldd() {
    // A glibc program of the host stands in for ramstick-unlock.
    let (Some(bin), Some(ldd)) = (tool(CRYPTSETUP.0), tool(LDD.0)) else {
        skip("no cryptsetup or ldd");
        return;
    };
    let bin = bin.as_path();
    let out = std::process::Command::new(ldd).arg(bin).output().unwrap();
    let ldd = String::from_utf8_lossy(&out.stdout).into_owned();
    // ldd lists every library of the closure as `soname => path (addr)`.
    let mut expected: Vec<String> = ldd
        .lines()
        .filter_map(|l| {
            l.trim()
                .split_once(" => ")
                .map(|(name, _)| name.to_string())
        })
        .collect();
    expected.sort();
    let interp = "/lib64/ld-linux-x86-64.so.2";
    let closure = library_closure(bin, LIBRARY_DIRS, interp).unwrap();
    let got: Vec<String> = closure.keys().cloned().collect();
    assert_eq!(got, expected);
    assert!(closure.values().all(|p| p.is_file() && p.is_absolute()));
    // A library in no directory is an error naming it.
    let err = library_closure(bin, &["/nonexistent"], interp).unwrap_err();
    assert!(format!("{err:#}").contains("which is in none of /nonexistent"));
}

#[test]
fn luks_members_are_added() {
    let Some(bin) = tool(CRYPTSETUP.0) else {
        skip("no cryptsetup");
        return;
    };
    let fixture = Fixture::new("initrd-luks");
    fixture.root.file("key", "k", 0o600);
    let mut a = Archive::new();
    a.luks(&bin, Some(&fixture.root.join("key")), LIBRARY_DIRS)
        .unwrap();
    assert_eq!(
        a.members["bin/ramstick-unlock"].body,
        Body::File(bin.clone())
    );
    assert_eq!(a.members[KEYFILE_IN_ARCHIVE].perm, 0o400);
    assert!(a.contains("lib64/ld-linux-x86-64.so.2"));
    assert!(a.contains("lib/x86_64-linux-gnu/libc.so.6"));
    assert!(a.contains("lib/x86_64-linux-gnu/libcryptsetup.so.12"));
}

#[test]
fn only_an_encrypted_sticks_archive_carries_dm_crypt() {
    let fixture = Fixture::new("initrd-luks-modules");
    let carried = |luks: bool| {
        let mut a = Archive::new();
        a.modules(&fixture.modules(), KVER, luks).unwrap();
        let all = members(&a.to_bytes(3, 0).unwrap(), 0);
        let dep = find(&all, &format!("lib/modules/{KVER}/modules.dep"))
            .4
            .clone();
        let names: Vec<String> = all.into_iter().map(|m| m.0).collect();
        (names, String::from_utf8(dep).unwrap())
    };
    let crypt = format!("lib/modules/{KVER}/kernel/drivers/md/dm-crypt.ko");
    let (plain, plain_dep) = carried(false);
    assert!(!plain.contains(&crypt), "{plain:?}");
    assert!(!plain_dep.contains("dm-crypt"), "{plain_dep}");
    let (luks, luks_dep) = carried(true);
    assert!(luks.contains(&crypt), "{luks:?}");
    assert!(luks.iter().any(|n| n.ends_with("dm-mod.ko")), "{luks:?}");
    assert!(
        luks_dep.contains("dm-crypt.ko: kernel/drivers/md/dm-mod.ko"),
        "{luks_dep}"
    );
}

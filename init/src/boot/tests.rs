//! The whole boot against the recording fakes, in a scratch root: the
//! files the boot reads with plain file operations (the module database,
//! sysfs, the device node, the initramfs the kit copies) are made there;
//! the system calls are recorded.

use super::*;
use crate::images::fake::RecordingImages;
use crate::sys::RecordingSys;
use crate::testplan::plan_for;
use ramstick_testkit::TempDir;

const KVER: &str = "6.1.0-56-amd64";

/// A machine with kernel [`KVER`], 2 GiB of RAM and `cmdline`, whose only
/// disk `vda` holds the ext4 `RAMSTICK` with the rootfs and modules images
/// (no firmware image).
fn machine(cmdline: &str) -> (TempDir, RecordingSys) {
    let root = TempDir::new("boot");
    let write = |path: &str, bytes: &[u8]| {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    // The planned modules are built in.
    write(&format!("lib/modules/{KVER}/modules.dep"), b"");
    let builtin: String = ["loop", "squashfs", "overlay", "ext4", "zram"]
        .iter()
        .map(|m| format!("kernel/{m}.ko\n"))
        .collect();
    write(
        &format!("lib/modules/{KVER}/modules.builtin"),
        builtin.as_bytes(),
    );
    std::fs::create_dir_all(root.join("sys/class/block/vda")).unwrap();
    let mut sb = vec![0u8; 4096];
    sb[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
    sb[1024 + 120..1024 + 128].copy_from_slice(b"RAMSTICK");
    write("dev/vda", &sb);
    write("bin/saver", b"saver");
    let mut sys = RecordingSys::new();
    for (path, text) in [
        ("proc/cmdline", cmdline.to_string()),
        ("proc/sys/kernel/osrelease", format!("{KVER}\n")),
        ("proc/meminfo", "MemTotal:        2097152 kB\n".to_string()),
        ("proc/uptime", "1.50 0.20\n".to_string()),
        ("sysroot/persist/rootfs.squashfs", String::new()),
        (
            &format!("sysroot/persist/modules-{KVER}.squashfs"),
            String::new(),
        ),
    ] {
        sys.files.insert(root.join(path), text);
    }
    // The programs init runs are the running system's (the fake runs them).
    sys.files
        .insert(crate::fsck::E2FSCK_IN_INITRAMFS.into(), String::new());
    (root, sys)
}

/// The recorded calls with the scratch root taken out of their paths.
fn calls(sys: &RecordingSys, root: &Path) -> Vec<String> {
    let prefix = root.to_string_lossy().to_string();
    sys.calls().iter().map(|c| c.replace(&prefix, "")).collect()
}

fn mounts_and_moves(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.starts_with("mount ") || c.starts_with("move "))
        .cloned()
        .collect()
}

/// The five API mounts, as recorded.
const API: [&str; 5] = [
    "mount proc proc /proc NOSUID|NODEV|NOEXEC ",
    "mount sysfs sysfs /sys NOSUID|NODEV|NOEXEC ",
    "mount devtmpfs devtmpfs /dev NOSUID mode=0755",
    "mount tmpfs tmpfs /run NOSUID|NODEV mode=0755",
    "mount tmpfs tmpfs /run/ramstick NOSUID|NODEV mode=0755",
];

/// The boot sets the process-wide failure policy: the tests that boot run
/// one at a time.
static BOOTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn booting() -> std::sync::MutexGuard<'static, ()> {
    BOOTING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn shell_never_holds_when_the_machine_facts_cannot_be_read() {
    let _one = booting();
    let (root, mut sys) = machine("ramstick.shell=never");
    sys.files.remove(&root.join("proc/meminfo"));
    failure::allow_shell(true);
    let Err(f) = boot(&sys, &RecordingImages::default(), &root);
    assert_eq!(f.what, "read the kernel version and RAM size");
    assert!(!failure::shell_allowed());
    let calls = calls(&sys, &root);
    assert_eq!(mounts_and_moves(&calls), API);
}

#[test]
fn a_fatal_command_line_problem_stops_before_any_mount_but_the_api_ones() {
    let _one = booting();
    let (root, sys) = machine("ramstick.luks=secret");
    let Err(f) = boot(&sys, &RecordingImages::default(), &root);
    assert_eq!(f.what, "use ramstick.luks=secret");
    let calls = calls(&sys, &root);
    assert_eq!(mounts_and_moves(&calls), API);
    let reads: Vec<&String> = calls
        .iter()
        .filter(|c| !c.starts_with("mkdir ") && !c.starts_with("mount "))
        .collect();
    assert_eq!(
        reads,
        [
            "read /proc/uptime",
            "read /proc/cmdline",
            "read /proc/sys/kernel/osrelease",
            "read /proc/meminfo",
        ]
    );
}

#[test]
fn a_boot_mounts_and_moves_in_the_planned_order_up_to_the_switch() {
    let _one = booting();
    let (root, sys) = machine("ramstick.upper=tmpfs ramstick.upper.size=256M");
    let images = RecordingImages::default();
    let Err(f) = boot(&sys, &images, &root);
    // The scratch root has no /sbin/init: the last step fails, before
    // anything of the initramfs is freed.
    assert_eq!(f.what, "start /sbin/init");
    assert!(
        format!("{:#}", f.cause).contains("/sbin/init does not exist in the new root"),
        "{:#}",
        f.cause
    );
    let calls = calls(&sys, &root);
    let mut expected: Vec<String> = API.iter().map(|s| s.to_string()).collect();
    expected.extend([
        "mount ext4 /dev/vda /sysroot/persist NOSUID|NODEV|NOATIME errors=remount-ro".to_string(),
        "mount tmpfs tmpfs /sysroot/upper NODEV size=268435456,mode=0755".to_string(),
        "mount squashfs /dev/loop0 /sysroot/rootfs RDONLY|NODEV ".to_string(),
        format!("mount squashfs /dev/loop1 /sysroot/modules-{KVER} RDONLY|NODEV "),
        // The scratch rootfs has none of the mount points: they are made
        // in a tree below it.
        "mount overlay overlay /sysroot/overlay_root - \
         lowerdir=/sysroot/rootfs:/run/ramstick/mountpoints,upperdir=/sysroot/upper/upper,\
         workdir=/sysroot/upper/work,index=off,metacopy=off,redirect_dir=off"
            .to_string(),
    ]);
    // The plan's moves, but the firmware's (not on the stick).
    expected.extend(
        plan_for("")
            .moves
            .iter()
            .filter(|m| m.from != "/sysroot/firmware")
            .map(|m| format!("move {} {}", m.from, m.at)),
    );
    assert_eq!(mounts_and_moves(&calls), expected);
    // e2fsck checks the device before it is mounted; boot.json is written
    // before the moves.
    let index = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix));
    assert!(index("run-bounded 120s /bin/e2fsck -p /dev/vda").is_some());
    assert!(index("run-bounded") < index("mount ext4"));
    assert!(index("write /run/ramstick/boot.json").is_some());
    assert!(index("write /run/ramstick/boot.json") < index("move "));
    // The real init's read-ahead starts once the overlay root is mounted.
    let warm = "spawn /proc/self/exe --warm /sysroot/overlay_root /sbin/init";
    assert!(index(warm).is_some(), "{calls:#?}");
    assert!(index("mount overlay") < index(warm));
    assert!(index(warm) < index("write /run/ramstick/boot.json"));
    // The kit: the scratch initramfs's saver, linked at /run/ramstick/bin.
    assert_eq!(
        std::fs::read_to_string(root.join("run/ramstick/bin/saver")).unwrap(),
        "saver"
    );
    // No saved state on the stick: no layer is checked.
    assert!(images.calls().is_empty(), "{:?}", images.calls());
}

mod trial;

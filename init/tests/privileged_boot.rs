//! Privileged integration test of init's real mount sequence on this host:
//! tmpfs and zram uppers, loop-mounted squashfs lowers, the unpack fallback
//! chain and the overlay with its hand-over moves — all under a scratch root
//! in a private mount namespace, with the same functions init runs at boot.
//!
//! Needs root, `mksquashfs` and `/bin/busybox` (for mke2fs); otherwise it
//! prints why it is skipped. Output ends with "N passed, M failed".

use nix::mount::{mount, MsFlags};
use ramstick_common::cmdline::{self, BootType};
use ramstick_common::plan::{make_plan, Facts, Plan};
use ramstick_init::mounts::{self, at};
use ramstick_init::sys::{LinuxSys, Sys};
use ramstick_init::unpack;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KVER: &str = "6.1.0-test";

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("privileged_boot: skipped: needs root (real loop/squashfs/overlay/zram mounts)");
        println!("0 passed, 0 failed, 1 skipped");
        return;
    }
    for tool in ["mksquashfs", "/bin/busybox"] {
        if !tool_exists(tool) {
            println!("privileged_boot: skipped: {tool} not found (apt-get install squashfs-tools busybox-static)");
            println!("0 passed, 0 failed, 1 skipped");
            return;
        }
    }
    // A private mount namespace: nothing here leaks to the host.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) {
        println!("privileged_boot: skipped: cannot unshare the mount namespace: {e}");
        println!("0 passed, 0 failed, 1 skipped");
        return;
    }
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        println!("privileged_boot: cannot make / private: {e}");
        std::process::exit(1);
    }
    type Case = fn() -> Result<(), String>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "tmpfs upper, default boot unpacks upperfs",
            case_tmpfs_default,
        ),
        ("truncated upperfs falls back to backup", case_fallback),
        ("clean boot ignores upperfs", case_clean),
        (
            "zram upper is ext2 with xattrs, clean under e2fsck",
            case_zram,
        ),
        ("missing rootfs names the image", case_missing_rootfs),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        match case() {
            Ok(()) => {
                println!("ok   {name}");
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {name}: {e}");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn tool_exists(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn plan_for(line: &str) -> Plan {
    let (cfg, problems) = cmdline::parse(line);
    make_plan(
        &cfg,
        problems,
        &Facts {
            kernel_version: KVER.into(),
            mem_total_bytes: 1 << 30,
        },
    )
}

/// A scratch root on its own tmpfs with a stick's data partition in
/// `sysroot/persist`: rootfs, modules and the given upper images.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str, uppers: &[(&str, &str, bool)]) -> Result<Self, String> {
        let root = std::env::temp_dir().join(format!("ramstick-pb-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=512m"),
        )
        .map_err(|e| format!("tmpfs: {e}"))?;
        let persist = root.join("sysroot/persist");
        let src = root.join("src");
        std::fs::create_dir_all(&persist).map_err(|e| e.to_string())?;
        // The persist partition is a mount point at boot; a bind mount stands in.
        mount(
            Some(&persist),
            &persist,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind persist: {e}"))?;
        // rootfs with a file the upper will change and one it will delete.
        let rootfs = src.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(rootfs.join("lib/modules")).map_err(|e| e.to_string())?;
        std::fs::write(rootfs.join("etc/os-release"), "NAME=lower\n").map_err(|e| e.to_string())?;
        std::fs::write(rootfs.join("etc/doomed"), "x\n").map_err(|e| e.to_string())?;
        squash(&rootfs, &persist.join("rootfs.squashfs"))?;
        let modules = src.join("modules");
        std::fs::create_dir_all(modules.join("kernel")).map_err(|e| e.to_string())?;
        squash(&modules, &persist.join(format!("modules-{KVER}.squashfs")))?;
        for (image, marker, truncate) in uppers {
            let dir = src.join(image);
            std::fs::create_dir_all(dir.join("etc")).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("etc/marker"), marker).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("etc/os-release"), "NAME=upper\n")
                .map_err(|e| e.to_string())?;
            // A whiteout deleting etc/doomed, as overlayfs writes it.
            nix::sys::stat::mknod(
                &dir.join("etc/doomed"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o000),
                0,
            )
            .map_err(|e| format!("mknod whiteout: {e}"))?;
            // Some bulk so a truncated image fails while reading data.
            let noise: Vec<u8> = (0..4u32 << 20)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            std::fs::write(dir.join("noise.bin"), noise).map_err(|e| e.to_string())?;
            let img = persist.join(image);
            squash(&dir, &img)?;
            if *truncate {
                let len = std::fs::metadata(&img).map_err(|e| e.to_string())?.len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&img)
                    .map_err(|e| e.to_string())?;
                f.set_len(len / 2).map_err(|e| e.to_string())?;
            }
        }
        // The API filesystems, mounted by init's own code, so hand_over can move them.
        mounts::mount_api_filesystems(&LinuxSys::new(), &root).map_err(|e| format!("{e:#}"))?;
        Ok(Scratch { root })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&self.root)
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn squash(dir: &Path, image: &Path) -> Result<(), String> {
    sh(&format!(
        "mksquashfs '{}' '{}' -noappend -quiet -comp zstd -no-progress >/dev/null",
        dir.display(),
        image.display()
    ))
    .map(|_| ())
}

/// The sequence init runs from the upper to the hand-over.
fn run_sequence(s: &Scratch, plan: &Plan) -> Result<unpack::Outcome, String> {
    let sys = LinuxSys::new();
    let root = &s.root;
    mounts::setup_upper(&sys, root, plan).map_err(|e| format!("{e:#}"))?;
    let outcome = unpack::fill_upper(&sys, root, plan);
    let skipped = mounts::mount_lowers(&sys, root, plan).map_err(|e| format!("{e:#}"))?;
    mounts::mount_overlay(&sys, root, plan).map_err(|e| format!("{e:#}"))?;
    mounts::hand_over(&sys, root, plan, &skipped).map_err(|e| format!("{e:#}"))?;
    Ok(outcome)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
}

fn check(cond: bool, what: String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what)
    }
}

fn case_tmpfs_default() -> Result<(), String> {
    let s = Scratch::new("tmpfs", &[("upperfs.squashfs", "from-default", false)])?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=256M");
    let outcome = run_sequence(&s, &plan)?;
    check(
        outcome.used == BootType::Default,
        format!("used {:?}", outcome.used),
    )?;
    let newroot = at(&s.root, &plan.overlay_root);
    check(
        read(&newroot.join("etc/marker")) == "from-default",
        "marker not visible".into(),
    )?;
    check(
        read(&newroot.join("etc/os-release")) == "NAME=upper\n",
        "upper must win over lower".into(),
    )?;
    check(
        !newroot.join("etc/doomed").exists(),
        "whiteout did not hide etc/doomed".into(),
    )?;
    let mounts_text = read(Path::new("/proc/self/mounts"));
    for (dir, fstype) in [
        (newroot.join("persist"), "tmpfs"),
        (newroot.join("run"), "tmpfs"),
        (newroot.join("run/ramstick/upper"), "tmpfs"),
        (newroot.join("run/ramstick/lower"), "squashfs"),
        (newroot.join(format!("lib/modules/{KVER}")), "squashfs"),
    ] {
        let dir = dir.to_string_lossy().to_string();
        check(
            mounts_text.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&dir.as_str()) && f.get(2) == Some(&fstype)
            }),
            format!("{dir} is not a {fstype} mount"),
        )?;
    }
    // New files go to the RAM upper, never to the lower.
    std::fs::write(newroot.join("etc/new"), "n").map_err(|e| e.to_string())?;
    check(
        newroot.join("run/ramstick/upper/upper/etc/new").exists(),
        "write did not land in the upper".into(),
    )
}

fn case_fallback() -> Result<(), String> {
    let s = Scratch::new(
        "fallback",
        &[
            ("upperfs.squashfs", "from-default", true),
            ("upperfs-backup.squashfs", "from-backup", false),
        ],
    )?;
    let plan = plan_for("ramstick.upper=tmpfs ramstick.upper.size=256M");
    let outcome = run_sequence(&s, &plan)?;
    check(
        outcome.used == BootType::Backup,
        format!("used {:?}", outcome.used),
    )?;
    check(
        outcome
            .reasons
            .first()
            .map(|r| r.starts_with("upperfs.squashfs:"))
            .unwrap_or(false),
        format!("reasons {:?}", outcome.reasons),
    )?;
    let newroot = at(&s.root, &plan.overlay_root);
    check(
        read(&newroot.join("etc/marker")) == "from-backup",
        "backup marker not visible".into(),
    )?;
    let noise = std::fs::metadata(newroot.join("noise.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    check(
        noise == 4 << 20,
        format!("backup noise.bin has {noise} bytes"),
    )
}

fn case_clean() -> Result<(), String> {
    let s = Scratch::new("clean", &[("upperfs.squashfs", "from-default", false)])?;
    let plan = plan_for("ramstick.boot=clean ramstick.upper=tmpfs");
    let outcome = run_sequence(&s, &plan)?;
    check(
        outcome.used == BootType::Clean,
        format!("used {:?}", outcome.used),
    )?;
    let newroot = at(&s.root, &plan.overlay_root);
    check(
        !newroot.join("etc/marker").exists(),
        "clean boot shows the upper".into(),
    )?;
    check(
        read(&newroot.join("etc/os-release")) == "NAME=lower\n",
        "lower not visible".into(),
    )
}

fn case_zram() -> Result<(), String> {
    if !Path::new("/sys/class/zram-control").exists() {
        let _ = Command::new("modprobe").arg("zram").status();
    }
    if !Path::new("/sys/class/zram-control").exists() {
        println!("     (zram unavailable on this host kernel: case skipped)");
        return Ok(());
    }
    let s = Scratch::new("zram", &[("upperfs.squashfs", "from-default", false)])?;
    let plan = plan_for("ramstick.upper=zram ramstick.upper.size=64M ramstick.zram.alg=lz4");
    let sys = LinuxSys::new();
    let dev = mounts::setup_upper(&sys, &s.root, &plan).map_err(|e| format!("{e:#}"))?;
    let upper = at(&s.root, &plan.upper_mount);
    let result = (|| {
        let outcome = unpack::fill_upper(&sys, &s.root, &plan);
        check(
            outcome.used == BootType::Default,
            format!("used {:?}", outcome.used),
        )?;
        // trusted.* xattrs (what overlayfs writes) must work on the upper.
        sh(&format!(
            "setfattr -n trusted.overlay.opaque -v y '{}/upper/etc'",
            upper.display()
        ))?;
        let perms = std::fs::metadata(upper.join("upper"))
            .map_err(|e| e.to_string())?
            .permissions();
        check(perms.mode() & 0o777 != 0, "upper dir unreadable".into())?;
        sh(&format!("umount '{}'", upper.display()))?;
        sh(&format!("e2fsck -fn /dev/{dev}"))?;
        Ok(())
    })();
    let _ = sh(&format!("umount '{}' 2>/dev/null", upper.display()));
    let _ = sys.write_file(Path::new(&format!("/sys/block/{dev}/reset")), "1");
    if let Some(n) = dev.strip_prefix("zram") {
        if n != "0" {
            let _ = sys.write_file(Path::new("/sys/class/zram-control/hot_remove"), n);
        }
    }
    result
}

fn case_missing_rootfs() -> Result<(), String> {
    let s = Scratch::new("norootfs", &[])?;
    std::fs::remove_file(s.root.join("sysroot/persist/rootfs.squashfs"))
        .map_err(|e| e.to_string())?;
    let plan = plan_for("ramstick.upper=tmpfs");
    let err = match run_sequence(&s, &plan) {
        Ok(_) => return Err("boot went on without rootfs.squashfs".into()),
        Err(e) => e,
    };
    check(err.contains("rootfs.squashfs is missing"), err)
}

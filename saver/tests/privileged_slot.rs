//! `saver slot`'s file operations on a real stick, as root in a private
//! mount namespace (testkit's harness): a loop disk with the ESP (vfat,
//! `RAMSTICKESP`, its marker, `grub/grubenv`) and the persist partition; the
//! ESP found from the persist mount and mounted as the saver does, GRUB's
//! environment block rewritten in place and read back by GRUB's own
//! `grub-editenv`, the trial set, a trial GRUB started committed (the
//! watchdog a scratch file), and no ESP mount left behind.

use ramstick_common::grubenv::Env;
use ramstick_common::place::Slot;
use ramstick_saver::kernel::esp::mount_esp;
use ramstick_saver::slot::onstick::OnStick;
use ramstick_saver::slot::plan;
use ramstick_saver::slot::state::{self, SlotVars, GRUBENV};
use ramstick_saver::slot::{read_vars, set_trial};
use ramstick_testkit::{
    ensure, main_with, run, Case, CaseResult, Ctx, Mounted, Outcome, Root, Tool, GRUB_EDITENV,
    LOSETUP, MKFS_EXT4, MKFS_FAT, SFDISK,
};
use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

/// Adds a loop device's partitions (util-linux, as `blkid`).
const PARTX: Tool = ("partx", "util-linux");

fn main() -> ExitCode {
    main_with(
        "privileged_slot",
        &[Case::new("grubenv-on-a-real-esp", grubenv_on_a_real_esp)
            .root(&[Root::LoopDevices])
            .tools(&[SFDISK, MKFS_FAT, MKFS_EXT4, LOSETUP, PARTX, GRUB_EDITENV])],
    )
}

/// A loop device with partitions, detached on drop.
struct Disk(String);

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// `grub-editenv FILE list`, as `name=value` lines.
fn grub_list(file: &Path) -> Result<String, String> {
    run(Command::new("grub-editenv").arg(file).arg("list"))
}

fn grubenv_on_a_real_esp(root: &Path) -> CaseResult {
    // The kernel mounts the ESP only with vfat (a module it loads itself).
    let _ = Command::new("modprobe")
        .arg("vfat")
        .stderr(std::process::Stdio::null())
        .status();
    let filesystems = fs::read_to_string("/proc/filesystems").ctx("/proc/filesystems")?;
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("vfat"))
    {
        return Ok(Outcome::Skipped(
            "the running kernel has no vfat file system (the ESP's)".into(),
        ));
    }
    // The saver mounts the ESP under /run/ramstick: a tmpfs of this
    // namespace's own on /run.
    let _run = Mounted::tmpfs_sized(Path::new("/run"), "1m")?;

    let image = root.join("disk.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(96 << 20))
        .ctx("create the disk image")?;
    let mut sfdisk = Command::new("sfdisk");
    sfdisk.args(["--quiet", "--label", "gpt"]).arg(&image);
    sfdisk.stdin(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().ctx("sfdisk")?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, b"size=40M, type=U\ntype=L\n").ctx("sfdisk input")?;
    }
    ensure(child.wait().ctx("sfdisk")?.success(), "sfdisk failed")?;
    let dev = run(Command::new("losetup")
        .args(["--find", "--show", "--partscan"])
        .arg(&image))?
    .trim()
    .to_string();
    let disk = Disk(dev.clone());
    let (p1, p2) = (format!("{dev}p1"), format!("{dev}p2"));
    // The kernel's scan at attach may miss the table; partx adds it.
    for tries in 0..50 {
        if Path::new(&p2).exists() {
            break;
        }
        if tries == 5 {
            run(Command::new("partx").args(["--add", &dev]))?;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ensure(Path::new(&p2).exists(), format!("{p2} did not appear"))?;
    run(Command::new("mkfs.fat").args(["-F", "32", "-n", "RAMSTICKESP", &p1]))?;
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "RAMSTICK", &p2]))?;

    // The ESP as `cargo xtask image` leaves it: the marker and a block.
    let staging = root.join("staging");
    fs::create_dir_all(&staging).ctx("mkdir staging")?;
    {
        let _esp = mount(&p1, &staging, "vfat")?;
        fs::write(staging.join("ramstick-esp.id"), "test\n").ctx("write the marker")?;
        fs::create_dir_all(staging.join("grub")).ctx("mkdir grub")?;
        run(Command::new("grub-editenv")
            .arg(staging.join(GRUBENV))
            .arg("create"))?;
        run(Command::new("grub-editenv")
            .arg(staging.join(GRUBENV))
            .args(["set", "ramstick_slot=a"]))?;
    }
    let persist = root.join("persist");
    fs::create_dir_all(&persist).ctx("mkdir persist")?;
    let _persist = mount(&p2, &persist, "ext4")?;
    fs::write(persist.join("rootfs.squashfs"), "base a").ctx("base a")?;

    // Read as GRUB wrote it (read-only mount).
    let vars = read_vars(&persist).map_err(|e| format!("{e:#}"))?;
    ensure(vars == SlotVars::default(), format!("{vars:?}"))?;

    // An incomplete slot is refused, and nothing is written.
    let err = set_trial(&persist, Slot::B).map(drop).unwrap_err();
    ensure(
        format!("{err:#}").contains("not complete"),
        format!("try of an incomplete slot: {err:#}"),
    )?;
    fs::create_dir_all(persist.join("slot-b")).ctx("mkdir slot-b")?;
    fs::write(persist.join("slot-b/rootfs.squashfs"), "base b").ctx("base b")?;
    set_trial(&persist, Slot::B).map_err(|e| format!("{e:#}"))?;
    let vars = read_vars(&persist).map_err(|e| format!("{e:#}"))?;
    ensure(vars.trial == Some(Slot::B), format!("after try: {vars:?}"))?;

    // GRUB's own tool reads what we wrote; then it plays GRUB's part.
    {
        let esp = mount_esp(&persist).map_err(|e| format!("{e:#}"))?;
        let block = esp.dir.join(GRUBENV);
        let listed = grub_list(&block)?;
        ensure(
            listed.lines().any(|l| l == "ramstick_trial=b")
                && listed.lines().any(|l| l == "ramstick_tried=")
                && listed.lines().any(|l| l == "ramstick_slot=a"),
            format!("grub-editenv list after try:\n{listed}"),
        )?;
        ensure(
            fs::metadata(&block).ctx("stat grubenv")?.len() == 1024,
            "the block is no longer 1024 bytes",
        )?;
        run(Command::new("grub-editenv").arg(&block).args([
            "set",
            "ramstick_tried=b",
            "ramstick_trial=",
        ]))?;

        // The trial boot commits: the block, then the watchdog.
        let line = "ramstick.slot=b ramstick.trial=on";
        let running = state::running(line);
        let env = Env::read(&block).ctx("read the block")?;
        let steps = plan::plan_commit(&env, &running).map_err(|e| format!("{e:#}"))?;
        let watchdog = root.join("watchdog");
        fs::write(&watchdog, "").ctx("scratch watchdog")?;
        let mut stick = OnStick {
            watchdog: watchdog.clone(),
            ..OnStick::new(&esp.dir)
        };
        plan::run(&mut stick, &steps).map_err(|e| format!("{e:#}"))?;
        ensure(
            fs::read(&watchdog).ctx("read watchdog")? == b"V",
            "the watchdog did not get its V",
        )?;
        let listed = grub_list(&block)?;
        ensure(
            listed.lines().any(|l| l == "ramstick_slot=b")
                && listed.lines().any(|l| l == "ramstick_tried=")
                && listed.lines().any(|l| l == "ramstick_trial="),
            format!("grub-editenv list after commit:\n{listed}"),
        )?;
    }
    let vars = read_vars(&persist).map_err(|e| format!("{e:#}"))?;
    ensure(
        vars == SlotVars {
            committed: Slot::B,
            trial: None,
            tried: None,
        },
        format!("after commit: {vars:?}"),
    )?;
    // Every ESP mount the saver made is gone.
    let mounts = fs::read_to_string("/proc/self/mountinfo").ctx("mountinfo")?;
    ensure(
        !mounts.contains("/run/ramstick/esp"),
        format!("an ESP mount is left:\n{mounts}"),
    )?;
    drop(_persist);
    drop(disk);
    Ok(Outcome::Passed)
}

/// Mounts `dev` on `target` (a guard that unmounts it).
fn mount(dev: &str, target: &Path, fstype: &str) -> Result<Unmount, String> {
    nix::mount::mount(
        Some(dev),
        target,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .ctx(format!("mount {dev} on {}", target.display()))?;
    Ok(Unmount(target.to_path_buf()))
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

//! The boot sequence of PID 1, top to bottom. Every step either succeeds or
//! returns a [`Failure`] naming what failed and what to do; `main` sends
//! failures to the single failure path (emergency shell or reboot).

use ramstick_common::bootinfo::{BootInfo, BOOT_JSON};
use ramstick_common::cmdline::{self, ShellPolicy};
use ramstick_common::plan::{plan_of, Facts, Plan, API_MOUNTS, RUN_RAMSTICK};
use ramstick_common::slotboot::SlotBoot;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::failure::{self, Failure, Step};
use crate::images::Images;
use crate::kmsg::KmsgLogger;
use crate::modload::Loader;
use crate::mounts::at;
use crate::stopwatch::timed;
use crate::sys::Sys;
use crate::{extras, fsck, kit, layers, luks, mountpoints, mounts, switchroot, warm};
use ramstick_common::initsys;

/// For failures that only a broken kernel or initramfs can cause.
const REBUILD_HINT: &str =
    "the kernel or initramfs is broken; rebuild the stick (cargo xtask image) and report this message";

/// Boot: from the kernel's hand-over to exec of the real init, with the
/// system calls of `sys`, the codec of `images`, and every path under `root`
/// ("/" at boot; a scratch directory in the tests, which drive the whole
/// sequence with the recording fakes up to a chosen failure).
pub fn boot(sys: &dyn Sys, images: &dyn Images, root: &Path) -> Result<Infallible, Failure> {
    let mut t = Timings::new();

    // 1. API filesystems and logging.
    mounts::mount_api_filesystems(sys, root, &API_MOUNTS).step(
        "mount /proc, /sys, /dev and /run",
        "the kernel needs proc, sysfs, devtmpfs and tmpfs built in",
    )?;
    KmsgLogger::install(root);
    log::info!("starting");
    let uptime_at_start = uptime_ms(sys, root);
    // The copy of this initramfs's programs for the running system, beside
    // everything up to boot.json (see `kit`).
    let kit = kit::install_in_background(root, &at(root, RUN_RAMSTICK));

    // 2. Command line → plan; from here on its failure policy and log level.
    let line = sys
        .read_file(&at(root, "/proc/cmdline"))
        .step("read /proc/cmdline", REBUILD_HINT)?;
    // The failure policy depends on the command line alone: it is set from a
    // plan of unknown facts before reading them can fail, so that
    // `ramstick.shell=never` holds for that failure too.
    let facts = machine_facts(sys, root);
    let unknown = Facts {
        kernel_version: String::new(),
        mem_total_bytes: 0,
    };
    let policy = plan_of(&line, facts.as_ref().unwrap_or(&unknown));
    failure::allow_shell(policy.shell == ShellPolicy::Auto);
    KmsgLogger::set_debug(policy.log == cmdline::LogLevel::Debug);
    let facts = facts.step("read the kernel version and RAM size", REBUILD_HINT)?;
    let plan = plan_of(&line, &facts);
    report_problems(&plan)?;
    log::debug!("plan:\n{plan}");

    // 3. Kernel modules. The planned ones (filesystems, zram, dm-crypt) load
    // on a thread of their own: nothing needs them before the stick is found
    // and checked. Meanwhile the drivers for the hardware present load here
    // and init waits for the stick.
    let sysfs = at(root, "/sys");
    let moddir = at(root, "/lib/modules").join(&facts.kernel_version);
    let mut loader = Loader::open(&moddir, &sysfs).step(
        "read the kernel module database",
        "the initramfs was built for another kernel; rebuild it for this one (cargo xtask initramfs)",
    )?;
    let planned = loader.load_in_background(plan.modules.clone(), zram_algorithm(&plan));
    timed("modules: hardware", || loader.autoload_hardware());
    t.mark("modules");
    // A trial boot's watchdog, armed as early as possible: a hang from here
    // on restarts into the committed slot.
    let watchdog_armed = crate::trial::arm(sys, root, &plan, |module, params| {
        loader.load_with(module, params).map(drop)
    });

    // 4-5. The persist device (opening it first when it is encrypted).
    let device = luks::find_persist(sys, &plan, &mut loader, &sysfs, &at(root, "/dev"))?;
    log::info!("persist device: {}", device.display());
    t.mark("device_wait");
    fsck::check(sys, &device, Duration::from_secs(plan.persist_check_secs));
    t.mark("fsck");
    timed("modules: planned", || planned.wait()).step(
        "load kernel modules",
        "rebuild the initramfs for this kernel",
    )?;
    t.mark("modules_planned");
    mounts::mount_persist(sys, root, &device, &plan).step(
        "mount the persist partition",
        "run e2fsck on the stick's data partition from another machine",
    )?;
    t.mark("persist");

    // 6. The RAM upper.
    let upper = mounts::setup_upper(sys, root, &plan).step(
        "create the RAM upper",
        "boot with ramstick.upper=tmpfs, or a smaller ramstick.upper.size",
    )?;
    log::info!("upper: {upper}, {} bytes", plan.upper_size_bytes);
    t.mark("upper");

    // 7-8. The saved layers of the boot type's chain: checked, then mounted
    // or unpacked into RAM; the longest valid prefix is used.
    let chain = layers::assemble(sys, images, root, &plan);
    t.mark("layers");

    // 9-10. Lowers and the overlay.
    let skipped = mounts::mount_lowers(sys, root, &plan).step(
        "mount the system images",
        "rebuild the stick (cargo xtask image) or copy the missing image onto its data partition",
    )?;
    let below = mountpoints::missing_mount_points(root, &plan, &skipped).step(
        "make the mount points the rootfs lacks",
        "/run is full; boot with more RAM",
    )?;
    mounts::mount_overlay(sys, root, &plan, &chain.dirs, below.as_deref()).step(
        "mount the overlay root",
        "boot with ramstick.boot=clean; if that fails too, rebuild the stick",
    )?;
    let newroot = at(root, &plan.overlay_root);
    // The real init's program and libraries, read ahead by a process of
    // their own while the boot ends (see `warm`); a failure costs only time.
    let argv = warm::spawn_argv(&newroot, &plan.init);
    if let Err(e) = sys.spawn(&argv.iter().map(String::as_str).collect::<Vec<_>>()) {
        log::debug!("no read-ahead of {}: {e}", plan.init);
    }
    t.mark("mounts");

    // 11. Swap and the user's files (a failure here only costs that feature).
    let persist = at(root, &plan.persist_mount);
    if let Some(size) = plan.swap_bytes {
        if let Err(e) =
            extras::enable_swap(sys, root, &persist.join("swapfile"), size, plan.swappiness)
        {
            log::warn!("no swap: {e:#}");
        }
    }
    match extras::link_user_files(&persist.join("user"), &newroot, &plan.user) {
        Ok(0) => {}
        Ok(n) => log::info!(
            "linked {n} entries of /persist/user into /home/{}",
            plan.user
        ),
        Err(e) => log::warn!("cannot link /persist/user: {e:#}"),
    }

    t.mark("extras");

    // 10 (cont.). Whether this root saves its session at shutdown: said at
    // every boot where it will not (a session nobody saves is lost work).
    let hook = initsys::check(&newroot, &plan.init);
    if let Some(warning) = &hook.warning {
        log::error!("!!! {warning} !!!");
    }
    t.mark("hook_check");

    // The saver and this initramfs's kit, boot.json, the moves into the new root.
    timed("kit: wait", || kit.wait()).step(
        "copy the saver and the initramfs's programs to /run/ramstick",
        "the initramfs lacks /bin/saver or /run is full; rebuild it (cargo xtask initramfs)",
    )?;
    t.mark("kit");
    let info = BootInfo {
        asked: plan.boot_asked,
        used: chain.used,
        layers_mode: plan.layers.mode,
        saved: chain.saved,
        asked_chain: chain.asked_chain,
        layers: chain.layers,
        failures: chain.failures,
        notes: chain.notes,
        timings_ms: t.finish(uptime_at_start, uptime_ms(sys, root)),
        kernel: facts.kernel_version.clone(),
        upper: upper.clone(),
        problems: plan.problems.iter().map(|p| p.message.clone()).collect(),
        saver_hook: hook.into(),
        profile: plan.profile.clone(),
        state_dir: plan.layers.state_dir.clone(),
        slot: SlotBoot {
            slot: plan.slot,
            trial: plan.trial.is_some(),
            watchdog_armed,
            base_image: plan.base_image.clone(),
            base_digest: chain.base_digest,
            base_check: chain.base_check,
        },
    };
    sys.write_file(&at(root, BOOT_JSON), &info.to_json()).step(
        "write /run/ramstick/boot.json",
        "/run is full or read-only; boot with more RAM",
    )?;
    log_timings(&info);
    mounts::hand_over(sys, root, &plan, &skipped).step(
        "move the mounts into the new root",
        "the rootfs needs directories /persist, /run, /dev, /proc, /sys; rebuild it (cargo xtask image)",
    )?;

    // 12. switch_root.
    switchroot::switch_root(&newroot, &plan.init).step(
        &format!("start {}", plan.init),
        "boot with ramstick.init=<path of the init program in the rootfs>",
    )
}

/// zram's compression algorithm is a crypto module in some kernels (lzo-rle
/// in Debian's cloud kernel; built in in its amd64 one): load it when there
/// is one. A missing one is said when zram is set up (which falls back to
/// the kernel's default, or fails with a hint for `ramstick.upper=tmpfs`).
/// The module of the zram upper's compression algorithm, if the upper is zram
/// (built in or absent is fine: zram says so when it is set).
fn zram_algorithm(plan: &Plan) -> Option<String> {
    (plan.upper_kind == cmdline::UpperKind::Zram).then(|| {
        plan.zram_alg
            .as_deref()
            .unwrap_or(ZRAM_DEFAULT_ALGORITHM)
            .to_string()
    })
}

/// zram's compression algorithm when none is set (Linux 6.1).
const ZRAM_DEFAULT_ALGORITHM: &str = "lzo-rle";

/// Log every command-line problem; stop on a fatal one.
fn report_problems(plan: &Plan) -> Result<(), Failure> {
    for p in &plan.problems {
        if p.fatal {
            log::error!("{}", p.message);
        } else {
            log::warn!("{}", p.message);
        }
    }
    if let Some(p) = plan.problems.iter().find(|p| p.fatal) {
        return Err(Failure {
            what: format!("use {}={}", p.param, p.value),
            cause: anyhow::anyhow!("{}", p.message),
            hint: "edit the GRUB entry (press e) and fix the parameter".into(),
        });
    }
    Ok(())
}

/// Kernel version (uname -r, which the kernel also shows in
/// /proc/sys/kernel/osrelease) and total RAM.
fn machine_facts(sys: &dyn Sys, root: &Path) -> anyhow::Result<Facts> {
    let kernel_version = sys
        .read_file(&at(root, "/proc/sys/kernel/osrelease"))?
        .trim()
        .to_string();
    let meminfo = sys.read_file(&at(root, "/proc/meminfo"))?;
    let mem_total_bytes = ramstick_common::meminfo::mem_total(&meminfo)
        .ok_or_else(|| anyhow::anyhow!("no MemTotal in /proc/meminfo"))?;
    Ok(Facts {
        kernel_version,
        mem_total_bytes,
    })
}

/// Kernel uptime in ms (from /proc/uptime), 0 if unreadable.
fn uptime_ms(sys: &dyn Sys, root: &Path) -> u64 {
    sys.read_file(&at(root, "/proc/uptime"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|secs| (secs * 1000.0) as u64)
        .unwrap_or(0)
}

fn log_timings(info: &BootInfo) {
    let parts: Vec<String> = info
        .timings_ms
        .iter()
        .map(|(k, v)| format!("{k}={v}ms"))
        .collect();
    log::info!(
        "boot type used: {} (asked: {}); timings: {}",
        info.used,
        info.asked,
        parts.join(" ")
    )
}

/// Phase timings.
struct Timings {
    start: Instant,
    last: Instant,
    phases: BTreeMap<String, u64>,
}

impl Timings {
    fn new() -> Self {
        let now = Instant::now();
        Timings {
            start: now,
            last: now,
            phases: BTreeMap::new(),
        }
    }

    fn mark(&mut self, phase: &str) {
        let now = Instant::now();
        self.phases
            .insert(phase.to_string(), (now - self.last).as_millis() as u64);
        self.last = now;
    }

    fn finish(&self, uptime_at_start: u64, uptime_at_switch: u64) -> BTreeMap<String, u64> {
        let mut out = self.phases.clone();
        out.insert("total".into(), self.start.elapsed().as_millis() as u64);
        out.insert("kernel_uptime_at_init".into(), uptime_at_start);
        out.insert("kernel_uptime_at_switch".into(), uptime_at_switch);
        out
    }
}

#[cfg(test)]
mod tests;

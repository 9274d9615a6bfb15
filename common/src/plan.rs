//! Boot configuration → the concrete plan init executes.
//!
//! [`make_plan`] is pure: given the parsed [`Config`] and a few facts about the
//! machine (RAM size, kernel version) it decides every path, mount option and
//! fallback order. `init` executes exactly these values and
//! `init --dry-run` prints them (golden-tested in `tests/golden/`).

use crate::cmdline::{
    BootType, Config, DeviceSpec, LayersMode, LogLevel, Problem, SaveMode, ShellPolicy, Size,
    Trial, UpperKind, DEFAULT_PERSIST_LABEL,
};
use crate::manifest::{LAYERS_DIR, LEGACY_BACKUP_IMAGE, LEGACY_IMAGE, MANIFEST};
use crate::modules::LUKS_MODULES;
use crate::place::{self, Slot};
use crate::slotboot::{TRIAL_WATCHDOG_MODULE, WATCHDOG_DEVICE};
use serde::Serialize;
use std::fmt;

mod handover;
pub use handover::{ApiMount, Landing, Move, API_MOUNTS, RUN_RAMSTICK};

/// Facts about the running machine that the plan depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub kernel_version: String,
    pub mem_total_bytes: u64,
}

/// One read-only squashfs lower to loop-mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lower {
    /// Path on the persist filesystem, relative to its root, e.g. `rootfs.squashfs`.
    pub image: String,
    /// Mount point in the initramfs, e.g. `/sysroot/rootfs`.
    pub target: String,
    /// Whether boot must stop when the image is missing.
    pub required: bool,
    /// The image used instead when `image` is absent (slot `b`'s firmware:
    /// its own when it has one, else the root's).
    pub or_else: Option<String>,
}

/// How to unlock an encrypted persist partition.
///
/// A LUKS container is opened when `ramstick.luks` names one, or when the
/// device `ramstick.persist` finds has a LUKS header (auto-detection: the
/// LUKS2 label `RAMSTICK` matches the default `LABEL=RAMSTICK`). Either way
/// it becomes `/dev/mapper/<mapping>`, which holds the ext4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LuksPlan {
    /// `ramstick.luks`: the container to open before looking for the persist
    /// device. `None`: open only a container the persist spec finds.
    pub container: Option<DeviceSpec>,
    /// `ramstick.luks.keyfile`: a key file in the initramfs, tried before asking.
    pub keyfile: Option<String>,
    /// How many passphrases to ask for before the boot fails.
    pub tries: u32,
    /// The device-mapper name of the opened container.
    pub mapping: String,
    /// What the unlock needs loaded (dm-crypt and the cipher's modules).
    pub modules: Vec<String>,
}

impl LuksPlan {
    /// `/dev/mapper/<mapping>`.
    pub fn mapping_path(&self) -> String {
        format!("/dev/mapper/{}", self.mapping)
    }
}

/// The device-mapper name of the opened LUKS container.
pub const LUKS_MAPPING: &str = "ramstick";

/// How the saved layers are found and assembled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayersPlan {
    /// `ramstick.layers`: loop-mount each layer, or unpack each into RAM.
    pub mode: LayersMode,
    /// The saved state's directory, relative to the persist root
    /// ([`place::state_dir`]: "" for slot `a`'s default profile, `slot-b` for
    /// slot `b`'s, `profiles/<name>` for a profile): the manifest's and the
    /// layers' paths are relative to it.
    pub state_dir: String,
    /// The manifest, in the initramfs (`/sysroot/persist/<state dir>/layers/manifest.json`).
    pub manifest: String,
    /// The legacy images read when there is no manifest (default, backup):
    /// only in the persist root's state (a stick from before layers had
    /// neither profiles nor slots), so none for another state dir.
    pub legacy: Option<[String; 2]>,
    /// Where a layer is loop-mounted: `<dir>/<layer name without .squashfs>`.
    /// Under /run, so the mounts move into the new root with /run.
    pub mount_dir: String,
    /// Where a layer is unpacked in `ram` mode (in the upper filesystem, beside
    /// the overlay's upperdir and workdir).
    pub ram_dir: String,
}

impl LayersPlan {
    /// The persist-relative path of `file`, a path relative to the state
    /// directory (a chain's `layers/<name>`, a legacy image).
    pub fn file(&self, file: &str) -> String {
        place::join(&self.state_dir, file)
    }

    /// Where the layer `name` goes when assembled `how`.
    pub fn target(&self, name: &str, how: LayersMode) -> String {
        let stem = name.strip_suffix(".squashfs").unwrap_or(name);
        match how {
            LayersMode::Mount => format!("{}/{stem}", self.mount_dir),
            LayersMode::Ram => format!("{}/{stem}", self.ram_dir),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub problems: Vec<Problem>,
    /// The API filesystems, mounted first ([`API_MOUNTS`]: the same at every
    /// boot; mounted before the command line can be read).
    pub api_mounts: Vec<ApiMount>,
    /// Module names to load, in order (each after its dependencies is the loader's job).
    pub modules: Vec<String>,
    /// `ramstick.slot`: whose base and saved state boot.
    #[serde(serialize_with = "crate::slotboot::serde_slot::serialize")]
    pub slot: Slot,
    /// The slot's base image, relative to the persist root (the rootfs
    /// lower's image); a saved chain made on another base is not applied.
    pub base_image: String,
    /// `ramstick.trial=on`: the watchdog of a trial boot.
    pub trial: Option<TrialPlan>,
    pub persist_device: DeviceSpec,
    pub device_timeout_secs: u32,
    /// `/sysroot/persist`
    pub persist_mount: String,
    /// How long e2fsck may check the persist filesystem before it is
    /// mounted ([`PERSIST_CHECK_SECS`]).
    pub persist_check_secs: u64,
    /// The persist filesystem's mount(8)-style options ([`PERSIST_OPTIONS`]).
    pub persist_options: &'static str,
    pub upper_kind: UpperKind,
    pub upper_size_bytes: u64,
    pub zram_alg: Option<String>,
    /// `/sysroot/upper`
    pub upper_mount: String,
    /// The upper's mount(8)-style options ([`upper_options`]).
    pub upper_options: String,
    /// Boot type asked on the command line: which saved chain is used (see
    /// [`crate::chain`]).
    pub boot_asked: BootType,
    /// `ramstick.profile`: whose saved state is booted.
    pub profile: String,
    pub layers: LayersPlan,
    /// The rootfs first.
    pub lowers: Vec<Lower>,
    /// Where the rootfs lower is mounted: the overlay's lowest layer (below
    /// it only the mount points the rootfs lacks).
    pub rootfs: String,
    /// `/sysroot/overlay_root`
    pub overlay_root: String,
    /// The overlay mount option string with no saved layer (a chain's layers
    /// go above the rootfs: [`Plan::overlay_options_with`]).
    pub overlay_options: String,
    /// In order: the planned mounts, then the API filesystems, /run last. A
    /// move whose `from` is the target of an optional lower that was not
    /// mounted is skipped.
    pub moves: Vec<Move>,
    pub swap_bytes: Option<u64>,
    pub swappiness: u8,
    pub user: String,
    pub init: String,
    /// LUKS unlocking.
    pub luks: LuksPlan,
    /// What a failed boot ends in: an emergency shell, then a reboot
    /// (`auto`), or a reboot (`never`). Set as soon as the plan is made.
    pub shell: ShellPolicy,
    /// `debug`: the kernel log gets init's debug messages too (the plan
    /// among them).
    pub log: LogLevel,
    /// `off`: the saver never saves this session (it reads the same
    /// command line; init only shows it here).
    pub save: SaveMode,
    /// `console=` values from the command line (informational).
    pub consoles: Vec<String>,
}

/// A trial boot's watchdog (`ramstick.trial=on`): armed after the modules,
/// never disarmed by init, so the machine restarts unless the system
/// commits itself in time (the saver disarms it after the commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialPlan {
    /// `ramstick.trial.timeout`.
    pub timeout_secs: u32,
    /// The watchdog module ([`TRIAL_WATCHDOG_MODULE`]).
    pub module: String,
    /// Its parameters: `soft_margin=<timeout>`.
    pub module_params: String,
    /// The device opened, written once and closed without the magic `V`.
    pub device: String,
}

/// Below it, everything init mounts for the new root (the persist
/// partition, the upper, the images, the overlay); the loop-mounted layers
/// go to /run. The rest of the initramfs stays as it is (see init's kit).
pub const SYSROOT: &str = "/sysroot";
/// Where the persist partition is mounted in the initramfs.
pub const PERSIST_MOUNT: &str = "/sysroot/persist";
/// The longest e2fsck may check the persist filesystem. A clean filesystem
/// is checked in well under a second (only the superblock); a forced full
/// check of a big, slow stick takes longer, and a user waiting at boot
/// deserves an end: then the check is stopped and the boot goes on.
pub const PERSIST_CHECK_SECS: u64 = 120;
/// The persist filesystem's options: `nosuid,nodev` because nothing on the
/// stick's data partition is a program or a device of the running system;
/// `noatime` because reads must not write to the stick; `errors=remount-ro`
/// because a filesystem found damaged must not be written further.
pub const PERSIST_OPTIONS: &str = "nosuid,nodev,noatime,errors=remount-ro";
/// Where the upper filesystem (zram or tmpfs) is mounted in the initramfs.
pub const UPPER_MOUNT: &str = "/sysroot/upper";
/// Where the overlay (the new root) is mounted in the initramfs.
pub const OVERLAY_ROOT: &str = "/sysroot/overlay_root";
/// Where loop-mounted layers go (moves into the new root with /run).
pub const LAYER_MOUNTS: &str = "/run/ramstick/layers";
/// The firmware image, in the persist root or a slot's directory.
pub const FIRMWARE_IMAGE: &str = "firmware.squashfs";
/// Upper sizes are rounded down to whole pages of this size.
pub const PAGE_SIZE: u64 = 4096;

/// The overlay mount options for the lower layers `lowers` (top first, the
/// rootfs last) and an upper filesystem mounted at `upper_mount`.
///
/// Besides the three directories the options pin three features off, whatever
/// the kernel's build defaults are, because the upper is saved to a squashfs at
/// shutdown and reapplied at the next boot, possibly on top of a rebuilt
/// `rootfs.squashfs`, so it must be self-contained:
/// - `index=off`: an index records file handles of the lower; on a rebuilt
///   lower they are stale and the mount or lookups fail.
/// - `metacopy=off`: a metadata-only copy-up keeps its data in the lower, so a
///   saved upper would lose the file's contents once the lower changes.
/// - `redirect_dir=off`: a renamed lower directory becomes a redirect to the
///   old lower path instead of a real copy.
///
/// `xino` stays at the kernel default (off on Debian): it only changes the
/// inode numbers that `stat` reports.
///
/// The saved layers are lowers too: a layer holds an upperdir as it was
/// saved (whiteouts, opaque directories), which overlayfs honours in lower
/// layers as well, so the stack shows the saved system.
pub fn overlay_options(lowers: &[&str], upper_mount: &str) -> String {
    format!(
        "lowerdir={},upperdir={upper_mount}/upper,workdir={upper_mount}/work,\
         index=off,metacopy=off,redirect_dir=off",
        lowers.join(":")
    )
}

/// The plan of kernel command line `line` on a machine with `facts`:
/// [`crate::cmdline::parse`], then [`make_plan`].
pub fn plan_of(line: &str, facts: &Facts) -> Plan {
    let (cfg, problems) = crate::cmdline::parse(line);
    make_plan(&cfg, problems, facts)
}

/// Decides the boot plan from the parsed command line and machine facts.
///
/// `problems` are the ones [`crate::cmdline::parse`] returned; they are kept
/// in the plan so that init (and `--dry-run`) can report them.
pub fn make_plan(cfg: &Config, problems: Vec<Problem>, facts: &Facts) -> Plan {
    let kver = &facts.kernel_version;

    let mut modules: Vec<String> = ["loop", "squashfs", "overlay", "ext4"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    if cfg.upper == UpperKind::Zram {
        modules.push("zram".to_string());
    }
    if cfg.luks.device.is_some() {
        modules.extend(LUKS_MODULES.iter().map(|m| m.to_string()));
    }
    let luks = LuksPlan {
        container: cfg.luks.device.clone(),
        keyfile: cfg.luks.keyfile.clone(),
        tries: cfg.luks.tries,
        mapping: LUKS_MAPPING.to_string(),
        modules: LUKS_MODULES.iter().map(|m| m.to_string()).collect(),
    };
    // With ramstick.luks the persist partition is the opened container,
    // unless ramstick.persist names another device.
    let default_persist = DeviceSpec::Label(DEFAULT_PERSIST_LABEL.to_string());
    let persist_device = if luks.container.is_some() && cfg.persist == default_persist {
        DeviceSpec::Path(luks.mapping_path())
    } else {
        cfg.persist.clone()
    };

    let state_dir = place::state_dir(cfg.slot, Some(&cfg.profile));
    let layers = LayersPlan {
        mode: cfg.layers,
        manifest: format!(
            "{PERSIST_MOUNT}/{}",
            place::join(&state_dir, &format!("{LAYERS_DIR}/{MANIFEST}"))
        ),
        legacy: state_dir
            .is_empty()
            .then(|| [LEGACY_IMAGE.to_string(), LEGACY_BACKUP_IMAGE.to_string()]),
        state_dir,
        mount_dir: LAYER_MOUNTS.to_string(),
        ram_dir: format!("{UPPER_MOUNT}/layers"),
    };

    let rootfs = Lower {
        image: cfg.slot.base_image(),
        target: "/sysroot/rootfs".to_string(),
        required: true,
        or_else: None,
    };
    let kernel_modules = Lower {
        image: format!("modules-{kver}.squashfs"),
        target: format!("/sysroot/modules-{kver}"),
        required: true,
        or_else: None,
    };
    // A slot's own firmware when it has one, else the root's (shared).
    let slot_firmware = place::join(cfg.slot.dir(), FIRMWARE_IMAGE);
    let firmware = Lower {
        or_else: (slot_firmware != FIRMWARE_IMAGE).then(|| FIRMWARE_IMAGE.to_string()),
        image: slot_firmware,
        target: "/sysroot/firmware".to_string(),
        required: false,
    };
    let trial = (cfg.trial == Trial::On).then(|| TrialPlan {
        timeout_secs: cfg.trial_timeout_secs,
        module: TRIAL_WATCHDOG_MODULE.to_string(),
        module_params: format!("soft_margin={}", cfg.trial_timeout_secs),
        device: WATCHDOG_DEVICE.to_string(),
    });

    let moves = handover::moves(
        OVERLAY_ROOT,
        [
            (
                PERSIST_MOUNT,
                "/persist".to_string(),
                "the stick's data partition: the saver writes the next layers there",
            ),
            (
                UPPER_MOUNT,
                "/run/ramstick/upper".to_string(),
                "the session's changes, which the saver saves",
            ),
            (
                rootfs.target.as_str(),
                "/run/ramstick/lower".to_string(),
                "the rootfs as shipped, readable without the overlay",
            ),
            (
                kernel_modules.target.as_str(),
                format!("/lib/modules/{kver}"),
                "the running kernel's modules, for the new root's modprobe",
            ),
            (
                firmware.target.as_str(),
                "/lib/firmware".to_string(),
                "the drivers' firmware",
            ),
        ],
    );

    let upper_size = upper_size_bytes(cfg.upper_size, facts.mem_total_bytes);
    Plan {
        problems,
        api_mounts: API_MOUNTS.to_vec(),
        modules,
        slot: cfg.slot,
        base_image: rootfs.image.clone(),
        trial,
        persist_device,
        device_timeout_secs: cfg.timeout_secs,
        persist_mount: PERSIST_MOUNT.to_string(),
        persist_check_secs: PERSIST_CHECK_SECS,
        persist_options: PERSIST_OPTIONS,
        upper_kind: cfg.upper,
        upper_size_bytes: upper_size,
        zram_alg: match cfg.upper {
            UpperKind::Zram => cfg.zram_alg.clone(),
            UpperKind::Tmpfs => None,
        },
        upper_mount: UPPER_MOUNT.to_string(),
        upper_options: upper_options(cfg.upper, upper_size),
        boot_asked: cfg.boot,
        profile: cfg.profile.clone(),
        layers,
        overlay_root: OVERLAY_ROOT.to_string(),
        overlay_options: overlay_options(&[&rootfs.target], UPPER_MOUNT),
        rootfs: rootfs.target.clone(),
        lowers: vec![rootfs, kernel_modules, firmware],
        moves,
        swap_bytes: cfg.swap,
        swappiness: cfg.swappiness,
        user: cfg.user.clone(),
        init: cfg.init.clone(),
        luks,
        shell: cfg.shell,
        log: cfg.log,
        save: cfg.save,
        consoles: cfg.consoles.clone(),
    }
}

/// The upper's mount options. Both: `nodev`, as nothing in a session's
/// changes is a device of the running system. zram: `noatime`, as reading a
/// file must not cost RAM; `discard`, so that a deleted file's blocks are
/// given back to zram (its RAM is freed) at once. tmpfs: its size, as a
/// tmpfs without one may take half the RAM whatever was asked.
fn upper_options(kind: UpperKind, size_bytes: u64) -> String {
    match kind {
        UpperKind::Zram => "noatime,nodev,discard".to_string(),
        UpperKind::Tmpfs => format!("nodev,size={size_bytes},mode=0755"),
    }
}

/// `size` in bytes against `mem_total`, rounded down to whole pages but at
/// least one page (a zero size would mean "unlimited" to tmpfs).
fn upper_size_bytes(size: Size, mem_total: u64) -> u64 {
    let bytes = size.to_bytes(mem_total);
    (bytes - bytes % PAGE_SIZE).max(PAGE_SIZE)
}

impl Plan {
    /// Whether a problem stops the boot.
    pub fn has_fatal(&self) -> bool {
        self.problems.iter().any(|p| p.fatal)
    }

    /// The profile's state directory in the initramfs: where a chain's layer
    /// paths (`layers/<name>`) start.
    pub fn state_root(&self) -> String {
        place::join(&self.persist_mount, &self.layers.state_dir)
    }

    /// The legacy images that exist, by `exists` (relative to the persist
    /// root): none outside the persist root's state.
    pub fn legacy_present(&self, exists: impl Fn(&str) -> bool) -> [bool; 2] {
        match &self.layers.legacy {
            Some([default, backup]) => [exists(default), exists(backup)],
            None => [false, false],
        }
    }

    /// The overlay options with the saved layers at `layer_dirs` (bottom
    /// first, as a chain lists them) above the rootfs.
    pub fn overlay_options_with(&self, layer_dirs: &[String]) -> String {
        let mut lowers: Vec<&str> = layer_dirs.iter().rev().map(String::as_str).collect();
        lowers.push(&self.rootfs);
        overlay_options(&lowers, &self.upper_mount)
    }
}

/// `n bytes (1G)`: exact bytes, plus the size with a binary suffix when one divides it.
fn bytes_text(n: u64) -> String {
    let short = Size::Bytes(n).to_string();
    if short == n.to_string() {
        format!("{n} bytes")
    } else {
        format!("{n} bytes ({short})")
    }
}

impl fmt::Display for Plan {
    /// The stable text `init --dry-run` prints and `tests/golden/` holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ramstick boot plan")?;
        if self.problems.is_empty() {
            writeln!(f, "problems: none")?;
        } else {
            let fatal = self.problems.iter().filter(|p| p.fatal).count();
            writeln!(f, "problems: {} ({fatal} fatal)", self.problems.len())?;
            for p in &self.problems {
                let kind = if p.fatal { "FATAL" } else { "non-fatal" };
                writeln!(f, "  - {kind}: {}", p.message)?;
            }
        }
        for a in &self.api_mounts {
            writeln!(
                f,
                "api: {} on {} ({} {}): {}",
                a.fstype, a.target, a.source, a.options, a.why
            )?;
        }
        writeln!(f, "modules: {}", self.modules.join(" "))?;
        match &self.trial {
            None => writeln!(f, "trial: off")?,
            Some(t) => writeln!(
                f,
                "trial: on: load {} {}, then open {}, write once and close without 'V' \
                 (not disarmed: unless the system commits slot {} within {} s the machine \
                 restarts, and GRUB boots the committed slot); a failure to arm is a warning",
                t.module, t.module_params, t.device, self.slot, t.timeout_secs
            )?,
        }
        let key = match &self.luks.keyfile {
            Some(path) => format!("key file {path}, then passphrase"),
            None => "passphrase".to_string(),
        };
        let container = match &self.luks.container {
            Some(dev) => dev.to_string(),
            None => "if the persist device is LUKS".to_string(),
        };
        writeln!(
            f,
            "luks: {container} -> {} ({key}, {} tries; modules {})",
            self.luks.mapping_path(),
            self.luks.tries,
            self.luks.modules.join(" ")
        )?;
        writeln!(
            f,
            "persist: {} (wait {} s) -> {} (ext4 {}), checked first with e2fsck -p (at most {} s)",
            self.persist_device,
            self.device_timeout_secs,
            self.persist_mount,
            self.persist_options,
            self.persist_check_secs
        )?;
        let alg = match (self.upper_kind, &self.zram_alg) {
            (UpperKind::Tmpfs, _) => String::new(),
            (UpperKind::Zram, Some(alg)) => format!(", alg {alg}"),
            (UpperKind::Zram, None) => ", alg kernel default".to_string(),
        };
        writeln!(
            f,
            "upper: {} {}{alg} -> {} ({}{})",
            self.upper_kind,
            bytes_text(self.upper_size_bytes),
            self.upper_mount,
            match self.upper_kind {
                UpperKind::Zram => "ext2 laid out by init, 4 KiB blocks, 256-byte inodes; ",
                UpperKind::Tmpfs => "",
            },
            self.upper_options
        )?;
        let l = &self.layers;
        if self.profile != place::DEFAULT_PROFILE {
            writeln!(
                f,
                "profile: {} (its own chain, in {}/{LAYERS_DIR}/; with no saved state yet the \
                 base boots clean and the first save creates it)",
                self.profile, l.state_dir
            )?;
        }
        writeln!(
            f,
            "slot: {} (base {}; its saved state in {}, applied only on the base it was made on)",
            self.slot,
            self.base_image,
            match l.state_dir.as_str() {
                "" => "the persist root".to_string(),
                dir => format!("{dir}/"),
            }
        )?;
        match self.boot_asked {
            BootType::Clean => writeln!(f, "saved layers: none (clean boot; nothing is saved)")?,
            asked => {
                let chain = match asked {
                    BootType::Backup => "the backup chain",
                    _ => "the current chain (then the backup chain if its first layer differs)",
                };
                let without = match (&l.legacy, asked) {
                    (Some(legacy), BootType::Backup) => format!("{}; else clean", legacy[1]),
                    (Some(legacy), _) => {
                        format!("{}, then {}; else clean", legacy[0], legacy[1])
                    }
                    (None, _) => "clean".to_string(),
                };
                writeln!(
                    f,
                    "saved layers: {asked}: {chain} of {}, longest valid prefix; \
                     without a manifest {without}",
                    l.manifest,
                )?;
                let how = match l.mode {
                    LayersMode::Mount => {
                        format!("loop-mounted read-only at {}/<name>", l.mount_dir)
                    }
                    LayersMode::Ram => format!(
                        "unpacked into {}/<name> (loop-mounted at {}/<name> when RAM is short)",
                        l.ram_dir, l.mount_dir
                    ),
                };
                writeln!(f, "layers: {}, {how}, above the rootfs", l.mode)?;
            }
        }
        for lower in &self.lowers {
            let need = if lower.required {
                "required"
            } else {
                "optional"
            };
            let or_else = match &lower.or_else {
                Some(other) => format!(", else {other}"),
                None => String::new(),
            };
            writeln!(
                f,
                "lower: {}{or_else} -> {} ({need})",
                lower.image, lower.target
            )?;
        }
        writeln!(
            f,
            "overlay: {} ({})",
            self.overlay_root, self.overlay_options
        )?;
        for m in &self.moves {
            let with = match m.landing {
                Landing::NewRoot => "",
                Landing::Run => ", moves with /run",
            };
            writeln!(
                f,
                "move: {} -> {} (in new root; at {}{with}): {}",
                m.from, m.to, m.at, m.why
            )?;
        }
        match self.swap_bytes {
            None => writeln!(f, "swap: off, swappiness {}", self.swappiness)?,
            Some(n) => writeln!(f, "swap: {}, swappiness {}", bytes_text(n), self.swappiness)?,
        }
        writeln!(f, "user: {}", self.user)?;
        writeln!(f, "init: {}", self.init)?;
        let end = match self.shell {
            ShellPolicy::Auto => "an emergency shell on the console, then a reboot",
            ShellPolicy::Never => "a reboot",
        };
        writeln!(f, "shell: {} (a failed boot ends in {end})", self.shell)?;
        let logged = match self.log {
            LogLevel::Info => "what init does and what fails",
            LogLevel::Debug => "what init does and what fails, with details and this plan",
        };
        writeln!(f, "log: {} (the kernel log gets {logged})", self.log)?;
        let saved = match self.save {
            SaveMode::On => "the saver saves the session at shutdown, on demand and at checkpoints",
            SaveMode::Off => "the saver never saves this session: the saved state is only read",
        };
        writeln!(f, "save: {} ({saved})", self.save)?;
        if self.consoles.is_empty() {
            writeln!(f, "consoles: kernel default")
        } else {
            writeln!(f, "consoles: {}", self.consoles.join(" "))
        }
    }
}

#[cfg(test)]
mod tests;

//! Kernel command line → typed boot configuration.
//!
//! Every `ramstick.*` parameter is declared once, as a row of the table in
//! `cmdline/params.rs`: name, accepted forms, default, meaning, the [`Config`]
//! field it sets and whether a bad value stops the boot. The table drives
//! [`parse`] and its problem messages, [`PARAMS`], [`Config::default`],
//! README.md's "Boot parameters" table ([`markdown_table`], checked by
//! `common/tests/golden.rs`) and `init --params` ([`console_table`]). Read the
//! accepted forms there, not here.
//!
//! A malformed or unknown value becomes a [`Problem`] naming the parameter and
//! the accepted forms; where a default is safe the boot goes on with it
//! (`Problem::fatal == false`), otherwise the boot must stop (`fatal == true`).
//! The command line is split like the kernel does it ([`split_args`]).

mod params;
mod render;
mod split;
mod syntax;
mod values;

pub use params::PARAMS;
pub use render::{console_table, markdown_table};
pub use split::split_args;
pub use values::{parse_device_spec, parse_size};

use crate::place::Slot;
use serde::{Deserialize, Serialize};
use split::is_kernel_space;
use std::fmt;
use syntax::plain;

/// How to find a block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DeviceSpec {
    Label(String),
    Uuid(String),
    PartUuid(String),
    PartLabel(String),
    Path(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootType {
    Default,
    Backup,
    Clean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpperKind {
    Zram,
    Tmpfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Size {
    Bytes(u64),
    /// Percent of total RAM (1..=100).
    Percent(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellPolicy {
    Auto,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Info,
    Debug,
}

/// How the saved layers are assembled at boot (`ramstick.layers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayersMode {
    /// Each saved layer is loop-mounted read-only as an overlay lower.
    Mount,
    /// Every layer is unpacked into the RAM upper filesystem first.
    Ram,
}

/// Whether the session may be saved (`ramstick.save`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveMode {
    On,
    /// Boot the saved state, never save (the saver refuses every save).
    Off,
}

/// Whether the slot boots on trial (`ramstick.trial`): GRUB adds `on` when
/// it consumes the one-shot trial flag of its environment block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trial {
    On,
    Off,
}

/// The LUKS parameters. The key file and tries apply to the container
/// `device` names, or, without it, to a LUKS header found on the persist device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Luks {
    pub device: Option<DeviceSpec>,
    pub keyfile: Option<String>,
    pub tries: u32,
}

/// The boot configuration: one field per row of the parameter table (whose
/// rows give the accepted forms, the defaults and the meaning), plus `consoles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub persist: DeviceSpec,
    pub boot: BootType,
    /// `ramstick.profile`: whose saved state is booted (`default`: `layers/`).
    pub profile: String,
    pub upper: UpperKind,
    pub upper_size: Size,
    pub zram_alg: Option<String>,
    pub timeout_secs: u32,
    pub init: String,
    /// `None` = `ramstick.swap=off` or not given. Default: off.
    pub swap: Option<u64>,
    pub swappiness: u8,
    pub user: String,
    pub shell: ShellPolicy,
    pub log: LogLevel,
    pub luks: Luks,
    pub layers: LayersMode,
    /// Minutes between the saver daemon's checkpoints; `None` =
    /// `ramstick.checkpoint=off` (saves only at shutdown or on demand).
    pub checkpoint_minutes: Option<u32>,
    /// `ramstick.save=off`: the saver never saves this session.
    pub save: SaveMode,
    /// `ramstick.slot`: the slot booted (its base and its saved state).
    #[serde(serialize_with = "crate::slotboot::serde_slot::serialize")]
    pub slot: Slot,
    /// `ramstick.trial=on`: a trial boot, armed with a watchdog.
    pub trial: Trial,
    /// `ramstick.trial.timeout`: the trial's watchdog timeout, in seconds.
    pub trial_timeout_secs: u32,
    /// `console=` values seen (informational; the kernel handles them).
    pub consoles: Vec<String>,
}

/// A parameter that could not be taken as given.
/// A parameter that could not be taken as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The parameter name, e.g. `ramstick.boot`.
    pub param: String,
    /// The value as given (may be empty).
    pub value: String,
    /// What is wrong and the accepted forms, in one sentence.
    pub message: String,
    /// True when no safe default exists and the boot must stop.
    pub fatal: bool,
}

/// The label `ramstick.persist` looks for by default.
pub const DEFAULT_PERSIST_LABEL: &str = "RAMSTICK";

impl Default for Config {
    /// Every field at the default its row in the table declares.
    fn default() -> Self {
        use params::*;
        Config {
            persist: PERSIST.default_value(),
            boot: BOOT.default_value(),
            profile: PROFILE.default_value(),
            upper: UPPER.default_value(),
            upper_size: UPPER_SIZE.default_value(),
            zram_alg: ZRAM_ALG.default_value(),
            timeout_secs: TIMEOUT.default_value(),
            init: INIT.default_value(),
            swap: SWAP.default_value(),
            swappiness: SWAPPINESS.default_value(),
            user: USER.default_value(),
            shell: SHELL.default_value(),
            log: LOG.default_value(),
            luks: Luks {
                device: LUKS.default_value(),
                keyfile: LUKS_KEYFILE.default_value(),
                tries: LUKS_TRIES.default_value(),
            },
            layers: LAYERS.default_value(),
            checkpoint_minutes: CHECKPOINT.default_value(),
            save: SAVE.default_value(),
            slot: SLOT.default_value(),
            trial: TRIAL.default_value(),
            trial_timeout_secs: TRIAL_TIMEOUT.default_value(),
            consoles: Vec::new(),
        }
    }
}

/// A fixed set of lowercase words that a parameter accepts.
trait Keyword: Copy + 'static {
    const ALL: &'static [Self];
    fn word(self) -> &'static str;
}

/// Implements [`Keyword`] and `Display` (the word) for an enum.
macro_rules! keywords {
    ($ty:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl Keyword for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            fn word(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

keywords!(BootType { Default => "default", Backup => "backup", Clean => "clean" });
keywords!(UpperKind { Zram => "zram", Tmpfs => "tmpfs" });
keywords!(ShellPolicy { Auto => "auto", Never => "never" });
keywords!(LogLevel { Info => "info", Debug => "debug" });
keywords!(LayersMode { Mount => "mount", Ram => "ram" });
keywords!(SaveMode { On => "on", Off => "off" });
keywords!(Trial { On => "on", Off => "off" });

// `Slot` has its `Display` in `place`, so not through `keywords!`.
impl Keyword for Slot {
    const ALL: &'static [Self] = &Slot::ALL;
    fn word(self) -> &'static str {
        self.name()
    }
}

/// Parses a kernel command line (e.g. the contents of `/proc/cmdline`).
///
/// Returns the configuration, with defaults wherever a parameter is missing
/// or unusable, and one [`Problem`] per unusable or unknown `ramstick.*`
/// parameter, in command-line order, then one per parameter that has no effect
/// (e.g. `ramstick.zram.alg` with a tmpfs upper). A repeated parameter takes
/// its last value (like the kernel) and only that value is checked. Words not
/// starting with `ramstick.` are ignored except `console=`, whose values are
/// collected. Trailing whitespace (the newline `/proc/cmdline` ends with) is
/// not part of the command line.
pub fn parse(cmdline: &str) -> (Config, Vec<Problem>) {
    let mut cfg = Config::default();
    let mut problems = Vec::new();
    let mut taken = Vec::new();
    let cmdline = cmdline.trim_end_matches(|c: char| u8::try_from(c).is_ok_and(is_kernel_space));
    let args = split_args(cmdline);
    for (i, &(name, value)) in args.iter().enumerate() {
        if name == "console" {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                cfg.consoles.push(v.to_string());
            }
            continue;
        }
        if !name.starts_with("ramstick.") || args[i + 1..].iter().any(|&(n, _)| n == name) {
            continue;
        }
        let given = value.unwrap_or("");
        let (message, fatal) = match params::find(name) {
            Some(param) if param.set(&mut cfg, given) => {
                taken.push((param, given));
                continue;
            }
            Some(param) => rejection(param, name, value),
            None => (
                format!(
                    "{} is an unknown parameter (known: {}); ignoring it",
                    shown(name, value),
                    PARAMS.join(", ")
                ),
                false,
            ),
        };
        problems.push(Problem {
            param: name.to_string(),
            value: given.to_string(),
            message,
            fatal,
        });
    }
    for (param, value) in taken {
        let Some(needs) = param.only_with().filter(|needs| !(needs.holds)(&cfg)) else {
            continue;
        };
        let name = param.name();
        problems.push(Problem {
            param: name.to_string(),
            value: value.to_string(),
            message: format!(
                "`{name}={value}` has no effect: it applies only with {}; ignoring it",
                needs.setting
            ),
            fatal: false,
        });
    }
    (cfg, problems)
}

/// The parameter as written, e.g. `` `ramstick.boot=fast` ``.
fn shown(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("`{name}={v}`"),
        None => format!("`{name}`"),
    }
}

/// The message and fatality for a value `param` rejected: what is wrong, the
/// accepted forms and what happens instead.
fn rejection(param: &dyn params::AnyParam, name: &str, value: Option<&str>) -> (String, bool) {
    let what = match value {
        None => "has no value",
        Some("") => "has an empty value",
        Some(v) if param.is_numeric_shape(v) => "is out of range",
        Some(_) => "is not valid",
    };
    let (instead, fatal) = match param.on_bad() {
        params::OnBad::UseDefault => (format!("using {}", plain(&param.default_text())), false),
        params::OnBad::Stop { because } => (format!("the boot stops because {because}"), true),
    };
    let message = format!(
        "{} {what}: use {}; {instead}",
        shown(name, value),
        plain(&param.forms())
    );
    (message, fatal)
}

#[cfg(test)]
mod tests;

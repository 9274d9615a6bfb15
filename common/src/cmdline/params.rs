//! The table of `ramstick.*` boot parameters: one row per parameter, in the
//! order of the manual.
//!
//! A row says everything about its parameter: name, value [`Syntax`] (which
//! reads the value and states the accepted forms), default, meaning, what a
//! bad value does and the [`Config`] field it sets. From the rows come
//! [`parse`](super::parse) and its problem messages, [`PARAMS`],
//! [`Config::default`], README.md's "Boot parameters" table
//! ([`markdown_table`](super::markdown_table)) and `init --params`.
//!
//! A new parameter is a `Config` field (with its line in `Config::default`,
//! which takes the row's default), a row here and its name in the `table!` list.
//! Then re-bless the README table (see `common/tests/golden.rs`).

use super::syntax::{
    is_abs_path, is_alg_name, is_numeric_shape, is_user_name, Bytes, Device, Number, OffOr, Sizes,
    Syntax, Text, Unset, Words,
};
use super::{
    BootType, Config, DeviceSpec, LayersMode, LogLevel, SaveMode, ShellPolicy, Size, Trial,
    UpperKind, DEFAULT_PERSIST_LABEL,
};
use crate::place::Slot;

/// One boot parameter whose value is a `T`.
pub(super) struct Param<T: 'static> {
    /// The name, e.g. `ramstick.boot`.
    pub name: &'static str,
    /// How the value is written.
    pub syntax: &'static dyn Syntax<T>,
    /// The value when the parameter is absent or its value is rejected.
    pub default: fn() -> T,
    /// What the parameter does (Markdown, one or two sentences).
    pub help: &'static str,
    /// What a rejected value does.
    pub on_bad: OnBad,
    /// The condition without which the parameter has no effect.
    pub only_with: Option<Needs>,
    /// The field it sets.
    pub field: fn(&mut Config) -> &mut T,
}

/// What happens to the boot when a parameter's value is rejected.
pub(super) enum OnBad {
    /// It goes on with the default.
    UseDefault,
    /// It stops (there is no safe default) `because` …
    Stop { because: &'static str },
}

/// A setting another parameter must have for this one to take effect.
pub(super) struct Needs {
    /// The setting as written, e.g. `ramstick.upper=zram`.
    pub setting: &'static str,
    /// Whether a configuration has it.
    pub holds: fn(&Config) -> bool,
}

/// A row of the table, whatever its value type.
pub(super) trait AnyParam: Sync {
    fn name(&self) -> &'static str;
    fn help(&self) -> &'static str;
    fn on_bad(&self) -> &OnBad;
    fn only_with(&self) -> Option<&Needs>;
    /// The accepted forms (Markdown).
    fn forms(&self) -> String;
    /// The default, said as in [`Syntax::say`] (Markdown).
    fn default_text(&self) -> String;
    /// Whether a rejected `value` is a number out of range rather than malformed.
    fn is_numeric_shape(&self, value: &str) -> bool;
    /// Sets the field from `value`; `false` (the field untouched) when the
    /// value is not an accepted form.
    fn set(&self, cfg: &mut Config, value: &str) -> bool;
    /// Sets the field to the default.
    #[cfg(test)]
    fn reset(&self, cfg: &mut Config);
}

impl<T: 'static> Param<T> {
    pub(super) fn default_value(&self) -> T {
        (self.default)()
    }
}

impl<T: 'static> AnyParam for Param<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn on_bad(&self) -> &OnBad {
        &self.on_bad
    }
    fn only_with(&self) -> Option<&Needs> {
        self.only_with.as_ref()
    }
    fn forms(&self) -> String {
        self.syntax.forms()
    }
    fn default_text(&self) -> String {
        self.syntax.say(&self.default_value())
    }
    fn is_numeric_shape(&self, value: &str) -> bool {
        is_numeric_shape(self.syntax, value)
    }
    fn set(&self, cfg: &mut Config, value: &str) -> bool {
        match self.syntax.read(value) {
            Some(v) => {
                *(self.field)(cfg) = v;
                true
            }
            None => false,
        }
    }
    #[cfg(test)]
    fn reset(&self, cfg: &mut Config) {
        *(self.field)(cfg) = self.default_value();
    }
}

/// The row named `name`.
pub(super) fn find(name: &str) -> Option<&'static dyn AnyParam> {
    PARAMETERS.iter().copied().find(|p| p.name() == name)
}

/// Lists the rows, in the manual's order, as [`PARAMETERS`] and their names as [`PARAMS`].
macro_rules! table {
    ($($row:ident),+ $(,)?) => {
        /// Every row of the table, in the manual's order.
        pub(super) static PARAMETERS: &[&dyn AnyParam] = &[$(&$row),+];
        /// Every `ramstick.*` parameter name, in the manual's order.
        pub const PARAMS: &[&str] = &[$($row.name),+];
    };
}

table!(
    PERSIST,
    BOOT,
    PROFILE,
    UPPER,
    UPPER_SIZE,
    ZRAM_ALG,
    TIMEOUT,
    INIT,
    SWAP,
    SWAPPINESS,
    USER,
    SHELL,
    LOG,
    LUKS,
    LUKS_KEYFILE,
    LUKS_TRIES,
    LAYERS,
    CHECKPOINT,
    SAVE,
    SLOT,
    TRIAL,
    TRIAL_TIMEOUT,
);

pub(super) const PERSIST: Param<DeviceSpec> = Param {
    name: "ramstick.persist",
    syntax: &Device,
    default: || DeviceSpec::Label(DEFAULT_PERSIST_LABEL.to_string()),
    help: "The data partition: the images and the saved state. When two different devices \
           match (e.g. a cloned backup stick), the boot stops and lists both: unplug one or \
           name it by `PARTUUID=` or `/dev/` (a LUKS container and its opened mapping are one \
           stick).",
    on_bad: OnBad::Stop {
        because: "the persistent partition cannot be found safely",
    },
    only_with: None,
    field: |c| &mut c.persist,
};

pub(super) const BOOT: Param<BootType> = Param {
    name: "ramstick.boot",
    syntax: &Words::<BootType>::new(),
    default: || BootType::Default,
    help: "What the session starts from: `default` the saved chain of layers, `backup` the \
           state before the last session's save, `clean` nothing (and nothing is saved).",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.boot,
};

pub(super) const PROFILE: Param<String> = Param {
    name: "ramstick.profile",
    syntax: &Text {
        valid: crate::place::is_profile_name,
        forms: "a profile name of 1 to 32 characters: a lowercase letter or digit, then \
                lowercase letters, digits, '_' or '-'",
    },
    default: || crate::place::DEFAULT_PROFILE.to_string(),
    help: "The saved state to boot: `default` the stick's own (`layers/`), another name the \
           independent chain of `profiles/<name>/layers/` on the same base (none yet: the base \
           with nothing saved, and the first save creates it). `ramstick.boot` picks the chain \
           within the profile.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.profile,
};

pub(super) const UPPER: Param<UpperKind> = Param {
    name: "ramstick.upper",
    syntax: &Words::<UpperKind>::new(),
    default: || UpperKind::Zram,
    help: "The RAM filesystem that takes the session's changes: `zram` (a compressed RAM disk \
           with ext2) or `tmpfs`.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.upper,
};

pub(super) const UPPER_SIZE: Param<Size> = Param {
    name: "ramstick.upper.size",
    syntax: &Sizes,
    default: || Size::Percent(50),
    help: "The size of that RAM filesystem.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.upper_size,
};

pub(super) const ZRAM_ALG: Param<Option<String>> = Param {
    name: "ramstick.zram.alg",
    syntax: &Unset {
        inner: Text {
            valid: is_alg_name,
            forms: "a compression algorithm name of lowercase letters, digits and '-' \
                    (e.g. `zstd`, `lz4`, `lzo-rle`)",
        },
        absent: "the kernel default",
    },
    default: || None,
    help: "The zram compression algorithm.",
    on_bad: OnBad::UseDefault,
    only_with: Some(Needs {
        setting: "ramstick.upper=zram",
        holds: |c| c.upper == UpperKind::Zram,
    }),
    field: |c| &mut c.zram_alg,
};

pub(super) const TIMEOUT: Param<u32> = Param {
    name: "ramstick.timeout",
    syntax: &Number::<u32> {
        min: 1,
        max: 3600,
        unit: Some("seconds"),
    },
    default: || 30,
    help: "How long to wait for the data partition to appear.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.timeout_secs,
};

pub(super) const INIT: Param<String> = Param {
    name: "ramstick.init",
    syntax: &Text {
        valid: is_abs_path,
        forms: "an absolute path (e.g. `/sbin/init`)",
    },
    default: || "/sbin/init".to_string(),
    help: "The real init in the root filesystem. It is checked before the initramfs is freed \
           (it exists, is executable, its ELF loader or `#!` interpreter is in the root \
           filesystem); otherwise the emergency shell says what is missing.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.init,
};

pub(super) const SWAP: Param<Option<u64>> = Param {
    name: "ramstick.swap",
    syntax: &OffOr(Bytes),
    default: || None,
    help: "The size of `/persist/swapfile`, created once and swapped to; `off`: no swap.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.swap,
};

pub(super) const SWAPPINESS: Param<u8> = Param {
    name: "ramstick.swappiness",
    syntax: &Number::<u8> {
        min: 0,
        max: 200,
        unit: None,
    },
    default: || 1,
    help: "`vm.swappiness` while that swap is on.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.swappiness,
};

pub(super) const USER: Param<String> = Param {
    name: "ramstick.user",
    syntax: &Text {
        valid: is_user_name,
        forms: "a user name of 1 to 32 characters: a lowercase letter or '_', then lowercase \
                letters, digits, '_' or '-'",
    },
    default: || "user".to_string(),
    help: "The user whose home gets links to `/persist/user/*`.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.user,
};

pub(super) const SHELL: Param<ShellPolicy> = Param {
    name: "ramstick.shell",
    syntax: &Words::<ShellPolicy>::new(),
    default: || ShellPolicy::Auto,
    help: "After a boot failure: `auto` opens the emergency shell, `never` reboots after 10 s.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.shell,
};

pub(super) const LOG: Param<LogLevel> = Param {
    name: "ramstick.log",
    syntax: &Words::<LogLevel>::new(),
    default: || LogLevel::Info,
    help: "How much init logs: `debug` adds the whole boot plan, each module loaded and other \
           details.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.log,
};

pub(super) const LUKS: Param<Option<DeviceSpec>> = Param {
    name: "ramstick.luks",
    syntax: &Unset {
        inner: Device,
        absent: "none: a LUKS header on the device `ramstick.persist` finds is opened",
    },
    default: || None,
    help: "The LUKS container to open first; `ramstick.persist` then defaults to the opened \
           `/dev/mapper/ramstick`.",
    on_bad: OnBad::Stop {
        because: "the encrypted partition cannot be found safely",
    },
    only_with: None,
    field: |c| &mut c.luks.device,
};

pub(super) const LUKS_KEYFILE: Param<Option<String>> = Param {
    name: "ramstick.luks.keyfile",
    syntax: &Unset {
        inner: Text {
            valid: is_abs_path,
            forms: "an absolute path",
        },
        absent: "no key file (the passphrase is asked)",
    },
    default: || None,
    help: "A key file inside the initramfs, tried before asking for the passphrase.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.luks.keyfile,
};

pub(super) const LUKS_TRIES: Param<u32> = Param {
    name: "ramstick.luks.tries",
    syntax: &Number::<u32> {
        min: 1,
        max: 10,
        unit: None,
    },
    default: || 3,
    help: "Passphrase attempts before the failure path.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.luks.tries,
};

pub(super) const LAYERS: Param<LayersMode> = Param {
    name: "ramstick.layers",
    syntax: &Words::<LayersMode>::new(),
    default: || LayersMode::Mount,
    help: "How the saved layers are assembled at boot: `mount` loop-mounts each saved layer \
           read-only as an overlay lower (boot time and RAM use do not grow with the saved \
           state), `ram` unpacks every layer into the RAM upper filesystem first (the stick is \
           idle during the session; boot time and RAM grow with the state).",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.layers,
};

pub(super) const CHECKPOINT: Param<Option<u32>> = Param {
    name: "ramstick.checkpoint",
    syntax: &OffOr(Number::<u32> {
        min: 1,
        max: 1440,
        unit: Some("minutes"),
    }),
    default: || Some(15),
    help: "The saver daemon saves every N minutes when something changed (a checkpoint \
           replaces this session's layer, so a power cut loses at most N minutes); `off` saves \
           only at shutdown or on demand.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.checkpoint_minutes,
};

pub(super) const SAVE: Param<SaveMode> = Param {
    name: "ramstick.save",
    syntax: &Words::<SaveMode>::new(),
    default: || SaveMode::On,
    help: "`off` boots the saved state but never saves it: the shutdown save, checkpoints, \
           idle compaction and `saver save` all refuse and write nothing to the stick (`saver \
           off` does the same for one session once booted).",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.save,
};

pub(super) const SLOT: Param<Slot> = Param {
    name: "ramstick.slot",
    syntax: &Words::<Slot>::new(),
    default: || Slot::A,
    help: "The slot booted: its base (`rootfs.squashfs` in the data partition's root for `a`, \
           in `slot-b/` for `b`) and its own saved state. GRUB sets it; a saved state made on \
           another base is not applied (the base boots clean, the state is kept).",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.slot,
};

pub(super) const TRIAL: Param<Trial> = Param {
    name: "ramstick.trial",
    syntax: &Words::<Trial>::new(),
    default: || Trial::Off,
    help: "`on`: a trial boot of the slot (GRUB adds it once when a trial is pending): a \
           watchdog restarts the machine unless the system commits itself in time, and the \
           next boot is the committed slot.",
    on_bad: OnBad::UseDefault,
    only_with: None,
    field: |c| &mut c.trial,
};

pub(super) const TRIAL_TIMEOUT: Param<u32> = Param {
    name: "ramstick.trial.timeout",
    syntax: &Number::<u32> {
        min: 60,
        max: 3600,
        unit: Some("seconds"),
    },
    default: || 600,
    help: "How long a trial boot has to pass its health check and commit before the \
           watchdog restarts the machine.",
    on_bad: OnBad::UseDefault,
    only_with: Some(Needs {
        setting: "ramstick.trial=on",
        holds: |c| c.trial == Trial::On,
    }),
    field: |c| &mut c.trial_timeout_secs,
};

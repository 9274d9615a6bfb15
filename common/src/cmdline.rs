//! Kernel command line → typed boot configuration.
//!
//! Every `ramstick.*` parameter is parsed here. A malformed or unknown value
//! becomes a [`Problem`] naming the parameter and the accepted forms; where a
//! default is safe the boot goes on with it (`Problem::fatal == false`),
//! otherwise the boot must stop (`fatal == true`).
//!
//! The command line is split like the kernel does it ([`split_args`]);
//! [`parse`] turns it into a [`Config`] plus problems. The accepted forms:
//!
//! | parameter | values | default |
//! |---|---|---|
//! | `ramstick.persist` | `LABEL=`, `UUID=`, `PARTUUID=`, `PARTLABEL=`, `/dev/...` (bad: fatal) | `LABEL=RAMSTICK` |
//! | `ramstick.boot` | `default`, `backup`, `clean` | `default` |
//! | `ramstick.upper` | `zram`, `tmpfs` | `zram` |
//! | `ramstick.upper.size` | bytes with optional `K`/`M`/`G`/`T` (binary), or `1%`..`100%` of RAM | `50%` |
//! | `ramstick.zram.alg` | `[a-z0-9-]+`, e.g. `zstd`, `lz4`, `lzo-rle` | kernel default |
//! | `ramstick.timeout` | seconds, 1..=3600 | `30` |
//! | `ramstick.init` | absolute path | `/sbin/init` |
//! | `ramstick.swap` | `off` or bytes with optional suffix | `off` |
//! | `ramstick.swappiness` | 0..=200 | `1` |
//! | `ramstick.user` | `[a-z_][a-z0-9_-]{0,31}` | `user` |
//! | `ramstick.shell` | `auto`, `never` | `auto` |
//! | `ramstick.log` | `info`, `debug` | `info` |
//! | `ramstick.luks` | like `ramstick.persist` (bad: fatal) | none: auto-detect on the persist device |
//! | `ramstick.luks.keyfile` | absolute path | none (passphrase) |
//! | `ramstick.luks.tries` | 1..=10 | `3` |

use serde::{Deserialize, Serialize};
use std::fmt;

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

/// How the saved layers are assembled at boot (`ramstick.layers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayersMode {
    Mount,
    Ram,
}

impl fmt::Display for LayersMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayersMode::Mount => "mount",
            LayersMode::Ram => "ram",
        })
    }
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

/// The LUKS parameters. The key file and tries apply to the container
/// `device` names, or, without it, to a LUKS header found on the persist device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Luks {
    pub device: Option<DeviceSpec>,
    pub keyfile: Option<String>,
    pub tries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub persist: DeviceSpec,
    pub boot: BootType,
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
    /// `None` = `ramstick.checkpoint=off`.
    pub checkpoint_minutes: Option<u32>,
    /// `console=` values seen (informational; the kernel handles them).
    pub consoles: Vec<String>,
}

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

/// Every `ramstick.*` parameter name, in documentation order.
pub const PARAMS: &[&str] = &[
    "ramstick.persist",
    "ramstick.boot",
    "ramstick.upper",
    "ramstick.upper.size",
    "ramstick.zram.alg",
    "ramstick.timeout",
    "ramstick.init",
    "ramstick.swap",
    "ramstick.swappiness",
    "ramstick.user",
    "ramstick.shell",
    "ramstick.log",
    "ramstick.luks",
    "ramstick.luks.keyfile",
    "ramstick.luks.tries",
    "ramstick.layers",
    "ramstick.checkpoint",
];

/// The accepted forms of a device parameter, as said in problem messages.
const DEVICE_FORMS: &str =
    "use LABEL=<label>, UUID=<uuid>, PARTUUID=<partuuid>, PARTLABEL=<partlabel> or /dev/<name>";

impl Default for Config {
    fn default() -> Self {
        Config {
            persist: DeviceSpec::Label(DEFAULT_PERSIST_LABEL.to_string()),
            boot: BootType::Default,
            upper: UpperKind::Zram,
            upper_size: Size::Percent(50),
            zram_alg: None,
            timeout_secs: 30,
            init: "/sbin/init".to_string(),
            swap: None,
            swappiness: 1,
            user: "user".to_string(),
            shell: ShellPolicy::Auto,
            log: LogLevel::Info,
            luks: Luks {
                device: None,
                keyfile: None,
                tries: 3,
            },
            layers: LayersMode::Mount,
            checkpoint_minutes: Some(15),
            consoles: Vec::new(),
        }
    }
}

/// A fixed set of lowercase words that a parameter accepts.
trait Keyword: Copy + 'static {
    const ALL: &'static [Self];
    fn word(self) -> &'static str;
}

impl Keyword for BootType {
    const ALL: &'static [Self] = &[BootType::Default, BootType::Backup, BootType::Clean];
    fn word(self) -> &'static str {
        match self {
            BootType::Default => "default",
            BootType::Backup => "backup",
            BootType::Clean => "clean",
        }
    }
}

impl Keyword for UpperKind {
    const ALL: &'static [Self] = &[UpperKind::Zram, UpperKind::Tmpfs];
    fn word(self) -> &'static str {
        match self {
            UpperKind::Zram => "zram",
            UpperKind::Tmpfs => "tmpfs",
        }
    }
}

impl Keyword for ShellPolicy {
    const ALL: &'static [Self] = &[ShellPolicy::Auto, ShellPolicy::Never];
    fn word(self) -> &'static str {
        match self {
            ShellPolicy::Auto => "auto",
            ShellPolicy::Never => "never",
        }
    }
}

impl Keyword for LogLevel {
    const ALL: &'static [Self] = &[LogLevel::Info, LogLevel::Debug];
    fn word(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// The keyword `value` names, if any.
fn keyword<T: Keyword>(value: &str) -> Option<T> {
    T::ALL.iter().copied().find(|k| k.word() == value)
}

/// "use a, b or c" for the words of `T`.
fn keyword_forms<T: Keyword>() -> String {
    let words: Vec<&str> = T::ALL.iter().map(|k| k.word()).collect();
    format!("use {}", join_or(&words))
}

/// Joins `["a", "b", "c"]` as `a, b or c`.
fn join_or(items: &[&str]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

impl fmt::Display for BootType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl fmt::Display for UpperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl fmt::Display for ShellPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl fmt::Display for DeviceSpec {
    /// The command-line form, e.g. `LABEL=RAMSTICK` or `/dev/vda2`. A label
    /// that is empty or holds whitespace is double-quoted (`LABEL="MY STICK"`),
    /// which [`parse_device_spec`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, value) = match self {
            DeviceSpec::Label(v) => ("LABEL=", v),
            DeviceSpec::Uuid(v) => ("UUID=", v),
            DeviceSpec::PartUuid(v) => ("PARTUUID=", v),
            DeviceSpec::PartLabel(v) => ("PARTLABEL=", v),
            DeviceSpec::Path(v) => return f.write_str(v),
        };
        if value.is_empty() || value.bytes().any(is_kernel_space) {
            write!(f, "{prefix}\"{value}\"")
        } else {
            write!(f, "{prefix}{value}")
        }
    }
}

/// Parses `LABEL=..`, `UUID=..`, `PARTUUID=..`, `PARTLABEL=..` or `/dev/..`.
///
/// The prefixes are upper case, as for the kernel's `root=`. A value wrapped
/// in double quotes (`LABEL="MY STICK"`) is unquoted. UUIDs and PARTUUIDs must
/// be hex digits and `-` and are lowercased. Empty values are rejected.
pub fn parse_device_spec(s: &str) -> Option<DeviceSpec> {
    if s.starts_with("/dev/") {
        return (s.len() > "/dev/".len()).then(|| DeviceSpec::Path(s.to_string()));
    }
    let (prefix, raw) = s.split_once('=')?;
    let value = unquote(raw);
    if value.is_empty() {
        return None;
    }
    let is_uuid = value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && value.bytes().any(|b| b.is_ascii_hexdigit());
    match prefix {
        "LABEL" => Some(DeviceSpec::Label(value.to_string())),
        "PARTLABEL" => Some(DeviceSpec::PartLabel(value.to_string())),
        "UUID" if is_uuid => Some(DeviceSpec::Uuid(value.to_ascii_lowercase())),
        "PARTUUID" if is_uuid => Some(DeviceSpec::PartUuid(value.to_ascii_lowercase())),
        _ => None,
    }
}

/// Strips one pair of surrounding double quotes.
fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(s)
}

impl Size {
    /// The size in bytes; a percentage is taken of `mem_total` (rounded down).
    pub fn to_bytes(self, mem_total: u64) -> u64 {
        match self {
            Size::Bytes(n) => n,
            Size::Percent(p) => {
                let bytes = u128::from(mem_total) * u128::from(p) / 100;
                // p <= 100 keeps this within u64 for any valid Size; saturate otherwise.
                u64::try_from(bytes).unwrap_or(u64::MAX)
            }
        }
    }
}

impl fmt::Display for Size {
    /// The command-line form: `50%`, or bytes with the largest exact binary
    /// suffix (`512M`, `2G`, `1000`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Size::Percent(p) => write!(f, "{p}%"),
            Size::Bytes(n) => {
                for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
                    if n != 0 && n % (1u64 << shift) == 0 {
                        return write!(f, "{}{suffix}", n >> shift);
                    }
                }
                write!(f, "{n}")
            }
        }
    }
}

/// Parses a size: decimal bytes with an optional binary suffix `K`, `M`, `G`
/// or `T` (either case), e.g. `4096`, `512M`, `2G`; or a percentage of RAM
/// `N%` with N in 1..=100. Zero, overflow, signs and fractions give `None`.
pub fn parse_size(s: &str) -> Option<Size> {
    if let Some(digits) = s.strip_suffix('%') {
        let n = parse_decimal(digits)?;
        let p = u8::try_from(n).ok().filter(|p| (1..=100).contains(p))?;
        return Some(Size::Percent(p));
    }
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        Some(b'T' | b't') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let bytes = parse_decimal(digits)?.checked_mul(1u64 << shift)?;
    (bytes > 0).then_some(Size::Bytes(bytes))
}

/// Parses plain decimal digits (no sign, no spaces); `None` on overflow.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses decimal digits into a number within `range`.
fn parse_in_range<T>(s: &str, range: std::ops::RangeInclusive<T>) -> Option<T>
where
    T: TryFrom<u64> + PartialOrd,
{
    let n = T::try_from(parse_decimal(s)?).ok()?;
    range.contains(&n).then_some(n)
}

/// Whether `s` has the shape of a number: digits, then at most one of the
/// characters in `suffixes` (so a rejection means "out of range").
fn looks_numeric(s: &str, suffixes: &str) -> bool {
    let digits = s.strip_suffix(|c: char| suffixes.contains(c)).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `path` is absolute and free of control characters.
fn is_abs_path(path: &str) -> bool {
    path.starts_with('/') && !path.chars().any(char::is_control)
}

/// Whether `name` is a valid user name: `[a-z_][a-z0-9_-]{0,31}`.
fn is_user_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    first_ok
        && name.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// Whether `alg` is a plausible compression algorithm name: `[a-z0-9-]{1,64}`.
fn is_alg_name(alg: &str) -> bool {
    !alg.is_empty()
        && alg.len() <= 64
        && alg
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// The kernel's `isspace()` for command-line splitting.
fn is_kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits a command line into `(name, value)` pairs like the kernel's
/// `next_arg()`: words are separated by whitespace outside double quotes; the
/// name ends at the first `=`; a value that starts with `"` loses that quote
/// and a closing `"` at the end of the word; a word that starts with `"` loses
/// it and a closing `"`. A bare `--` ends the kernel's parameters (what
/// follows is for init), so splitting stops there.
pub fn split_args(cmdline: &str) -> Vec<(&str, Option<&str>)> {
    let bytes = cmdline.as_bytes();
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_kernel_space(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        let quoted = bytes[pos] == b'"';
        let start = if quoted { pos + 1 } else { pos };
        let mut in_quote = quoted;
        let mut equals = None;
        let mut end = start;
        while end < bytes.len() && (in_quote || !is_kernel_space(bytes[end])) {
            if equals.is_none() && bytes[end] == b'=' {
                equals = Some(end);
            }
            if bytes[end] == b'"' {
                in_quote = !in_quote;
            }
            end += 1;
        }
        pos = end;
        // `"`, `=` and whitespace are ASCII, so every index below is a char boundary.
        let mut word_end = end;
        let arg = match equals {
            None => {
                if quoted && word_end > start && bytes[word_end - 1] == b'"' {
                    word_end -= 1;
                }
                (&cmdline[start..word_end], None)
            }
            Some(eq) => {
                let mut value_start = eq + 1;
                let value_quoted = value_start < end && bytes[value_start] == b'"';
                if value_quoted {
                    value_start += 1;
                }
                if (value_quoted || quoted) && word_end > value_start && bytes[word_end - 1] == b'"'
                {
                    word_end -= 1;
                }
                (&cmdline[start..eq], Some(&cmdline[value_start..word_end]))
            }
        };
        if arg == ("--", None) {
            break;
        }
        args.push(arg);
    }
    args
}

/// Why a known parameter's value was not taken.
struct Rejection {
    /// The accepted forms, e.g. "use default, backup or clean".
    forms: String,
    /// What happens instead, e.g. "using default".
    instead: String,
    /// The suffixes a numeric value may carry; a value of that shape is
    /// called "out of range" rather than "not valid". `None`: not numeric.
    numeric: Option<&'static str>,
    fatal: bool,
}

impl Rejection {
    fn new(forms: impl Into<String>, instead: impl Into<String>) -> Self {
        Rejection {
            forms: forms.into(),
            instead: instead.into(),
            numeric: None,
            fatal: false,
        }
    }

    fn numeric(mut self, suffixes: &'static str) -> Self {
        self.numeric = Some(suffixes);
        self
    }

    fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }
}

/// Sets the field for a known `ramstick.*` parameter from `value`.
///
/// `Ok(false)`: the name is unknown. `Err`: the value was rejected and the
/// field keeps its default.
fn apply(cfg: &mut Config, name: &str, value: &str) -> Result<bool, Rejection> {
    let default = Config::default();
    let size_forms = "use a size in bytes with an optional K, M, G or T suffix (e.g. 512M) \
                      or a percentage of RAM from 1% to 100%";
    match name {
        "ramstick.persist" => {
            cfg.persist = parse_device_spec(value).ok_or_else(|| {
                Rejection::new(
                    DEVICE_FORMS,
                    "the boot stops because the persistent partition cannot be found safely",
                )
                .fatal()
            })?;
        }
        "ramstick.boot" => {
            cfg.boot = keyword(value).ok_or_else(|| {
                Rejection::new(
                    keyword_forms::<BootType>(),
                    format!("using {}", default.boot),
                )
            })?;
        }
        "ramstick.upper" => {
            cfg.upper = keyword(value).ok_or_else(|| {
                Rejection::new(
                    keyword_forms::<UpperKind>(),
                    format!("using {}", default.upper),
                )
            })?;
        }
        "ramstick.upper.size" => {
            cfg.upper_size = parse_size(value).ok_or_else(|| {
                Rejection::new(size_forms, format!("using {}", default.upper_size))
                    .numeric("%KMGTkmgt")
            })?;
        }
        "ramstick.zram.alg" => {
            if !is_alg_name(value) {
                return Err(Rejection::new(
                    "use a compression algorithm name of lowercase letters, digits and '-' \
                     (e.g. zstd, lz4, lzo-rle)",
                    "using the kernel default",
                ));
            }
            cfg.zram_alg = Some(value.to_string());
        }
        "ramstick.timeout" => {
            cfg.timeout_secs = parse_in_range(value, 1..=3600).ok_or_else(|| {
                Rejection::new(
                    "use a number of seconds from 1 to 3600",
                    format!("using {}", default.timeout_secs),
                )
                .numeric("")
            })?;
        }
        "ramstick.init" => {
            if !is_abs_path(value) {
                return Err(Rejection::new(
                    "use an absolute path (e.g. /sbin/init)",
                    format!("using {}", default.init),
                ));
            }
            cfg.init = value.to_string();
        }
        "ramstick.swap" => {
            let bytes = match parse_size(value) {
                Some(Size::Bytes(n)) => Some(n),
                _ => None,
            };
            if value != "off" && bytes.is_none() {
                return Err(Rejection::new(
                    "use off or a size in bytes with an optional K, M, G or T suffix (e.g. 1G)",
                    "using off",
                )
                .numeric("KMGTkmgt"));
            }
            cfg.swap = bytes;
        }
        "ramstick.swappiness" => {
            cfg.swappiness = parse_in_range(value, 0..=200).ok_or_else(|| {
                Rejection::new(
                    "use a number from 0 to 200",
                    format!("using {}", default.swappiness),
                )
                .numeric("")
            })?;
        }
        "ramstick.user" => {
            if !is_user_name(value) {
                return Err(Rejection::new(
                    "use a user name of 1 to 32 characters: a lowercase letter or '_', \
                     then lowercase letters, digits, '_' or '-'",
                    format!("using {}", default.user),
                ));
            }
            cfg.user = value.to_string();
        }
        "ramstick.shell" => {
            cfg.shell = keyword(value).ok_or_else(|| {
                Rejection::new(
                    keyword_forms::<ShellPolicy>(),
                    format!("using {}", default.shell),
                )
            })?;
        }
        // Interim parsing (the declarative table replaces it).
        "ramstick.layers" => {
            cfg.layers = match value {
                "mount" => LayersMode::Mount,
                "ram" => LayersMode::Ram,
                _ => return Err(Rejection::new("use mount or ram", "using mount")),
            };
        }
        "ramstick.checkpoint" => {
            cfg.checkpoint_minutes = match value {
                "off" => None,
                v => Some(parse_in_range(v, 1..=1440).ok_or_else(|| {
                    Rejection::new("use off or minutes from 1 to 1440", "using 15").numeric("")
                })?),
            };
        }
        "ramstick.log" => {
            cfg.log = keyword(value).ok_or_else(|| {
                Rejection::new(
                    keyword_forms::<LogLevel>(),
                    format!("using {}", default.log),
                )
            })?;
        }
        "ramstick.luks" => {
            let spec = parse_device_spec(value).ok_or_else(|| {
                Rejection::new(
                    DEVICE_FORMS,
                    "the boot stops because the encrypted partition cannot be found safely",
                )
                .fatal()
            })?;
            cfg.luks.device = Some(spec);
        }
        "ramstick.luks.keyfile" => {
            if !is_abs_path(value) {
                return Err(Rejection::new(
                    "use an absolute path",
                    "using no key file (the passphrase is asked)",
                ));
            }
            cfg.luks.keyfile = Some(value.to_string());
        }
        "ramstick.luks.tries" => {
            cfg.luks.tries = parse_in_range(value, 1..=10).ok_or_else(|| {
                Rejection::new(
                    "use a number from 1 to 10",
                    format!("using {}", default.luks.tries),
                )
                .numeric("")
            })?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parses a kernel command line (e.g. the contents of `/proc/cmdline`).
///
/// Returns the configuration, with defaults wherever a parameter is missing
/// or unusable, and one [`Problem`] per unusable or unknown `ramstick.*`
/// parameter, in command-line order, then one per parameter that has no effect
/// (`ramstick.zram.alg` with a tmpfs upper). A repeated parameter takes its last value (like the kernel)
/// and only that value is checked. Words not starting with `ramstick.` are
/// ignored except `console=`, whose values are collected. Trailing whitespace
/// (the newline `/proc/cmdline` ends with) is not part of the command line.
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
        let shown = match value {
            Some(v) => format!("`{name}={v}`"),
            None => format!("`{name}`"),
        };
        let (message, fatal) = match apply(&mut cfg, name, value.unwrap_or("")) {
            Ok(true) => {
                taken.push((name, value.unwrap_or("")));
                continue;
            }
            Ok(false) => (
                format!(
                    "{shown} is an unknown parameter (known: {}); ignoring it",
                    PARAMS.join(", ")
                ),
                false,
            ),
            Err(rejection) => {
                let what = match value {
                    None => "has no value",
                    Some("") => "has an empty value",
                    Some(v) if rejection.numeric.is_some_and(|sfx| looks_numeric(v, sfx)) => {
                        "is out of range"
                    }
                    Some(_) => "is not valid",
                };
                (
                    format!("{shown} {what}: {}; {}", rejection.forms, rejection.instead),
                    rejection.fatal,
                )
            }
        };
        problems.push(Problem {
            param: name.to_string(),
            value: value.unwrap_or("").to_string(),
            message,
            fatal,
        });
    }
    for (name, value) in taken {
        let needs = match name {
            "ramstick.zram.alg" if cfg.upper != UpperKind::Zram => "ramstick.upper=zram",
            _ => continue,
        };
        problems.push(Problem {
            param: name.to_string(),
            value: value.to_string(),
            message: format!(
                "`{name}={value}` has no effect: it applies only with {needs}; ignoring it"
            ),
            fatal: false,
        });
    }
    (cfg, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_problem(cmdline: &str) -> Problem {
        let (_, problems) = parse(cmdline);
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].clone()
    }

    #[test]
    fn split_args_follows_the_kernel() {
        assert_eq!(split_args(""), vec![]);
        assert_eq!(split_args(" \t\n"), vec![]);
        assert_eq!(
            split_args("a b=c d=e=f"),
            vec![("a", None), ("b", Some("c")), ("d", Some("e=f"))]
        );
        assert_eq!(
            split_args(r#"a="b c" d"#),
            vec![("a", Some("b c")), ("d", None)]
        );
        assert_eq!(
            split_args(r#""a=b c" d"#),
            vec![("a", Some("b c")), ("d", None)]
        );
        // Quotes inside a value group words but stay in the value.
        assert_eq!(split_args(r#"a=b"c d""#), vec![("a", Some(r#"b"c d""#))]);
        assert_eq!(split_args(r#"a=""#), vec![("a", Some(""))]);
        assert_eq!(split_args(r#"a="" b"#), vec![("a", Some("")), ("b", None)]);
        // An unterminated quote runs to the end.
        assert_eq!(split_args(r#"a="b c"#), vec![("a", Some("b c"))]);
        assert_eq!(
            split_args("a=\u{f6} \u{e9}"),
            vec![("a", Some("\u{f6}")), ("\u{e9}", None)]
        );
        // `--` ends the kernel's parameters.
        assert_eq!(split_args("a -- b=c"), vec![("a", None)]);
        assert_eq!(
            split_args("a --=x b"),
            vec![("a", None), ("--", Some("x")), ("b", None)]
        );
        // Vertical tab and form feed separate like `isspace()`.
        assert_eq!(
            split_args("a\x0bb\x0cc"),
            vec![("a", None), ("b", None), ("c", None)]
        );
    }

    #[test]
    fn parse_size_forms() {
        assert_eq!(parse_size("1"), Some(Size::Bytes(1)));
        assert_eq!(parse_size("4096"), Some(Size::Bytes(4096)));
        assert_eq!(parse_size("2k"), Some(Size::Bytes(2048)));
        assert_eq!(parse_size("512M"), Some(Size::Bytes(512 << 20)));
        assert_eq!(parse_size("2G"), Some(Size::Bytes(2 << 30)));
        assert_eq!(parse_size("3t"), Some(Size::Bytes(3 << 40)));
        assert_eq!(parse_size("1%"), Some(Size::Percent(1)));
        assert_eq!(parse_size("100%"), Some(Size::Percent(100)));
        assert_eq!(
            parse_size("18446744073709551615"),
            Some(Size::Bytes(u64::MAX))
        );
        for bad in [
            "",
            "0",
            "0K",
            "0%",
            "101%",
            "256%",
            "%",
            "K",
            "-1",
            "+1",
            "1.5G",
            "2GB",
            "1 G",
            " 1",
            "1P",
            "18446744073709551616",
            "16777216T",
            "1e3",
            "0x10",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn size_to_bytes_and_display() {
        assert_eq!(Size::Percent(50).to_bytes(2 << 30), 1 << 30);
        assert_eq!(Size::Percent(33).to_bytes(100), 33);
        assert_eq!(Size::Percent(1).to_bytes(99), 0);
        assert_eq!(Size::Percent(100).to_bytes(u64::MAX), u64::MAX);
        assert_eq!(Size::Bytes(7).to_bytes(0), 7);
        for (size, text) in [
            (Size::Percent(50), "50%"),
            (Size::Bytes(1000), "1000"),
            (Size::Bytes(1024), "1K"),
            (Size::Bytes(1536 << 20), "1536M"),
            (Size::Bytes(2 << 40), "2T"),
        ] {
            assert_eq!(size.to_string(), text);
            assert_eq!(parse_size(text), Some(size));
        }
    }

    #[test]
    fn device_spec_forms_round_trip() {
        let cases = [
            ("LABEL=RAMSTICK", DeviceSpec::Label("RAMSTICK".into())),
            (r#"LABEL="MY STICK""#, DeviceSpec::Label("MY STICK".into())),
            ("UUID=abcd-1234", DeviceSpec::Uuid("abcd-1234".into())),
            ("PARTUUID=0a0b-01", DeviceSpec::PartUuid("0a0b-01".into())),
            ("PARTLABEL=data", DeviceSpec::PartLabel("data".into())),
            ("/dev/vda2", DeviceSpec::Path("/dev/vda2".into())),
        ];
        for (text, spec) in cases {
            assert_eq!(parse_device_spec(text), Some(spec.clone()), "{text}");
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            parse_device_spec("UUID=ABCD-EF01"),
            Some(DeviceSpec::Uuid("abcd-ef01".into()))
        );
        assert_eq!(
            parse_device_spec("LABEL=A=B"),
            Some(DeviceSpec::Label("A=B".into()))
        );
        for bad in [
            "",
            "LABEL=",
            r#"LABEL="""#,
            "UUID=",
            "UUID=xyz",
            "UUID=--",
            "PARTUUID=g1",
            "label=x",
            "RAMSTICK",
            "/dev/",
            "/dev",
            "vda2",
            "ID=x",
        ] {
            assert_eq!(parse_device_spec(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_cmdline_gives_defaults() {
        let (cfg, problems) = parse("");
        assert_eq!(cfg, Config::default());
        assert!(problems.is_empty());
        assert_eq!(parse("\n"), (Config::default(), vec![]));
        assert_eq!(cfg.persist, DeviceSpec::Label("RAMSTICK".into()));
        assert_eq!(cfg.upper_size, Size::Percent(50));
        assert_eq!(cfg.init, "/sbin/init");
    }

    #[test]
    fn every_known_parameter_is_applied() {
        for name in PARAMS {
            let mut cfg = Config::default();
            // The empty value is rejected by every parameter, so a known name gives `Err`.
            assert!(apply(&mut cfg, name, "").is_err(), "{name}");
            assert_eq!(
                cfg,
                Config::default(),
                "{name} changed the config on rejection"
            );
        }
        assert!(matches!(
            apply(&mut Config::default(), "ramstick.nope", "1"),
            Ok(false)
        ));
    }

    #[test]
    fn all_parameters_set_their_fields() {
        let (cfg, problems) = parse(
            "ramstick.persist=PARTLABEL=p ramstick.boot=backup ramstick.upper=tmpfs \
             ramstick.upper.size=25% ramstick.timeout=7 ramstick.init=/bin/init \
             ramstick.swap=2G ramstick.swappiness=0 ramstick.user=bob ramstick.shell=never \
             ramstick.log=debug ramstick.luks=UUID=AB ramstick.luks.keyfile=/key \
             ramstick.luks.tries=10 console=ttyS0 console=tty1",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let expected = Config {
            persist: DeviceSpec::PartLabel("p".into()),
            boot: BootType::Backup,
            upper: UpperKind::Tmpfs,
            upper_size: Size::Percent(25),
            zram_alg: None,
            timeout_secs: 7,
            init: "/bin/init".into(),
            swap: Some(2 << 30),
            swappiness: 0,
            user: "bob".into(),
            shell: ShellPolicy::Never,
            log: LogLevel::Debug,
            luks: Luks {
                device: Some(DeviceSpec::Uuid("ab".into())),
                keyfile: Some("/key".into()),
                tries: 10,
            },
            layers: LayersMode::Mount,
            checkpoint_minutes: Some(15),
            consoles: vec!["ttyS0".into(), "tty1".into()],
        };
        assert_eq!(cfg, expected);
        let (cfg, _) = parse("ramstick.zram.alg=lzo-rle");
        assert_eq!(cfg.zram_alg.as_deref(), Some("lzo-rle"));
    }

    #[test]
    fn bad_value_message_names_forms_and_fallback() {
        let p = one_problem("ramstick.boot=fast");
        assert_eq!(
            p,
            Problem {
                param: "ramstick.boot".into(),
                value: "fast".into(),
                message: "`ramstick.boot=fast` is not valid: use default, backup or clean; \
                          using default"
                    .into(),
                fatal: false,
            }
        );
        let p = one_problem("ramstick.upper.size=101%");
        assert!(p
            .message
            .starts_with("`ramstick.upper.size=101%` is out of range: use "));
        assert!(p.message.ends_with("; using 50%"));
        let p = one_problem("ramstick.timeout");
        assert_eq!(p.value, "");
        assert!(p.message.starts_with("`ramstick.timeout` has no value: "));
    }

    #[test]
    fn bad_device_is_fatal_and_keeps_default() {
        for cmdline in [
            "ramstick.persist=",
            "ramstick.persist",
            "ramstick.persist=sda",
            "ramstick.luks=x",
        ] {
            let (cfg, problems) = parse(cmdline);
            assert_eq!(problems.len(), 1, "{cmdline}");
            assert!(problems[0].fatal, "{cmdline}");
            assert_eq!(cfg.persist, Config::default().persist);
            assert_eq!(cfg.luks.device, None);
        }
        // Every other bad value is non-fatal.
        let (_, problems) = parse("ramstick.boot=x ramstick.upper=x ramstick.init=x ramstick.x=1");
        assert_eq!(problems.len(), 3 + 1);
        assert!(problems.iter().all(|p| !p.fatal));
    }

    #[test]
    fn last_repeated_value_wins() {
        let (cfg, problems) = parse("ramstick.boot=bad ramstick.boot=clean");
        assert_eq!(cfg.boot, BootType::Clean);
        assert!(problems.is_empty());
        let (cfg, problems) = parse("ramstick.boot=clean ramstick.boot=bad");
        assert_eq!(cfg.boot, BootType::Default);
        assert_eq!(problems.len(), 1);
        let (_, problems) = parse("ramstick.x=1 ramstick.x=2");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].value, "2");
    }

    #[test]
    fn unknown_parameters_list_the_known_ones() {
        let p = one_problem("ramstick.bogus=1 other.param=2 ramstickfoo");
        assert_eq!(p.param, "ramstick.bogus");
        assert!(!p.fatal);
        for name in PARAMS {
            assert!(
                p.message.contains(name),
                "{name} missing from {}",
                p.message
            );
        }
    }

    #[test]
    fn ineffective_parameters_are_reported() {
        let p = one_problem("ramstick.upper=tmpfs ramstick.zram.alg=zstd");
        assert_eq!(p.param, "ramstick.zram.alg");
        assert!(p.message.contains("has no effect"));
        // The LUKS options also apply to a container found by auto-detection.
        let (_, problems) = parse("ramstick.luks.keyfile=/k ramstick.luks.tries=4");
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = parse("ramstick.luks=/dev/sda3 ramstick.luks.keyfile=/k");
        assert!(problems.is_empty());
    }

    #[test]
    fn user_names_and_algorithms() {
        for good in [
            "a",
            "_",
            "user",
            "a-b_c9",
            "_abcdefghijklmnopqrstuvwxyz01234",
        ] {
            assert!(is_user_name(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "9a",
            "-a",
            "a.b",
            "a b",
            "abcdefghijklmnopqrstuvwxyz0123456",
            "é",
        ] {
            assert!(!is_user_name(bad), "{bad}");
        }
        for good in ["zstd", "lz4", "lzo-rle", "842"] {
            assert!(is_alg_name(good), "{good}");
        }
        for bad in ["", "ZSTD", "lz4hc ", "a_b", "a/b"] {
            assert!(!is_alg_name(bad), "{bad}");
        }
    }

    #[test]
    fn paths_must_be_absolute_without_control_characters() {
        let (cfg, problems) = parse(r#"ramstick.init="/sbin/my init""#);
        assert_eq!(cfg.init, "/sbin/my init");
        assert!(problems.is_empty());
        assert!(!is_abs_path("sbin/init"));
        assert!(!is_abs_path("/sbin/in\nit"));
        assert!(is_abs_path("/"));
    }
}

//! The value forms other modules also use: device specs (`LABEL=…`, `/dev/…`)
//! and sizes (`512M`, `50%`), read and written back in command-line form, plus
//! the decimal numbers the parameters are made of.

use super::split::is_kernel_space;
use super::{DeviceSpec, Size};
use std::fmt;

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
pub(super) fn parse_in_range<T>(s: &str, range: std::ops::RangeInclusive<T>) -> Option<T>
where
    T: TryFrom<u64> + PartialOrd,
{
    let n = T::try_from(parse_decimal(s)?).ok()?;
    range.contains(&n).then_some(n)
}

/// Whether `s` has the shape of a number: digits, then at most one of the
/// characters in `suffixes` (so a rejection means "out of range").
pub(super) fn looks_numeric(s: &str, suffixes: &str) -> bool {
    let digits = s.strip_suffix(|c: char| suffixes.contains(c)).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

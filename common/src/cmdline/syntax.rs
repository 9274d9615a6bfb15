//! How a parameter's value is written: one [`Syntax`] per kind of value. A
//! syntax reads a value, states the accepted forms and says a value (the
//! default) back, so the parser, its messages and the manual cannot disagree.
//!
//! Forms and values are Markdown: command-line literals are in backticks.
//! [`plain`] drops the backticks for messages and the console.

use super::values::{looks_numeric, parse_in_range};
use super::{parse_device_spec, parse_size, DeviceSpec, Keyword, Size};
use std::fmt::Display;
use std::marker::PhantomData;

/// One kind of parameter value, read into a `T`.
pub(super) trait Syntax<T>: Sync {
    /// The value `s` stands for; `None` when `s` is not an accepted form.
    fn read(&self, s: &str) -> Option<T>;
    /// The accepted forms, e.g. "`default`, `backup` or `clean`".
    fn forms(&self) -> String;
    /// `value` in command-line form (e.g. "`50%`"), or what it means.
    fn say(&self, value: &T) -> String;
    /// The suffixes a number of this syntax may carry, so that a rejected
    /// value of that shape is "out of range" rather than "not valid".
    /// `None`: the value is not a number.
    fn numeric(&self) -> Option<&'static str> {
        None
    }
}

/// Whether `value` has the shape of this syntax's numbers (see [`Syntax::numeric`]).
pub(super) fn is_numeric_shape<T>(syntax: &dyn Syntax<T>, value: &str) -> bool {
    syntax
        .numeric()
        .is_some_and(|suffixes| looks_numeric(value, suffixes))
}

/// `x` as a command-line literal.
fn lit(x: impl Display) -> String {
    format!("`{x}`")
}

/// Markdown `text` as plain text (without the backticks around literals).
pub(crate) fn plain(text: &str) -> String {
    text.replace('`', "")
}

/// Joins `["a", "b", "c"]` as `a, b or c`.
fn join_or(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// One of the words of a [`Keyword`] enum.
pub(super) struct Words<K>(PhantomData<fn() -> K>);

impl<K> Words<K> {
    pub(super) const fn new() -> Self {
        Words(PhantomData)
    }
}

impl<K: Keyword> Syntax<K> for Words<K> {
    fn read(&self, s: &str) -> Option<K> {
        K::ALL.iter().copied().find(|k| k.word() == s)
    }
    fn forms(&self) -> String {
        let words: Vec<String> = K::ALL.iter().map(|k| lit(k.word())).collect();
        join_or(&words)
    }
    fn say(&self, value: &K) -> String {
        lit(value.word())
    }
}

/// A block device: `LABEL=`, `UUID=`, `PARTUUID=`, `PARTLABEL=` or `/dev/…`
/// ([`parse_device_spec`]).
pub(super) struct Device;

impl Syntax<DeviceSpec> for Device {
    fn read(&self, s: &str) -> Option<DeviceSpec> {
        parse_device_spec(s)
    }
    fn forms(&self) -> String {
        "`LABEL=<label>`, `UUID=<uuid>`, `PARTUUID=<partuuid>`, `PARTLABEL=<partlabel>` \
         or `/dev/<name>`"
            .to_string()
    }
    fn say(&self, value: &DeviceSpec) -> String {
        lit(value)
    }
}

/// "a size in bytes with an optional K, M, G or T suffix (e.g. `example`)".
fn bytes_forms(example: &str) -> String {
    format!(
        "a size in bytes with an optional `K`, `M`, `G` or `T` suffix (e.g. {})",
        lit(example)
    )
}

/// A size in bytes or a percentage of RAM ([`parse_size`]).
pub(super) struct Sizes;

impl Syntax<Size> for Sizes {
    fn read(&self, s: &str) -> Option<Size> {
        parse_size(s)
    }
    fn forms(&self) -> String {
        format!(
            "{} or a percentage of RAM from `1%` to `100%`",
            bytes_forms("512M")
        )
    }
    fn say(&self, value: &Size) -> String {
        lit(value)
    }
    fn numeric(&self) -> Option<&'static str> {
        Some("%KMGTkmgt")
    }
}

/// A size in bytes only (no percentage).
pub(super) struct Bytes;

impl Syntax<u64> for Bytes {
    fn read(&self, s: &str) -> Option<u64> {
        match parse_size(s)? {
            Size::Bytes(n) => Some(n),
            Size::Percent(_) => None,
        }
    }
    fn forms(&self) -> String {
        bytes_forms("1G")
    }
    fn say(&self, value: &u64) -> String {
        lit(Size::Bytes(*value))
    }
    fn numeric(&self) -> Option<&'static str> {
        Some("KMGTkmgt")
    }
}

/// A decimal number from `min` to `max`, of `unit`s if given.
pub(super) struct Number<N> {
    pub min: N,
    pub max: N,
    /// What is counted, e.g. "seconds".
    pub unit: Option<&'static str>,
}

impl<N> Syntax<N> for Number<N>
where
    N: TryFrom<u64> + PartialOrd + Copy + Display + Sync,
{
    fn read(&self, s: &str) -> Option<N> {
        parse_in_range(s, self.min..=self.max)
    }
    fn forms(&self) -> String {
        let unit = self.unit.map(|u| format!(" of {u}")).unwrap_or_default();
        format!("a number{unit} from {} to {}", lit(self.min), lit(self.max))
    }
    fn say(&self, value: &N) -> String {
        lit(value)
    }
    fn numeric(&self) -> Option<&'static str> {
        Some("")
    }
}

/// A word that `valid` accepts, e.g. a path or a name.
pub(super) struct Text {
    pub valid: fn(&str) -> bool,
    /// The accepted forms, as [`Syntax::forms`] says them.
    pub forms: &'static str,
}

impl Syntax<String> for Text {
    fn read(&self, s: &str) -> Option<String> {
        (self.valid)(s).then(|| s.to_string())
    }
    fn forms(&self) -> String {
        self.forms.to_string()
    }
    fn say(&self, value: &String) -> String {
        lit(value)
    }
}

/// `off` (`None`) or a value of the inner syntax.
pub(super) struct OffOr<S>(pub S);

impl<T, S: Syntax<T>> Syntax<Option<T>> for OffOr<S> {
    fn read(&self, s: &str) -> Option<Option<T>> {
        if s == "off" {
            return Some(None);
        }
        self.0.read(s).map(Some)
    }
    fn forms(&self) -> String {
        format!("`off` or {}", self.0.forms())
    }
    fn say(&self, value: &Option<T>) -> String {
        match value {
            None => lit("off"),
            Some(v) => self.0.say(v),
        }
    }
    fn numeric(&self) -> Option<&'static str> {
        self.0.numeric()
    }
}

/// A value of the inner syntax, or nothing (`None`, no command-line form: the
/// parameter is not given). `absent` says what nothing means.
pub(super) struct Unset<S> {
    pub inner: S,
    pub absent: &'static str,
}

impl<T, S: Syntax<T>> Syntax<Option<T>> for Unset<S> {
    fn read(&self, s: &str) -> Option<Option<T>> {
        self.inner.read(s).map(Some)
    }
    fn forms(&self) -> String {
        self.inner.forms()
    }
    fn say(&self, value: &Option<T>) -> String {
        match value {
            None => self.absent.to_string(),
            Some(v) => self.inner.say(v),
        }
    }
    fn numeric(&self) -> Option<&'static str> {
        self.inner.numeric()
    }
}

/// Whether `path` is absolute and free of control characters.
pub(super) fn is_abs_path(path: &str) -> bool {
    path.starts_with('/') && !path.chars().any(char::is_control)
}

/// Whether `name` is a valid user name: `[a-z_][a-z0-9_-]{0,31}`.
pub(super) fn is_user_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    first_ok
        && name.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// Whether `alg` is a plausible compression algorithm name: `[a-z0-9-]{1,64}`.
pub(super) fn is_alg_name(alg: &str) -> bool {
    !alg.is_empty()
        && alg.len() <= 64
        && alg
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

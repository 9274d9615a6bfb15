//! GRUB's environment block (`grub/grubenv` on the ESP): the one file both
//! GRUB (`load_env`, `save_env`) and the running system write, so the slot
//! to boot and a one-shot trial survive between them.
//!
//! The format is GRUB's: exactly 1024 bytes, the line `# GRUB Environment
//! Block`, then `name=value` lines, then `#` padding to the end. GRUB's
//! `save_env` rewrites the block in place (it refuses to change the file's
//! size), and so does [`write_in_place`]; `grub-editenv` instead truncates and
//! rewrites the file, which a power cut can leave empty — never used here.
//!
//! Crash safety: a block whose variables fit in its first 512 bytes differs
//! from any other such block only in that first sector (the rest is `#`), so
//! rewriting it in place changes one sector, which a device writes whole or
//! not at all. [`Env::to_block`] refuses a block whose variables do not fit.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The size of an environment block.
pub const BLOCK_SIZE: usize = 1024;
/// What the variables must fit in for an in-place rewrite to touch one sector.
pub const ATOMIC_PREFIX: usize = 512;
/// The block's first line.
pub const HEADER: &str = "# GRUB Environment Block\n";

/// Why a block cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// Not 1024 bytes.
    Size(usize),
    /// The first line is not GRUB's header.
    Header,
    /// A line that is neither `name=value` nor padding.
    Line(String),
    /// A name or value this module does not write (GRUB would need escapes).
    Invalid(String),
    /// The variables do not fit in the first sector.
    TooLong(usize),
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::Size(n) => write!(f, "a GRUB environment block is {BLOCK_SIZE} bytes, not {n}"),
            EnvError::Header => write!(f, "no `# GRUB Environment Block` header"),
            EnvError::Line(l) => write!(f, "a line that is not name=value: {l:?}"),
            EnvError::Invalid(s) => write!(f, "cannot be stored without GRUB escapes: {s:?}"),
            EnvError::TooLong(n) => write!(
                f,
                "the variables take {n} bytes, more than the {ATOMIC_PREFIX} an in-place rewrite keeps in one sector"
            ),
        }
    }
}

impl std::error::Error for EnvError {}

/// The variables of a block, in name order (as `grub-editenv` lists them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// Parses a block. Escaped values (`\\`, `\` + newline) are read as GRUB
    /// writes them.
    pub fn parse(block: &[u8]) -> Result<Env, EnvError> {
        if block.len() != BLOCK_SIZE {
            return Err(EnvError::Size(block.len()));
        }
        let text = String::from_utf8_lossy(block);
        let body = text.strip_prefix(HEADER).ok_or(EnvError::Header)?;
        let mut vars = BTreeMap::new();
        let mut chars = body.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c == '#' || c == '\n' {
                // Padding or a comment line: skip to the line's end.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                continue;
            }
            let mut line = String::new();
            let mut value_started = false;
            let mut name = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(next) = chars.next() {
                            line.push(next);
                        }
                    }
                    '\n' => break,
                    '=' if !value_started => {
                        value_started = true;
                        name = std::mem::take(&mut line);
                    }
                    c => line.push(c),
                }
            }
            if !value_started || name.is_empty() {
                return Err(EnvError::Line(line));
            }
            vars.insert(name, line);
        }
        Ok(Env { vars })
    }

    /// Reads `path` (which must exist and be a whole block).
    pub fn read(path: &Path) -> io::Result<Env> {
        let block = std::fs::read(path)?;
        Env::parse(&block).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets a variable; an empty value is kept (GRUB's `set x=` then `save_env x`
    /// writes `x=`).
    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_string(), value.to_string());
    }

    /// Removes a variable.
    pub fn unset(&mut self, name: &str) {
        self.vars.remove(name);
    }

    /// The variables, in name order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The 1024-byte block; refused when a name or value would need an escape
    /// or the variables do not fit in the first sector.
    pub fn to_block(&self) -> Result<Vec<u8>, EnvError> {
        let mut out = HEADER.as_bytes().to_vec();
        for (name, value) in &self.vars {
            let name_ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok {
                return Err(EnvError::Invalid(name.clone()));
            }
            if value
                .chars()
                .any(|c| c == '\\' || c == '\n' || c.is_control())
            {
                return Err(EnvError::Invalid(value.clone()));
            }
            out.extend_from_slice(format!("{name}={value}\n").as_bytes());
        }
        if out.len() > ATOMIC_PREFIX {
            return Err(EnvError::TooLong(out.len()));
        }
        out.resize(BLOCK_SIZE, b'#');
        Ok(out)
    }
}

/// Rewrites the block at `path` in place (no truncation, no rename: the file
/// keeps its clusters, as GRUB's `save_env` needs) and syncs it. The file must
/// already be a block: one that is not is never overwritten.
pub fn write_in_place(path: &Path, env: &Env) -> io::Result<()> {
    let block = env
        .to_block()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len != BLOCK_SIZE as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            EnvError::Size(len as usize),
        ));
    }
    file.write_all_at(&block, 0)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(lines: &str) -> Vec<u8> {
        let mut b = format!("{HEADER}{lines}").into_bytes();
        b.resize(BLOCK_SIZE, b'#');
        b
    }

    #[test]
    fn reads_what_grub_editenv_writes() {
        // `grub-editenv f create; grub-editenv f set ramstick_slot=b ramstick_trial=`
        let env = Env::parse(&block_of("ramstick_slot=b\nramstick_trial=\n")).unwrap();
        assert_eq!(env.get("ramstick_slot"), Some("b"));
        assert_eq!(env.get("ramstick_trial"), Some(""));
        assert_eq!(env.get("other"), None);
        assert_eq!(Env::parse(&block_of("")).unwrap(), Env::default());
    }

    #[test]
    fn reads_grub_escapes() {
        let env = Env::parse(&block_of("a=x\\\\y\\\nz\n")).unwrap();
        assert_eq!(env.get("a"), Some("x\\y\nz"));
    }

    #[test]
    fn round_trips_and_pads_with_hashes() {
        let mut env = Env::default();
        env.set("ramstick_trial", "b");
        env.set("ramstick_slot", "a");
        let block = env.to_block().unwrap();
        assert_eq!(block.len(), BLOCK_SIZE);
        assert!(
            block.starts_with(b"# GRUB Environment Block\nramstick_slot=a\nramstick_trial=b\n#")
        );
        assert!(block[ATOMIC_PREFIX..].iter().all(|&b| b == b'#'));
        assert_eq!(Env::parse(&block).unwrap(), env);
        env.unset("ramstick_trial");
        assert_eq!(
            Env::parse(&env.to_block().unwrap())
                .unwrap()
                .get("ramstick_trial"),
            None
        );
    }

    #[test]
    fn refuses_what_it_cannot_read_or_write() {
        assert_eq!(Env::parse(&[b'#'; 10]), Err(EnvError::Size(10)));
        assert_eq!(Env::parse(&[b'#'; BLOCK_SIZE]), Err(EnvError::Header));
        assert!(matches!(
            Env::parse(&block_of("novalue\n")),
            Err(EnvError::Line(_))
        ));
        let mut env = Env::default();
        env.set("a", "x\ny");
        assert!(matches!(env.to_block(), Err(EnvError::Invalid(_))));
        let mut env = Env::default();
        env.set("bad name", "x");
        assert!(matches!(env.to_block(), Err(EnvError::Invalid(_))));
        let mut env = Env::default();
        env.set("long", &"x".repeat(500));
        assert!(matches!(env.to_block(), Err(EnvError::TooLong(_))));
    }

    #[test]
    fn rewrites_in_place_and_never_a_file_that_is_not_a_block() {
        let dir = ramstick_testkit::TempDir::new("grubenv");
        let path = dir.join("grubenv");
        std::fs::write(&path, block_of("ramstick_slot=a\n")).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        let mut env = Env::read(&path).unwrap();
        env.set("ramstick_slot", "b");
        write_in_place(&path, &env).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), ino);
        assert_eq!(Env::read(&path).unwrap().get("ramstick_slot"), Some("b"));

        let short = dir.join("short");
        std::fs::write(&short, b"# GRUB Environment Block\n").unwrap();
        assert!(write_in_place(&short, &env).is_err());
        assert_eq!(
            std::fs::read(&short).unwrap(),
            b"# GRUB Environment Block\n"
        );
    }
}

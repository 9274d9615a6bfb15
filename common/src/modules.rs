//! The kernel-module database of a `lib/modules/<kver>` directory.
//!
//! [`ModDb`] parses `modules.dep`, `modules.softdep`, `modules.alias` and
//! `modules.builtin` (as written by `depmod`) and answers the two questions a
//! module loader has: which module(s) does a name or modalias mean
//! ([`ModDb::resolve`]), and in which order must files be loaded so that
//! every module comes after what it needs ([`ModDb::load_order`]).
//!
//! The order follows kmod's `modprobe` exactly (it is tested against
//! `modprobe --show-depends`): for a module, each of its `modules.dep`
//! dependencies (listed there deepest-last) is visited in reverse with its
//! soft dependencies, then the module with its own; `pre:` soft dependencies
//! come before a module, `post:` ones after it, and only the first
//! `softdep` line naming a module counts (as in kmod). Soft dependencies
//! may name aliases; one that resolves to nothing is skipped.
//!
//! Module names are normalised (`-` → `_`); file paths are relative to the
//! directory. Nothing here touches the running system.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// The modules every ramstick boot may need: storage controllers and disks,
/// a USB keyboard, the filesystems of the stick and the images, zram and
/// loop. Not vfat:
/// init never mounts the ESP, and the running system loads it from its own
/// modules when the saver does. An encrypted stick's initramfs carries the
/// LUKS modules too ([`initramfs_modules`]).
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "sd_mod",
    "usb_storage",
    "uas",
    "xhci_pci",
    "xhci_hcd",
    "ehci_pci",
    "ehci_hcd",
    "ohci_pci",
    "uhci_hcd",
    "ahci",
    // A USB keyboard, to type the passphrase or in the emergency shell (a
    // laptop's own keyboard is the built-in i8042/atkbd).
    "usbhid",
    "hid_generic",
    "ext4",
    "squashfs",
    "overlay",
    "zram",
    // zram's default compression algorithms: built into Debian's amd64
    // kernel, modules in its cloud kernel.
    "lzo_rle",
    "lzo",
    "loop",
    // A trial boot's watchdog (see `crate::slotboot`).
    "softdog",
];

/// What opening a LUKS container with the default cipher (aes-xts-plain64)
/// needs, in load order. init has no modprobe, so the kernel's own
/// `request_module("crypto-xts(aes)")` cannot load them: init does. AES and
/// SHA-256 are built into the Debian kernel; the key slots' argon2id and
/// AES run in libcryptsetup (user space).
pub const LUKS_MODULES: &[&str] = &["dm_mod", "dm_crypt", "ecb", "xts"];

/// Faster variants for LUKS that only some CPUs take (AES-NI); a CPU
/// without them refuses the module and the built-in generic AES is used.
pub const LUKS_OPTIONAL_MODULES: &[&str] = &["aesni_intel"];

/// The modules an initramfs carries (with what they need): the boot
/// modules, and the LUKS ones in an encrypted stick's (the one with the
/// unlock program; another cannot open a container anyway). They are
/// ~180 KB of the compressed archive a plain stick would load for nothing.
pub fn initramfs_modules(luks: bool) -> Vec<&'static str> {
    let mut names = BOOT_MODULES.to_vec();
    if luks {
        names.extend(LUKS_MODULES.iter().chain(LUKS_OPTIONAL_MODULES));
    }
    names
}

#[derive(Debug, thiserror::Error)]
pub enum ModError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("module {0:?} not found in modules.dep, modules.alias or modules.builtin")]
    UnknownModule(String),
    #[error("module {module} depends on {dep}, which modules.dep does not list")]
    MissingDependency { module: String, dep: String },
}

/// One module file to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModEntry {
    /// Normalised module name, e.g. `virtio_blk`.
    pub name: String,
    /// Path relative to the modules directory, e.g. `kernel/drivers/block/virtio_blk.ko`.
    pub path: String,
}

#[derive(Debug, Clone)]
struct Module {
    entry: ModEntry,
    /// Dependency paths as written in modules.dep (deepest last).
    deps: Vec<String>,
}

#[derive(Debug, Clone)]
struct SoftDep {
    /// Module name (or pattern) the line is about, normalised.
    module: String,
    pre: Vec<String>,
    post: Vec<String>,
    line: String,
}

#[derive(Debug, Clone)]
struct Alias {
    /// The alias pattern, normalised like kmod does (see [`normalize_alias`]).
    pattern: String,
    /// Length of the pattern's literal start (see [`literal_prefix`]).
    literal: usize,
    module: String,
    line: String,
}

/// A parsed `lib/modules/<kver>` directory.
#[derive(Debug, Clone, Default)]
pub struct ModDb {
    /// Loadable modules in modules.dep order.
    modules: Vec<Module>,
    by_name: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
    softdeps: Vec<SoftDep>,
    aliases: Vec<Alias>,
    builtin: HashSet<String>,
}

/// `kernel/fs/nls/nls_iso8859-1.ko` → `nls_iso8859_1`.
pub fn module_name_from_path(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.zst", ".ko.xz", ".ko.gz", ".ko"]
        .iter()
        .find_map(|suffix| base.strip_suffix(suffix))
        .unwrap_or(base);
    normalize_name(stem)
}

/// Module names treat `-` and `_` alike; the canonical form uses `_`.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// kmod's alias normalisation: `-` → `_` except inside `[...]` classes.
fn normalize_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_class = false;
    for c in alias.chars() {
        match c {
            '[' => in_class = true,
            ']' => in_class = false,
            '-' if !in_class => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Reads `dir/name`; a missing file reads as empty when `optional`.
fn read_text(dir: &Path, name: &str, optional: bool) -> Result<String, ModError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ModError::Read { path, source }),
    }
}

/// Content lines of a depmod file: trimmed, without blanks and `#` comments.
fn content_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl ModDb {
    /// Loads `dir` (a `lib/modules/<kver>` directory). `modules.dep` is
    /// required; missing softdep/alias/builtin files count as empty.
    pub fn load(dir: &Path) -> Result<ModDb, ModError> {
        let dep = read_text(dir, "modules.dep", false)?;
        let softdep = read_text(dir, "modules.softdep", true)?;
        let alias = read_text(dir, "modules.alias", true)?;
        let builtin = read_text(dir, "modules.builtin", true)?;
        Ok(ModDb::parse(&dep, &softdep, &alias, &builtin))
    }

    /// Parses the four files' texts. Malformed lines are skipped.
    pub fn parse(dep: &str, softdep: &str, alias: &str, builtin: &str) -> ModDb {
        let mut db = ModDb::default();
        for line in content_lines(dep) {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim().to_string();
            let name = module_name_from_path(&path);
            if db.by_name.contains_key(&name) {
                continue;
            }
            let index = db.modules.len();
            db.by_name.insert(name.clone(), index);
            db.by_path.insert(path.clone(), index);
            db.modules.push(Module {
                entry: ModEntry { name, path },
                deps: deps.split_whitespace().map(str::to_string).collect(),
            });
        }
        for line in content_lines(softdep) {
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            let mut soft = SoftDep {
                module: normalize_name(module),
                pre: Vec::new(),
                post: Vec::new(),
                line: line.to_string(),
            };
            // Words before any `pre:`/`post:` are ignored, as kmod does.
            let mut mode = "";
            for word in words {
                match word {
                    "pre:" | "post:" => mode = word,
                    _ if mode == "pre:" => soft.pre.push(word.to_string()),
                    _ if mode == "post:" => soft.post.push(word.to_string()),
                    _ => {}
                }
            }
            db.softdeps.push(soft);
        }
        for line in content_lines(alias) {
            let mut words = line.split_whitespace();
            let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let pattern = normalize_alias(pattern);
            db.aliases.push(Alias {
                literal: literal_prefix(&pattern).len(),
                pattern,
                module: normalize_name(module),
                line: line.to_string(),
            });
        }
        db.builtin = content_lines(builtin).map(module_name_from_path).collect();
        db
    }

    /// Whether `name` is a loadable module listed in modules.dep.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(&normalize_name(name))
    }

    /// Whether `name` is built into the kernel (modules.builtin).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_name(name))
    }

    /// The module(s) a name or a concrete modalias string means, in kmod's
    /// lookup order: a loadable module of that name; else every module with
    /// a matching alias pattern (modules.alias order, no duplicates); else a
    /// builtin module of that name. Empty when nothing matches.
    pub fn resolve(&self, name_or_alias: &str) -> Vec<String> {
        let name = normalize_name(name_or_alias);
        if self.by_name.contains_key(&name) {
            return vec![name];
        }
        let query = normalize_alias(name_or_alias);
        let mut found: Vec<String> = Vec::new();
        for alias in &self.aliases {
            // The literal start first: most patterns are of another bus or
            // vendor, and this runs for every modalias init sees.
            if query.starts_with(&alias.pattern[..alias.literal])
                && !found.contains(&alias.module)
                && glob_match(&alias.pattern, &query)
            {
                found.push(alias.module.clone());
            }
        }
        if found.is_empty() && self.builtin.contains(&name) {
            found.push(name);
        }
        found
    }

    /// The modules to load, in order, for `names` (module names or
    /// aliases): the closure over modules.dep and soft dependencies, each
    /// module after its dependencies, without duplicates. Builtin modules
    /// are left out; a name that resolves to nothing is an error.
    pub fn load_order(&self, names: &[&str]) -> Result<Vec<ModEntry>, ModError> {
        let mut walk = Walk {
            db: self,
            visited: HashSet::new(),
            out: Vec::new(),
        };
        for name in names {
            let found = self.resolve(name);
            if found.is_empty() {
                return Err(ModError::UnknownModule(name.to_string()));
            }
            for module in found {
                walk.probe(&module)?;
            }
        }
        Ok(walk
            .out
            .into_iter()
            .map(|i| self.modules[i].entry.clone())
            .collect())
    }

    /// modules.dep, modules.softdep and modules.alias texts restricted to the
    /// modules in `keep` (for an initramfs that ships only those).
    pub fn filtered_files(&self, keep: &[ModEntry]) -> (String, String, String) {
        let kept: HashSet<&str> = keep.iter().map(|e| e.name.as_str()).collect();
        let kept_paths: HashSet<&str> = keep.iter().map(|e| e.path.as_str()).collect();
        let mut dep = String::new();
        for module in &self.modules {
            if !kept.contains(module.entry.name.as_str()) {
                continue;
            }
            dep.push_str(&module.entry.path);
            dep.push(':');
            for d in module
                .deps
                .iter()
                .filter(|d| kept_paths.contains(d.as_str()))
            {
                dep.push(' ');
                dep.push_str(d);
            }
            dep.push('\n');
        }
        let softdep: String = self
            .softdeps
            .iter()
            .filter(|s| kept.contains(s.module.as_str()))
            .map(|s| format!("{}\n", s.line))
            .collect();
        let alias: String = self
            .aliases
            .iter()
            .filter(|a| kept.contains(a.module.as_str()))
            .map(|a| format!("{}\n", a.line))
            .collect();
        (dep, softdep, alias)
    }

    /// The first softdep line about `name` (kmod uses only that one).
    fn softdep_of(&self, name: &str) -> Option<&SoftDep> {
        self.softdeps.iter().find(|s| glob_match(&s.module, name))
    }

    fn index_of_dep(&self, module: usize, dep: &str) -> Result<usize, ModError> {
        self.by_path
            .get(dep)
            .copied()
            .ok_or_else(|| ModError::MissingDependency {
                module: self.modules[module].entry.name.clone(),
                dep: dep.to_string(),
            })
    }
}

/// The state of one [`ModDb::load_order`] walk (mirrors kmod's probe list).
struct Walk<'a> {
    db: &'a ModDb,
    visited: HashSet<usize>,
    /// Module indices in load order, each once.
    out: Vec<usize>,
}

impl Walk<'_> {
    /// A module with its whole closure. Builtin names are skipped.
    fn probe(&mut self, name: &str) -> Result<(), ModError> {
        let Some(&index) = self.db.by_name.get(name) else {
            return Ok(());
        };
        if !self.visited.insert(index) {
            return Ok(());
        }
        let module = &self.db.modules[index];
        for dep in module.deps.iter().rev() {
            let dep_index = self.db.index_of_dep(index, dep)?;
            self.with_softdeps(dep_index)?;
        }
        self.with_softdeps(index)
    }

    /// A module preceded by its `pre:` and followed by its `post:` soft
    /// dependencies (each with its closure).
    fn with_softdeps(&mut self, index: usize) -> Result<(), ModError> {
        let name = &self.db.modules[index].entry.name;
        let soft = self.db.softdep_of(name);
        for pre in soft.map(|s| s.pre.as_slice()).unwrap_or_default() {
            for module in self.db.resolve(pre) {
                self.probe(&module)?;
            }
        }
        if !self.out.contains(&index) {
            self.out.push(index);
        }
        for post in soft.map(|s| s.post.as_slice()).unwrap_or_default() {
            for module in self.db.resolve(post) {
                self.probe(&module)?;
            }
        }
        Ok(())
    }
}

/// The start of a glob pattern before its first special character (`*`,
/// `?`, `[`, `\`): every text the pattern matches starts with it.
pub fn literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    &pattern[..end]
}

/// fnmatch(3)-style matching of `text` against `pattern` (no flags): `*`
/// (any run), `?` (any one character), `[...]` classes with ranges and `!`
/// or `^` negation, `\` escapes. An unclosed `[` matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match match_class(&p, pi, t[ti]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (t[ti] == '[').then_some(pi + 1),
            },
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == t[ti]).then_some(pi + 2),
            Some(&c) => (c == t[ti]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((star_pi, star_ti))) => {
                pi = star_pi;
                ti = star_ti + 1;
                star = Some((star_pi, star_ti + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`. Returns
/// whether it matched and the index after the closing `]`, or `None` when
/// the class is not closed.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_encrypted_sticks_initramfs_carries_the_luks_modules() {
        for m in LUKS_MODULES.iter().chain(LUKS_OPTIONAL_MODULES) {
            assert!(initramfs_modules(true).contains(m), "{m} is not carried");
            assert!(!initramfs_modules(false).contains(m), "{m} is carried");
        }
    }

    #[test]
    fn the_initramfs_carries_the_trial_watchdog() {
        assert!(BOOT_MODULES.contains(&crate::slotboot::TRIAL_WATCHDOG_MODULE));
    }

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/zram/zram.ko: kernel/mm/zsmalloc.ko
kernel/mm/zsmalloc.ko:
kernel/drivers/usb/host/ehci-hcd.ko:
kernel/drivers/usb/host/ehci-pci.ko: kernel/drivers/usb/host/ehci-hcd.ko
kernel/drivers/usb/host/ohci-hcd.ko:
kernel/drivers/usb/host/ohci-pci.ko: kernel/drivers/usb/host/ohci-hcd.ko
kernel/fs/fat/fat.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/nls/nls_iso8859-1.ko:
kernel/test/a.ko:
kernel/test/b.ko:
kernel/test/broken.ko: kernel/test/nowhere.ko
";
    const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep ohci_pci pre: ehci_pci
softdep ohci_pci pre: zram
softdep vfat pre: no-such-thing post: nls-iso8859-1
softdep cifs gcm
softdep a pre: b
softdep b pre: a
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias crypto-crc32c crc32c_intel
alias crypto-crc32c-intel crc32c_intel
alias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk
alias crypto-crc32c crc32c_generic
alias fs-vfat vfat
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias devname:zram[0-9] zram
";
    const BUILTIN: &str =
        "kernel/fs/squashfs/squashfs.ko\nkernel/drivers/usb/storage/usb-storage.ko\n";

    fn db() -> ModDb {
        ModDb::parse(DEP, SOFTDEP, ALIAS, BUILTIN)
    }

    fn names(entries: &[ModEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn names_are_normalised_from_paths() {
        assert_eq!(
            module_name_from_path("kernel/fs/nls/nls_iso8859-1.ko"),
            "nls_iso8859_1"
        );
        assert_eq!(
            module_name_from_path("a/b/crc32c-intel.ko.zst"),
            "crc32c_intel"
        );
        let db = db();
        assert!(db.contains("crc32c-intel"));
        assert!(db.contains("ehci_hcd"));
        assert!(!db.contains("squashfs"));
        assert!(db.is_builtin("squashfs"));
        assert!(db.is_builtin("usb-storage"));
        assert!(!db.is_builtin("ext4"));
    }

    #[test]
    fn ext4_closure_softdeps_first_then_deps_reversed() {
        let order = db().load_order(&["ext4"]).unwrap();
        assert_eq!(
            names(&order),
            [
                "crc32c_intel",
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
        assert_eq!(order[0].path, "kernel/arch/x86/crypto/crc32c-intel.ko");
    }

    #[test]
    fn each_module_once_and_after_its_dependencies() {
        let order = db()
            .load_order(&["virtio_blk", "ext4", "zram", "jbd2", "virtio_blk"])
            .unwrap();
        assert_eq!(
            names(&order),
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "crc32c_intel",
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4",
                "zsmalloc",
                "zram"
            ]
        );
    }

    #[test]
    fn only_first_softdep_line_counts_and_pre_goes_before() {
        // ohci_pci's first line pulls ehci_pci; the second (zram) is ignored like kmod does.
        let order = db().load_order(&["ohci_pci"]).unwrap();
        assert_eq!(
            names(&order),
            ["ohci_hcd", "ehci_hcd", "ehci_pci", "ohci_pci"]
        );
    }

    #[test]
    fn post_softdeps_after_and_unresolvable_softdeps_skipped() {
        let order = db().load_order(&["vfat"]).unwrap();
        assert_eq!(names(&order), ["fat", "vfat", "nls_iso8859_1"]);
    }

    #[test]
    fn softdep_cycle_terminates() {
        let order = db().load_order(&["a"]).unwrap();
        assert_eq!(names(&order), ["b", "a"]);
    }

    #[test]
    fn builtin_skipped_unknown_is_an_error_naming_it() {
        assert!(db().load_order(&["squashfs"]).unwrap().is_empty());
        let err = db().load_order(&["ext4", "no_such_mod"]).unwrap_err();
        assert!(matches!(&err, ModError::UnknownModule(n) if n == "no_such_mod"));
        assert!(err.to_string().contains("no_such_mod"));
        let err = db().load_order(&["broken"]).unwrap_err();
        assert!(err.to_string().contains("kernel/test/nowhere.ko"), "{err}");
    }

    #[test]
    fn resolve_names_and_modaliases() {
        let db = db();
        assert_eq!(db.resolve("virtio-blk"), ["virtio_blk"]);
        assert_eq!(
            db.resolve("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
            ["virtio_blk"]
        );
        assert!(db
            .resolve("pci:v00001AF4d00001002sv00001AF4sd00000002bc01sc00i00")
            .is_empty());
        assert_eq!(
            db.resolve("crypto-crc32c"),
            ["crc32c_intel", "crc32c_generic"]
        );
        assert_eq!(
            db.resolve("crypto_crc32c"),
            ["crc32c_intel", "crc32c_generic"]
        );
        assert_eq!(
            db.resolve("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
        assert_eq!(db.resolve("devname:zram3"), ["zram"]);
        assert!(db.resolve("devname:zramx").is_empty());
        assert_eq!(db.resolve("squashfs"), ["squashfs"]);
        assert!(db.resolve("nothing").is_empty());
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_special_character() {
        assert_eq!(literal_prefix("pci:v00008086d*sv*"), "pci:v00008086d");
        assert_eq!(literal_prefix("usb:v0781p5567"), "usb:v0781p5567");
        assert_eq!(literal_prefix("*foo"), "");
        assert_eq!(literal_prefix("cpu:type:x86,ven?"), "cpu:type:x86,ven");
        assert_eq!(literal_prefix("x[0-9]"), "x");
        assert_eq!(literal_prefix("a\\*b"), "a");
        for (pattern, text) in [
            ("pci:v00008086d*", "pci:v00008086d00002922"),
            ("a\\*", "a*"),
        ] {
            assert!(glob_match(pattern, text) && text.starts_with(literal_prefix(pattern)));
        }
    }

    #[test]
    fn glob_matcher() {
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abd"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a*", "a"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*d", "abc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("x[0-9]", "x7"));
        assert!(!glob_match("x[0-9]", "xa"));
        assert!(glob_match("x[a-z]y", "xqy"));
        assert!(glob_match("x[!0-9]", "xa"));
        assert!(!glob_match("x[^0-9]", "x1"));
        assert!(glob_match("x[]]", "x]"));
        assert!(glob_match("x[a-]", "x-"));
        assert!(glob_match("x[", "x["));
        assert!(glob_match("a\\*", "a*"));
        assert!(!glob_match("a\\*", "ab"));
        assert!(glob_match("*sv*sd*bc*", "pci:sv1sd2bc3"));
        assert!(!glob_match("*sv*sd*bc*", "pci:sv1bc3sd2"));
    }

    #[test]
    fn filtered_files_keep_only_the_closure() {
        let db = db();
        let keep = db.load_order(&["ext4", "virtio_blk"]).unwrap();
        let (dep, softdep, alias) = db.filtered_files(&keep);
        let filtered = ModDb::parse(&dep, &softdep, &alias, "");
        assert_eq!(filtered.load_order(&["ext4", "virtio_blk"]).unwrap(), keep);
        assert!(!dep.contains("zram"));
        assert!(dep.contains("kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"));
        assert_eq!(
            softdep,
            "softdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n"
        );
        assert!(alias.contains("alias crypto-crc32c crc32c_generic\n"));
        assert!(!alias.contains("vfat"));
    }

    #[test]
    fn load_reads_files_and_tolerates_missing_optional_ones() {
        let dir = ramstick_testkit::TempDir::new("moddb");
        let err = ModDb::load(&dir).unwrap_err();
        assert!(err.to_string().contains("modules.dep"), "{err}");
        std::fs::write(dir.join("modules.dep"), DEP).unwrap();
        let db = ModDb::load(&dir).unwrap();
        assert_eq!(
            names(&db.load_order(&["ext4"]).unwrap()),
            ["jbd2", "mbcache", "crc16", "ext4"]
        );
    }

    /// The fetched Debian kernel's `lib/modules/<kver>` with `modules.dep`, if any.
    fn fetched_kernel() -> Option<(PathBuf, String)> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let mut found = Vec::new();
        for pkg in std::fs::read_dir(target.join("kernel")).ok()?.flatten() {
            let Ok(kvers) = std::fs::read_dir(pkg.path().join("lib/modules")) else {
                continue;
            };
            for kver in kvers.flatten() {
                if kver.path().join("modules.dep").is_file() {
                    found.push((pkg.path(), kver.file_name().to_string_lossy().into_owned()));
                }
            }
        }
        found.sort();
        found.pop()
    }

    #[test]
    fn boot_modules_match_modprobe_show_depends() {
        let Some((root, kver)) = fetched_kernel() else {
            println!("skipped: no fetched kernel under target/kernel (run `cargo xtask kernel`)");
            return;
        };
        let modprobe = ["/usr/sbin/modprobe", "/sbin/modprobe"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(modprobe) = modprobe else {
            println!("skipped: modprobe not installed");
            return;
        };
        let root = root.canonicalize().unwrap();
        let dir = root.join("lib/modules").join(&kver);
        let db = ModDb::load(&dir).unwrap();
        // An empty config dir: the host's /etc/modprobe.d must not count.
        let conf = ramstick_testkit::TempDir::new("noconf");
        let prefix = format!("{}/", dir.display());
        let mut compared = 0;
        for name in initramfs_modules(true) {
            let out = std::process::Command::new(modprobe)
                .arg("-C")
                .arg(conf.path())
                .arg("--show-depends")
                .arg("-d")
                .arg(&root)
                .arg("-S")
                .arg(&kver)
                .arg(name)
                .output()
                .unwrap();
            assert!(out.status.success(), "modprobe {name}: {out:?}");
            let mut expected: Vec<String> = Vec::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(path) = line.strip_prefix("insmod ") else {
                    continue;
                };
                let rel = path.trim().strip_prefix(&prefix).unwrap().to_string();
                if !expected.contains(&rel) {
                    expected.push(rel);
                }
            }
            let ours: Vec<String> = db
                .load_order(&[name])
                .unwrap()
                .into_iter()
                .map(|e| e.path)
                .collect();
            assert_eq!(ours, expected, "load order of {name}");
            compared += usize::from(!expected.is_empty());
        }
        assert!(compared > 0, "modprobe printed no insmod lines at all");
    }
}

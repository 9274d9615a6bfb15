//! Kernel module loading without kmod: the module database of the running
//! kernel (modules.dep/softdep/alias in the initramfs), `finit_module(2)`,
//! and driver autoloading from the modaliases the hardware shows in /sys.

use anyhow::{Context, Result};
use nix::kmod::{finit_module, ModuleInitFlags};
use ramstick_common::modules::ModDb;
use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// MODULE_INIT_COMPRESSED_FILE: the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

pub struct Loader {
    db: ModDb,
    dir: PathBuf,
    sys_root: PathBuf,
    /// Modules we loaded or found loaded/built in.
    done: HashSet<String>,
    /// Modaliases already handled.
    seen_aliases: HashSet<String>,
    kernel_decompresses: bool,
}

impl Loader {
    /// Open the database in `dir` (`/lib/modules/<kver>`); `sys_root` is `/sys`.
    pub fn open(dir: &Path, sys_root: &Path) -> Result<Self> {
        let db = ModDb::load(dir)
            .with_context(|| format!("cannot read the module database in {}", dir.display()))?;
        Ok(Loader {
            db,
            dir: dir.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            done: HashSet::new(),
            seen_aliases: HashSet::new(),
            kernel_decompresses: sys_root.join("module/compression").exists(),
        })
    }

    /// Whether a module is already in the kernel (loaded or built in).
    fn in_kernel(&self, name: &str) -> bool {
        self.db.is_builtin(name) || self.sys_root.join("module").join(name).exists()
    }

    /// Load `names` and everything they need, each after its dependencies.
    /// Returns how many modules were newly inserted.
    pub fn load(&mut self, names: &[&str]) -> Result<usize> {
        let order = self
            .db
            .load_order(names)
            .with_context(|| format!("cannot resolve modules {}", names.join(" ")))?;
        let mut inserted = 0;
        for entry in order {
            if self.done.contains(&entry.name) {
                continue;
            }
            if !self.in_kernel(&entry.name) {
                let path = self.dir.join(&entry.path);
                match self.insert(&path) {
                    Ok(()) => {
                        log::debug!("loaded module {}", entry.name);
                        inserted += 1;
                    }
                    // A module asked for by name must load. Others (soft
                    // dependencies such as a CPU-specific crc32c) may refuse
                    // this machine; what needs them fails visibly after.
                    Err(e) if names.contains(&entry.name.as_str()) => {
                        return Err(e)
                            .with_context(|| format!("cannot load module {}", path.display()));
                    }
                    Err(e) => log::debug!("optional module {} not loaded: {e:#}", entry.name),
                }
            }
            self.done.insert(entry.name);
        }
        Ok(inserted)
    }

    fn insert(&self, path: &Path) -> Result<()> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let compressed = path
            .extension()
            .map(|e| e == "xz" || e == "zst" || e == "gz")
            .unwrap_or(false);
        let flags = if compressed {
            if !self.kernel_decompresses {
                anyhow::bail!(
                    "{} is compressed and this kernel cannot decompress modules; rebuild the initramfs with `cargo xtask initramfs`, which stores them uncompressed",
                    path.display()
                );
            }
            ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
        } else {
            ModuleInitFlags::empty()
        };
        let params = CString::default();
        match finit_module(&file, &params, flags) {
            Ok(()) => Ok(()),
            // Loaded meanwhile (e.g. by the kernel's own request_module).
            Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Load drivers for the hardware present: every `modalias` under
    /// /sys/devices not handled yet. Failures are logged, not fatal (a
    /// driver for some unrelated device must not stop the boot).
    pub fn autoload_hardware(&mut self) -> usize {
        let mut aliases = BTreeSet::new();
        collect_modaliases(&self.sys_root.join("devices"), &mut aliases, 0);
        let mut inserted = 0;
        for alias in aliases {
            if !self.seen_aliases.insert(alias.clone()) {
                continue;
            }
            for name in self.db.resolve(&alias) {
                if self.done.contains(&name) {
                    continue;
                }
                match self.load(&[name.as_str()]) {
                    Ok(n) => inserted += n,
                    Err(e) => log::warn!("driver {name} for {alias}: {e:#}"),
                }
            }
        }
        inserted
    }
}

/// All `modalias` values below `dir` (sysfs), without following symlinks.
fn collect_modaliases(dir: &Path, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 32 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            collect_modaliases(&path, out, depth + 1);
        } else if ft.is_file() && entry.file_name() == "modalias" {
            if let Ok(s) = std::fs::read_to_string(&path) {
                let s = s.trim();
                if !s.is_empty() {
                    out.insert(s.to_string());
                }
            }
        }
    }
}

//! Kernel module loading without kmod: the module database of the running
//! kernel (modules.dep/softdep/alias in the initramfs), `finit_module(2)`,
//! and driver autoloading from the modaliases the hardware shows in /sys.

use crate::modpool::{self, Job};
use anyhow::{Context, Result};
use nix::kmod::{finit_module, init_module, ModuleInitFlags};
use ramstick_common::modules::{ModDb, ModEntry};
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
    /// Puts one module file into the kernel ([`insert_module`]; a
    /// recording fake in the tests). Called from several threads.
    insert: Inserter,
}

pub type Inserter = Box<dyn Fn(&Path) -> Result<()> + Send + Sync>;

impl Loader {
    /// Open the database in `dir` (`/lib/modules/<kver>`); `sys_root` is `/sys`.
    pub fn open(dir: &Path, sys_root: &Path) -> Result<Self> {
        let kernel_decompresses = sys_root.join("module/compression").exists();
        let insert = Box::new(move |path: &Path| insert_module(path, kernel_decompresses));
        Self::with_inserter(dir, sys_root, insert)
    }

    /// [`Self::open`] with `insert` putting modules into the kernel.
    pub fn with_inserter(dir: &Path, sys_root: &Path, insert: Inserter) -> Result<Self> {
        let db = ModDb::load(dir)
            .with_context(|| format!("cannot read the module database in {}", dir.display()))?;
        Ok(Loader {
            db,
            dir: dir.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            done: HashSet::new(),
            seen_aliases: HashSet::new(),
            insert,
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
        let (inserted, failed) = self.insert_all(order);
        for (entry, e) in failed {
            // A module asked for by name must load. Others (soft
            // dependencies such as a CPU-specific crc32c) may refuse this
            // machine; what needs them fails visibly after.
            if names.contains(&entry.name.as_str()) {
                let path = self.dir.join(&entry.path);
                return Err(e).with_context(|| format!("cannot load module {}", path.display()));
            }
            log::debug!("optional module {} not loaded: {e:#}", entry.name);
        }
        Ok(inserted)
    }

    /// Insert the modules of `order` (dependencies first) that are not in
    /// the kernel yet, from several threads ([`modpool`]). Logs each in
    /// `order`, whichever thread finished first, and marks all of them
    /// done. Returns how many were inserted, and the failures in `order`.
    fn insert_all(&mut self, order: Vec<ModEntry>) -> (usize, Vec<(ModEntry, anyhow::Error)>) {
        let mut todo: Vec<ModEntry> = Vec::new();
        for entry in order {
            if self.done.contains(&entry.name) {
                continue;
            }
            if self.in_kernel(&entry.name) {
                self.done.insert(entry.name);
            } else {
                todo.push(entry);
            }
        }
        let jobs: Vec<Job> = todo
            .iter()
            .map(|e| Job {
                needs: (self.db.needs(&e.name).iter())
                    .filter_map(|n| todo.iter().position(|t| &t.name == n))
                    .collect(),
            })
            .collect();
        let outcomes = modpool::run(
            &jobs,
            modpool::workers(),
            &|i| (self.insert)(&self.dir.join(&todo[i].path)),
            &|| anyhow::anyhow!("the loading thread died"),
        );
        let mut inserted = 0;
        let mut failed = Vec::new();
        for (entry, (result, took)) in todo.into_iter().zip(outcomes) {
            match result {
                Ok(()) => {
                    log::debug!("loaded module {} in {} ms", entry.name, took.as_millis());
                    inserted += 1;
                }
                Err(e) => failed.push((entry.clone(), e)),
            }
            self.done.insert(entry.name);
        }
        (inserted, failed)
    }

    /// Load drivers for the hardware present: every `modalias` under
    /// /sys/devices not handled yet. Failures are logged, not fatal (a
    /// driver for some unrelated device must not stop the boot).
    pub fn autoload_hardware(&mut self) -> usize {
        let mut aliases = BTreeSet::new();
        crate::stopwatch::timed("modules: modaliases read", || {
            collect_modaliases(&self.sys_root.join("devices"), &mut aliases, 0)
        });
        // The drivers of the new aliases, each with the first alias that
        // asked for it, in alias order.
        let mut drivers: Vec<(String, String)> = Vec::new();
        for alias in aliases {
            if !self.seen_aliases.insert(alias.clone()) {
                continue;
            }
            for name in self.db.resolve(&alias) {
                if !self.done.contains(&name) && !drivers.iter().any(|d| d.0 == name) {
                    drivers.push((name, alias.clone()));
                }
            }
        }
        let mut order: Vec<ModEntry> = Vec::new();
        for (name, alias) in &drivers {
            match self.db.load_order(&[name.as_str()]) {
                Ok(entries) => {
                    for entry in entries {
                        if !order.contains(&entry) {
                            order.push(entry);
                        }
                    }
                }
                Err(e) => {
                    log::warn!("driver {name} for {alias}: cannot resolve modules {name}: {e}")
                }
            }
        }
        let (inserted, failed) = self.insert_all(order);
        for (entry, e) in failed {
            match drivers.iter().find(|d| d.0 == entry.name) {
                Some((name, alias)) => {
                    let path = self.dir.join(&entry.path);
                    log::warn!(
                        "driver {name} for {alias}: cannot load module {}: {e:#}",
                        path.display()
                    );
                }
                None => log::debug!("optional module {} not loaded: {e:#}", entry.name),
            }
        }
        inserted
    }
}

/// Put the module file `path` into the kernel; one already there is fine.
/// Without `kernel_decompresses`, a compressed module is decompressed here.
pub fn insert_module(path: &Path, kernel_decompresses: bool) -> Result<()> {
    let params = CString::default();
    let compressed = Compression::of(path);
    if compressed.is_some() && !kernel_decompresses {
        // The kernel cannot decompress: do it here and hand over the bytes.
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let image = decompress(path, &data)?;
        return match init_module(&image, &params) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let flags = if compressed.is_some() {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(&file, &params, flags) {
        Ok(()) => Ok(()),
        // Loaded meanwhile (e.g. by the kernel's own request_module).
        Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How a module file is compressed, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Xz,
    Gzip,
}

impl Compression {
    pub fn of(path: &Path) -> Option<Compression> {
        match path.extension()?.to_str()? {
            "zst" => Some(Compression::Zstd),
            "xz" => Some(Compression::Xz),
            "gz" => Some(Compression::Gzip),
            _ => None,
        }
    }
}

/// Decompress a module in this process (for kernels without in-kernel
/// module decompression). `path` only names the format and the errors.
pub fn decompress(path: &Path, data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    match Compression::of(path) {
        Some(Compression::Zstd) => {
            zstd::stream::read::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .with_context(|| format!("cannot unzstd {}", path.display()))?;
        }
        Some(Compression::Xz) => {
            xz2::read::XzDecoder::new(data)
                .read_to_end(&mut out)
                .with_context(|| format!("cannot unxz {}", path.display()))?;
        }
        Some(Compression::Gzip) => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .with_context(|| format!("cannot gunzip {}", path.display()))?;
        }
        None => out.extend_from_slice(data),
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    use ramstick_testkit::TempDir;
    use std::sync::{Arc, Mutex};

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/block/zram/zram.ko: kernel/mm/zsmalloc.ko
kernel/mm/zsmalloc.ko:
kernel/drivers/ata/libata.ko:
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libata.ko
kernel/drivers/block/virtio_blk.ko:
";
    const SOFTDEP: &str = "softdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n";
    const ALIAS: &str = "\
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias virtio:d00000002v* virtio_blk
alias pci:v00001AF4d00001050* no_such_driver
";

    /// A module tree and a /sys with `modaliases`; the fake inserter
    /// records the module names it gets and fails those in `fail`.
    fn loader(modaliases: &[&str], fail: &[&str]) -> (TempDir, Loader, Arc<Mutex<Vec<String>>>) {
        let dir = TempDir::new("modload");
        dir.file("mods/modules.dep", DEP, 0o644)
            .file("mods/modules.softdep", SOFTDEP, 0o644)
            .file("mods/modules.alias", ALIAS, 0o644);
        for (i, alias) in modaliases.iter().enumerate() {
            dir.file(
                &format!("sys/devices/pci0/dev{i}/modalias"),
                format!("{alias}\n"),
                0o644,
            );
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let (seen, fail): (_, Vec<String>) =
            (log.clone(), fail.iter().map(|f| f.to_string()).collect());
        let insert: Inserter = Box::new(move |path: &Path| {
            let name = ramstick_common::modules::module_name_from_path(&path.to_string_lossy());
            seen.lock().unwrap().push(name.clone());
            if fail.contains(&name) {
                return Err(nix::errno::Errno::ENODEV.into());
            }
            Ok(())
        });
        let l = Loader::with_inserter(&dir.path().join("mods"), &dir.path().join("sys"), insert)
            .unwrap();
        (dir, l, log)
    }

    fn position(log: &[String], name: &str) -> usize {
        log.iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} not loaded: {log:?}"))
    }

    #[test]
    fn every_module_of_the_closure_loads_once_after_its_needs() {
        let (_dir, mut l, log) = loader(&[], &[]);
        assert_eq!(l.load(&["ext4", "zram", "jbd2"]).unwrap(), 8);
        assert_eq!(
            l.load(&["ext4"]).unwrap(),
            0,
            "loaded modules are not loaded again"
        );
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 8, "{log:?}");
        for (module, needs) in [
            (
                "ext4",
                &["crc16", "mbcache", "jbd2", "crc32c_intel", "crc32c_generic"][..],
            ),
            ("jbd2", &["crc32c_intel", "crc32c_generic"]),
            ("zram", &["zsmalloc"]),
        ] {
            for need in needs {
                assert!(
                    position(&log, need) < position(&log, module),
                    "{module} before {need}: {log:?}"
                );
            }
        }
    }

    #[test]
    fn a_named_module_that_fails_is_the_error_an_optional_one_is_not() {
        // crc32c_intel refuses this CPU: ext4 loads with the generic one.
        let (_dir, mut l, _log) = loader(&[], &["crc32c_intel"]);
        assert_eq!(l.load(&["ext4"]).unwrap(), 5, "all but crc32c_intel");

        let (dir, mut l, _log) = loader(&[], &["ext4"]);
        let err = format!("{:#}", l.load(&["ext4"]).unwrap_err());
        let path = dir.path().join("mods/kernel/fs/ext4/ext4.ko");
        assert_eq!(
            err,
            format!(
                "cannot load module {}: ENODEV: No such device",
                path.display()
            )
        );
    }

    #[test]
    fn hardware_drivers_load_with_their_needs_and_failures_are_not_fatal() {
        let aliases = [
            "pci:v00008086d00002922sv1AF4sd1100bc01sc06i01",
            "virtio:d00000002v00001AF4",
            "pci:v00001AF4d00001050sv1sd1bc03sc00i00",
        ];
        let (_dir, mut l, log) = loader(&aliases, &["virtio_blk"]);
        assert_eq!(l.autoload_hardware(), 2);
        {
            let log = log.lock().unwrap();
            assert_eq!(log.len(), 3, "{log:?}");
            assert!(position(&log, "libata") < position(&log, "ahci"));
            assert!(log.contains(&"virtio_blk".to_string()));
        }
        // The same aliases again: nothing new is tried.
        assert_eq!(l.autoload_hardware(), 0);
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    const MODULE: &[u8] = b"\x7fELF pretend module body, long enough to compress: aaaaaaaaaaaaaaaa";

    #[test]
    fn zstd_xz_and_gzip_modules_decompress_in_process() {
        let zst = zstd::stream::encode_all(MODULE, 3).unwrap();
        assert_eq!(decompress(Path::new("m.ko.zst"), &zst).unwrap(), MODULE);

        use std::io::Write;
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(MODULE).unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(decompress(Path::new("m.ko.xz"), &xz).unwrap(), MODULE);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(MODULE).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(Path::new("m.ko.gz"), &gz).unwrap(), MODULE);

        assert_eq!(decompress(Path::new("m.ko"), MODULE).unwrap(), MODULE);
    }

    #[test]
    fn corrupt_compressed_modules_are_errors_not_panics() {
        for name in ["m.ko.zst", "m.ko.xz", "m.ko.gz"] {
            let err = decompress(Path::new(name), b"garbage").err();
            assert!(err.is_some(), "{name}");
        }
    }
}

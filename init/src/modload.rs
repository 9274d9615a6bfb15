//! Kernel module loading without kmod: the module database of the running
//! kernel (modules.dep/softdep/alias in the initramfs), `finit_module(2)`,
//! and driver autoloading from the modaliases the hardware shows in /sys.

use anyhow::{Context, Result};
use nix::kmod::{finit_module, init_module, ModuleInitFlags};
use ramstick_common::modules::ModDb;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::background::{self, Background};
use crate::stopwatch::timed;

/// MODULE_INIT_COMPRESSED_FILE: the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// The parameters every module is loaded with. `async_probe` (understood by
/// the kernel for any module since 4.2, ignored with a warning before) makes
/// the driver's device probes run in the background and `finit_module`
/// return without waiting for them: ahci's SATA link probe alone held init
/// for ~0.7 s under TCG. Nothing waits for a probe that does not matter:
/// init waits for its own devices by polling for them (`devices::wait_for`).
/// Modules whose init creates the devices (zram, loop) create them before
/// returning all the same.
const MODULE_PARAMS: &str = "async_probe";

#[derive(Clone)]
pub struct Loader {
    db: ModDb,
    dir: PathBuf,
    sys_root: PathBuf,
    /// Modules we loaded or found loaded/built in.
    done: HashSet<String>,
    /// Modaliases already handled.
    seen_aliases: HashSet<String>,
    kernel_decompresses: bool,
    /// Parameters of the modules that take some (`soft_margin=600`).
    params: HashMap<String, String>,
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
            params: HashMap::new(),
        })
    }

    /// Loads the module `name` with the parameters `params` (e.g.
    /// `soft_margin=600`); its dependencies load without.
    pub fn load_with(&mut self, name: &str, params: &str) -> Result<usize> {
        self.params.insert(name.to_string(), params.to_string());
        self.load(&[name])
    }

    /// The module(s) a modalias names, loaded or not.
    pub fn modules_for(&self, alias: &str) -> Vec<String> {
        self.db.resolve(alias)
    }

    /// Whether a module is already in the kernel and usable: built in, or
    /// loaded and past its init (`initstate` "live"). One another thread is
    /// still loading ("coming") is not: `finit_module` then waits for it.
    fn in_kernel(&self, name: &str) -> bool {
        self.db.is_builtin(name)
            || std::fs::read_to_string(self.sys_root.join("module").join(name).join("initstate"))
                .is_ok_and(|s| s.trim() == "live")
    }

    /// Load `names` (then `optional`, whose failure is only logged) on a
    /// thread of their own while the caller goes on.
    pub fn load_in_background(
        &self,
        names: Vec<String>,
        optional: Option<String>,
    ) -> Background<usize> {
        let mut loader = self.clone();
        background::spawn("modules", move || {
            loader.load_all(&names, optional.as_deref())
        })
    }

    fn load_all(&mut self, names: &[String], optional: Option<&str>) -> Result<usize> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let loaded = self.load(&refs)?;
        if let Some(m) = optional {
            if let Err(e) = self.load(&[m]) {
                log::debug!("{m}: no module loaded ({e:#})");
            }
        }
        Ok(loaded)
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
                let start = Instant::now();
                match self.insert(&path, self.params.get(&entry.name)) {
                    Ok(()) => {
                        let ms = start.elapsed().as_millis();
                        log::debug!("loaded module {} in {ms} ms", entry.name);
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

    fn insert(&self, path: &Path, params: Option<&String>) -> Result<()> {
        // The module's own parameters after the loader's (`softdog`'s
        // timeout for a trial boot).
        let all = match params {
            Some(p) if !p.is_empty() => format!("{MODULE_PARAMS} {p}"),
            _ => MODULE_PARAMS.to_string(),
        };
        let params = CString::new(all).context("module parameters hold a NUL byte")?;
        let compressed = Compression::of(path);
        if compressed.is_some() && !self.kernel_decompresses {
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

    /// Load drivers for the hardware present: every device's `modalias`
    /// on every bus (see [`bus_modaliases`]) not handled yet. Failures are logged, not fatal (a
    /// driver for some unrelated device must not stop the boot).
    pub fn autoload_hardware(&mut self) -> usize {
        let mut aliases = BTreeSet::new();
        timed("modules: modaliases read", || {
            bus_modaliases(&self.sys_root.join("bus"), &mut aliases)
        });
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

/// The `modalias` of every device on every bus: `<bus>/devices/*/modalias`
/// below `bus` (`/sys/bus`). A driver binds to a device on a bus, and that
/// device's modalias is what its module's aliases match; the devices
/// directories list exactly those devices, so this reads a few hundred
/// small files where walking all of /sys/devices read every attribute
/// directory of every device too (100–130 ms per walk under TCG, and the
/// walk runs again on every poll for the stick).
fn bus_modaliases(bus: &Path, out: &mut BTreeSet<String>) {
    let Ok(buses) = std::fs::read_dir(bus) else {
        return;
    };
    for b in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(b.path().join("devices")) else {
            continue;
        };
        for d in devices.flatten() {
            // Each entry is a symlink to the device in /sys/devices.
            if let Ok(s) = std::fs::read_to_string(d.path().join("modalias")) {
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

    /// A fake /sys: a PCI controller with a USB device below it, a CPU, a
    /// bus device without a modalias, and a virtual (class) device with
    /// one, like DMI's; `bus/<bus>/devices/` link to them as in sysfs.
    fn fake_sys(root: &Path) {
        let files = [
            (
                "devices/pci0000:00/0000:00:01.0/modalias",
                "pci:v00008086d00002922\n",
            ),
            (
                "devices/pci0000:00/0000:00:01.0/usb1/1-1/modalias",
                "usb:v0781p5567\n",
            ),
            ("devices/system/cpu/cpu0/modalias", "cpu:type:x86\n"),
            ("devices/virtual/dmi/id/modalias", "dmi:bvnSeaBIOS\n"),
            ("devices/platform/empty/modalias", "\n"),
            ("devices/platform/none/uevent", "\n"),
        ];
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let links = [
            ("pci", "0000:00:01.0", "pci0000:00/0000:00:01.0"),
            ("usb", "1-1", "pci0000:00/0000:00:01.0/usb1/1-1"),
            ("cpu", "cpu0", "system/cpu/cpu0"),
            ("platform", "empty", "platform/empty"),
            ("platform", "none", "platform/none"),
        ];
        for (bus, name, device) in links {
            let dir = root.join("bus").join(bus).join("devices");
            std::fs::create_dir_all(&dir).unwrap();
            let target = format!("../../../devices/{device}");
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        }
        // A bus without a devices directory (sysfs has none such, but a
        // half-registered one must not stop the walk).
        std::fs::create_dir_all(root.join("bus/empty")).unwrap();
    }

    #[test]
    fn the_walk_reads_the_modaliases_of_bus_devices_only() {
        let dir = std::env::temp_dir().join(format!("ramstick-modwalk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fake_sys(&dir);
        let mut found = BTreeSet::new();
        bus_modaliases(&dir.join("bus"), &mut found);
        let found: Vec<&str> = found.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            ["cpu:type:x86", "pci:v00008086d00002922", "usb:v0781p5567"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A module directory (b needs a; c is built in) and a /sys/module.
    fn fake_loader(root: &Path, states: &[(&str, &str)]) -> Loader {
        let moddir = root.join("lib/modules/6.1.0");
        std::fs::create_dir_all(&moddir).unwrap();
        std::fs::write(
            moddir.join("modules.dep"),
            "kernel/a.ko:\nkernel/b.ko: kernel/a.ko\n",
        )
        .unwrap();
        std::fs::write(moddir.join("modules.builtin"), "kernel/c.ko\n").unwrap();
        for (name, state) in states {
            let dir = root.join("sys/module").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("initstate"), format!("{state}\n")).unwrap();
        }
        Loader::open(&moddir, &root.join("sys")).unwrap()
    }

    #[test]
    fn a_module_still_coming_is_not_taken_as_loaded() {
        let root = ramstick_testkit::TempDir::new("modstate");
        let loader = fake_loader(&root, &[("a", "live"), ("b", "coming")]);
        assert!(loader.in_kernel("a"));
        assert!(!loader.in_kernel("b"), "b is still running its init");
        assert!(loader.in_kernel("c"), "built in");
        assert!(!loader.in_kernel("d"));
    }

    #[test]
    fn background_loads_give_their_result_to_wait() {
        let root = ramstick_testkit::TempDir::new("modbg");
        let loader = fake_loader(&root, &[("a", "live"), ("b", "live")]);
        let done = loader.load_in_background(vec!["b".into(), "c".into()], Some("x".into()));
        assert_eq!(done.wait().unwrap(), 0, "all in the kernel already");
        let err = loader
            .load_in_background(vec!["nope".into()], None)
            .wait()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot resolve modules nope"),
            "{err:#}"
        );
        // b is coming elsewhere: loading it here tries its file (missing).
        let root = ramstick_testkit::TempDir::new("modbg2");
        let loader = fake_loader(&root, &[("a", "live"), ("b", "coming")]);
        let err = loader
            .load_in_background(vec!["b".into()], None)
            .wait()
            .unwrap_err();
        assert!(format!("{err:#}").contains("cannot load module"), "{err:#}");
        assert!(format!("{err:#}").contains("b.ko"), "{err:#}");
    }

    #[test]
    fn corrupt_compressed_modules_are_errors_not_panics() {
        for name in ["m.ko.zst", "m.ko.xz", "m.ko.gz"] {
            let err = decompress(Path::new(name), b"garbage").err();
            assert!(err.is_some(), "{name}");
        }
    }
}

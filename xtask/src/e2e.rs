//! `cargo xtask e2e`: end-to-end scenarios that boot real disk images in QEMU
//! and drive the serial console.
//!
//! Disk images are built once per distinct input and cached as
//! `target/e2e/cache/<inputs>-<spec>.img`, where `<inputs>` hashes the init and
//! saver binaries, the busybox rootfs tree, the kernel, the image-building
//! xtask sources, `grub/`, `initramfs-skel/` and the boot menu's code in
//! `common/src/` (grub.cfg, grubenv), and `<spec>` hashes the
//! scenario's image options and extra files. Each scenario boots a fresh
//! sparse copy in `target/e2e/run/` so boots never change the cache; the copy
//! is deleted when the scenario passes and kept when it fails. Console logs
//! (`target/e2e/logs/<scenario>.log`) are kept for every scenario, passing or
//! not, and overwritten by the next run.
//!
//! Scenarios run `--jobs` at a time (one QEMU each; TCG keeps a core busy per
//! guest), each worker with its own scratch directory `target/e2e/work/<n>`;
//! what workers share — the image cache and the root filesystem trees — is
//! built under one lock ([`Ctx::building`]), so it is built once.

mod consoles;
mod guest;
mod initsystems;
mod kernelupdate;
mod layers;
mod luks;
mod persist;
mod profiles;
mod reliab;
mod scenarios;
mod slots;
mod slottrial;
mod slotwrite;
mod trees;
mod upperwatch;
mod userview;

use crate::cache;
use crate::qemu::{self, Machine, QemuFault, Vm};
use crate::{build, deps, image, kernel, rootfs, target_dir, workspace_root};
use anyhow::{bail, ensure, Context, Result};
use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// `cargo xtask e2e`.
#[derive(clap::Args, Default)]
pub struct Args {
    /// Only scenarios whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Use KVM instead of TCG emulation.
    #[arg(long)]
    pub kvm: bool,
    /// Run all scenarios even after one fails.
    #[arg(long)]
    pub keep_going: bool,
    /// Scenarios run at once (default: the number of cores, at most 4).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// One end-to-end check.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&mut Ctx) -> Result<()>,
}

/// What a scenario's disk image differs in (see [`image::Spec`]).
#[derive(Default)]
pub struct DiskSpec {
    pub extra_cmdline: String,
    /// (host file, name in the persist partition's root)
    pub persist_extra: Vec<(PathBuf, String)>,
    /// Image files left off the persist partition, e.g. "rootfs.squashfs".
    pub omit: Vec<String>,
}

/// What all scenarios share: built binaries, kernel, rootfs, directories.
/// Each worker has its own clone (its own scratch directory `work`).
#[derive(Clone)]
pub struct Ctx {
    kvm: bool,
    bins: build::Binaries,
    kernel: kernel::Kernel,
    rootfs: PathBuf,
    /// Hash of everything every image is built from (the cache name prefix).
    inputs: String,
    cache: PathBuf,
    run: PathBuf,
    logs: PathBuf,
    work: PathBuf,
    /// The scenario running now.
    scenario: String,
    /// Cached images used in this run (by any worker).
    used: Arc<Mutex<Vec<PathBuf>>>,
}

/// Held while something the workers share is built (a cached image, a
/// root filesystem tree): one build at a time, and never a half-built one
/// seen by another worker.
static BUILDING: Mutex<()> = Mutex::new(());

/// What the workers share while they run.
struct Queue {
    todo: VecDeque<&'static Scenario>,
    passed: usize,
    failed: usize,
    /// Scenarios run a second time after a [`QemuFault`].
    retried: usize,
    /// A scenario failed and `--keep-going` is off: start no other.
    stop: bool,
}

/// Run the scenarios; prints `e2e: N passed, M failed, …` last.
pub fn run(a: &Args) -> Result<()> {
    let selected: Vec<&Scenario> = all_scenarios()
        .filter(|s| a.filter.as_deref().is_none_or(|f| s.name.contains(f)))
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = all_scenarios().map(|s| s.name).collect();
        bail!(
            "no e2e scenario name contains {:?}; scenarios: {}",
            a.filter.as_deref().unwrap_or(""),
            names.join(", ")
        );
    }
    let ctx = Ctx::prepare(a.kvm)?;
    let total = selected.len();
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
        .clamp(1, total);
    let queue = Mutex::new(Queue {
        todo: selected.into(),
        passed: 0,
        failed: 0,
        retried: 0,
        stop: false,
    });
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        for worker in 0..jobs {
            let ctx = ctx.for_worker(worker)?;
            let queue = &queue;
            scope.spawn(move || work(ctx, queue, a.keep_going));
        }
        Ok(())
    })?;
    let q = queue.lock().unwrap_or_else(|e| e.into_inner());
    let (passed, failed, retried) = (q.passed, q.failed, q.retried);
    println!(
        "e2e: {passed} passed, {failed} failed, {retried} run again after QEMU failed \
         ({jobs} at a time, {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    if a.filter.is_none() && passed + failed == total {
        // Every scenario asked for its images: the others are stale.
        if let Err(e) = ctx.prune_cache(true) {
            eprintln!("e2e: warning: could not prune the image cache: {e:#}");
        }
    }
    if failed > 0 {
        bail!("end-to-end tests failed");
    }
    Ok(())
}

/// One worker: takes the next scenario until none is left (or one failed).
fn work(mut ctx: Ctx, queue: &Mutex<Queue>, keep_going: bool) {
    let lock = || queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let s = {
            let mut q = lock();
            match q.todo.pop_front() {
                Some(s) if !q.stop => s,
                _ => return,
            }
        };
        println!("e2e: running {}", s.name);
        let started = Instant::now();
        let mut result = ctx.run_scenario(s);
        if let Err(e) = &result {
            if QemuFault::of(e).is_some() {
                // QEMU, not ramstick, failed: the scenario runs again from a
                // fresh disk; a second fault (or any other failure) fails it.
                let kept = ctx.logs.join(format!("{}.qemu-fault.log", s.name));
                let _ = fs::rename(ctx.log_path(), &kept);
                println!(
                    "RETRY {}: {e:#}\n  (its console log: {})",
                    s.name,
                    kept.display()
                );
                lock().retried += 1;
                result = ctx.run_scenario(s);
            }
        }
        let mut q = lock();
        match result {
            Ok(()) => {
                q.passed += 1;
                println!("PASS {} ({:.1} s)", s.name, started.elapsed().as_secs_f64());
            }
            Err(e) => {
                q.failed += 1;
                println!("FAIL {}: {e:#}", s.name);
                println!("  console log: {}", ctx.log_path().display());
                if !keep_going && !q.stop {
                    q.stop = true;
                    println!(
                        "e2e: stopping at the first failure (the running ones finish; \
                         --keep-going runs the rest)"
                    );
                }
            }
        }
    }
}

/// The scenarios whose guests get two vCPUs: the boot path's concurrency is
/// their subject (init's module-loading workers, the wait for the stick, two
/// sticks, the LUKS prompt on two consoles, the read-ahead beside systemd).
/// The others get one: two jobs already use both host cores, and a second
/// vCPU each only contends (the six `layers` scenarios: 264 s → 232 s).
const TWO_CPUS: &[&str] = &[
    "boot-default",
    "usb",
    "two-sticks-refused",
    "luks-passphrase",
    "console-elsewhere-luks",
    "debian-systemd",
];

/// Every scenario, in the order they start: the long ones on the Debian
/// trees first (so that no worker is left with a long one at the end), then
/// boot paths, persistence, layers, LUKS, reliability.
fn all_scenarios() -> impl Iterator<Item = &'static Scenario> {
    kernelupdate::ALL
        .iter()
        .chain(initsystems::ALL)
        .chain(scenarios::ALL)
        .chain(persist::ALL)
        .chain(userview::ALL)
        .chain(profiles::ALL)
        .chain(upperwatch::ALL)
        .chain(layers::ALL)
        .chain(luks::ALL)
        .chain(consoles::ALL)
        .chain(reliab::ALL)
        .chain(slots::ALL)
        .chain(slottrial::ALL)
        .chain(slotwrite::ALL)
}

impl Ctx {
    /// Install tools and build everything the images share.
    fn prepare(kvm: bool) -> Result<Ctx> {
        qemu::ensure_tools()?;
        deps::ensure(&[("mksquashfs", "squashfs-tools"), ("cp", "coreutils")])?;
        let e2e = target_dir().join("e2e");
        let rootfs_dir = target_dir().join("rootfs-busybox");
        let t = Instant::now();
        println!("e2e: building init and saver, fetching the kernel, building the busybox rootfs");
        let bins = build::static_binaries()?;
        let kernel = kernel::fetch_debian()?;
        rootfs::build(rootfs::Kind::Busybox, &rootfs_dir)?;
        let inputs = format!("{:016x}", inputs_hash(&bins, &kernel, &rootfs_dir)?);
        println!(
            "e2e: inputs ready in {:.1} s (kernel {}, inputs hash {inputs})",
            t.elapsed().as_secs_f64(),
            kernel.version
        );
        let ctx = Ctx {
            kvm,
            bins,
            kernel,
            rootfs: rootfs_dir,
            inputs,
            cache: e2e.join("cache"),
            run: e2e.join("run"),
            logs: e2e.join("logs"),
            work: e2e.join("work"),
            scenario: String::new(),
            used: Arc::default(),
        };
        for dir in [&ctx.cache, &ctx.run, &ctx.logs, &ctx.work] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        ctx.prune_cache(false)?;
        Ok(ctx)
    }

    /// Remove cached images built from other inputs (they can never be used
    /// again) and, with `unused`, those no scenario of this run used.
    fn prune_cache(&self, unused: bool) -> Result<()> {
        let prefix = format!("{}-", self.inputs);
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for entry in fs::read_dir(&self.cache)
            .with_context(|| format!("listing {}", self.cache.display()))?
        {
            let path = entry
                .with_context(|| format!("listing {}", self.cache.display()))?
                .path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !name.starts_with(&prefix) || (unused && !used.contains(&path)) {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The context of worker `n`: its own scratch directory.
    fn for_worker(&self, n: usize) -> Result<Ctx> {
        let work = self.work.join(n.to_string());
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        Ok(Ctx {
            work,
            ..self.clone()
        })
    }

    /// Holds the lock under which shared things are built (see [`BUILDING`]).
    pub fn building() -> MutexGuard<'static, ()> {
        BUILDING.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run_scenario(&mut self, s: &Scenario) -> Result<()> {
        self.scenario = s.name.to_string();
        let log = self.log_path();
        fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
        (s.run)(self)?;
        // Every QEMU of the scenario has been dropped (killed) by now.
        // The log is not all UTF-8: GRUB draws its menu box in code page 437.
        let console = fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
        if String::from_utf8_lossy(&console).contains("Kernel panic") {
            bail!("the console shows a kernel panic");
        }
        for path in [self.disk_path(), self.vars_path()] {
            if path.exists() {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The running scenario's console log.
    pub fn log_path(&self) -> PathBuf {
        self.logs.join(format!("{}.log", self.scenario))
    }

    fn disk_path(&self) -> PathBuf {
        self.run.join(format!("{}.img", self.scenario))
    }

    fn vars_path(&self) -> PathBuf {
        self.run.join(format!("{}-OVMF_VARS.fd", self.scenario))
    }

    /// Version of the kernel the images boot.
    pub fn kernel_version(&self) -> &str {
        &self.kernel.version
    }

    /// A fresh copy of the disk image for `spec`, building it into the cache first if needed.
    pub fn disk(&mut self, spec: &DiskSpec) -> Result<PathBuf> {
        let name = format!("{:016x}", spec_hash(spec)?);
        self.cached_disk(&name, |ctx, out| image::build(&ctx.image_spec(spec, out)))
    }

    /// The image builder's spec for `spec`, written to `out`.
    pub fn image_spec(&self, spec: &DiskSpec, out: &Path) -> image::Spec {
        image::Spec {
            rootfs: self.rootfs.clone(),
            out: out.to_path_buf(),
            size: None,
            kernel: self.kernel.clone(),
            bins: self.bins.clone(),
            extra_cmdline: spec.extra_cmdline.clone(),
            persist_extra: spec.persist_extra.clone(),
            omit: spec.omit.clone(),
        }
    }

    /// A fresh sparse copy (in `target/e2e/run/`) of the cached image `name`
    /// (unique per content, under the inputs hash), which `build` writes to
    /// the path it is given when the cache does not hold it yet.
    pub fn cached_disk(
        &mut self,
        name: &str,
        build: impl FnOnce(&Ctx, &Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let cached = self.cache.join(format!("{}-{name}.img", self.inputs));
        let building = Ctx::building();
        if !cached.exists() {
            let partial = cached.with_extension("partial.img");
            println!("e2e: building disk image {}", cached.display());
            build(self, &partial).with_context(|| format!("building {}", partial.display()))?;
            fs::rename(&partial, &cached).with_context(|| {
                format!("renaming {} to {}", partial.display(), cached.display())
            })?;
        }
        drop(building);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&cached) {
            used.push(cached.clone());
        }
        drop(used);
        let disk = self.disk_path();
        deps::run(
            deps::cmd("cp")
                .args(["--sparse=always", "--reflink=auto"])
                .arg(&cached)
                .arg(&disk),
        )?;
        Ok(disk)
    }

    /// Start QEMU on `disk` (virtio-blk, or USB storage with `usb`), logging to the scenario log.
    pub fn boot(&mut self, disk: &Path, usb: bool) -> Result<Vm> {
        self.boot_with(disk, usb, 1024, &[])
    }

    /// [`Ctx::boot`] with `mem` MiB of RAM and more virtio disks attached after `disk`.
    pub fn boot_with(&mut self, disk: &Path, usb: bool, mem: u32, extra: &[PathBuf]) -> Result<Vm> {
        let two = TWO_CPUS.contains(&self.scenario.as_str());
        let machine = Machine {
            disk: disk.to_path_buf(),
            kvm: self.kvm,
            mem,
            cpus: if two { qemu::CPUS } else { 1 },
            usb,
            vars: self.vars_path(),
            unsafe_cache: true,
            extra_disks: extra.to_vec(),
        };
        Vm::spawn(&machine, &self.log_path())
    }

    /// A saved state for a disk: each of `trees` (read like overlay
    /// upperdirs) appended in order as a layer by the host's own saver
    /// (`saver add-layer`), in `target/e2e/work/persist-<name>`. Returns the
    /// files as [`DiskSpec::persist_extra`] entries.
    pub fn layered(&mut self, name: &str, trees: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
        let persist = self.work.join(format!("persist-{name}"));
        if persist.exists() {
            fs::remove_dir_all(&persist)
                .with_context(|| format!("removing {}", persist.display()))?;
        }
        fs::create_dir_all(&persist).with_context(|| format!("creating {}", persist.display()))?;
        for tree in trees {
            deps::output(
                deps::cmd(&self.bins.saver.to_string_lossy())
                    .arg("add-layer")
                    .arg("--persist")
                    .arg(&persist)
                    .arg(tree),
            )?;
        }
        let layers = persist.join("layers");
        let mut files = Vec::new();
        for entry in
            fs::read_dir(&layers).with_context(|| format!("listing {}", layers.display()))?
        {
            let path = entry
                .with_context(|| format!("listing {}", layers.display()))?
                .path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.push((path, format!("layers/{name}")));
        }
        files.sort();
        Ok(files)
    }

    /// A fresh disk of the Debian/systemd rootfs (`rootfs --kind debian`,
    /// see [`Ctx::kind_tree`]). It boots the rootfs's own kernel.
    pub fn debian_disk(&mut self) -> Result<PathBuf> {
        self.kind_disk(rootfs::Kind::Debian, false, &DiskSpec::default())
    }

    /// A valid upper image whose only file is `etc/ramstick-marker` holding `marker`.
    pub fn upper_image(&mut self, marker: &str) -> Result<PathBuf> {
        let text = format!("{marker}\n");
        self.upper_image_of(
            &format!("upper-{marker}"),
            &[("etc/ramstick-marker", text.as_str(), 0o644)],
        )
    }

    /// A valid upper image `<name>.squashfs` holding `files` (path, content, mode).
    pub fn upper_image_of(&mut self, name: &str, files: &[(&str, &str, u32)]) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.work.join(name);
        let out = self.work.join(format!("{name}.squashfs"));
        deps::remove_if_exists(&dir)?;
        deps::remove_if_exists(&out)?;
        for (path, content, mode) in files {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&file, content).with_context(|| format!("writing {}", file.display()))?;
            fs::set_permissions(&file, fs::Permissions::from_mode(*mode))
                .with_context(|| format!("chmod {}", file.display()))?;
        }
        // Fixed times and owners: the same files give the same bytes (and cache key).
        deps::output(
            deps::cmd("mksquashfs")
                .arg(&dir)
                .arg(&out)
                .args(["-noappend", "-comp", "gzip", "-all-root", "-no-xattrs"])
                .args([
                    "-mkfs-time",
                    "0",
                    "-all-time",
                    "0",
                    "-quiet",
                    "-no-progress",
                ]),
        )?;
        Ok(out)
    }

    /// A copy of squashfs `image` cut in the middle of its data.
    pub fn truncated(&mut self, image: &Path) -> Result<PathBuf> {
        let bytes = fs::read(image).with_context(|| format!("reading {}", image.display()))?;
        let half = squashfs_first_half(&bytes).with_context(|| image.display().to_string())?;
        let stem = image.file_stem().unwrap_or_default().to_string_lossy();
        let out = self.work.join(format!("{stem}-truncated.squashfs"));
        fs::write(&out, half).with_context(|| format!("writing {}", out.display()))?;
        Ok(out)
    }
}

/// The first half of a squashfs image's used bytes. (Half the file is not
/// enough: mksquashfs pads small images to 4 KiB, so that would cut only padding.)
fn squashfs_first_half(image: &[u8]) -> Result<&[u8]> {
    // Superblock: magic "hsqs" at 0, bytes_used (u64 little-endian) at 40.
    let Some((b"hsqs", rest)) = image.split_first_chunk::<4>() else {
        bail!("not a squashfs image");
    };
    let used = rest
        .get(36..44)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .context("squashfs superblock is cut short")?;
    let used = usize::try_from(used).context("squashfs bytes_used is too large")?;
    ensure!(used <= image.len(), "squashfs image is already truncated");
    Ok(&image[..used / 2])
}

/// The xtask sources (files and module directories) that decide how images
/// are built: all but the QEMU/e2e/test runners.
fn is_image_source(name: &str) -> bool {
    !matches!(
        name,
        "qemu.rs"
            | "qemu"
            | "e2e.rs"
            | "testall.rs"
            | "e2e"
            | "bench.rs"
            | "bench"
            | "fuzz.rs"
            | "crashtest.rs"
            | "crashtest"
    )
}

/// Hash of everything every e2e image is built from.
fn inputs_hash(bins: &build::Binaries, kernel: &kernel::Kernel, rootfs: &Path) -> Result<u64> {
    let mut h = cache::Hasher::default();
    h.file(&bins.init)?;
    h.file(&bins.saver)?;
    h.tree(rootfs)?;
    h.str(&kernel.version);
    h.file(&kernel.vmlinuz)?;
    let root = workspace_root();
    for dir in ["grub", "initramfs-skel", "common/src/bootmenu"] {
        let dir = root.join(dir);
        if dir.is_dir() {
            h.tree(&dir)?;
        }
    }
    // The ESP's grub.cfg and grubenv come from common's code, built into xtask.
    for file in ["common/src/bootmenu.rs", "common/src/grubenv.rs"] {
        h.file(&root.join(file))?;
    }
    let src = root.join("xtask").join("src");
    let mut sources: Vec<PathBuf> = fs::read_dir(&src)
        .with_context(|| format!("listing {}", src.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", src.display()))?;
    sources.sort();
    for path in sources {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !is_image_source(&name) {
            continue;
        }
        if path.is_file() {
            h.str(&name);
            h.file(&path)?;
        } else if path.is_dir() {
            // A module's files (image/, hooks/) build images too.
            h.str(&name);
            h.tree(&path)?;
        }
    }
    Ok(h.finish())
}

/// Hash of a scenario's image options, including the extra files' contents.
fn spec_hash(spec: &DiskSpec) -> Result<u64> {
    let mut h = cache::Hasher::default();
    h.str(&spec.extra_cmdline);
    h.field(&(spec.persist_extra.len() as u64).to_le_bytes());
    for (file, name) in &spec.persist_extra {
        h.str(name);
        h.file(file)?;
    }
    h.field(&(spec.omit.len() as u64).to_le_bytes());
    for name in &spec.omit {
        h.str(name);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_two_cpu_scenario_exists() {
        for name in TWO_CPUS {
            assert!(all_scenarios().any(|s| s.name == *name), "{name}");
        }
    }

    #[test]
    fn spec_hash_depends_on_every_field() {
        let dir = ramstick_testkit::TempDir::new("xtask-spec");
        let file = dir.join("upper.squashfs");
        fs::write(&file, "one").unwrap();
        let base = DiskSpec::default();
        let h0 = spec_hash(&base).unwrap();
        assert_eq!(h0, spec_hash(&DiskSpec::default()).unwrap());
        let cmdline = DiskSpec {
            extra_cmdline: "ramstick.timeout=3".into(),
            ..DiskSpec::default()
        };
        let omit = DiskSpec {
            omit: vec!["rootfs.squashfs".into()],
            ..DiskSpec::default()
        };
        let extra = || DiskSpec {
            persist_extra: vec![(file.clone(), "upperfs.squashfs".into())],
            ..DiskSpec::default()
        };
        let h_extra = spec_hash(&extra()).unwrap();
        fs::write(&file, "two").unwrap();
        let h_extra2 = spec_hash(&extra()).unwrap();
        let renamed = DiskSpec {
            persist_extra: vec![(file.clone(), "upperfs-backup.squashfs".into())],
            ..DiskSpec::default()
        };
        let all = [
            h0,
            spec_hash(&cmdline).unwrap(),
            spec_hash(&omit).unwrap(),
            h_extra,
            h_extra2,
            spec_hash(&renamed).unwrap(),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b, "{all:x?}");
            }
        }
    }

    #[test]
    fn truncation_cuts_the_used_bytes_not_the_padding() {
        let mut image = vec![0u8; 4096];
        image[..4].copy_from_slice(b"hsqs");
        image[40..48].copy_from_slice(&300u64.to_le_bytes());
        assert_eq!(squashfs_first_half(&image).unwrap().len(), 150);
        assert!(squashfs_first_half(&image[..200]).is_err());
        image[0] = b'x';
        assert!(squashfs_first_half(&image).is_err());
    }

    #[test]
    fn runner_sources_do_not_invalidate_images() {
        assert!(!is_image_source("e2e.rs"));
        assert!(!is_image_source("qemu.rs"));
        assert!(!is_image_source("qemu"));
        assert!(is_image_source("image.rs"));
        assert!(is_image_source("image"));
        assert!(is_image_source("initramfs.rs"));
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<&str> = all_scenarios().map(|s| s.name).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}

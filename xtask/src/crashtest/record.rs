//! Recording: a busybox stick with a saved state of two layers (built on
//! the host by `saver add-layer`) boots in QEMU with its disk behind the
//! `blklogwrites` filter; the session changes files, saves, changes more
//! and saves again (the session's layer is replaced), compacts (the two
//! layers below the session's are merged), and powers off (the shutdown
//! save finds nothing to write). After each step the guest syncs and the
//! host takes a [`Mark`]: how many log entries there are, and what the
//! running system shows of [`super::PROBES`] — what the saved state must show.

use super::replay::Region;
use super::{guest_view, parse_view};
use crate::qemu::{again_after_fault, Machine, Vm, CPUS};
use crate::{build, deps, image, kernel, rootfs, target_dir};
use anyhow::{bail, ensure, Context, Result};
use ramstick_common::bootmenu::GrubEntry;
use ramstick_testkit::noise_seeded;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The busybox rootfs's root shell prompt (its PS1, in rootfs-skel).
pub const PROMPT: &str = "ramstick:/# ";
/// Where init puts the saver in the running system.
const SAVER: &str = "/run/ramstick/bin/saver";
/// From QEMU's start to the shell under TCG on a loaded machine.
pub const BOOT: Duration = Duration::from_secs(300);
/// A command, a save or a compaction of a few MiB under TCG.
pub const CMD: Duration = Duration::from_secs(300);
/// The GPT type of the data partition.
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// What the guest showed at one moment, and how far the log was then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    /// Log entries written by then.
    pub entries: usize,
    /// The md5 of each of [`super::PROBES`] in the running system (`None`: absent).
    pub view: Vec<Option<String>>,
}

/// A recorded session: the disk before it, the write log, the marks.
#[derive(Debug, Clone)]
pub struct Recording {
    pub base: PathBuf,
    pub log: PathBuf,
    /// The data partition on the disk.
    pub region: Region,
    pub marks: Vec<Mark>,
}

/// The steps of the session, after the boot: (mark name, shell command,
/// what its output must contain). Each ends with the state on the stick
/// equal to what the running system shows.
const STEPS: &[(&str, &str, &str)] = &[
    (
        "saved",
        "echo one-modified > /root/a && rm /root/b && head -c 1048576 /dev/urandom > /root/c \
         && SAVER save 2>&1",
        "saver: saved the session",
    ),
    (
        "saved again",
        "echo four > /root/d && SAVER save 2>&1",
        "saver: saved the session",
    ),
    ("compacted", "SAVER compact 2>&1", "compaction done"),
];

impl Recording {
    fn json_path(dir: &Path) -> PathBuf {
        dir.join("recording.json")
    }

    fn store(&self, dir: &Path) -> Result<()> {
        let marks: Vec<Value> = self
            .marks
            .iter()
            .map(|m| json!({"name": m.name, "entries": m.entries, "view": m.view}))
            .collect();
        let v = json!({
            "base": self.base, "log": self.log,
            "region": [self.region.offset, self.region.len], "marks": marks,
        });
        let path = Recording::json_path(dir);
        fs::write(&path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The recording last made in `dir`.
    pub fn load(dir: &Path) -> Result<Recording> {
        let path = Recording::json_path(dir);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading {} (record one first)", path.display()))?;
        let v: Value = serde_json::from_str(&text)?;
        let s = |v: &Value| v.as_str().map(PathBuf::from).context("a path");
        let n = |v: &Value| v.as_u64().context("a number");
        let marks = v["marks"]
            .as_array()
            .context("marks")?
            .iter()
            .map(|m| {
                Ok(Mark {
                    name: m["name"].as_str().context("name")?.to_string(),
                    entries: usize::try_from(n(&m["entries"])?)?,
                    view: m["view"]
                        .as_array()
                        .context("view")?
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Recording {
            base: s(&v["base"])?,
            log: s(&v["log"])?,
            region: Region {
                offset: n(&v["region"][0])?,
                len: n(&v["region"][1])?,
            },
            marks,
        })
    }
}

/// Builds the stick and records the session in `dir`.
pub fn record(dir: &Path) -> Result<Recording> {
    deps::remove_if_exists(dir)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = dir.join("base.img");
    let t = Instant::now();
    build_stick(dir, &base)?;
    println!(
        "crashtest: stick built in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let region = data_partition(&base)?;
    let disk = dir.join("disk.img");
    super::replay::sparse_copy(&base, &disk)?;
    let log = dir.join("write.log");
    let console = dir.join("console.log");
    println!("crashtest: recording (console: {})", console.display());
    let mut vm = boot_default_to_shell(&disk, dir, &console, Some(&log))?;
    println!("crashtest: booted in {:.0} s", t.elapsed().as_secs_f64());
    let wc = out(&mut vm, "cat /sys/block/vda/queue/write_cache")?;
    ensure!(
        wc.contains("write back"),
        "the guest sees a {wc:?} disk: it would send no flushes to log"
    );
    let booted = mark(&mut vm, "booted", &log)?;
    // The disk as built shows what the first boot showed.
    let built = Mark {
        name: "built".into(),
        entries: 0,
        view: booted.view.clone(),
    };
    let mut marks = vec![built, booted];
    for (name, cmd, expect) in STEPS {
        let cmd = cmd.replace("SAVER", SAVER);
        let said = vm.run(&cmd, CMD)?;
        ensure!(said.contains(expect), "{cmd:?} printed {said:?}");
        println!("crashtest: {name} ({:.0} s)", t.elapsed().as_secs_f64());
        marks.push(mark(&mut vm, name, &log)?);
    }
    vm.sendline("poweroff")?;
    let status = vm.wait_exit(CMD)?;
    ensure!(status.success(), "QEMU exited with {status}");
    println!(
        "crashtest: powered off ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    let last = marks.last().map(|m| m.view.clone()).unwrap_or_default();
    let entries = super::log::Log::open(&log)?.entries.len();
    marks.push(Mark {
        name: "powered off".into(),
        entries,
        view: last,
    });
    deps::remove_if_exists(&disk)?;
    let rec = Recording {
        base,
        log,
        region,
        marks,
    };
    rec.store(dir)?;
    Ok(rec)
}

/// Boots `disk` (OVMF variables in `dir`, the console to `console`, the
/// writes logged to `write_log` if given) to the shell of GRUB's default entry.
pub fn boot_default_to_shell(
    disk: &Path,
    dir: &Path,
    console: &Path,
    write_log: Option<&Path>,
) -> Result<Vm> {
    let machine = Machine {
        disk: disk.to_path_buf(),
        kvm: false,
        mem: 1024,
        cpus: CPUS,
        usb: false,
        vars: dir.join("OVMF_VARS.fd"),
        // A throwaway copy; a logged disk never skips flushes anyway.
        unsafe_cache: write_log.is_none(),
        extra_disks: Vec::new(),
    };
    let boot = || -> Result<Vm> {
        let mut vm = Vm::spawn_logged(&machine, console, write_log)?;
        vm.select_entry(GrubEntry::Default)?;
        wait_prompt(&mut vm)?;
        Ok(vm)
    };
    // A boot QEMU failed before /init wrote nothing: GRUB's default entry
    // writes no grubenv, and the write log starts empty again.
    again_after_fault("crashtest", boot)
}

/// Waits for the shell; fails early on a failed boot.
fn wait_prompt(vm: &mut Vm) -> Result<()> {
    let seen = vm.expect_any(
        &[PROMPT, "BOOT FAILED", "Kernel panic", "rebooting in"],
        BOOT,
    )?;
    if seen != 0 {
        let rest = vm.expect("\n", CMD).unwrap_or_default();
        bail!("the boot did not reach the shell: {}", rest.trim_end());
    }
    Ok(())
}

fn out(vm: &mut Vm, cmd: &str) -> Result<String> {
    Ok(vm.run(cmd, CMD)?.trim().to_string())
}

/// After a sync in the guest: the entries logged so far and the guest's view.
fn mark(vm: &mut Vm, name: &str, log: &Path) -> Result<Mark> {
    vm.run("sync", CMD)?;
    let view = parse_view(&vm.run(&guest_view(), CMD)?)?;
    // Every write and flush of the sync completed, so it is in the log.
    let entries = super::log::Log::open(log)?.entries.len();
    Ok(Mark {
        name: name.to_string(),
        entries,
        view,
    })
}

/// The stick: the busybox rootfs and a saved state of two layers, the
/// first with `/root/a` and a 2 MiB `/root/big`, the second with `/root/b`.
fn build_stick(dir: &Path, out: &Path) -> Result<()> {
    let bins = build::static_binaries()?;
    let kernel = kernel::fetch_debian()?;
    let rootfs_dir = target_dir().join("rootfs-busybox");
    rootfs::build(rootfs::Kind::Busybox, &rootfs_dir)?;
    let trees: [&[(&str, Vec<u8>)]; 2] = [
        &[
            ("root/a", b"one\n".to_vec()),
            ("root/big", noise_seeded(2 << 20, false, 13)),
        ],
        &[("root/b", b"two\n".to_vec())],
    ];
    let persist = dir.join("persist");
    for (i, files) in trees.iter().enumerate() {
        let tree = dir.join(format!("tree-{i}"));
        for (path, bytes) in *files {
            let file = tree.join(path);
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
        }
        fs::create_dir_all(&persist)?;
        deps::output(
            deps::cmd(&bins.saver.to_string_lossy())
                .arg("add-layer")
                .arg("--persist")
                .arg(&persist)
                .arg(&tree),
        )?;
    }
    let layers = persist.join("layers");
    let mut extra = Vec::new();
    for entry in fs::read_dir(&layers).with_context(|| format!("listing {}", layers.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        extra.push((path.clone(), format!("layers/{name}")));
    }
    extra.sort();
    image::build(&image::Spec {
        rootfs: rootfs_dir,
        out: out.to_path_buf(),
        size: None,
        kernel,
        bins,
        extra_cmdline: String::new(),
        persist_extra: extra,
        omit: Vec::new(),
    })
}

/// Where the data partition is on `disk` (its GPT, as `sfdisk` reads it).
pub fn data_partition(disk: &Path) -> Result<Region> {
    let text = deps::output(deps::cmd("sfdisk").arg("--json").arg(disk))?;
    let v: Value = serde_json::from_str(&text).context("parsing sfdisk --json")?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = table["partitions"].as_array().context("no partitions")?;
    let data: Vec<&Value> = parts
        .iter()
        .filter(|p| p["type"].as_str() == Some(LINUX_TYPE))
        .collect();
    let [p] = data[..] else {
        bail!(
            "{} has {} Linux partitions, not one",
            disk.display(),
            data.len()
        );
    };
    let n = |k: &str| p[k].as_u64().with_context(|| format!("partition {k}"));
    Ok(Region {
        offset: n("start")? * sector,
        len: n("size")? * sector,
    })
}

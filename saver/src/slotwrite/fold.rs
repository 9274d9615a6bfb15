//! `saver fold`: the running system — its base, the saved layers and this
//! session, as the root shows them — packed as a new base into the other
//! slot, whose chain starts empty; the running slot's files are never
//! touched. The root is bind-mounted alone (not recursively) in a private
//! directory, so the mounts on it (/proc, /sys, /dev, /run, /persist, the
//! modules and firmware images) are not crossed; the save's exclusion list
//! applies, and the kernels, modules and firmware directories are kept
//! empty (the stick mounts its images there).

use super::onstick::{self, ImageSource, OnStick};
use super::plan::{self, Payload, RecordSeed, Target};
use super::record::SlotOrigin;
use crate::clock;
use crate::progress::Reporter;
use crate::session::{session_patterns, Paths, BUILTIN_EXCLUDE};
use crate::slot::state::{SlotVars, GRUBENV};
use crate::space::{self, human, Estimate};
use crate::stick::say;
use crate::verifymount;
use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use ramstick_common::grubenv::Env;
use ramstick_common::place::Slot;
use ramstick_squash::{ChangedFile, Changing, Compressor, Exclude, PackOptions, Progress};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A base is read at every boot: the level `cargo xtask image` gives it
/// (mksquashfs `-Xcompression-level 9`).
pub const BASE_COMPRESSOR: Compressor = Compressor::Zstd(9);
/// How far a file's ctime may lag the clock (as the save allows).
const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// `saver fold`.
#[derive(clap::Args, Debug)]
pub struct FoldArgs {
    /// Replace what the other slot holds (its system and saved states: the
    /// rollback target); without it, a slot that holds something is only
    /// described.
    #[arg(long)]
    pub yes: bool,
}

/// Where a fold reads and writes (the system's, or a test's).
#[derive(Debug, Clone)]
pub struct FoldPaths {
    /// The running root, bind-mounted alone.
    pub root: PathBuf,
    /// The persist partition.
    pub persist: PathBuf,
    /// The save's exclusion list.
    pub exclude: PathBuf,
    /// The saver's run-time directory (lock, the bind mount).
    pub state: PathBuf,
    /// The kernel command line.
    pub cmdline: PathBuf,
    /// The stick's ESP, when the caller mounted it; `None`: it is mounted
    /// to read and write GRUB's environment block.
    pub esp: Option<PathBuf>,
}

impl FoldPaths {
    pub fn system(paths: &Paths) -> FoldPaths {
        FoldPaths {
            root: "/".into(),
            // The partition's root, not `paths.persist` (the running
            // profile's state directory): slots are the stick's.
            persist: crate::running::PERSIST.into(),
            exclude: paths.exclude.clone(),
            state: paths.state.clone(),
            cmdline: paths.cmdline.clone(),
            esp: None,
        }
    }
}

/// What a fold leaves out: the save's exclusion list, but the kernels,
/// modules and firmware directories are kept, empty (mount points).
pub fn fold_exclude(list: &Path) -> Result<Exclude> {
    let user = session_patterns(list)?
        .into_iter()
        .skip(BUILTIN_EXCLUDE.len());
    let patterns: Vec<String> = BUILTIN_EXCLUDE
        .iter()
        .map(|d| format!("{d}/*"))
        .chain(user)
        .collect();
    Exclude::new(patterns).with_context(|| format!("in {}", list.display()))
}

/// The root bind-mounted alone, read-only and private; unmounted on drop.
struct RootView {
    dir: PathBuf,
}

impl RootView {
    fn mount(root: &Path, dir: &Path) -> Result<RootView> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let none = None::<&str>;
        mount(Some(root), dir, none, MsFlags::MS_BIND, none).with_context(|| {
            format!("cannot bind-mount {} at {}", root.display(), dir.display())
        })?;
        let view = RootView {
            dir: dir.to_path_buf(),
        };
        // Nothing mounted elsewhere later propagates into it, and nothing
        // here can change the running system.
        mount(none, dir, none, MsFlags::MS_PRIVATE, none)
            .with_context(|| format!("cannot make {} private", dir.display()))?;
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        mount(none, dir, none, ro, none)
            .with_context(|| format!("cannot make {} read-only", dir.display()))?;
        Ok(view)
    }
}

impl Drop for RootView {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.dir, MntFlags::MNT_DETACH) {
            say(&format!("cannot unmount {}: {e}", self.dir.display()));
        }
    }
}

/// Packs the root view into the base image and reads it back.
struct FoldSource<'a> {
    root: &'a Path,
    exclude: &'a Exclude,
    /// Files stored while they changed, and when the pack began.
    changed: Vec<ChangedFile>,
    began: SystemTime,
    /// Where the kernel mounts the new base to read it whole.
    mnt: PathBuf,
}

impl ImageSource for FoldSource<'_> {
    fn write(&mut self, payload: Payload, image: &Path) -> Result<()> {
        if payload != Payload::Base {
            bail!("a fold writes no firmware image");
        }
        let reporter = Reporter::new("folding");
        let progress = |p: &Progress| reporter.report(p);
        let options = PackOptions {
            compressor: BASE_COMPRESSOR,
            exclude: self.exclude,
            changing: Changing::Settle,
            progress: Some(&progress),
            ..PackOptions::default()
        };
        self.began = SystemTime::now();
        let t = Instant::now();
        let stats = ramstick_squash::pack(self.root, image, &options).with_context(|| {
            format!(
                "cannot pack {} into {}",
                self.root.display(),
                image.display()
            )
        })?;
        say(&format!(
            "packed {} entries ({} of file data) into {} in {:.1} s; reading it back",
            stats.entries,
            human(stats.bytes_in),
            human(stats.image_size),
            t.elapsed().as_secs_f64()
        ));
        self.changed = stats.changed;
        Ok(())
    }

    fn verify(&mut self, _: Payload, image: &Path) -> Result<()> {
        let options = ramstick_squash::VerifyOptions {
            exclude: self.exclude,
            changing: &self.changed,
            // The system runs on: what it wrote since the pack began is
            // folded as the pack read it.
            changed_since: Some(self.began.checked_sub(CLOCK_SLACK).unwrap_or(UNIX_EPOCH)),
        };
        let t = Instant::now();
        let verified = ramstick_squash::verify_with(image, self.root, &options)
            .with_context(|| format!("cannot read back {}", image.display()))?;
        if !verified.differences.is_empty() {
            let shown: Vec<String> = verified
                .differences
                .iter()
                .take(20)
                .map(ToString::to_string)
                .collect();
            bail!(
                "{} reads back different from the running system ({} differences): {}",
                image.display(),
                verified.differences.len(),
                shown.join("; ")
            );
        }
        // The kernel mounts the base at every boot: it reads it whole, and
        // our reader must see the same.
        ramstick_squash::drop_cache(image)?;
        verifymount::read_whole(image, &self.mnt)?;
        let n = self.changed.len() + verified.changed.len();
        say(&format!(
            "both readers read the new base back identical to the running system{} ({:.1} s)",
            if n == 0 {
                String::new()
            } else {
                format!(" but for {n} files written meanwhile (folded as they were read)")
            },
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

/// The committed slot, from the grubenv at `path` or on the stick's ESP.
/// `None` when the stick has no grubenv (made before slots).
fn committed(p: &FoldPaths) -> Result<Option<Slot>> {
    let read = |file: &Path| -> Result<Option<Slot>> {
        if !file.is_file() {
            return Ok(None);
        }
        let env = Env::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok(Some(SlotVars::of(&env).committed))
    };
    match &p.esp {
        Some(esp) => read(&esp.join(GRUBENV)),
        None => {
            let esp = crate::kernel::esp::mount_esp_to_read(&p.persist)?;
            read(&esp.dir.join(GRUBENV))
        }
    }
}

/// Refuses when `free` cannot hold even a well-compressed base; says when
/// it may not fit (the save's rule).
pub fn check_space(est: &Estimate, free: u64) -> Result<()> {
    if free < est.floor() {
        bail!(
            "not enough space on the stick for the new base: it needs about {} (up to {} if the \
             data does not compress), and {} is free (counting what it replaces). Nothing was \
             written",
            human(est.floor()),
            human(est.worst()),
            human(free)
        );
    }
    if free < est.worst() {
        say(&format!(
            "the new base may not fit: up to {} needed, {} free; trying (if the stick fills \
             up, the slot stays incomplete and is never booted)",
            human(est.worst()),
            human(free)
        ));
    }
    Ok(())
}

/// `saver fold`: Ok(false) when the target holds something and `--yes`
/// was not given (nothing written).
pub fn fold(p: &FoldPaths, yes: bool) -> Result<bool> {
    let _lock = crate::save::lock(&p.state)?;
    let cmdline = std::fs::read_to_string(&p.cmdline)
        .with_context(|| format!("cannot read {}", p.cmdline.display()))?;
    let running = crate::slot::state::running(&cmdline).slot;
    let has_env = committed(p)?;
    let committed = match has_env {
        Some(slot) => slot,
        None => {
            say(
                "the stick's ESP has no grub/grubenv (a stick made before slots): slot a is \
                 the committed slot, and the new slot cannot be tried from GRUB until the \
                 stick has one",
            );
            Slot::A
        }
    };
    let slot = running.other();
    let target = Target {
        slot,
        running: Some(running),
        committed,
        firmware: false,
        b_has_own_firmware: onstick::b_has_own_firmware(&p.persist),
    };
    let plan = plan::plan(&target)?;
    let contents = onstick::inspect(&p.persist, slot);
    if !contents.is_empty() {
        say(&format!(
            "slot {slot} holds the previous system (the rollback target); a fold replaces:"
        ));
        for line in contents.lines(slot) {
            say(&format!("  {line}"));
        }
        if !yes {
            say("nothing was written: run `saver fold --yes` to replace it");
            return Ok(false);
        }
    }
    let exclude = fold_exclude(&p.exclude)?;
    let view = RootView::mount(&p.root, &p.state.join("fold-root"))?;
    let est = space::estimate_with(&view.dir, &exclude, false)?;
    check_space(&est, space::free(&p.persist)? + contents.bytes())?;
    for note in &plan.notes {
        say(note);
    }
    say(&format!(
        "folding the running system (slot {running}: its base, saved layers and this session; \
         {} entries, {} of file data) into slot {slot}",
        est.entries,
        human(est.data)
    ));
    let started = Instant::now();
    let mut source = FoldSource {
        root: &view.dir,
        exclude: &exclude,
        changed: Vec::new(),
        began: SystemTime::now(),
        mnt: p.state.join("verify"),
    };
    let mut stick = OnStick {
        persist: p.persist.clone(),
        source: &mut source,
    };
    let seed = RecordSeed {
        origin: SlotOrigin::Fold,
        date: clock::display(SystemTime::now()),
        source: Some(running),
        note: String::new(),
    };
    let record = plan::run(&mut stick, &plan.steps, &seed).with_context(|| {
        format!(
            "the fold did not complete: slot {slot} is incomplete (never booted); slot \
             {running} is untouched"
        )
    })?;
    drop(view);
    say(&format!(
        "slot {slot} holds the folded system ({}; {:.0} s); its saved state starts empty. \
         Slot {running} is unchanged and stays the committed slot",
        record.describe(),
        started.elapsed().as_secs_f64()
    ));
    // Then and only then: GRUB boots it once at the next reboot.
    if has_env.is_none() {
        say(&format!(
            "this stick's GRUB cannot try slot {slot} (no grub/grubenv): it keeps booting slot \
             {running}"
        ));
        return Ok(true);
    }
    match &p.esp {
        Some(esp) => crate::slot::set_trial_in(esp, &p.persist, slot),
        None => crate::slot::set_trial(&p.persist, slot),
    }
    .with_context(|| {
        format!("slot {slot} is written, but its trial could not be set: `saver slot try {slot}`")
    })?;
    say(&format!(
        "the next boot tries slot {slot} once; it becomes the stick's slot only when that \
         boot's health check commits it (`saver slot status`)"
    ));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fold_keeps_the_mount_points_and_applies_the_users_list() {
        let t = ramstick_testkit::TempDir::new("fold-exclude");
        let list = t.join("exclude");
        std::fs::write(&list, "/tmp/*\n").unwrap();
        let ex = fold_exclude(&list).unwrap();
        for dir in BUILTIN_EXCLUDE {
            assert!(!ex.matches(dir), "{dir} itself is kept");
            assert!(ex.matches(&format!("{dir}/x")), "{dir}/x");
        }
        assert!(ex.matches("/tmp/a") && !ex.matches("/tmp") && !ex.matches("/etc/x"));
        assert!(fold_exclude(&t.join("missing"))
            .unwrap()
            .matches("/boot/vmlinuz"));
        std::fs::write(&list, "/bad[\n").unwrap();
        assert!(fold_exclude(&list).is_err());
    }

    #[test]
    fn the_space_check_refuses_below_the_floor() {
        let est = Estimate {
            entries: 0,
            data: 99 << 20,
        };
        check_space(&est, 200 << 20).unwrap();
        check_space(&est, 50 << 20).unwrap();
        let err = check_space(&est, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("1.0 MiB is free"), "{err}");
    }
}

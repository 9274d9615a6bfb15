//! `saver save`: persist the RAM upper to the stick.
//!
//! In order: a clean boot saves nothing; a stale tmp image is removed; an
//! unchanged session (the upper equals the image it came from, or was last
//! saved to) writes nothing; the space on /persist is checked; then the
//! rotation of [`crate::rotate`] runs, its write step packing the upperdir
//! (never the merged view) with the exclusion list, fsyncing the image and
//! test-mounting it (see [`crate::verifymount`]).

use crate::clock;
use crate::progress::Reporter;
use crate::rotate::{self, Dir, Situation, Unreadable, TMP_IMAGE};
use crate::session::{changes, load_exclude, Paths, Session};
use crate::space::{self, human, Estimate};
use crate::verifymount;
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use ramstick_common::cmdline::BootType;
use ramstick_common::plan::{UPPER_BACKUP_IMAGE, UPPER_IMAGE};
use ramstick_squash::{Exclude, PackOptions, Progress};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// How a save went (when it did not fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A clean boot: nothing is ever saved.
    CleanBoot,
    /// Nothing changed: nothing written.
    Unchanged,
    /// A new `upperfs.squashfs` of this many bytes.
    Saved(u64),
}

/// Saves the session; `force` saves even an unchanged one.
pub fn save(paths: &Paths, force: bool) -> Result<Outcome> {
    let started = Instant::now();
    let session = Session::load(paths)?;
    if session.info.asked == BootType::Clean {
        say("clean boot (ramstick.boot=clean): the session is not saved; nothing was written to the stick");
        return Ok(Outcome::CleanBoot);
    }
    let _lock = lock(&paths.state)?;
    let exclude = load_exclude(&paths.exclude)?;
    let mut dir = Persist {
        paths,
        exclude: &exclude,
        written: 0,
    };
    if rotate::remove_stale(&mut dir)? {
        say(&format!(
            "removed {TMP_IMAGE}, left by an interrupted save (boot never uses it)"
        ));
    }
    let estimate = space::estimate(&paths.upperdir, &exclude)?;
    if !force {
        if let Some(why) = unchanged(&session, paths, &exclude, &estimate) {
            say(&format!("{why}: nothing to save, nothing was written"));
            return Ok(Outcome::Unchanged);
        }
    }

    let skipped = session.skipped();
    let situation = Situation {
        default_present: dir.exists(UPPER_IMAGE)?,
        backup_present: dir.exists(UPPER_BACKUP_IMAGE)?,
        default_unreadable: skipped.contains(&UPPER_IMAGE),
        backup_unreadable: skipped.contains(&UPPER_BACKUP_IMAGE),
    };
    let unreadable = situation.unreadable();
    let reclaimable: u64 = unreadable
        .iter()
        .map(|n| std::fs::metadata(paths.persist.join(n)).map_or(0, |m| m.len()))
        .sum();
    let free = space::free(&paths.persist)?;
    let mode = space_plan(&estimate, free, reclaimable)?;
    let stamp = clock::stamp(SystemTime::now());
    for name in &unreadable {
        match mode {
            Unreadable::SetAside => say(&format!(
                "boot could not read {name}: keeping it as {} (boot ignores it); \
                 the image this session came from stays in place",
                rotate::aside_name(name, &stamp)
            )),
            Unreadable::Delete => say(&format!(
                "boot could not read {name}: deleting it to make room for the new image"
            )),
        }
    }
    say(&format!(
        "saving {} ({} entries, {} of file data) to {}",
        paths.upperdir.display(),
        estimate.entries,
        human(estimate.data),
        paths.persist.join(UPPER_IMAGE).display()
    ));
    let steps = rotate::plan(&situation, mode, &stamp);
    if let Err(e) = rotate::run(&mut dir, &steps) {
        if is_enospc(&e) {
            bail!(
                "the stick is full: the new image did not fit ({} free before the save, up to {} \
                 needed). The partial image was removed; the old images are untouched",
                human(free),
                human(estimate.worst())
            );
        }
        return Err(e.context("the session was NOT saved (boot still finds the last saved one)"));
    }
    if let Err(e) = std::fs::write(paths.saved_marker(), &stamp) {
        say(&format!(
            "warning: cannot write {}: {e}",
            paths.saved_marker().display()
        ));
    }
    let backup = if situation.default_present && !situation.default_unreadable {
        format!("; the previous image is now {UPPER_BACKUP_IMAGE}")
    } else {
        String::new()
    };
    say(&format!(
        "saved the session in {:.1} s: wrote {} to the stick ({UPPER_IMAGE}){backup}",
        started.elapsed().as_secs_f64(),
        human(dir.written)
    ));
    Ok(Outcome::Saved(dir.written))
}

/// Packing attempts when the upper changes meanwhile.
const ATTEMPTS: u32 = 3;
/// Pause before the next attempt.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// One line on the console.
fn say(msg: &str) {
    eprintln!("saver: {msg}");
}

/// Why nothing needs saving, if so.
fn unchanged(
    session: &Session,
    paths: &Paths,
    exclude: &Exclude,
    estimate: &Estimate,
) -> Option<String> {
    let Some(name) = session.reference() else {
        return (estimate.entries == 0)
            .then(|| "the session started empty and nothing was changed".to_string());
    };
    match changes(paths, name, exclude) {
        Ok(diffs) if diffs.is_empty() => Some(format!("the session is unchanged since {name}")),
        Ok(diffs) => {
            say(&format!("{} entries changed since {name}", diffs.len()));
            None
        }
        Err(e) => {
            say(&format!(
                "cannot compare the session with {name} ({e}); saving it"
            ));
            None
        }
    }
}

/// Decides whether the new image can be written, and what to do with
/// unreadable images (`reclaimable` bytes) to make room.
fn space_plan(est: &Estimate, free: u64, reclaimable: u64) -> Result<Unreadable> {
    if free >= est.worst() {
        return Ok(Unreadable::SetAside);
    }
    if free + reclaimable < est.floor() {
        bail!(
            "not enough space on the stick for the new image: it needs about {} (up to {} if the \
             data does not compress), and {} is free. Nothing was written; the old images are \
             untouched. Free some space on /persist or exclude large files (/etc/ramstick/exclude)",
            human(est.floor()),
            human(est.worst()),
            human(free + reclaimable)
        );
    }
    if free + reclaimable < est.worst() {
        say(&format!(
            "the new image may not fit: up to {} needed, {} free; trying (if the stick fills \
             up, the partial image is removed and the old images stay)",
            human(est.worst()),
            human(free + reclaimable)
        ));
    }
    Ok(if reclaimable > 0 {
        Unreadable::Delete
    } else {
        Unreadable::SetAside
    })
}

/// True if a file of the upper changed while it was packed or compared
/// (something still writes; a later attempt may catch it at rest).
fn changed_while_saving(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<verifymount::Mismatch>().is_some()
            || matches!(
                c.downcast_ref::<ramstick_squash::Error>(),
                Some(ramstick_squash::Error::Changed { .. })
            )
    })
}

/// True if the error chain holds ENOSPC.
fn is_enospc(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c.downcast_ref::<std::io::Error>().or_else(|| {
            match c.downcast_ref::<ramstick_squash::Error>() {
                Some(ramstick_squash::Error::Io { error, .. }) => Some(error),
                _ => None,
            }
        });
        io.and_then(std::io::Error::raw_os_error) == Some(nix::libc::ENOSPC)
    })
}

/// Only one save at a time (the daemon and a manual `saver save`).
fn lock(state: &Path) -> Result<Flock<File>> {
    std::fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
    let path = state.join("lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", path.display()))
}

/// The real /persist, whose write step packs and tests the upper.
struct Persist<'a> {
    paths: &'a Paths,
    exclude: &'a Exclude,
    /// Bytes of the image written.
    written: u64,
}

impl Persist<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.paths.persist.join(name)
    }

    /// Packs the upper into `image`, syncs and tests it; returns its size.
    fn write_once(&self, image: &Path) -> Result<u64> {
        let upper = &self.paths.upperdir;
        let reporter = Reporter::new("packing");
        let progress = |p: &Progress| reporter.report(p);
        let options = PackOptions {
            exclude: self.exclude,
            progress: Some(&progress),
            ..PackOptions::default()
        };
        let t = Instant::now();
        let stats = ramstick_squash::pack(upper, image, &options)
            .with_context(|| format!("cannot pack {} into {}", upper.display(), image.display()))?;
        File::open(image)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", image.display()))?;
        say(&format!(
            "packed {} entries ({} of file data) into {} in {:.1} s; testing it",
            stats.entries,
            human(stats.bytes_in),
            human(stats.image_size),
            t.elapsed().as_secs_f64()
        ));
        let t = Instant::now();
        let mnt = self.paths.state.join("verify");
        verifymount::check(image, upper, self.exclude, &mnt)?;
        say(&format!(
            "the kernel reads the new image back identical to the upper ({:.1} s)",
            t.elapsed().as_secs_f64()
        ));
        Ok(stats.image_size)
    }
}

impl Dir for Persist<'_> {
    fn exists(&self, name: &str) -> Result<bool> {
        let path = self.path(name);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
        }
    }

    fn remove(&mut self, name: &str) -> Result<()> {
        let path = self.path(name);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))
    }

    fn write(&mut self, name: &str) -> Result<()> {
        let image = self.path(name);
        for attempt in 1..=ATTEMPTS {
            match self.write_once(&image) {
                Ok(size) => {
                    self.written = size;
                    return Ok(());
                }
                Err(e) if attempt < ATTEMPTS && changed_while_saving(&e) => {
                    say(&format!(
                        "the upper changed while it was being saved ({e:#}); trying again"
                    ));
                    std::thread::sleep(RETRY_AFTER);
                }
                Err(e) => return Err(e),
            }
        }
        bail!("the upper kept changing while it was being saved")
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (self.path(from), self.path(to));
        std::fs::rename(&a, &b)
            .with_context(|| format!("cannot rename {} to {}", a.display(), b.display()))
    }

    fn sync(&mut self) -> Result<()> {
        let dir = &self.paths.persist;
        File::open(dir)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_decisions() {
        let est = Estimate {
            entries: 0,
            data: 99 << 20,
        };
        assert_eq!(est.worst(), 100 << 20);
        assert_eq!(
            space_plan(&est, 200 << 20, 0).unwrap(),
            Unreadable::SetAside
        );
        assert_eq!(
            space_plan(&est, 200 << 20, 5).unwrap(),
            Unreadable::SetAside
        );
        // Tight: tried, unreadable images deleted first.
        assert_eq!(space_plan(&est, 50 << 20, 0).unwrap(), Unreadable::SetAside);
        assert_eq!(
            space_plan(&est, 50 << 20, 60 << 20).unwrap(),
            Unreadable::Delete
        );
        assert_eq!(
            space_plan(&est, 5 << 20, 10 << 20).unwrap(),
            Unreadable::Delete
        );
        // Hopeless: refused with both numbers.
        let err = space_plan(&est, 1 << 20, 0).unwrap_err().to_string();
        assert!(
            err.contains("100.0 MiB") && err.contains("1.0 MiB is free"),
            "{err}"
        );
    }

    #[test]
    fn a_tree_changing_meanwhile_is_retried_other_errors_are_not() {
        let changed = ramstick_squash::Error::Changed {
            path: "/run/ramstick/upper/upper/var/log/wtmp".into(),
            what: "its size changed (was 8832 bytes)".into(),
        };
        assert!(changed_while_saving(
            &anyhow::Error::new(changed).context("x")
        ));
        let mismatch = verifymount::Mismatch(vec!["upper: /a file".into()]);
        assert!(changed_while_saving(&anyhow::Error::new(mismatch)));
        let long = ramstick_squash::Error::Unpackable {
            path: "/x".into(),
            what: "name too long".into(),
        };
        assert!(!changed_while_saving(&anyhow::Error::new(long)));
    }

    #[test]
    fn enospc_is_found_through_the_codec_error() {
        let io = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let e = anyhow::Error::new(ramstick_squash::Error::io("write", "/persist/x", io))
            .context("cannot pack");
        assert!(is_enospc(&e));
        let other = std::io::Error::from_raw_os_error(nix::libc::EIO);
        assert!(!is_enospc(&anyhow::Error::new(other).context("x")));
    }
}

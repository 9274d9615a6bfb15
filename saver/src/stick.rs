//! The real [`Stick`]: the persist partition, written through the codec.
//!
//! A session's layer is the overlay's upperdir packed with the exclusion
//! list, synced, then read back from the device (its cached pages dropped
//! first) by both readers a boot may use — our codec (`ramstick.layers=ram`)
//! and the kernel's squashfs (`mount`) — and compared with the upper entry
//! by entry; a file that changed meanwhile makes it try again. A merged
//! layer is read back whole by both readers. Every record carries the
//! layer's digests as read back from the device.
//!
//! A file that keeps changing never costs the session: the codec stores it
//! as one read of it saw it (`Changing::Settle`), and the read-back
//! compares it in everything but size, mtime and content. On the last
//! attempt, so is a file written since the pack began (by its ctime): it is
//! saved as the pack read it. Both kinds are named on the console.

use crate::clock;
use crate::commit::{Source, Stick};
use crate::progress::Reporter;
use crate::session::Paths;
use crate::space::human;
use crate::verifymount;
use anyhow::{bail, Context, Result};
use ramstick_common::manifest::{LayerInfo, Origin, LAYERS_DIR};
use ramstick_squash::{
    ChangedFile, Changing, Compressor, Exclude, PackOptions, Progress, VerifyOptions,
};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Session layers are written while the user waits (shutdown, a
/// checkpoint): a fast zstd level. See README "Performance" for the row
/// that chose it.
pub const SESSION_COMPRESSOR: Compressor = Compressor::Zstd(3);
/// Merged layers are written rarely and read at every boot: a strong level.
pub const MERGE_COMPRESSOR: Compressor = Compressor::Zstd(15);

/// Packing attempts when the upper changes meanwhile.
const ATTEMPTS: u32 = 3;
/// Pause before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How far a file's ctime may lag the clock read just before it was
/// written (file systems take timestamps from a coarse clock).
const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// One line on the console.
pub fn say(msg: &str) {
    eprintln!("saver: {msg}");
}

/// The persist partition.
pub struct PersistStick<'a> {
    pub paths: &'a Paths,
    pub exclude: &'a Exclude,
    /// Bytes of the layer files written.
    pub written: u64,
    /// Also have the kernel read new layers back (needs root for the loop mount).
    pub kernel_check: bool,
}

impl<'a> PersistStick<'a> {
    pub fn new(paths: &'a Paths, exclude: &'a Exclude) -> Self {
        PersistStick {
            paths,
            exclude,
            written: 0,
            kernel_check: true,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.paths.on_stick(rel)
    }

    /// Creates `layers/` (and makes its entry durable) if it is missing,
    /// with a new profile's state directory above it.
    fn layers_dir(&self) -> Result<PathBuf> {
        let dir = self.paths.layers();
        crate::running::create_dir_synced(&dir)?;
        Ok(dir)
    }

    /// Packs the upper into `image` and checks it; returns the record. On
    /// the `last` attempt a file written since the pack began is let off.
    fn write_session(&self, image: &Path, last: bool) -> Result<LayerInfo> {
        let upper = &self.paths.upperdir;
        let reporter = Reporter::new("packing");
        let progress = |p: &Progress| reporter.report(p);
        let options = PackOptions {
            compressor: SESSION_COMPRESSOR,
            exclude: self.exclude,
            changing: Changing::Settle,
            progress: Some(&progress),
            ..PackOptions::default()
        };
        let began = SystemTime::now();
        let t = Instant::now();
        let stats = ramstick_squash::pack(upper, image, &options)
            .with_context(|| format!("cannot pack {} into {}", upper.display(), image.display()))?;
        sync_file(image)?;
        say(&format!(
            "packed {} entries ({} of file data) into {} in {:.1} s; reading it back",
            stats.entries,
            human(stats.bytes_in),
            human(stats.image_size),
            t.elapsed().as_secs_f64()
        ));
        let t = Instant::now();
        let read_back = VerifyOptions {
            exclude: self.exclude,
            changing: &stats.changed,
            changed_since: last.then(|| began.checked_sub(CLOCK_SLACK).unwrap_or(UNIX_EPOCH)),
        };
        ramstick_squash::drop_cache(image)?;
        let verified = ramstick_squash::verify_with(image, upper, &read_back)
            .with_context(|| format!("cannot read back {}", image.display()))?;
        if !verified.differences.is_empty() {
            let shown: Vec<String> = verified
                .differences
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(verifymount::Mismatch(shown).into());
        }
        let mut changed = stats.changed.clone();
        changed.extend(verified.changed);
        if self.kernel_check {
            ramstick_squash::drop_cache(image)?;
            let mnt = self.paths.state.join("verify");
            changed.extend(verifymount::check(image, upper, &read_back, &mnt)?);
        }
        say(&format!(
            "{} read the new layer back identical to the upper{} ({:.1} s)",
            if self.kernel_check {
                "both readers"
            } else {
                "our codec"
            },
            if changed.is_empty() {
                ""
            } else {
                " but for the files that kept changing"
            },
            t.elapsed().as_secs_f64()
        ));
        for line in kept_changing(changed) {
            say(&line);
        }
        record(image, stats.entries, stats.bytes_in, Origin::Session)
    }

    /// Merges `run` into `image` and reads it back whole.
    fn write_merge(&self, image: &Path, run: &[String]) -> Result<LayerInfo> {
        let inputs: Vec<PathBuf> = run.iter().map(|n| self.paths.layers().join(n)).collect();
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        let options = PackOptions {
            compressor: MERGE_COMPRESSOR,
            ..PackOptions::default()
        };
        let t = Instant::now();
        let stats = ramstick_squash::merge(&inputs, image, &options).with_context(|| {
            format!("cannot merge {} layers into {}", run.len(), image.display())
        })?;
        sync_file(image)?;
        ramstick_squash::drop_cache(image)?;
        let summary = ramstick_squash::summary(image)?;
        if self.kernel_check {
            let mnt = self.paths.state.join("verify");
            verifymount::read_whole(image, &mnt)?;
        }
        say(&format!(
            "merged {} layers into {} ({}) in {:.1} s",
            run.len(),
            image.display(),
            human(stats.image_size),
            t.elapsed().as_secs_f64()
        ));
        record(
            image,
            summary.entries,
            summary.data_bytes,
            Origin::Compacted,
        )
    }
}

/// The console lines naming the files saved while they kept changing (each
/// path once).
fn kept_changing(mut changed: Vec<ChangedFile>) -> Vec<String> {
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    changed.dedup_by(|a, b| a.path == b.path);
    changed
        .iter()
        .map(|c| {
            format!(
                "saved {} as it was at {}: it kept changing while the session was saved",
                c.path.display(),
                clock::display(c.mtime)
            )
        })
        .collect()
}

/// The record of the layer file `image` (digests read from the device).
fn record(image: &Path, entries: u64, data_bytes: u64, origin: Origin) -> Result<LayerInfo> {
    let d = ramstick_squash::digests(image)
        .with_context(|| format!("cannot read back {}", image.display()))?;
    Ok(LayerInfo {
        size: d.size,
        meta_digest: d.meta,
        digest: d.full,
        saved: clock::stamp(SystemTime::now()),
        entries,
        data_bytes,
        level: 0,
        origin,
    })
}

/// Makes `path`'s content durable.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Hard-links `from` as `to`, the error naming both.
pub fn hard_link(from: &Path, to: &Path) -> Result<()> {
    std::fs::hard_link(from, to)
        .with_context(|| format!("cannot link {} to {}", from.display(), to.display()))
}

/// Writes `text` as the file `path` (created or truncated) and syncs it.
pub fn write_synced(path: &Path, text: &str) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Renames `from` to `to`, the error naming both.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
}

/// Removes the file `path`; one already gone is not an error (a step run
/// again after a power cut).
pub fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes the directory `path` and all below it; one already gone is not
/// an error.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Makes `dir`'s entries durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// True if a file of the upper changed while it was packed or compared
/// (something still writes; a later attempt may catch it at rest).
pub fn changed_while_saving(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<verifymount::Mismatch>().is_some()
            || matches!(
                c.downcast_ref::<ramstick_squash::Error>(),
                Some(ramstick_squash::Error::Changed { .. })
            )
    })
}

impl Stick for PersistStick<'_> {
    fn write_layer(&mut self, name: &str, source: &Source) -> Result<LayerInfo> {
        let image = self.layers_dir()?.join(name);
        let info = match source {
            Source::Merge(run) => self.write_merge(&image, run)?,
            Source::Session => {
                let mut attempt = 1;
                loop {
                    match self.write_session(&image, attempt == ATTEMPTS) {
                        Ok(info) => break info,
                        Err(e) if attempt < ATTEMPTS && changed_while_saving(&e) => {
                            say(&format!(
                                "the upper changed while it was being saved ({e:#}); trying again"
                            ));
                            std::thread::sleep(RETRY_AFTER);
                            attempt += 1;
                        }
                        Err(e) if changed_while_saving(&e) => {
                            bail!("the upper kept changing while it was being saved: {e:#}")
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        self.written += info.size;
        Ok(info)
    }

    fn describe(&mut self, path: &str) -> Result<LayerInfo> {
        let image = self.path(path);
        let summary = ramstick_squash::summary(&image)
            .with_context(|| format!("cannot read {}", image.display()))?;
        record(
            &image,
            summary.entries,
            summary.data_bytes,
            Origin::Migrated,
        )
    }

    fn link(&mut self, from: &str, to: &str) -> Result<()> {
        self.layers_dir()?;
        hard_link(&self.path(from), &self.path(to))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        rename(&self.path(from), &self.path(to))
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        remove_file(&self.path(path))
    }

    fn write_synced(&mut self, path: &str, text: &str) -> Result<()> {
        self.layers_dir()?;
        write_synced(&self.path(path), text)
    }

    fn sync_dir(&mut self, dir: &str) -> Result<()> {
        let p = if dir.is_empty() {
            self.paths.persist.clone()
        } else {
            self.path(dir)
        };
        if dir == LAYERS_DIR && !p.exists() {
            return Ok(());
        }
        sync_dir(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_that_kept_changing_is_named_once_with_its_time() {
        let file = |path: &str, secs| ChangedFile {
            path: path.into(),
            size: 1,
            mtime: UNIX_EPOCH + Duration::from_secs(secs),
        };
        let lines = kept_changing(vec![
            file("/var/log/b", 951_782_400),
            file("/var/log/a", 0),
            file("/var/log/b", 951_782_400),
        ]);
        assert_eq!(
            lines,
            [
                "saved /var/log/a as it was at 1970-01-01 00:00:00 UTC: it kept changing while \
                 the session was saved",
                "saved /var/log/b as it was at 2000-02-29 00:00:00 UTC: it kept changing while \
                 the session was saved"
            ]
        );
        assert!(kept_changing(Vec::new()).is_empty());
    }
}

//! The image rotation state machine: which files on /persist are written,
//! renamed and removed, in which order, so that a power cut at any instant
//! leaves an image that boot uses holding either the previous or the new
//! session.
//!
//! Boot (init) tries `upperfs.squashfs`, then `upperfs-backup.squashfs`,
//! then starts clean; it never looks at `upperfs-tmp.squashfs`. A save
//! therefore writes, syncs and verifies the new image under the tmp name
//! first, and only then moves images by renames (atomic on ext4, ordered
//! by its journal), syncing the directory after each one:
//!
//! 1. unreadable images (boot skipped them) are renamed aside to a dated
//!    `…-corrupt-<stamp>.squashfs` name after the write, or deleted before
//!    it when space requires (the good image boot used stays in place);
//! 2. `upperfs.squashfs` → `upperfs-backup.squashfs` (replacing the old
//!    backup; boot now picks the backup = the previous session);
//! 3. `upperfs-tmp.squashfs` → `upperfs.squashfs` (boot picks the new one).
//!
//! The steps are planned by the pure [`plan`] and run by [`run`] against a
//! [`Dir`], so the same code drives the real directory and the tests' fake
//! that crashes after every step.

use anyhow::Result;
use ramstick_common::plan::{UPPER_BACKUP_IMAGE, UPPER_IMAGE};

/// The image being written; boot never looks at it.
pub const TMP_IMAGE: &str = "upperfs-tmp.squashfs";

/// One change to the images directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Unlink a file.
    Remove(String),
    /// Write a complete, synced and verified new image under this name.
    Write(String),
    /// rename(2) `from` to `to` (replacing `to`).
    Rename(String, String),
    /// fsync the directory: every step before it is durable.
    Sync,
}

/// The directory holding the images (the real /persist or a test fake).
pub trait Dir {
    fn exists(&self, name: &str) -> Result<bool>;
    fn remove(&mut self, name: &str) -> Result<()>;
    /// Writes a new image under `name`: when this returns Ok the file is
    /// complete, synced and verified. On error a partial file may be left.
    fn write(&mut self, name: &str) -> Result<()>;
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    fn sync(&mut self) -> Result<()>;
}

/// What to do with an image that boot found unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Keep it under a dated name (after the new image is written).
    SetAside,
    /// Delete it before writing (to make room).
    Delete,
}

/// The images on the stick before a save, as the planner sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Situation {
    pub default_present: bool,
    pub backup_present: bool,
    /// Boot tried `upperfs.squashfs` and could not read it.
    pub default_unreadable: bool,
    /// Boot tried `upperfs-backup.squashfs` and could not read it.
    pub backup_unreadable: bool,
}

impl Situation {
    /// The images present that boot could not read.
    pub fn unreadable(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.default_present && self.default_unreadable {
            names.push(UPPER_IMAGE);
        }
        if self.backup_present && self.backup_unreadable {
            names.push(UPPER_BACKUP_IMAGE);
        }
        names
    }
}

/// The name an unreadable image is kept under: `upperfs.squashfs` →
/// `upperfs-corrupt-<stamp>.squashfs`.
pub fn aside_name(name: &str, stamp: &str) -> String {
    let stem = name.strip_suffix(".squashfs").unwrap_or(name);
    format!("{stem}-corrupt-{stamp}.squashfs")
}

/// The steps of a save (after any stale tmp image has been removed).
pub fn plan(s: &Situation, unreadable: Unreadable, stamp: &str) -> Vec<Step> {
    let bad = s.unreadable();
    let mut steps = Vec::new();
    if unreadable == Unreadable::Delete && !bad.is_empty() {
        steps.extend(bad.iter().map(|n| Step::Remove(n.to_string())));
        steps.push(Step::Sync);
    }
    steps.push(Step::Write(TMP_IMAGE.into()));
    if unreadable == Unreadable::SetAside {
        for name in &bad {
            steps.push(Step::Rename(name.to_string(), aside_name(name, stamp)));
            steps.push(Step::Sync);
        }
    }
    if s.default_present && !s.default_unreadable {
        steps.push(Step::Rename(UPPER_IMAGE.into(), UPPER_BACKUP_IMAGE.into()));
        steps.push(Step::Sync);
    }
    steps.push(Step::Rename(TMP_IMAGE.into(), UPPER_IMAGE.into()));
    steps.push(Step::Sync);
    steps
}

/// Runs `steps` in order. If one fails before the new image has been
/// renamed into place, the partial tmp image is removed (best effort) so
/// that the old images are exactly as they were.
pub fn run(dir: &mut dyn Dir, steps: &[Step]) -> Result<()> {
    for step in steps {
        let result = match step {
            Step::Remove(name) => dir.remove(name),
            Step::Write(name) => dir.write(name),
            Step::Rename(from, to) => dir.rename(from, to),
            Step::Sync => dir.sync(),
        };
        if let Err(e) = result {
            if dir.exists(TMP_IMAGE).unwrap_or(true) {
                let _ = dir.remove(TMP_IMAGE).and_then(|()| dir.sync());
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Removes a tmp image left by an interrupted save; true if there was one.
pub fn remove_stale(dir: &mut dyn Dir) -> Result<bool> {
    if !dir.exists(TMP_IMAGE)? {
        return Ok(false);
    }
    dir.remove(TMP_IMAGE)?;
    dir.sync()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;
    use std::collections::BTreeMap;

    /// What a file of the fake directory holds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Content {
        /// A complete image of a session (0 = older, 1 = previous, 2 = new).
        Session(u8),
        /// An image boot cannot read.
        Corrupt,
        /// A write cut short.
        Partial,
    }
    use Content::*;

    /// What boot would start from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Boot {
        Image(u8),
        Clean,
    }

    const NEW: u8 = 2;

    /// A directory that records its files and stops working ("crashes")
    /// after a given number of changes, or fails writes like a full disk.
    struct Fake {
        files: BTreeMap<String, Content>,
        /// Changes still allowed before the crash.
        budget: usize,
        crashed: bool,
        disk_full: bool,
    }

    impl Fake {
        fn new(files: &[(&str, Content)], budget: usize) -> Fake {
            Fake {
                files: files.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
                budget,
                crashed: false,
                disk_full: false,
            }
        }

        /// Spends one change; false once the machine has crashed.
        fn tick(&mut self) -> bool {
            if self.budget == 0 {
                self.crashed = true;
            }
            if self.crashed {
                return false;
            }
            self.budget -= 1;
            true
        }

        /// init's choice: the first readable of default, backup; else clean.
        fn boot(&self) -> Boot {
            for name in [UPPER_IMAGE, UPPER_BACKUP_IMAGE] {
                if let Some(Session(n)) = self.files.get(name) {
                    return Boot::Image(*n);
                }
            }
            Boot::Clean
        }
    }

    impl Dir for Fake {
        fn exists(&self, name: &str) -> Result<bool> {
            if self.crashed {
                bail!("crashed");
            }
            Ok(self.files.contains_key(name))
        }
        fn remove(&mut self, name: &str) -> Result<()> {
            if !self.tick() {
                bail!("crashed");
            }
            match self.files.remove(name) {
                Some(_) => Ok(()),
                None => bail!("no {name}"),
            }
        }
        fn write(&mut self, name: &str) -> Result<()> {
            // Two changes: the data written, then synced and verified.
            if !self.tick() {
                bail!("crashed");
            }
            self.files.insert(name.into(), Partial);
            if self.disk_full {
                bail!("No space left on device");
            }
            if !self.tick() {
                bail!("crashed");
            }
            self.files.insert(name.into(), Session(NEW));
            Ok(())
        }
        fn rename(&mut self, from: &str, to: &str) -> Result<()> {
            if !self.tick() {
                bail!("crashed");
            }
            match self.files.remove(from) {
                Some(c) => {
                    self.files.insert(to.into(), c);
                    Ok(())
                }
                None => bail!("no {from}"),
            }
        }
        fn sync(&mut self) -> Result<()> {
            if !self.tick() {
                bail!("crashed");
            }
            Ok(())
        }
    }

    const STAMP: &str = "20261124-031500";

    struct Case {
        name: &'static str,
        files: &'static [(&'static str, Content)],
        situation: Situation,
        unreadable: Unreadable,
        /// The backup after a complete save.
        backup_after: Option<Content>,
    }

    fn cases() -> Vec<Case> {
        let s = |d, b, du, bu| Situation {
            default_present: d,
            backup_present: b,
            default_unreadable: du,
            backup_unreadable: bu,
        };
        vec![
            Case {
                name: "normal rotation",
                files: &[(UPPER_IMAGE, Session(1)), (UPPER_BACKUP_IMAGE, Session(0))],
                situation: s(true, true, false, false),
                unreadable: Unreadable::SetAside,
                backup_after: Some(Session(1)),
            },
            Case {
                name: "first save",
                files: &[],
                situation: s(false, false, false, false),
                unreadable: Unreadable::SetAside,
                backup_after: None,
            },
            Case {
                name: "second save",
                files: &[(UPPER_IMAGE, Session(1))],
                situation: s(true, false, false, false),
                unreadable: Unreadable::SetAside,
                backup_after: Some(Session(1)),
            },
            Case {
                name: "default missing, backup booted",
                files: &[(UPPER_BACKUP_IMAGE, Session(1))],
                situation: s(false, true, false, false),
                unreadable: Unreadable::SetAside,
                backup_after: Some(Session(1)),
            },
            Case {
                name: "fallback: corrupt default set aside",
                files: &[(UPPER_IMAGE, Corrupt), (UPPER_BACKUP_IMAGE, Session(1))],
                situation: s(true, true, true, false),
                unreadable: Unreadable::SetAside,
                backup_after: Some(Session(1)),
            },
            Case {
                name: "fallback: corrupt default deleted for room",
                files: &[(UPPER_IMAGE, Corrupt), (UPPER_BACKUP_IMAGE, Session(1))],
                situation: s(true, true, true, false),
                unreadable: Unreadable::Delete,
                backup_after: Some(Session(1)),
            },
            Case {
                name: "asked backup, backup corrupt, default kept",
                files: &[(UPPER_IMAGE, Session(1)), (UPPER_BACKUP_IMAGE, Corrupt)],
                situation: s(true, true, false, true),
                unreadable: Unreadable::SetAside,
                backup_after: Some(Session(1)),
            },
            Case {
                name: "both corrupt",
                files: &[(UPPER_IMAGE, Corrupt), (UPPER_BACKUP_IMAGE, Corrupt)],
                situation: s(true, true, true, true),
                unreadable: Unreadable::SetAside,
                backup_after: None,
            },
            Case {
                name: "both corrupt, deleted for room",
                files: &[(UPPER_IMAGE, Corrupt), (UPPER_BACKUP_IMAGE, Corrupt)],
                situation: s(true, true, true, true),
                unreadable: Unreadable::Delete,
                backup_after: None,
            },
            Case {
                name: "stale tmp from an interrupted save",
                files: &[
                    (UPPER_IMAGE, Session(1)),
                    (UPPER_BACKUP_IMAGE, Session(0)),
                    (TMP_IMAGE, Partial),
                ],
                situation: s(true, true, false, false),
                unreadable: Unreadable::SetAside,
                backup_after: Some(Session(1)),
            },
        ]
    }

    /// A whole save as the saver runs it: stale tmp removal, then the plan.
    fn save(dir: &mut Fake, case: &Case) -> Result<()> {
        remove_stale(dir)?;
        run(dir, &plan(&case.situation, case.unreadable, STAMP))
    }

    #[test]
    fn a_crash_after_any_step_leaves_the_previous_or_the_new_session() {
        for case in cases() {
            let before = Fake::new(case.files, 0).boot();
            // Budgets from 0 (crash before anything) to enough for the whole save.
            let mut completed = false;
            for budget in 0..64 {
                let mut dir = Fake::new(case.files, budget);
                let result = save(&mut dir, &case);
                let after_crash = dir.boot();
                assert!(
                    after_crash == before || after_crash == Boot::Image(NEW),
                    "{}: crash after {budget} changes: boot picks {after_crash:?}, \
                     expected {before:?} or the new session; files {:?}",
                    case.name,
                    dir.files
                );
                // The next save on the next boot removes any partial image.
                let mut next = Fake::new(&[], usize::MAX);
                next.files = dir.files.clone();
                remove_stale(&mut next).unwrap();
                assert!(!next.files.contains_key(TMP_IMAGE), "{}", case.name);
                assert_eq!(next.boot(), after_crash, "{}", case.name);
                if result.is_ok() {
                    completed = true;
                    assert_eq!(after_crash, Boot::Image(NEW), "{}", case.name);
                    assert_eq!(
                        dir.files.get(UPPER_BACKUP_IMAGE).copied(),
                        case.backup_after,
                        "{}: backup after the save; files {:?}",
                        case.name,
                        dir.files
                    );
                    assert!(!dir.files.contains_key(TMP_IMAGE), "{}", case.name);
                    break;
                }
            }
            assert!(completed, "{}: the save never completed", case.name);
        }
    }

    #[test]
    fn corrupt_images_are_kept_aside_or_deleted() {
        let case = &cases()[4];
        let mut dir = Fake::new(case.files, usize::MAX);
        save(&mut dir, case).unwrap();
        let aside = aside_name(UPPER_IMAGE, STAMP);
        assert_eq!(aside, "upperfs-corrupt-20261124-031500.squashfs");
        assert_eq!(dir.files.get(&aside), Some(&Corrupt));
        let case = &cases()[5];
        let mut dir = Fake::new(case.files, usize::MAX);
        save(&mut dir, case).unwrap();
        assert!(dir.files.values().all(|c| *c != Corrupt), "{:?}", dir.files);
        // Deleting happens before the write, to make room.
        let steps = plan(&case.situation, Unreadable::Delete, STAMP);
        assert_eq!(steps[0], Step::Remove(UPPER_IMAGE.into()));
    }

    #[test]
    fn a_full_disk_leaves_the_old_images_untouched() {
        for case in cases() {
            let mut dir = Fake::new(case.files, usize::MAX);
            dir.disk_full = true;
            let err = save(&mut dir, &case).unwrap_err();
            assert!(err.to_string().contains("No space"), "{err}");
            let mut expected: BTreeMap<String, Content> = case
                .files
                .iter()
                .filter(|(n, _)| *n != TMP_IMAGE)
                .map(|(n, c)| (n.to_string(), *c))
                .collect();
            if case.unreadable == Unreadable::Delete {
                // Unreadable images were deleted first, on purpose.
                expected.retain(|_, c| *c != Corrupt);
            }
            assert_eq!(dir.files, expected, "{}", case.name);
        }
    }

    #[test]
    fn only_renames_move_images() {
        for case in cases() {
            let steps = plan(&case.situation, case.unreadable, STAMP);
            let writes = steps.iter().filter(|s| matches!(s, Step::Write(_)));
            assert_eq!(writes.count(), 1, "{}", case.name);
            assert_eq!(steps.last(), Some(&Step::Sync), "{}", case.name);
        }
    }
}

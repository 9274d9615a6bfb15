//! The running session as the saver sees it: where things are, how init
//! booted (boot.json), which image the upper is known to equal, and which
//! images boot found unreadable.

use anyhow::{Context, Result};
use ramstick_common::bootinfo::{BootInfo, BOOT_JSON};
use ramstick_common::cmdline::BootType;
use ramstick_common::plan::{UPPER_BACKUP_IMAGE, UPPER_IMAGE};
use ramstick_squash::{Difference, Exclude};
use std::path::{Path, PathBuf};

/// The paths the saver works on (the system's, or a test's).
#[derive(Debug, Clone)]
pub struct Paths {
    /// The persist partition, holding the images.
    pub persist: PathBuf,
    /// The upper filesystem's mount point (for its usage).
    pub upper_mount: PathBuf,
    /// The overlay's upperdir: what is saved.
    pub upperdir: PathBuf,
    /// The exclusion list.
    pub exclude: PathBuf,
    /// init's boot record.
    pub boot_json: PathBuf,
    /// The saver's own run-time directory (lock, saved marker, test mounts).
    pub state: PathBuf,
}

impl Paths {
    /// The paths of a system booted by ramstick.
    pub fn system() -> Paths {
        Paths {
            persist: "/persist".into(),
            upper_mount: "/run/ramstick/upper".into(),
            upperdir: "/run/ramstick/upper/upper".into(),
            exclude: "/etc/ramstick/exclude".into(),
            boot_json: BOOT_JSON.into(),
            state: "/run/ramstick/saver".into(),
        }
    }

    /// Present after a save of this session: the upper then equals `upperfs.squashfs`.
    pub fn saved_marker(&self) -> PathBuf {
        self.state.join("saved")
    }
}

/// How this session started and what it was saved as.
#[derive(Debug, Clone)]
pub struct Session {
    pub info: BootInfo,
    /// The session was saved already (by an earlier `saver save` of this boot).
    pub saved: bool,
}

impl Session {
    pub fn load(paths: &Paths) -> Result<Session> {
        let path = &paths.boot_json;
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {} (was this system booted by ramstick?)",
                path.display()
            )
        })?;
        let info = BootInfo::from_json(&text)
            .with_context(|| format!("cannot parse {}", path.display()))?;
        Ok(Session {
            info,
            saved: paths.saved_marker().exists(),
        })
    }

    /// The image the upper was unpacked from, or saved to since (relative to /persist).
    pub fn reference(&self) -> Option<&str> {
        if self.saved {
            Some(UPPER_IMAGE)
        } else {
            self.info.image.as_deref()
        }
    }

    /// The images boot tried before the one it used (or all it tried, when
    /// it ended clean). Those still present were unreadable. Empty once the
    /// session has been saved (the save set them aside).
    pub fn skipped(&self) -> Vec<&'static str> {
        if self.saved {
            return Vec::new();
        }
        let chain: &[&'static str] = match self.info.asked {
            BootType::Default => &[UPPER_IMAGE, UPPER_BACKUP_IMAGE],
            BootType::Backup => &[UPPER_BACKUP_IMAGE],
            BootType::Clean => &[],
        };
        chain
            .iter()
            .take_while(|name| self.info.image.as_deref() != Some(**name))
            .copied()
            .collect()
    }
}

/// Compares the image `name` on /persist with the upper: the differences
/// that matter (POSIX ACLs, which squashfs cannot store, are not compared).
pub fn changes(
    paths: &Paths,
    name: &str,
    exclude: &Exclude,
) -> ramstick_squash::Result<Vec<Difference>> {
    ramstick_squash::verify(&paths.persist.join(name), &paths.upperdir, exclude)
}

/// Reads the exclusion list; a missing file excludes nothing.
pub fn load_exclude(path: &Path) -> Result<Exclude> {
    match std::fs::read_to_string(path) {
        Ok(text) => Exclude::parse(&text).with_context(|| format!("in {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Exclude::none()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn session(asked: BootType, used: BootType, image: Option<&str>, saved: bool) -> Session {
        Session {
            info: BootInfo {
                asked,
                used,
                image: image.map(String::from),
                image_size: None,
                reasons: vec![],
                timings_ms: BTreeMap::new(),
                kernel: String::new(),
                upper: "zram".into(),
                problems: vec![],
            },
            saved,
        }
    }

    #[test]
    fn skipped_images_are_those_tried_before_the_used_one() {
        use BootType::*;
        let s = session(Default, Default, Some(UPPER_IMAGE), false);
        assert!(s.skipped().is_empty());
        assert_eq!(s.reference(), Some(UPPER_IMAGE));
        let s = session(Default, Backup, Some(UPPER_BACKUP_IMAGE), false);
        assert_eq!(s.skipped(), [UPPER_IMAGE]);
        assert_eq!(s.reference(), Some(UPPER_BACKUP_IMAGE));
        let s = session(Default, Clean, None, false);
        assert_eq!(s.skipped(), [UPPER_IMAGE, UPPER_BACKUP_IMAGE]);
        assert_eq!(s.reference(), None);
        let s = session(Backup, Clean, None, false);
        assert_eq!(s.skipped(), [UPPER_BACKUP_IMAGE]);
        let s = session(Backup, Backup, Some(UPPER_BACKUP_IMAGE), false);
        assert!(s.skipped().is_empty());
        assert!(session(Clean, Clean, None, false).skipped().is_empty());
        // After a save the upper equals upperfs.squashfs and nothing is skipped.
        let s = session(Default, Backup, Some(UPPER_BACKUP_IMAGE), true);
        assert!(s.skipped().is_empty());
        assert_eq!(s.reference(), Some(UPPER_IMAGE));
    }

    #[test]
    fn exclusion_file_missing_or_invalid() {
        let dir = std::env::temp_dir().join(format!("saver-exclude-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("exclude");
        assert!(load_exclude(&file).unwrap().is_empty());
        std::fs::write(&file, "/tmp/*\n/bad[\n").unwrap();
        let err = format!("{:#}", load_exclude(&file).unwrap_err());
        assert!(err.contains("/bad[") && err.contains("exclude"), "{err}");
        std::fs::write(&file, "# comment\n/tmp/*\n").unwrap();
        let ex = load_exclude(&file).unwrap();
        assert!(ex.matches("/tmp/x") && !ex.matches("/etc/x"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

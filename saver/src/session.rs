//! The running session as the saver sees it: where things are, how init
//! booted (boot.json), what this session saved so far (session.json in the
//! saver's run-time directory), and what the stick holds.

use crate::saveplan::SessionState;
use anyhow::{Context, Result};
use ramstick_common::bootinfo::{BootInfo, BOOT_JSON};
use ramstick_common::chain::Saved;
use ramstick_common::cmdline::LayersMode;
use ramstick_common::manifest::{LAYERS_DIR, LEGACY_BACKUP_IMAGE, LEGACY_IMAGE, MANIFEST};
use ramstick_squash::Exclude;
use std::path::{Path, PathBuf};

/// The paths the saver works on (the system's, or a test's).
#[derive(Debug, Clone)]
pub struct Paths {
    /// The running profile's state directory on the persist partition (the
    /// partition's root for the default profile), holding the layers: laid
    /// out like the root of a stick without profiles.
    pub persist: PathBuf,
    /// The upper filesystem's mount point (for its usage).
    pub upper_mount: PathBuf,
    /// The overlay's upperdir: what is saved.
    pub upperdir: PathBuf,
    /// The exclusion list.
    pub exclude: PathBuf,
    /// init's boot record.
    pub boot_json: PathBuf,
    /// The saver's own run-time directory (lock, session record, test mounts).
    pub state: PathBuf,
    /// The kernel command line (`ramstick.save=off`).
    pub cmdline: PathBuf,
    /// The rootfs, the overlay's bottom lower.
    pub rootfs: PathBuf,
    /// Where boot loop-mounts the saved layers (`ramstick.layers=mount`);
    /// in `ram` mode they are unpacked under `upper_mount/layers`.
    pub layer_mounts: PathBuf,
}

impl Paths {
    /// The paths of a system booted by ramstick: the saved state is the
    /// running profile's ([`crate::running`]).
    pub fn system() -> Paths {
        let running = crate::running::running(Path::new(BOOT_JSON), Path::new("/proc/cmdline"));
        Paths {
            persist: running.state_root(Path::new(crate::running::PERSIST)),
            upper_mount: "/run/ramstick/upper".into(),
            upperdir: "/run/ramstick/upper/upper".into(),
            exclude: "/etc/ramstick/exclude".into(),
            boot_json: BOOT_JSON.into(),
            state: "/run/ramstick/saver".into(),
            cmdline: "/proc/cmdline".into(),
            rootfs: "/run/ramstick/lower".into(),
            layer_mounts: ramstick_common::plan::LAYER_MOUNTS.into(),
        }
    }

    /// The overlay's lowers as boot stacked them, top first: the layers in
    /// use (where their `how` put them), then the rootfs.
    pub fn lowers(&self, info: &BootInfo) -> Vec<PathBuf> {
        info.layers
            .iter()
            .rev()
            .map(|l| match l.how {
                LayersMode::Mount => self.layer_mounts.join(&l.name),
                // `ram_dir` of the boot plan: beside the upperdir.
                LayersMode::Ram => self.upper_mount.join("layers").join(&l.name),
            })
            .chain([self.rootfs.clone()])
            .collect()
    }

    /// What this session saved (absent until its first save).
    pub fn session_json(&self) -> PathBuf {
        self.state.join("session.json")
    }

    /// The layers directory on the stick.
    pub fn layers(&self) -> PathBuf {
        self.persist.join(LAYERS_DIR)
    }

    /// A path relative to the persist partition's root.
    pub fn on_stick(&self, rel: &str) -> PathBuf {
        self.persist.join(rel)
    }
}

/// How this session started and what it saved.
#[derive(Debug, Clone)]
pub struct Session {
    pub info: BootInfo,
    pub state: SessionState,
}

impl Session {
    /// Reads boot.json and the session record (call it under the saver's
    /// lock, so that a save running meanwhile cannot change it under us).
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
        let record = paths.session_json();
        let state = match std::fs::read_to_string(&record) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("cannot parse {}", record.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SessionState::booted(&info),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", record.display())),
        };
        Ok(Session { info, state })
    }

    /// Records what the session saved (in RAM: it only matters until shutdown).
    pub fn store(&self, paths: &Paths) -> Result<()> {
        let record = paths.session_json();
        let tmp = record.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.state).unwrap_or_default();
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &record))
            .with_context(|| format!("cannot write {}", record.display()))
    }
}

/// What the stick holds of the saved state now.
pub fn read_saved(paths: &Paths) -> Saved {
    let manifest = paths.layers().join(MANIFEST);
    Saved::from_read(
        std::fs::read_to_string(&manifest),
        legacy_present(paths),
        &manifest.to_string_lossy(),
    )
}

/// Whether the legacy images exist.
pub fn legacy_present(paths: &Paths) -> [bool; 2] {
    [LEGACY_IMAGE, LEGACY_BACKUP_IMAGE].map(|n| paths.persist.join(n).exists())
}

/// The names in the layers directory (none when it does not exist).
pub fn layer_files(paths: &Paths) -> Result<Vec<String>> {
    let dir = paths.layers();
    match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| {
                e.map(|e| e.file_name().to_string_lossy().into_owned())
                    .with_context(|| format!("cannot list {}", dir.display()))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot list {}", dir.display())),
    }
}

/// What a session's layer never holds, whatever `/etc/ramstick/exclude`
/// says: the kernels, their modules and the firmware. The stick boots its
/// kernels from the ESP and mounts `modules-<kver>.squashfs` and
/// `firmware.squashfs` over these directories (a kernel installed in the
/// session gets its images from the kernel hook, `saver kernel add`);
/// saved, a copy would only take room, and a whiteout or an opaque
/// directory there would hide the mounted image at the next boot. The
/// directories themselves are left out, so no mark on them is saved either.
pub const BUILTIN_EXCLUDE: &[&str] = &[
    "/boot",
    "/lib/modules",
    "/usr/lib/modules",
    "/lib/firmware",
    "/usr/lib/firmware",
];

/// The exclusions of a session's save: [`BUILTIN_EXCLUDE`], then the
/// patterns of the exclusion list `path`.
pub fn session_exclude(path: &Path) -> Result<Exclude> {
    Exclude::new(session_patterns(path)?).with_context(|| format!("in {}", path.display()))
}

/// The lines [`session_exclude`] compiles, in order (for `saver diff`,
/// which names the pattern that left a path out).
pub fn session_patterns(path: &Path) -> Result<Vec<String>> {
    let text = read_exclude(path)?;
    Ok(BUILTIN_EXCLUDE
        .iter()
        .copied()
        .chain(text.lines())
        .map(str::to_string)
        .collect())
}

/// The text of an exclusion list; a missing file is empty.
fn read_exclude(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Reads an exclusion list (`saver pack --exclude-from`); a missing file
/// excludes nothing.
pub fn load_exclude(path: &Path) -> Result<Exclude> {
    let text = read_exclude(path)?;
    Exclude::parse(&text).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_never_saves_kernels_modules_or_firmware() {
        let dir = ramstick_testkit::TempDir::new("saver-builtin");
        let file = dir.join("exclude");
        for text in ["", "# the user removed every line\n", "/tmp/*\n"] {
            std::fs::write(&file, text).unwrap();
            let ex = session_exclude(&file).unwrap();
            for path in [
                "/boot",
                "/lib/modules",
                "/usr/lib/modules",
                "/lib/firmware",
                "/usr/lib/firmware",
            ] {
                assert!(ex.matches(path), "{path} with {text:?}");
            }
            assert!(!ex.matches("/lib") && !ex.matches("/usr/lib/x86_64-linux-gnu"));
            assert!(!ex.matches("/home/user/boot") && !ex.matches("/lib/modules-load.d"));
        }
        assert!(session_exclude(&dir.join("missing"))
            .unwrap()
            .matches("/boot"));
        std::fs::write(&file, "/bad[\n").unwrap();
        assert!(session_exclude(&file).is_err());
    }

    #[test]
    fn exclusion_file_missing_or_invalid() {
        let dir = ramstick_testkit::TempDir::new("saver-exclude");
        let file = dir.join("exclude");
        assert!(load_exclude(&file).unwrap().is_empty());
        std::fs::write(&file, "/tmp/*\n/bad[\n").unwrap();
        let err = format!("{:#}", load_exclude(&file).unwrap_err());
        assert!(err.contains("/bad[") && err.contains("exclude"), "{err}");
        std::fs::write(&file, "# comment\n/tmp/*\n").unwrap();
        let ex = load_exclude(&file).unwrap();
        assert!(ex.matches("/tmp/x") && !ex.matches("/etc/x"));
        assert!(!ex.matches("/lib/modules"));
    }
}

//! What boot would make of a replayed data partition, found on the host
//! without booting:
//!
//! 1. the kernel mounts the ext4 read-write (a loop mount in a private mount
//!    namespace: the journal is replayed and the orphans released, as at
//!    boot) and its `layers/` (and any legacy image) are copied out;
//! 2. after that mount, `e2fsck -fn` must find nothing at all to fix;
//! 3. the chain boot picks: [`chain::choose`] over the manifest, each layer
//!    checked as init checks it (present, size and metadata digest as the
//!    manifest says; a legacy image probed);
//! 4. each picked layer must be whole (its full digest is the manifest's)
//!    and read back by our reader (unpacked whole by `ramstick_squash`);
//! 5. the view: the files of [`super::PROBES`] as the stack of those layers
//!    shows them (top layer first; a whiteout or an opaque directory hides
//!    what is below), as md5 sums.

use super::PROBES;
use crate::deps;
use anyhow::{bail, ensure, Context, Result};
use ramstick_common::chain::{self, Candidate, FailureClass, LayerFailure, Saved};
use ramstick_common::cmdline::BootType;
use ramstick_common::manifest::{LAYERS_DIR, LEGACY_BACKUP_IMAGE, LEGACY_IMAGE, MANIFEST};
use ramstick_common::xattr::XTarget;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One layer of a chain, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub size: u64,
    pub meta_digest: String,
    pub digest: String,
}

/// What boot would use: the chain and what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The layers picked, bottom first.
    pub chain: Vec<Layer>,
    /// The md5 of each of [`PROBES`] as the chain shows it (`None`: absent).
    pub view: Vec<Option<String>>,
}

/// What else the check saw (for the report).
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// The journal had to be replayed.
    pub recovered: bool,
    /// Layers of the chain that were not used, with why.
    pub failures: Vec<LayerFailure>,
}

/// The state boot would use from the data partition image `image`
/// (modified: the mount replays its journal); `scratch` is an empty
/// directory for the copies. An error is a finding: the image is not
/// consistent (or could not be checked), with why.
pub fn observe(image: &Path, scratch: &Path) -> Result<(State, Notes)> {
    let mut notes = Notes {
        recovered: needs_recovery(image)?,
        ..Notes::default()
    };
    let persist = scratch.join("persist");
    let mnt = scratch.join("mnt");
    for dir in [&persist, &mnt] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    mount_and_copy(image, &mnt, &persist)?;
    fsck_clean(image)?;
    let saved = read_saved(&persist);
    if let Saved::Damaged(why) = &saved {
        bail!("boot would start clean: the manifest is unusable ({why})");
    }
    let choice = chain::choose(&saved, BootType::Default, |c| check_layer(&persist, c));
    notes.failures = choice.failures.clone();
    ensure!(
        choice.failures.is_empty(),
        "boot would not use the whole chain: {}",
        choice
            .failures
            .iter()
            .map(|f| format!("{} ({}: {})", f.layer, f.class, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut chain = Vec::new();
    let mut unpacked = Vec::new();
    for (i, c) in choice.layers.iter().enumerate() {
        let file = persist.join(&c.file);
        let whole = ramstick_squash::digests(&file)
            .with_context(|| format!("reading layer {} whole", c.name))?;
        let layer = match &c.info {
            Some(info) => {
                ensure!(
                    whole.full == info.digest,
                    "layer {} is not the one the manifest committed (its full digest differs)",
                    c.name
                );
                Layer {
                    name: c.name.clone(),
                    size: info.size,
                    meta_digest: info.meta_digest.clone(),
                    digest: info.digest.clone(),
                }
            }
            None => Layer {
                name: c.name.clone(),
                size: whole.size,
                meta_digest: whole.meta,
                digest: whole.full,
            },
        };
        chain.push(layer);
        let dir = scratch.join(format!("layer-{i}"));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        ramstick_squash::unpack(&file, &dir, &ramstick_squash::UnpackOptions::default())
            .with_context(|| format!("our reader cannot unpack layer {}", c.name))?;
        unpacked.push(dir);
    }
    let view = view(&unpacked)?;
    Ok((State { chain, view }, notes))
}

/// True when the image's journal has something to replay.
fn needs_recovery(image: &Path) -> Result<bool> {
    let out = deps::output(deps::cmd("dumpe2fs").arg("-h").arg(image))?;
    Ok(out
        .lines()
        .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery")))
}

/// Mounts `image` read-write on `mnt` in a private mount namespace (gone,
/// with its loop device, when the shell exits), copies the saved state to
/// `to` and unmounts.
fn mount_and_copy(image: &Path, mnt: &Path, to: &Path) -> Result<()> {
    const SCRIPT: &str = r#"mount -t ext4 -o loop,noatime "$1" "$2"
for f in "$4" "$5" "$6"; do if [ -e "$2/$f" ]; then cp -a "$2/$f" "$3/"; fi; done
umount "$2""#;
    let out = deps::cmd("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-ec",
            SCRIPT,
            "sh",
        ])
        .arg(image)
        .arg(mnt)
        .arg(to)
        .args([LAYERS_DIR, LEGACY_IMAGE, LEGACY_BACKUP_IMAGE])
        .output()
        .context("running unshare")?;
    ensure!(
        out.status.success(),
        "the kernel cannot mount the ext4 read-write ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `e2fsck -fn` must find nothing (exit status 0).
fn fsck_clean(image: &Path) -> Result<()> {
    let out = deps::cmd("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .context("running e2fsck")?;
    if out.status.code() == Some(0) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    bail!(
        "e2fsck -fn after the journal replay: {} — {}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    )
}

/// The saved state as boot reads it from the copy in `persist`.
fn read_saved(persist: &Path) -> Saved {
    let manifest = persist.join(LAYERS_DIR).join(MANIFEST);
    let legacy = [LEGACY_IMAGE, LEGACY_BACKUP_IMAGE].map(|n| persist.join(n).exists());
    Saved::from_read(
        fs::read_to_string(&manifest),
        legacy,
        &format!("{LAYERS_DIR}/{MANIFEST}"),
    )
}

/// Init's check of a layer before it is used: present, then its size and
/// metadata digest against the manifest (a legacy image, which has no
/// record, is probed by the codec).
fn check_layer(persist: &Path, c: &Candidate) -> Result<(), LayerFailure> {
    let fail = |class, message: String| LayerFailure {
        layer: c.name.clone(),
        class,
        message,
    };
    let file = persist.join(&c.file);
    if !file.exists() {
        return Err(fail(
            FailureClass::Missing,
            format!("{} is missing", c.file),
        ));
    }
    let codec = |e: ramstick_squash::Error| fail(FailureClass::Corrupt, e.to_string());
    let Some(info) = &c.info else {
        return ramstick_squash::probe(&file).map_err(codec);
    };
    let (size, meta) = ramstick_squash::meta_digest(&file).map_err(codec)?;
    if size != info.size {
        return Err(fail(
            FailureClass::Corrupt,
            format!("{size} bytes, the manifest says {}", info.size),
        ));
    }
    if meta != info.meta_digest {
        return Err(fail(
            FailureClass::Corrupt,
            "its metadata digest differs from the manifest's".into(),
        ));
    }
    Ok(())
}

/// The md5 of each of [`PROBES`] as the stack of unpacked layers `layers`
/// (bottom first) shows it.
pub fn view(layers: &[PathBuf]) -> Result<Vec<Option<String>>> {
    let found: Vec<Option<PathBuf>> = PROBES
        .iter()
        .map(|p| lookup(layers, Path::new(p.trim_start_matches('/'))))
        .collect::<Result<_>>()?;
    let files: Vec<&PathBuf> = found.iter().flatten().collect();
    let mut sums = if files.is_empty() {
        Vec::new()
    } else {
        md5sums(&files)?
    }
    .into_iter();
    Ok(found
        .iter()
        .map(|f| f.as_ref().and_then(|_| sums.next()))
        .collect())
}

/// The file `rel` shows in the stack `layers` (bottom first), if any.
fn lookup(layers: &[PathBuf], rel: &Path) -> Result<Option<PathBuf>> {
    for dir in layers.iter().rev() {
        let path = dir.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => return Ok(None),
            Ok(m) if m.is_file() => return Ok(Some(path)),
            Ok(m) => bail!("{} is a {:?}, not a file", path.display(), m.file_type()),
            Err(_) => {}
        }
        for parent in rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            if is_opaque(&dir.join(parent))? {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// True for a directory marked opaque (`trusted.overlay.opaque=y`).
fn is_opaque(dir: &Path) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let name = CString::new(dir.as_os_str().as_bytes())?;
    let attr = c"trusted.overlay.opaque";
    match XTarget::Path(name).get(attr) {
        Ok(v) => Ok(v == b"y"),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODATA) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading the xattrs of {}", dir.display())),
    }
}

/// `md5sum` of `files`, in order.
fn md5sums(files: &[&PathBuf]) -> Result<Vec<String>> {
    let out = deps::output(deps::cmd("md5sum").args(files))?;
    let sums: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    ensure!(sums.len() == files.len(), "md5sum printed {out:?}");
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_layer_decides_and_whiteouts_hide() {
        let dir = ramstick_testkit::TempDir::new("view");
        let (low, high) = (dir.join("low"), dir.join("high"));
        for d in [&low, &high] {
            fs::create_dir_all(d.join("root")).unwrap();
        }
        fs::write(low.join("root/a"), "low\n").unwrap();
        fs::write(low.join("root/b"), "low\n").unwrap();
        fs::write(high.join("root/a"), "high\n").unwrap();
        let layers = [low.clone(), high.clone()];
        assert_eq!(
            lookup(&layers, Path::new("root/a")).unwrap(),
            Some(high.join("root/a"))
        );
        assert_eq!(
            lookup(&layers, Path::new("root/b")).unwrap(),
            Some(low.join("root/b"))
        );
        assert_eq!(lookup(&layers, Path::new("root/zz")).unwrap(), None);
        let sums = md5sums(&[&high.join("root/a")]).unwrap();
        assert_eq!(
            sums,
            ["ab1f046d57ebab648b540eff03d43f4d"],
            "md5 of \"high\\n\""
        );
    }
}

//! The kernel's half of reading a new layer back: the layer is loop-mounted
//! read-only by the kernel (the reader a `ramstick.layers=mount` boot uses)
//! and its tree is compared with the upper, entry by entry (type, mode,
//! owner, size, mtime in seconds as squashfs stores it, symlink target,
//! xattrs, hardlink groups, content hash), leaving out what the exclusion
//! list left out. (Our codec's half is `ramstick_squash::verify`, the
//! reader of a `ram` boot; see `stick`.)
//!
//! Files that changed while or after they were packed are let off as the
//! codec's `verify_with` lets them off ([`VerifyOptions`]): their size,
//! mtime and content hash are not compared, their type, mode, owner,
//! xattrs and hardlinks are.

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use ramstick_common::tree::tree_listing;
use ramstick_squash::{ChangedFile, Exclude, VerifyOptions};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// At most this many differences are named in the error.
const SHOWN: usize = 10;

/// Mounts `image` at `mnt` (created private, 0700), compares it with
/// `upper`, unmounts it and releases the loop device. Returns the files let
/// off because they were written since `options.changed_since`.
pub fn check(
    image: &Path,
    upper: &Path,
    options: &VerifyOptions,
    mnt: &Path,
) -> Result<Vec<ChangedFile>> {
    let mut late = Vec::new();
    with_mount(image, mnt, || {
        late = compare(mnt, upper, options)?;
        Ok(())
    })?;
    Ok(late)
}

/// Mounts `image` and has our codec compare itself with what the kernel
/// shows: both readers read every entry and every byte, and must agree.
pub fn read_whole(image: &Path, mnt: &Path) -> Result<()> {
    with_mount(image, mnt, || {
        let diffs = ramstick_squash::verify(image, mnt, &Exclude::none())
            .with_context(|| format!("our reader cannot read {}", image.display()))?;
        if diffs.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        Err(Mismatch(shown))
            .with_context(|| format!("the kernel and our reader disagree on {}", image.display()))
    })
}

/// Runs `f` with `image` mounted read-only by the kernel at `mnt`.
fn with_mount(image: &Path, mnt: &Path, f: impl FnOnce() -> Result<()>) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(mnt)
        .with_context(|| format!("cannot create {}", mnt.display()))?;
    let control = loopdev::LoopControl::open().context("cannot open /dev/loop-control")?;
    let device = control
        .next_free()
        .context("no free loop device for the test mount")?;
    device
        .with()
        .read_only(true)
        .autoclear(true)
        .attach(image)
        .with_context(|| format!("cannot attach {} to a loop device", image.display()))?;
    let dev = device.path().context("the loop device has no path")?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    if let Err(e) = mount(Some(&dev), mnt, Some("squashfs"), flags, None::<&str>) {
        let _ = device.detach();
        bail!(
            "the kernel cannot mount the new image {} ({}): {e}",
            image.display(),
            dev.display()
        );
    }
    let result = f();
    let unmounted = umount2(mnt, MntFlags::empty())
        .with_context(|| format!("cannot unmount the test mount {}", mnt.display()));
    // Autoclear detaches the device once it is unmounted and closed here.
    drop(device);
    result?;
    unmounted?;
    Ok(())
}

/// Compares the mounted image with the upper; returns the files let off
/// because they were written since `options.changed_since`.
fn compare(mounted: &Path, upper: &Path, options: &VerifyOptions) -> Result<Vec<ChangedFile>> {
    let image = tree_listing(mounted)
        .with_context(|| format!("cannot read back the new image at {}", mounted.display()))?;
    let tree = tree_listing(upper).with_context(|| format!("cannot list {}", upper.display()))?;
    let (image, tree) = (
        comparable(image, &Exclude::none()),
        comparable(tree, options.exclude),
    );
    let mut loose: HashSet<String> = options
        .changing
        .iter()
        .map(|c| c.path.to_string_lossy().into_owned())
        .collect();
    let mut diffs = differences(&loosen(&image, &loose), &loosen(&tree, &loose));
    let mut late = Vec::new();
    if let (false, Some(since)) = (diffs.is_empty(), options.changed_since) {
        late = written_since(&diffs, &image, upper, since);
        loose.extend(late.iter().map(|c| c.path.to_string_lossy().into_owned()));
        diffs = differences(&loosen(&image, &loose), &loosen(&tree, &loose));
    }
    if diffs.is_empty() {
        return Ok(late);
    }
    Err(Mismatch(diffs).into())
}

/// The fields of a listed regular file that a changing file is not
/// compared in: size, mtime, content hash.
const LOOSE_FIELDS: [usize; 3] = [4, 5, 8];

/// `listing` (of [`comparable`]) with the size, mtime and hash of the
/// regular files at `loose` paths blanked out.
fn loosen(listing: &[String], loose: &HashSet<String>) -> Vec<String> {
    listing
        .iter()
        .map(|line| {
            let (path, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            if !rest.starts_with("file ") || !loose.contains(&unescape(path)) {
                return line.clone();
            }
            let mut fields: Vec<&str> = rest.split(' ').collect();
            for i in LOOSE_FIELDS {
                if let Some(f) = fields.get_mut(i) {
                    *f = "*";
                }
            }
            format!("{path} {}", fields.join(" "))
        })
        .collect()
}

/// The regular files among the paths of `diffs` (of [`differences`])
/// whose ctime in `upper` is at or after `since`, as `image` lists them.
fn written_since(
    diffs: &[String],
    image: &[String],
    upper: &Path,
    since: SystemTime,
) -> Vec<ChangedFile> {
    let paths: HashSet<&str> = diffs
        .iter()
        .filter_map(|d| d.split_once(": "))
        .map(|(_, line)| line.split_once(' ').map_or(line, |(path, _)| path))
        .collect();
    let mut out = Vec::new();
    for line in image {
        let mut fields = line.split(' ');
        let (Some(path), Some("file")) = (fields.next(), fields.next()) else {
            continue;
        };
        if !paths.contains(path) {
            continue;
        }
        let rel = unescape(path);
        let written = std::fs::symlink_metadata(upper.join(rel.trim_start_matches('/')))
            .ok()
            .filter(|m| m.file_type().is_file())
            .and_then(|m| {
                let nanos = m.ctime_nsec().clamp(0, 999_999_999) as u32;
                Some(UNIX_EPOCH + Duration::new(m.ctime().try_into().ok()?, nanos))
            })
            .is_some_and(|ctime| ctime >= since);
        // The rest: mode uid gid size mtime (seconds) …
        let rest: Vec<&str> = fields.collect();
        let number = |i: usize| rest.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (true, Some(size), Some(mtime)) = (written, number(3), number(4)) {
            out.push(ChangedFile {
                path: PathBuf::from(rel),
                size,
                mtime: UNIX_EPOCH + Duration::from_secs(mtime),
            });
        }
    }
    out
}

/// The mounted image and the upper differ (listed as by [`differences`]).
#[derive(Debug)]
pub struct Mismatch(pub Vec<String>);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<&str> = self.0.iter().take(SHOWN).map(String::as_str).collect();
        write!(
            f,
            "the new image differs from the upper in {} entries:\n  {}",
            self.0.len(),
            shown.join("\n  ")
        )
    }
}

impl std::error::Error for Mismatch {}

/// A [`tree_listing`] made comparable with an image's: mtimes in whole
/// seconds, no `system.*` xattrs, excluded entries (and what is below them) removed, and a
/// hardlink whose first name was excluded listed in full under its next name.
pub fn comparable(listing: Vec<String>, exclude: &Exclude) -> Vec<String> {
    let mut out = Vec::with_capacity(listing.len());
    // First path of a hardlink group → (its new first path, its description).
    let mut moved: HashMap<String, (String, String)> = HashMap::new();
    let mut dropped: HashMap<String, String> = HashMap::new();
    for line in listing {
        let (path, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let rest = normalize(rest);
        if is_excluded(path, exclude) {
            dropped.insert(path.to_string(), rest);
            continue;
        }
        match rest.strip_prefix("hardlink-of:") {
            Some(first) if dropped.contains_key(first) || moved.contains_key(first) => {
                match moved.get(first) {
                    Some((new_first, _)) => out.push(format!("{path} hardlink-of:{new_first}")),
                    None => {
                        let full = dropped.get(first).cloned().unwrap_or_default();
                        out.push(format!("{path} {full}"));
                        moved.insert(first.to_string(), (path.to_string(), full));
                    }
                }
            }
            _ => out.push(format!("{path} {rest}")),
        }
    }
    out
}

/// The description with its mtime (6th field, ns) cut to seconds and
/// without `system.*` xattrs (POSIX ACLs), which squashfs cannot store.
fn normalize(rest: &str) -> String {
    let mut fields: Vec<String> = rest.split(' ').map(String::from).collect();
    if let Some(ns) = fields.get(5).and_then(|f| f.parse::<i128>().ok()) {
        fields[5] = ns.div_euclid(1_000_000_000).to_string();
    }
    if let Some(xattrs) = fields.get_mut(7) {
        let kept: Vec<&str> = xattrs
            .split(',')
            .filter(|x| *x != "-" && !x.starts_with("system."))
            .collect();
        *xattrs = if kept.is_empty() {
            "-".into()
        } else {
            kept.join(",")
        };
    }
    fields.join(" ")
}

/// True if the listed `path` or one of its ancestors is excluded.
fn is_excluded(path: &str, exclude: &Exclude) -> bool {
    let path = unescape(path);
    let mut end = 0;
    while let Some(i) = path[end + 1..].find('/').map(|i| i + end + 1) {
        if exclude.matches(&path[..i]) {
            return true;
        }
        end = i;
    }
    path != "/" && exclude.matches(&path)
}

/// Undoes the listing's `\xNN` escapes.
fn unescape(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (
            b[i],
            b.get(i + 1),
            hex.and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'\\', Some(b'x'), Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lines only in one of two sorted listings, marked `image:` or `upper:`.
pub fn differences(image: &[String], upper: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let (mut i, mut u) = (0, 0);
    while i < image.len() || u < upper.len() {
        match (image.get(i), upper.get(u)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                u += 1;
            }
            (Some(a), Some(b)) if a < b => {
                out.push(format!("image: {a}"));
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                out.push(format!("upper: {b}"));
                u += 1;
            }
            (Some(a), None) => {
                out.push(format!("image: {a}"));
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mtimes_compare_in_seconds_acls_and_exclusions_are_dropped() {
        let ex = Exclude::parse("/tmp/*\n").unwrap();
        let upper = lines(&[
            "/ dir 755 0 0 - 1700000000123456789 - - -",
            "/etc dir 755 0 0 - 1700000001999999999 - - -",
            "/tmp dir 1777 0 0 - 1700000002000000000 - - -",
            "/tmp/a file 644 0 0 3 1700000003000000000 - - ab",
            "/tmp/a\\x20b dir 755 0 0 - 1700000003000000000 - - -",
            "/tmp/a\\x20b/c file 644 0 0 3 1700000003000000000 - - ab",
            "/var dir 2755 0 0 - 1700000004000000000 - system.posix_acl_access=02,user.a=01 -",
            "/var/x dir 2755 0 0 - 1700000004000000000 - system.posix_acl_default=02 -",
        ]);
        let image = lines(&[
            "/ dir 755 0 0 - 1700000000000000000 - - -",
            "/etc dir 755 0 0 - 1700000001000000000 - - -",
            "/tmp dir 1777 0 0 - 1700000002000000000 - - -",
            "/var dir 2755 0 0 - 1700000004000000000 - user.a=01 -",
            "/var/x dir 2755 0 0 - 1700000004000000000 - - -",
        ]);
        let a = comparable(image, &Exclude::none());
        let b = comparable(upper, &ex);
        assert_eq!(a, b);
        assert!(differences(&a, &b).is_empty());
    }

    #[test]
    fn a_hardlink_whose_first_name_is_excluded_is_listed_in_full() {
        let ex = Exclude::parse("/a/*\n").unwrap();
        let upper = lines(&[
            "/a/x file 644 0 0 3 5000000000 - - ab",
            "/b file 644 0 0 3 5000000000 - - ab",
            "/c hardlink-of:/a/x",
            "/d hardlink-of:/a/x",
        ]);
        let image = lines(&[
            "/b file 644 0 0 3 5000000000 - - ab",
            "/c file 644 0 0 3 5000000000 - - ab",
            "/d hardlink-of:/c",
        ]);
        let got = comparable(upper, &ex);
        assert_eq!(got[1], "/c file 644 0 0 3 5 - - ab");
        assert_eq!(got[2], "/d hardlink-of:/c");
        assert_eq!(got, comparable(image, &Exclude::none()));
    }

    #[test]
    fn a_changing_file_is_compared_but_for_size_mtime_and_content() {
        let image = lines(&[
            "/a\\x20log file 644 0 0 3 5 - - aa",
            "/d dir 755 0 0 - 5 - - -",
            "/x file 644 0 0 3 5 - - aa",
        ]);
        let upper = lines(&[
            "/a\\x20log file 644 0 0 9 6 - - bb",
            "/d dir 755 0 0 - 6 - - -",
            "/x file 644 0 0 4 5 - - cc",
        ]);
        let loose = HashSet::from(["/a log".to_string(), "/d".to_string()]);
        let d = differences(&loosen(&image, &loose), &loosen(&upper, &loose));
        // The directory and the other file still differ.
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d.iter().all(|l| !l.contains("log")), "{d:?}");
        let mut chmod = upper.clone();
        chmod[0] = "/a\\x20log file 600 0 0 9 6 - - bb".into();
        let d = differences(&loosen(&image, &loose), &loosen(&chmod, &loose));
        assert!(
            d.iter()
                .any(|l| l.starts_with("upper: /a\\x20log file 600")),
            "{d:?}"
        );
    }

    #[test]
    fn written_since_names_the_files_the_upper_changed_after_that_time() {
        let dir = ramstick_testkit::TempDir::new("saver-since");
        dir.mkdir("d");
        let before = SystemTime::now() - Duration::from_secs(2);
        std::fs::write(dir.join("a log"), "new\n").unwrap();
        let image = lines(&[
            "/a\\x20log file 644 0 0 3 1700000000 - - aa",
            "/d dir 755 0 0 - 5 - - -",
            "/gone file 644 0 0 3 5 - - aa",
        ]);
        let diffs = lines(&[
            "image: /a\\x20log file 644 0 0 3 1700000000 - - aa",
            "upper: /a\\x20log file 644 0 0 4 1800000000 - - bb",
            "image: /d dir 755 0 0 - 5 - - -",
            "image: /gone file 644 0 0 3 5 - - aa",
        ]);
        let got = written_since(&diffs, &image, &dir, before);
        assert_eq!(
            got,
            [ChangedFile {
                path: "/a log".into(),
                size: 3,
                mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            }]
        );
        let later = SystemTime::now() + Duration::from_secs(60);
        assert!(written_since(&diffs, &image, &dir, later).is_empty());
    }

    #[test]
    fn differences_name_both_sides() {
        let a = lines(&["/a 1", "/b 1", "/d 1"]);
        let b = lines(&["/a 1", "/b 2", "/c 1"]);
        assert_eq!(
            differences(&a, &b),
            ["image: /b 1", "upper: /b 2", "upper: /c 1", "image: /d 1"]
        );
        assert!(differences(&a, &a).is_empty());
    }
}

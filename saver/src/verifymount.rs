//! The kernel's half of reading a new layer back: the layer is loop-mounted
//! read-only by the kernel (the reader a `ramstick.layers=mount` boot uses)
//! and its tree is compared with the upper, entry by entry (type, mode,
//! owner, size, mtime in seconds as squashfs stores it, symlink target,
//! xattrs, hardlink groups, content hash), leaving out what the exclusion
//! list left out. (Our codec's half is `ramstick_squash::verify`, the
//! reader of a `ram` boot; see `stick`.)

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use ramstick_common::tree::tree_listing;
use ramstick_squash::Exclude;
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// At most this many differences are named in the error.
const SHOWN: usize = 10;

/// Mounts `image` at `mnt` (created private, 0700), compares it with
/// `upper`, unmounts it and releases the loop device.
pub fn check(image: &Path, upper: &Path, exclude: &Exclude, mnt: &Path) -> Result<()> {
    with_mount(image, mnt, || compare(mnt, upper, exclude))
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

/// Compares the mounted image with the upper.
fn compare(mounted: &Path, upper: &Path, exclude: &Exclude) -> Result<()> {
    let image = tree_listing(mounted)
        .with_context(|| format!("cannot read back the new image at {}", mounted.display()))?;
    let tree = tree_listing(upper).with_context(|| format!("cannot list {}", upper.display()))?;
    let diffs = differences(
        &comparable(image, &Exclude::none()),
        &comparable(tree, exclude),
    );
    if diffs.is_empty() {
        return Ok(());
    }
    Err(Mismatch(diffs).into())
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

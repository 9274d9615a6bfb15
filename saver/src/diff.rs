//! `saver diff`: what the next save would write. The next save packs the
//! overlay's upperdir whole (see `save`), so every entry of the upper is in
//! it; what each one means to the user comes from the lowers the overlay
//! stacks below it (the saved layers in use and the rootfs, see
//! [`Paths::lowers`]): an entry no lower has is *added*, one a lower has is
//! *modified* (content, type, mode, owner, xattrs, or its time only: an
//! overlay copy-up of a file whose content did not change is "metadata
//! only"), a whiteout is *deleted*, an opaque directory over a lower one
//! *replaces* it. Paths the exclusion list leaves out are listed apart,
//! with the pattern that excluded them.
//!
//! [`compare`] decides one entry from its metadata (pure); file contents are
//! read only when size and type agree and the mtime differs, and then
//! compared byte by byte (no hashing). [`diff`] walks the trees;
//! `diffshow` prints the report.

use crate::space;
use anyhow::{Context, Result};
use ramstick_common::io::read_full_at;
use ramstick_common::xattr::XTarget;
use ramstick_squash::Exclude;
use serde::Serialize;
use std::ffi::CString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The overlay's own xattrs (opaque marks, origins): how the upper is
/// kept, not what the user changed.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";
/// Marks an opaque directory.
const OPAQUE: &[u8] = b"trusted.overlay.opaque";

/// What the next save does to one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "change", content = "what")]
pub enum Change {
    /// No lower has it.
    Added,
    /// A lower has it; what differs (an empty list: an overlay copy-up
    /// that changed nothing but is written all the same).
    Modified(Vec<What>),
    /// A whiteout: the path is gone.
    Deleted,
    /// An opaque directory: what the lowers hold below it is hidden.
    Replaced,
}

/// What differs in a modified entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum What {
    /// File type (a file became a directory…).
    Type,
    /// File data, symlink target or device number.
    Content,
    Mode,
    Owner,
    Xattrs,
    /// Only the modification time.
    Mtime,
}

impl What {
    /// The word `--all` and `--json` use.
    pub fn word(self) -> &'static str {
        match self {
            What::Type => "type",
            What::Content => "content",
            What::Mode => "mode",
            What::Owner => "owner",
            What::Xattrs => "xattrs",
            What::Mtime => "mtime",
        }
    }
}

impl Change {
    /// True when the content is the lower's: a change of metadata only.
    pub fn metadata_only(&self) -> bool {
        matches!(self, Change::Modified(w) if !w.contains(&What::Content) && !w.contains(&What::Type))
    }
}

/// One path the next save writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// From the root, with a leading `/`.
    pub path: String,
    #[serde(flatten)]
    pub change: Change,
    /// File data written (a regular file's size; 0 for the others).
    pub bytes: u64,
}

/// A path of the upper the save leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub path: String,
    /// The line of the exclusion list (or the built-in one) that matched.
    pub pattern: String,
    /// File data below it.
    pub bytes: u64,
}

/// What the next save would write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// In walk order (a directory before its contents).
    pub entries: Vec<Entry>,
    pub excluded: Vec<Excluded>,
    /// Entries of the upper the save packs (the excluded ones aside),
    /// directories without a change of their own included.
    pub packed: u64,
}

/// The metadata [`compare`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `S_IFMT` bits.
    pub kind: u32,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub rdev: u64,
    /// Every xattr but the overlay's, sorted by name.
    pub xattrs: Vec<(CString, Vec<u8>)>,
    /// Whether `trusted.overlay.opaque` is `y`.
    pub opaque: bool,
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl Meta {
    /// Metadata of `path`, not following a symlink.
    pub fn read(path: &Path) -> Result<Meta> {
        let m = std::fs::symlink_metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        let cpath = CString::new(path.as_os_str().as_bytes())
            .with_context(|| format!("{} holds a NUL byte", path.display()))?;
        let all = XTarget::Path(cpath).read_all().map_err(|(name, e)| {
            anyhow::Error::new(e).context(format!(
                "cannot read the xattr {} of {}",
                name.to_string_lossy(),
                path.display()
            ))
        })?;
        Ok(Meta::of(&m, all))
    }

    /// The metadata of `m` with the xattrs `all`.
    fn of(m: &Metadata, all: Vec<(CString, Vec<u8>)>) -> Meta {
        let opaque = all
            .iter()
            .any(|(n, v)| n.as_bytes() == OPAQUE && v.as_slice() == b"y");
        let xattrs = all
            .into_iter()
            .filter(|(n, _)| !n.as_bytes().starts_with(OVERLAY_XATTRS))
            .collect();
        Meta {
            kind: m.mode() & S_IFMT,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            rdev: m.rdev(),
            xattrs,
            opaque,
        }
    }

    /// An overlay whiteout: a character device 0/0.
    pub fn is_whiteout(&self) -> bool {
        self.kind == S_IFCHR && self.rdev == 0
    }

    fn is_dir(&self) -> bool {
        self.kind == S_IFDIR
    }
}

/// What the save does to an upper entry `up` over the lower entry `low`
/// (`None`: no lower has it). `same_data` compares two regular files'
/// contents; it is called only when their sizes are equal and their mtimes
/// differ (equal size and mtime: an overlay copy-up, the same data).
pub fn compare(
    up: &Meta,
    low: Option<&Meta>,
    same_data: impl FnOnce() -> Result<bool>,
) -> Result<Option<Change>> {
    if up.is_whiteout() {
        return Ok(Some(Change::Deleted));
    }
    let Some(low) = low else {
        return Ok(Some(Change::Added));
    };
    if up.is_dir() && up.opaque && low.is_dir() {
        return Ok(Some(Change::Replaced));
    }
    let mut what = Vec::new();
    if up.kind != low.kind {
        what.push(What::Type);
    } else if up.kind == S_IFREG {
        if up.size != low.size || (up.mtime != low.mtime && !same_data()?) {
            what.push(What::Content);
        }
    } else if up.kind != S_IFDIR && up.kind != S_IFLNK && up.rdev != low.rdev {
        what.push(What::Content);
    }
    if up.mode != low.mode && up.kind != S_IFLNK {
        what.push(What::Mode);
    }
    if (up.uid, up.gid) != (low.uid, low.gid) {
        what.push(What::Owner);
    }
    if up.xattrs != low.xattrs {
        what.push(What::Xattrs);
    }
    // A directory is in the upper because something below it changed; it
    // is a change of its own only when its metadata is.
    if up.is_dir() && low.is_dir() {
        return Ok((!what.is_empty()).then_some(Change::Modified(what)));
    }
    if what.is_empty() && up.mtime != low.mtime {
        what.push(What::Mtime);
    }
    Ok(Some(Change::Modified(what)))
}

/// True when the files `a` and `b` hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open =
        |p: &Path| std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()));
    let (fa, fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0;
    loop {
        let n = read_full_at(&fa, &mut ba, offset)
            .with_context(|| format!("cannot read {}", a.display()))?;
        let m = read_full_at(&fb, &mut bb, offset)
            .with_context(|| format!("cannot read {}", b.display()))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
        offset += n as u64;
    }
}

/// The exclusion patterns, each compiled alone, to name the one that
/// matched.
pub struct Patterns {
    /// All of them: the save's exclusions.
    pub all: Exclude,
    each: Vec<(String, Exclude)>,
}

impl Patterns {
    /// The lines of an exclusion list (see `session::session_patterns`).
    pub fn new(lines: &[String]) -> Result<Patterns> {
        let mut each = Vec::new();
        for line in lines {
            let one = Exclude::new([line.as_str()]).with_context(|| format!("pattern {line}"))?;
            if !one.is_empty() {
                each.push((line.trim().to_string(), one));
            }
        }
        Ok(Patterns {
            all: Exclude::new(lines).context("the exclusion list")?,
            each,
        })
    }

    /// The first pattern excluding `path`.
    fn matching(&self, path: &str) -> Option<&str> {
        if !self.all.matches(path) {
            return None;
        }
        self.each
            .iter()
            .find(|(_, one)| one.matches(path))
            .map(|(line, _)| line.as_str())
    }
}

/// Compares the upperdir `upper` with the `lowers` (top first) as the
/// overlay stacks them, leaving out what `patterns` excludes.
pub fn diff(upper: &Path, lowers: &[PathBuf], patterns: &Patterns) -> Result<Report> {
    let mut report = Report::default();
    walk(upper, "", lowers.to_vec(), patterns, &mut report)?;
    Ok(report)
}

/// Walks the upper directory `dir` (path `rel` from the root) whose lower
/// counterparts, top first, are `lowers`.
fn walk(
    dir: &Path,
    rel: &str,
    lowers: Vec<PathBuf>,
    patterns: &Patterns,
    report: &mut Report,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
        })
        .with_context(|| format!("cannot list {}", dir.display()))?;
    names.sort();
    for name in names {
        let path = format!("{rel}/{}", name.to_string_lossy());
        let here = dir.join(&name);
        if let Some(pattern) = patterns.matching(&path) {
            let bytes = match std::fs::symlink_metadata(&here) {
                Ok(m) if m.is_dir() => space::estimate(&here, &Exclude::none())?.data,
                Ok(m) if m.is_file() => m.len(),
                _ => 0,
            };
            report.excluded.push(Excluded {
                path,
                pattern: pattern.to_string(),
                bytes,
            });
            continue;
        }
        report.packed += 1;
        let up = Meta::read(&here)?;
        let (low, below) = look_up(&lowers, &name)?;
        let change = compare(&up, low.as_ref().map(|(_, m)| m), || match &low {
            Some((l, _)) => same_bytes(&here, l),
            None => Ok(false),
        })?;
        if let Some(change) = change {
            let bytes = if up.kind == S_IFREG { up.size } else { 0 };
            report.entries.push(Entry {
                path: path.clone(),
                change,
                bytes,
            });
        }
        if up.is_dir() {
            // An opaque upper directory hides every lower below it.
            let below = if up.opaque { Vec::new() } else { below };
            walk(&here, &path, below, patterns, report)?;
        }
    }
    Ok(())
}

/// A lower entry the overlay shows, with its metadata.
type Shown = (PathBuf, Meta);

/// Entry `name` of the merged lower directories `lowers` (top first): the
/// lower file the overlay shows with its metadata (none under a whiteout),
/// and the lower
/// directories a directory of that name merges (down to an opaque one or
/// to anything that is not a directory).
fn look_up(lowers: &[PathBuf], name: &std::ffi::OsStr) -> Result<(Option<Shown>, Vec<PathBuf>)> {
    let mut shown = None;
    let mut dirs = Vec::new();
    for lower in lowers {
        let p = lower.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", p.display())),
        }
        let m = Meta::read(&p)?;
        if m.is_whiteout() {
            break;
        }
        let (is_dir, opaque) = (m.is_dir(), m.opaque);
        if shown.is_none() {
            shown = Some((p.clone(), m));
        }
        if !is_dir {
            break;
        }
        dirs.push(p);
        if opaque {
            break;
        }
    }
    Ok((shown, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffshow::render;
    use ramstick_testkit::{lchown, lsetxattr, make_node, TempDir};
    use std::fs;

    fn meta(kind: u32, size: u64, mtime: i64) -> Meta {
        Meta {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: (mtime, 0),
            rdev: 0,
            xattrs: Vec::new(),
            opaque: false,
        }
    }

    #[test]
    fn same_bytes_compares_past_the_first_buffer() {
        let dir = TempDir::new("saver-same-bytes");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(dir.join("a"), &data).unwrap();
        fs::write(dir.join("b"), &data).unwrap();
        assert!(same_bytes(&dir.join("a"), &dir.join("b")).unwrap());
        let mut other = data.clone();
        other[150_000] ^= 1;
        fs::write(dir.join("c"), &other).unwrap();
        assert!(!same_bytes(&dir.join("a"), &dir.join("c")).unwrap());
        fs::write(dir.join("d"), &data[..199_999]).unwrap();
        assert!(!same_bytes(&dir.join("a"), &dir.join("d")).unwrap());
    }

    fn never() -> Result<bool> {
        panic!("the data was read although the metadata decides")
    }

    #[test]
    fn metadata_decides_without_reading_the_data() {
        let low = meta(S_IFREG, 10, 100);
        // Size differs: content, data not read.
        assert_eq!(
            compare(&meta(S_IFREG, 11, 200), Some(&low), never).unwrap(),
            Some(Change::Modified(vec![What::Content]))
        );
        // Same size and mtime: a copy-up; a chmod is metadata only.
        let mut chmod = low.clone();
        chmod.mode = 0o755;
        let c = compare(&chmod, Some(&low), never).unwrap().unwrap();
        assert_eq!(c, Change::Modified(vec![What::Mode]));
        assert!(c.metadata_only());
        let mut chown = low.clone();
        chown.gid = 5;
        chown.xattrs = vec![(c"user.a".to_owned(), b"1".to_vec())];
        assert_eq!(
            compare(&chown, Some(&low), never).unwrap(),
            Some(Change::Modified(vec![What::Owner, What::Xattrs]))
        );
        // Nothing differs: still written, said so.
        assert_eq!(
            compare(&low, Some(&low), never).unwrap(),
            Some(Change::Modified(vec![]))
        );
        assert_eq!(compare(&low, None, never).unwrap(), Some(Change::Added));
        let mut whiteout = meta(S_IFCHR, 0, 1);
        assert_eq!(
            compare(&whiteout, Some(&low), never).unwrap(),
            Some(Change::Deleted)
        );
        whiteout.rdev = 0x0501;
        assert_eq!(
            compare(&whiteout, Some(&low), never).unwrap(),
            Some(Change::Modified(vec![What::Type]))
        );
    }

    #[test]
    fn the_data_is_read_only_for_equal_sizes_with_other_mtimes() {
        let low = meta(S_IFREG, 10, 100);
        let touched = meta(S_IFREG, 10, 200);
        let c = compare(&touched, Some(&low), || Ok(true)).unwrap().unwrap();
        assert_eq!(c, Change::Modified(vec![What::Mtime]));
        assert!(c.metadata_only());
        let c = compare(&touched, Some(&low), || Ok(false))
            .unwrap()
            .unwrap();
        assert_eq!(c, Change::Modified(vec![What::Content]));
        assert!(!c.metadata_only());
    }

    #[test]
    fn directories_count_only_for_their_own_changes() {
        let low = meta(S_IFDIR, 4096, 1);
        assert_eq!(
            compare(&meta(S_IFDIR, 60, 9), Some(&low), never).unwrap(),
            None
        );
        let mut opaque = meta(S_IFDIR, 60, 9);
        opaque.opaque = true;
        assert_eq!(
            compare(&opaque, Some(&low), never).unwrap(),
            Some(Change::Replaced)
        );
        assert_eq!(compare(&opaque, None, never).unwrap(), Some(Change::Added));
        assert_eq!(
            compare(&opaque, Some(&meta(S_IFREG, 1, 1)), never).unwrap(),
            Some(Change::Modified(vec![What::Type]))
        );
    }

    fn file(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
    }

    /// Copies the mtime of `from` to `to`, as an overlay copy-up does.
    fn same_mtime(from: &Path, to: &Path) {
        let m = fs::metadata(from).unwrap().modified().unwrap();
        fs::File::options()
            .write(true)
            .open(to)
            .unwrap()
            .set_modified(m)
            .unwrap();
    }

    fn find<'a>(r: &'a Report, path: &str) -> Option<&'a Change> {
        r.entries.iter().find(|e| e.path == path).map(|e| &e.change)
    }

    #[test]
    fn an_upper_over_two_lowers() {
        let dir = TempDir::new("saver-diff");
        let (rootfs, layer, upper) = (dir.mkdir("rootfs"), dir.mkdir("layer"), dir.mkdir("upper"));
        file(&rootfs, "etc/hostname", "base\n");
        file(&rootfs, "etc/motd", "hello\n");
        file(&rootfs, "etc/same", "twelve bytes");
        file(&rootfs, "bin/tool", "#!/bin/sh\n");
        file(&layer, "etc/hostname", "saved\n");
        file(&upper, "etc/hostname", "changed-host\n");
        file(&upper, "etc/same", "twelve bytez");
        file(&upper, "bin/tool", "#!/bin/sh\n");
        same_mtime(&rootfs.join("bin/tool"), &upper.join("bin/tool"));
        ramstick_testkit::chmod(&upper.join("bin/tool"), 0o755).unwrap();
        file(&upper, "etc/motd", "hello\n");
        file(&upper, "root/new", "12345");
        file(&upper, "tmp/junk", "not saved");
        file(&upper, "var/cache/apt/a.deb", "0123456789");
        let lines: Vec<String> = ["/tmp/*", "# c", "/var/cache/apt"]
            .map(String::from)
            .to_vec();
        let patterns = Patterns::new(&lines).unwrap();
        let r = diff(&upper, &[layer.clone(), rootfs.clone()], &patterns).unwrap();
        assert_eq!(
            find(&r, "/etc/hostname"),
            Some(&Change::Modified(vec![What::Content]))
        );
        // Same size, other mtime, other bytes: read and found different.
        assert_eq!(
            find(&r, "/etc/same"),
            Some(&Change::Modified(vec![What::Content]))
        );
        assert_eq!(
            find(&r, "/etc/motd"),
            Some(&Change::Modified(vec![What::Mtime]))
        );
        assert_eq!(
            find(&r, "/bin/tool"),
            Some(&Change::Modified(vec![What::Mode]))
        );
        assert_eq!(find(&r, "/root"), Some(&Change::Added));
        assert_eq!(find(&r, "/root/new"), Some(&Change::Added));
        assert_eq!(
            find(&r, "/etc"),
            None,
            "an unchanged directory is no change"
        );
        let new = r.entries.iter().find(|e| e.path == "/root/new").unwrap();
        assert_eq!(new.bytes, 5);
        let excluded: Vec<(&str, &str)> = r
            .excluded
            .iter()
            .map(|x| (x.path.as_str(), x.pattern.as_str()))
            .collect();
        assert_eq!(
            excluded,
            [
                ("/tmp/junk", "/tmp/*"),
                ("/var/cache/apt", "/var/cache/apt")
            ]
        );
        // A file's length; a directory's allocated data (as the save's estimate).
        assert_eq!(r.excluded[0].bytes, 9);
        assert!(r.excluded[1].bytes >= 10, "{:?}", r.excluded[1]);
        assert!(!r.entries.iter().any(|e| e.path.starts_with("/tmp/")));
        let text = render(&r, false);
        // /root, /root/new and the new directories /tmp, /var, /var/cache.
        assert!(text.contains("added:     5 (5 B)"), "{text}");
        assert!(text.contains("modified:  4"), "{text}");
        assert!(text.contains("2 of them metadata only"), "{text}");
        assert!(text.contains("excluded:  2 ("), "{text}");
        assert_eq!(
            r.counts().line(),
            "5 added (5 B), 4 modified (41 B; 2 metadata only), 0 deleted"
        );
        let all = render(&r, true);
        assert!(all.contains("metadata only: mode"), "{all}");
        assert!(!all.lines().any(|l| l.ends_with(' ')), "{all}");
        let json = serde_json::to_string(&r.entries).unwrap();
        assert!(
            json.contains(
                r#"{"path":"/etc/hostname","change":"modified","what":["content"],"bytes":13}"#
            ) && json.contains(r#"{"path":"/root/new","change":"added","bytes":5}"#),
            "{json}"
        );
        assert!(all.contains("excluded by /var/cache/apt"), "{all}");
        // An empty upper: nothing to save.
        let empty = dir.mkdir("empty");
        let r = diff(&empty, std::slice::from_ref(&rootfs), &patterns).unwrap();
        assert_eq!(r, Report::default());
        assert!(render(&r, false).starts_with("nothing to save"));
        // A directory the overlay copied up (a file made in it and removed):
        // no change, but a save packs it.
        fs::create_dir_all(empty.join("etc")).unwrap();
        let r = diff(&empty, std::slice::from_ref(&rootfs), &patterns).unwrap();
        assert!(r.entries.is_empty() && r.packed == 1, "{r:?}");
        assert!(render(&r, false).starts_with("no change, but a save would write 1 "));
    }

    #[test]
    fn whiteouts_opaque_directories_and_owners() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: whiteouts and trusted.* xattrs need root");
            return;
        }
        let dir = TempDir::new("saver-diff-overlay");
        let (rootfs, layer, upper) = (dir.mkdir("rootfs"), dir.mkdir("layer"), dir.mkdir("upper"));
        file(&rootfs, "usr/sbin/chroot", "x");
        file(&rootfs, "bin/rev", "x");
        file(&rootfs, "etc/gone/f", "x");
        file(&rootfs, "etc/owned", "x");
        // The saved layer deleted /etc/gone: a later /etc/gone/f is new.
        fs::create_dir_all(layer.join("etc")).unwrap();
        make_node(
            &layer.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            0,
            (0, 0),
        )
        .unwrap();
        fs::create_dir_all(upper.join("bin")).unwrap();
        make_node(
            &upper.join("bin/rev"),
            nix::sys::stat::SFlag::S_IFCHR,
            0,
            (0, 0),
        )
        .unwrap();
        file(&upper, "usr/sbin/fresh", "fresh");
        lsetxattr(&upper.join("usr/sbin"), "trusted.overlay.opaque", b"y").unwrap();
        // The opaque directory hides /usr/sbin/chroot: an upper file of that
        // name would be added, not modified.
        file(&upper, "usr/sbin/chroot", "x");
        file(&upper, "etc/gone/f", "x");
        file(&upper, "etc/owned", "x");
        same_mtime(&rootfs.join("etc/owned"), &upper.join("etc/owned"));
        lchown(&upper.join("etc/owned"), 1000, 1000).unwrap();
        let r = diff(&upper, &[layer, rootfs], &Patterns::new(&[]).unwrap()).unwrap();
        assert_eq!(find(&r, "/bin/rev"), Some(&Change::Deleted));
        assert_eq!(find(&r, "/usr/sbin"), Some(&Change::Replaced));
        assert_eq!(find(&r, "/usr/sbin/chroot"), Some(&Change::Added));
        assert_eq!(find(&r, "/usr/sbin/fresh"), Some(&Change::Added));
        assert_eq!(find(&r, "/etc/gone"), Some(&Change::Added));
        assert_eq!(find(&r, "/etc/gone/f"), Some(&Change::Added));
        assert_eq!(
            find(&r, "/etc/owned"),
            Some(&Change::Modified(vec![What::Owner]))
        );
        let all = render(&r, true);
        assert!(all.contains("D  /bin/rev"), "{all}");
        assert!(all.contains("R  /usr/sbin "), "{all}");
    }
}

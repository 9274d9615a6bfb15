//! Image-versus-directory comparison (see [`crate::verify`]).
//!
//! Both trees are walked together, depth first, in name order; the
//! directory side is opened with `O_NOFOLLOW` one component at a time, as
//! the reader does. File contents are compared block by block as the image
//! stores them (holes against zeros), never buffering a whole file; the
//! file's own holes are found with `SEEK_DATA`, not read.
//!
//! A file stored while it changed ([`VerifyOptions::changing`]) is compared
//! in everything but its size, mtime and content; so is one that differs
//! in those only and was written since [`VerifyOptions::changed_since`]
//! (its ctime says so, looked up after the difference was seen).

use crate::format::decode_dev;
use crate::read::decompress::Decoder;
use crate::read::fsops::{entry_path, open_dir, storable_xattrs, Holes, XTarget};
use crate::read::image::{FileData, Image, Inode, Kind, Piece, Scratch};
use crate::read::MAX_DEPTH;
use crate::{ChangedFile, Error, Result, Verified, VerifyOptions};
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, major, minor, FileStat, Mode, SFlag};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// One difference between an image and a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Path from the root, with a leading `/`.
    pub path: String,
    /// What differs, e.g. "only in the image", "mode 0644 in the image,
    /// 0755 in the directory", "content differs".
    pub what: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

pub(crate) fn verify(image: &Path, dir: &Path, options: &VerifyOptions) -> Result<Verified> {
    let img = Image::open(image)?;
    let root = img.root()?;
    let fd = open_dir(AT_FDCWD, dir, dir)?;
    let st = fstat(&fd).map_err(|e| Error::io("stat", dir, e.into()))?;
    let mut v = Verifier {
        dec: Decoder::new(img.codec),
        img: &img,
        options,
        changing: options
            .changing
            .iter()
            .map(|c| c.path.to_string_lossy().into_owned())
            .collect(),
        changed: Vec::new(),
        diffs: Vec::new(),
        scratch: Scratch::default(),
        buf: Vec::new(),
        fragment: None,
        image_links: HashMap::new(),
        dir_links: HashMap::new(),
        dirs_seen: HashSet::from([root.number]),
    };
    let root_xattrs = storable_xattrs(&XTarget::Fd(fd.as_fd()), dir)?;
    v.meta("/", &root, &st, root_xattrs)?;
    v.mtime("/", &root, &st);
    v.dir(&fd, &root, "/", dir, 1)?;
    Ok(Verified {
        differences: v.diffs,
        changed: v.changed,
    })
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFREG => "file",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFCHR => "char device",
        SFlag::S_IFIFO => "fifo",
        SFlag::S_IFSOCK => "socket",
        _ => "unknown file type",
    }
}

fn image_kind(k: &Kind) -> SFlag {
    match k {
        Kind::Dir { .. } => SFlag::S_IFDIR,
        Kind::File(_) => SFlag::S_IFREG,
        Kind::Symlink(_) => SFlag::S_IFLNK,
        Kind::BlockDev(_) => SFlag::S_IFBLK,
        Kind::CharDev(_) => SFlag::S_IFCHR,
        Kind::Fifo => SFlag::S_IFIFO,
        Kind::Socket => SFlag::S_IFSOCK,
    }
}

/// The mtime difference, if any (whole seconds, as squashfs stores it).
fn mtime_difference(inode: &Inode, st: &FileStat) -> Option<String> {
    (st.st_mtime != i64::from(inode.mtime)).then(|| {
        format!(
            "mtime {} in the image, {} in the directory",
            inode.mtime, st.st_mtime
        )
    })
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Verifier<'a> {
    img: &'a Image,
    dec: Decoder,
    options: &'a VerifyOptions<'a>,
    /// The paths of `options.changing`.
    changing: HashSet<String>,
    /// Files let off by `options.changed_since`.
    changed: Vec<ChangedFile>,
    diffs: Vec<Difference>,
    scratch: Scratch,
    buf: Vec<u8>,
    /// The last fragment block used (index, bytes).
    fragment: Option<(u32, Vec<u8>)>,
    /// First path of each multiply linked image inode / directory inode.
    image_links: HashMap<u32, String>,
    dir_links: HashMap<(u64, u64), String>,
    dirs_seen: HashSet<u32>,
}

impl Verifier<'_> {
    fn differ(&mut self, path: &str, what: String) {
        self.diffs.push(Difference {
            path: path.to_string(),
            what,
        });
    }

    /// Compares the metadata shared by all kinds but the mtime.
    fn meta(
        &mut self,
        path: &str,
        inode: &Inode,
        st: &FileStat,
        dir_x: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        let perm = st.st_mode & 0o7777;
        if perm != inode.perm {
            self.differ(
                path,
                format!(
                    "mode {:04o} in the image, {perm:04o} in the directory",
                    inode.perm
                ),
            );
        }
        if (st.st_uid, st.st_gid) != (inode.uid, inode.gid) {
            self.differ(
                path,
                format!(
                    "owner {}:{} in the image, {}:{} in the directory",
                    inode.uid, inode.gid, st.st_uid, st.st_gid
                ),
            );
        }
        let mut img_x = self.img.xattrs(inode)?;
        img_x.sort();
        let (mut i, mut d) = (img_x.iter().peekable(), dir_x.iter().peekable());
        loop {
            match (i.peek(), d.peek()) {
                (None, None) => break,
                (Some((n, _)), None) => {
                    self.differ(path, format!("xattr {} only in the image", lossy(n)));
                    i.next();
                }
                (None, Some((n, _))) => {
                    self.differ(path, format!("xattr {} only in the directory", lossy(n)));
                    d.next();
                }
                (Some((a, av)), Some((b, bv))) => {
                    if a < b {
                        self.differ(path, format!("xattr {} only in the image", lossy(a)));
                        i.next();
                    } else if b < a {
                        self.differ(path, format!("xattr {} only in the directory", lossy(b)));
                        d.next();
                    } else {
                        if av != bv {
                            self.differ(path, format!("xattr {} differs", lossy(a)));
                        }
                        i.next();
                        d.next();
                    }
                }
            }
        }
        Ok(())
    }

    /// Compares the mtime (whole seconds, as squashfs stores it).
    fn mtime(&mut self, path: &str, inode: &Inode, st: &FileStat) {
        if let Some(what) = mtime_difference(inode, st) {
            self.differ(path, what);
        }
    }

    /// Compares the contents of directory `inode` with the open directory `fd`.
    fn dir(
        &mut self,
        fd: &OwnedFd,
        inode: &Inode,
        path: &str,
        full: &Path,
        depth: usize,
    ) -> Result<()> {
        let img = self.img;
        let entries = img.children(inode, full)?;
        let mut names = Vec::new();
        let dup = open_dir(fd, ".", full)?;
        let mut d = nix::dir::Dir::from_fd(dup).map_err(|e| Error::io("list", full, e.into()))?;
        for e in d.iter() {
            let e = e.map_err(|e| Error::io("list", full, e.into()))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names.sort();
        let (mut i, mut j) = (0, 0);
        while i < entries.len() || j < names.len() {
            let img_name = entries.get(i).map(|e| e.name.as_slice());
            let dir_name = names.get(j).map(|n| n.as_slice());
            let name = match (img_name, dir_name) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            }
            .to_vec();
            let child = if path == "/" {
                format!("/{}", lossy(&name))
            } else {
                format!("{path}/{}", lossy(&name))
            };
            let in_img = img_name == Some(name.as_slice());
            let in_dir = dir_name == Some(name.as_slice());
            let entry = entries.get(i).filter(|_| in_img).cloned();
            i += usize::from(in_img);
            j += usize::from(in_dir);
            if self.options.exclude.matches(&child) {
                continue;
            }
            match (entry, in_dir) {
                (Some(e), true) => {
                    let child_full = full.join(OsStr::from_bytes(&name));
                    self.entry(fd, &name, &e.inode, &child, &child_full, depth)?;
                }
                (Some(_), false) => self.differ(&child, "only in the image".into()),
                (None, true) => self.differ(&child, "only in the directory".into()),
                (None, false) => {}
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        fd: &OwnedFd,
        name: &[u8],
        inode: &Inode,
        path: &str,
        full: &Path,
        depth: usize,
    ) -> Result<()> {
        let st = fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io("stat", full, e.into()))?;
        let dir_kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = image_kind(&inode.kind);
        if kind != dir_kind {
            self.differ(
                path,
                format!(
                    "a {} in the image, a {} in the directory",
                    kind_name(kind),
                    kind_name(dir_kind)
                ),
            );
            return Ok(());
        }
        if let Kind::Dir { .. } = inode.kind {
            if !self.dirs_seen.insert(inode.number) || depth >= MAX_DEPTH {
                return Err(self
                    .img
                    .corrupt(format!("{path}: directory cycle or absurd depth")));
            }
            let sub = open_dir(fd.as_fd(), name, full)?;
            let x = storable_xattrs(&XTarget::Fd(sub.as_fd()), full)?;
            self.meta(path, inode, &st, x)?;
            self.mtime(path, inode, &st);
            return self.dir(&sub, inode, path, full, depth + 1);
        }
        let xpath =
            entry_path(fd.as_fd(), name, full).map_err(|e| Error::io("address", full, e))?;
        let x = storable_xattrs(&XTarget::Path(xpath), full)?;
        self.meta(path, inode, &st, x)?;
        if !matches!(inode.kind, Kind::File(_)) {
            self.mtime(path, inode, &st);
        }
        // Hardlink groups: each name must be linked to the same first name.
        let first_img = if inode.nlink > 1 {
            self.image_links
                .entry(inode.number)
                .or_insert_with(|| path.to_string())
                .clone()
        } else {
            path.to_string()
        };
        let first_dir = if st.st_nlink > 1 {
            self.dir_links
                .entry((st.st_dev, st.st_ino))
                .or_insert_with(|| path.to_string())
                .clone()
        } else {
            path.to_string()
        };
        if first_img != first_dir {
            self.differ(
                path,
                format!(
                    "hardlinked with {first_img} in the image, with {first_dir} in the directory"
                ),
            );
        }
        match &inode.kind {
            Kind::File(data) => {
                // A later name of an already compared inode, or a file
                // stored while it changed.
                if (first_img == first_dir && first_img != path) || self.changing.contains(path) {
                    return Ok(());
                }
                let mut what: Vec<String> = mtime_difference(inode, &st).into_iter().collect();
                if data.size != st.st_size as u64 {
                    what.push(format!(
                        "size {} in the image, {} in the directory",
                        data.size, st.st_size
                    ));
                } else {
                    let file = openat(
                        fd,
                        name,
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::io("open", full, e.into()))?;
                    if !self.same_content(&File::from(file), data, full)? {
                        what.push("content differs".into());
                    }
                }
                if what.is_empty() {
                    return Ok(());
                }
                if self.written_since(fd, name, full)? {
                    self.changed.push(ChangedFile {
                        path: PathBuf::from(path),
                        size: data.size,
                        mtime: UNIX_EPOCH + Duration::from_secs(inode.mtime.into()),
                    });
                    return Ok(());
                }
                for w in what {
                    self.differ(path, w);
                }
            }
            Kind::Symlink(target) => {
                let t = readlinkat(fd, name).map_err(|e| Error::io("read link", full, e.into()))?;
                if t.as_bytes() != target.as_slice() {
                    self.differ(
                        path,
                        format!(
                            "symlink target {} in the image, {} in the directory",
                            lossy(target),
                            lossy(t.as_bytes())
                        ),
                    );
                }
            }
            Kind::BlockDev(dev) | Kind::CharDev(dev) => {
                let (ma, mi) = decode_dev(*dev);
                let (dma, dmi) = (major(st.st_rdev), minor(st.st_rdev));
                if (u64::from(ma), u64::from(mi)) != (dma, dmi) {
                    self.differ(
                        path,
                        format!("device {ma}:{mi} in the image, {dma}:{dmi} in the directory"),
                    );
                }
            }
            Kind::Fifo | Kind::Socket | Kind::Dir { .. } => {}
        }
        Ok(())
    }

    /// Whether regular file `name` of `fd` was written at or after
    /// `changed_since` (its ctime now says so).
    fn written_since(&self, fd: &OwnedFd, name: &[u8], full: &Path) -> Result<bool> {
        let Some(since) = self.options.changed_since else {
            return Ok(false);
        };
        let st = fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io("stat", full, e.into()))?;
        let regular =
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
        let ctime = u64::try_from(st.st_ctime)
            .ok()
            .map(|s| UNIX_EPOCH + Duration::new(s, st.st_ctime_nsec.clamp(0, 999_999_999) as u32));
        Ok(regular && ctime.is_some_and(|c| c >= since))
    }

    /// Streams the image's blocks of a file against the file's bytes; holes
    /// of the file (found with `SEEK_DATA`) are zeros without reading them.
    fn same_content(&mut self, file: &File, data: &FileData, full: &Path) -> Result<bool> {
        let same = std::cell::Cell::new(true);
        let mut buf = std::mem::take(&mut self.buf);
        let mut holes = Holes::default();
        let img = self.img;
        let mut check = |offset: u64, piece: Piece| -> Result<()> {
            if !same.get() {
                return Ok(());
            }
            let len = match piece {
                Piece::Data(b) => b.len(),
                Piece::Hole(n) => n as usize,
            };
            if holes.is_hole(file, offset, len as u64) {
                same.set(match piece {
                    Piece::Data(b) => b.iter().all(|&x| x == 0),
                    Piece::Hole(_) => true,
                });
                return Ok(());
            }
            buf.resize(len, 0);
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| Error::io("read", full, e))?;
            same.set(match piece {
                Piece::Data(b) => b == buf.as_slice(),
                Piece::Hole(_) => buf.iter().all(|&b| b == 0),
            });
            Ok(())
        };
        img.read_blocks(
            &mut self.dec,
            data,
            (0..data.blocks.len(), data.start),
            &mut self.scratch,
            &mut check,
        )?;
        if let (true, Some((index, _))) = (same.get(), data.fragment) {
            if self.fragment.as_ref().is_none_or(|(i, _)| *i != index) {
                self.fragment = Some((index, img.fragment(&mut self.dec, index)?));
            }
            if let Some((_, block)) = &self.fragment {
                let tail = img.tail(data, block)?;
                check(data.size - tail.len() as u64, Piece::Data(tail))?;
            }
        }
        self.buf = buf;
        Ok(same.get())
    }
}

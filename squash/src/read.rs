//! The squashfs reader (see [`crate::unpack`]).
//!
//! The calling thread walks the image's directory tree depth first and
//! creates every entry with `*at()` calls relative to directory fds opened
//! `O_NOFOLLOW|O_DIRECTORY` (files `O_CREAT|O_EXCL|O_NOFOLLOW`), so nothing
//! outside the target is ever resolved and an existing name is an error.
//! Regular files are created and sized (holes stay holes) by the walker and
//! their data blocks handed, in chunks, through a bounded queue to worker
//! threads that decompress and `pwrite` them; the worker finishing a file's
//! last chunk applies its owner, mode, xattrs and mtime. A directory's
//! metadata is applied when the walk leaves it (after its entries exist).
//!
//! [`image`] parses and checks the image; [`decompress`] bounds every block.

pub(crate) mod decompress;
pub(crate) mod fsops;
pub(crate) mod image;
pub(crate) mod inode;

use crate::format::{decode_dev, DATA_UNCOMPRESSED};
use crate::{Error, Progress, Result, UnpackOptions, UnpackStats};
use decompress::Decoder;
use fsops::{entry_path, open_dir, set_xattrs, XTarget};
use image::{FileData, Image, Inode, Kind, Piece, Scratch};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, ftruncate, linkat, symlinkat, Gid, Uid};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Deepest directory nesting accepted (one open fd per level).
pub(crate) const MAX_DEPTH: usize = 256;
/// Data blocks per work item (4 MiB at the default block size).
const CHUNK_BLOCKS: usize = 32;
/// Decompressed fragment blocks kept for the files sharing them.
const FRAGMENT_CACHE: usize = 32;
/// Least time between two progress callbacks.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Checks that an entry name is one component that stays in its directory.
pub(crate) fn check_name(name: &[u8]) -> Result<(), String> {
    if !ramstick_common::tree::is_plain_name(name) {
        return Err(format!(
            "entry name {:?} is not a plain file name",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

pub(crate) fn unpack(image: &Path, dir: &Path, options: &UnpackOptions) -> Result<UnpackStats> {
    let img = Image::open(image)?;
    let root = img.root()?;
    let root_fd = open_dir(AT_FDCWD, dir, dir)?;
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let shared = Shared {
        img: &img,
        root: dir,
        is_root: nix::unistd::geteuid().is_root(),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        bytes: AtomicU64::new(0),
        fragments: Mutex::new(VecDeque::new()),
    };
    let (tx, rx) = sync_channel::<Chunk>(threads * 2);
    let rx = Mutex::new(rx);
    let mut walker = Walker {
        sh: &shared,
        tx,
        progress: options.progress,
        last_progress: Instant::now(),
        path: Vec::new(),
        cur: dir.to_path_buf(),
        links: HashMap::new(),
        seen: HashSet::new(),
        dirs_seen: HashSet::new(),
        entries: 0,
    };
    let walked = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| worker(&shared, &rx));
        }
        let result = walker.root(&root_fd, &root);
        // Closing the queue lets the workers finish and exit.
        drop(std::mem::replace(&mut walker.tx, sync_channel(0).0));
        result
    });
    let worker_error = shared
        .error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    walked?;
    if let Some(e) = worker_error {
        return Err(e);
    }
    let stats = UnpackStats {
        entries: walker.entries,
        bytes: shared.bytes.load(Ordering::Relaxed),
    };
    if let Some(p) = options.progress {
        p(&Progress {
            entries: stats.entries,
            bytes: stats.bytes,
            total_bytes: None,
        });
    }
    Ok(stats)
}

/// State shared by the walker and the workers.
struct Shared<'a> {
    img: &'a Image,
    root: &'a Path,
    is_root: bool,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    bytes: AtomicU64,
    /// Recently used fragment blocks, decompressed once each.
    #[allow(clippy::type_complexity)]
    fragments: Mutex<VecDeque<(u32, Arc<OnceLock<Option<Arc<Vec<u8>>>>>)>>,
}

impl Shared<'_> {
    /// Records the first error; everybody stops soon after.
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn unsafe_entry(&self, what: String) -> Error {
        Error::Unsafe {
            root: self.root.to_path_buf(),
            what,
        }
    }

    /// A decompressed fragment block (from the cache when recently used).
    fn fragment(&self, dec: &mut Decoder, index: u32) -> Result<Arc<Vec<u8>>> {
        let cell = {
            let mut cache = self.fragments.lock().unwrap_or_else(|p| p.into_inner());
            match cache.iter().find(|(i, _)| *i == index) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceLock::new());
                    cache.push_back((index, cell.clone()));
                    if cache.len() > FRAGMENT_CACHE {
                        cache.pop_front();
                    }
                    cell
                }
            }
        };
        let mut error = None;
        let block = cell.get_or_init(|| match self.img.fragment(dec, index) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                error = Some(e);
                None
            }
        });
        match (block, error) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(e)) => Err(e),
            (None, None) => Err(self
                .img
                .corrupt(format!("fragment block {index} is unreadable"))),
        }
    }

    /// Decompresses and writes one chunk of a file.
    fn write_chunk(&self, c: &Chunk, dec: &mut Decoder, scratch: &mut Scratch) -> Result<()> {
        let f = &c.file;
        let write = |offset: u64, bytes: &[u8]| {
            f.fd.write_all_at(bytes, offset)
                .map_err(|e| Error::io("write", &f.path, e))?;
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(())
        };
        self.img.read_blocks(
            dec,
            &f.data,
            (c.blocks.clone(), c.pos),
            scratch,
            |offset, piece| match piece {
                Piece::Data(bytes) => write(offset, bytes),
                Piece::Hole(_) => Ok(()),
            },
        )?;
        if c.tail {
            if let Some((index, _)) = f.data.fragment {
                let block = self.fragment(dec, index)?;
                let tail = self.img.tail(&f.data, &block)?;
                write(f.data.size - tail.len() as u64, tail)?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of an open file or directory.
    fn apply_fd(&self, fd: BorrowedFd, inode: &Inode, xattrs: &[Xattr], path: &Path) -> Result<()> {
        if self.is_root {
            fchown(
                fd,
                Some(Uid::from_raw(inode.uid)),
                Some(Gid::from_raw(inode.gid)),
            )
            .map_err(|e| Error::io("chown", path, e.into()))?;
        }
        fchmod(fd, Mode::from_bits_truncate(inode.perm))
            .map_err(|e| Error::io("chmod", path, e.into()))?;
        set_xattrs(&XTarget::Fd(fd), xattrs, path)?;
        let t = TimeSpec::new(i64::from(inode.mtime), 0);
        futimens(fd, &t, &t).map_err(|e| Error::io("set times of", path, e.into()))
    }

    /// Owner, mode (not of symlinks), xattrs and times of entry `name` of `dir`.
    fn apply_at(
        &self,
        dir: BorrowedFd,
        name: &[u8],
        inode: &Inode,
        xattrs: &[Xattr],
        path: &Path,
    ) -> Result<()> {
        if self.is_root {
            fchownat(
                dir,
                name,
                Some(Uid::from_raw(inode.uid)),
                Some(Gid::from_raw(inode.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io("chown", path, e.into()))?;
        }
        if !matches!(inode.kind, Kind::Symlink(_)) {
            // Not a symlink (we just created it), so following is moot.
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(inode.perm),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| Error::io("chmod", path, e.into()))?;
        }
        if !xattrs.is_empty() {
            let p = entry_path(dir, name, path).map_err(|e| Error::io("address", path, e))?;
            set_xattrs(&XTarget::Path(p), xattrs, path)?;
        }
        let t = TimeSpec::new(i64::from(inode.mtime), 0);
        utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| Error::io("set times of", path, e.into()))
    }
}

/// An extended attribute (full name, value).
type Xattr = (Vec<u8>, Vec<u8>);

/// A regular file being filled by the workers.
struct OpenFile {
    fd: File,
    path: PathBuf,
    inode: Inode,
    data: FileData,
    xattrs: Vec<Xattr>,
    /// Chunks not yet written; the worker taking it to 0 applies metadata.
    pending: AtomicUsize,
}

/// A run of a file's data blocks (and maybe its fragment tail).
struct Chunk {
    file: Arc<OpenFile>,
    blocks: std::ops::Range<usize>,
    /// Image offset of the run's first block.
    pos: u64,
    tail: bool,
}

fn worker(sh: &Shared, rx: &Mutex<Receiver<Chunk>>) {
    let mut dec = Decoder::new(sh.img.codec);
    let mut scratch = Scratch::default();
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(chunk) = next else {
            return;
        };
        if sh.failed.load(Ordering::Relaxed) {
            continue;
        }
        let mut result = sh.write_chunk(&chunk, &mut dec, &mut scratch);
        if result.is_ok() && chunk.file.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let f = &chunk.file;
            result = sh.apply_fd(f.fd.as_fd(), &f.inode, &f.xattrs, &f.path);
        }
        if let Err(e) = result {
            sh.fail(e);
        }
    }
}

/// The depth-first walk of the calling thread.
struct Walker<'a> {
    sh: &'a Shared<'a>,
    tx: SyncSender<Chunk>,
    progress: Option<crate::ProgressFn<'a>>,
    last_progress: Instant,
    /// Names from the root to the current directory.
    path: Vec<Vec<u8>>,
    /// Full path of the current directory (for messages).
    cur: PathBuf,
    /// Inode number of a multiply linked entry → its first (dir names, name).
    links: HashMap<u32, (Vec<Vec<u8>>, Vec<u8>)>,
    /// Inode numbers of non-directories created so far.
    seen: HashSet<u32>,
    /// Inode numbers and references of directories entered so far.
    dirs_seen: HashSet<(bool, u64)>,
    entries: u64,
}

impl Walker<'_> {
    fn root(&mut self, fd: &OwnedFd, root: &Inode) -> Result<()> {
        self.dirs_seen.insert((true, u64::from(root.number)));
        self.dirs_seen.insert((false, self.sh.img.sb.root_inode));
        self.dir(fd, root, 1)?;
        if self.sh.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Each directory is in `dirs_seen` twice (number and reference).
        let found = self.seen.len() + self.dirs_seen.len() / 2;
        let count = self.sh.img.sb.inode_count as usize;
        if found > count {
            return Err(self.sh.img.corrupt(format!(
                "{found} inodes reached, the superblock counts {count}"
            )));
        }
        let xattrs = self.sh.img.xattrs(root)?;
        self.sh.apply_fd(fd.as_fd(), root, &xattrs, self.sh.root)
    }

    fn tick(&mut self) {
        self.entries += 1;
        let Some(p) = self.progress else { return };
        if self.entries.is_multiple_of(64) && self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            p(&Progress {
                entries: self.entries,
                bytes: self.sh.bytes.load(Ordering::Relaxed),
                total_bytes: None,
            });
        }
    }

    /// Creates the entries of directory `inode` in the open directory `fd`.
    fn dir(&mut self, fd: &OwnedFd, inode: &Inode, depth: usize) -> Result<()> {
        let img = self.sh.img;
        for c in img.children(inode, &self.cur)? {
            if self.sh.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let path = self.cur.join(std::ffi::OsStr::from_bytes(&c.name));
            if let Kind::Dir { .. } = c.inode.kind {
                if !self.dirs_seen.insert((true, u64::from(c.inode.number)))
                    || !self.dirs_seen.insert((false, c.inode_ref))
                {
                    return Err(img.corrupt(format!(
                        "{}: directory inode {} reached twice (a cycle)",
                        path.display(),
                        c.inode.number
                    )));
                }
                if depth >= MAX_DEPTH {
                    return Err(img.corrupt(format!(
                        "{}: directories nested deeper than {MAX_DEPTH}",
                        path.display()
                    )));
                }
                self.subdir(fd, &c.name, &c.inode, &path, depth)?;
            } else {
                self.entry(fd, &c.name, &c.inode, &path)?;
            }
            self.tick();
        }
        Ok(())
    }

    fn exists_error(&self, e: Errno, action: &'static str, path: &Path) -> Error {
        if e == Errno::EEXIST {
            self.sh
                .unsafe_entry(format!("{} exists already", path.display()))
        } else {
            Error::io(action, path, e.into())
        }
    }

    fn subdir(
        &mut self,
        fd: &OwnedFd,
        name: &[u8],
        inode: &Inode,
        path: &Path,
        depth: usize,
    ) -> Result<()> {
        mkdirat(fd, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| self.exists_error(e, "create directory", path))?;
        let sub = open_dir(fd, name, path)?;
        self.path.push(name.to_vec());
        self.cur.push(std::ffi::OsStr::from_bytes(name));
        let result = self.dir(&sub, inode, depth + 1);
        self.path.pop();
        self.cur.pop();
        result?;
        if self.sh.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let xattrs = self.sh.img.xattrs(inode)?;
        self.sh.apply_fd(sub.as_fd(), inode, &xattrs, path)
    }

    /// Opens the directory at `names` below the root, one component at a time.
    fn open_chain(&self, names: &[Vec<u8>]) -> Result<OwnedFd> {
        let mut fd = open_dir(AT_FDCWD, self.sh.root, self.sh.root)?;
        for n in names {
            fd = open_dir(&fd, n.as_slice(), self.sh.root)?;
        }
        Ok(fd)
    }

    /// Creates a non-directory entry (or a hardlink to its first name).
    fn entry(&mut self, fd: &OwnedFd, name: &[u8], inode: &Inode, path: &Path) -> Result<()> {
        let img = self.sh.img;
        if !self.seen.insert(inode.number) {
            let Some((dir, first)) = self.links.get(&inode.number) else {
                return Err(img.corrupt(format!(
                    "{}: inode {} has one link but several names",
                    path.display(),
                    inode.number
                )));
            };
            let from = self.open_chain(dir)?;
            return linkat(&from, first.as_slice(), fd, name, AtFlags::empty())
                .map_err(|e| self.exists_error(e, "create hardlink", path));
        }
        if inode.nlink > 1 {
            self.links
                .insert(inode.number, (self.path.clone(), name.to_vec()));
        }
        let xattrs = img.xattrs(inode)?;
        let node = |kind: SFlag, dev: u32| {
            let (major, minor) = decode_dev(dev);
            mknodat(
                fd,
                name,
                kind,
                Mode::from_bits_truncate(0o600),
                makedev(major.into(), minor.into()),
            )
            .map_err(|e| self.exists_error(e, "create node", path))
        };
        match &inode.kind {
            Kind::File(data) => return self.file(fd, name, inode, data, xattrs, path),
            Kind::Dir { .. } => return Err(img.corrupt("directory as a plain entry")),
            Kind::Symlink(target) => symlinkat(target.as_slice(), fd, name)
                .map_err(|e| self.exists_error(e, "create symlink", path))?,
            Kind::BlockDev(dev) => node(SFlag::S_IFBLK, *dev)?,
            Kind::CharDev(dev) => node(SFlag::S_IFCHR, *dev)?,
            Kind::Fifo => node(SFlag::S_IFIFO, 0)?,
            Kind::Socket => node(SFlag::S_IFSOCK, 0)?,
        }
        self.sh.apply_at(fd.as_fd(), name, inode, &xattrs, path)
    }

    /// Creates a regular file at its full size and queues its data.
    fn file(
        &mut self,
        fd: &OwnedFd,
        name: &[u8],
        inode: &Inode,
        data: &FileData,
        xattrs: Vec<Xattr>,
        path: &Path,
    ) -> Result<()> {
        let created = openat(
            fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.exists_error(e, "create file", path))?;
        let size = i64::try_from(data.size).map_err(|_| {
            self.sh
                .img
                .corrupt(format!("{}: absurd size", path.display()))
        })?;
        if size > 0 {
            ftruncate(&created, size).map_err(|e| Error::io("size", path, e.into()))?;
        }
        // The work: runs of blocks (with their image offset) that hold data
        // (all-hole runs are already holes of the sized file), and the tail.
        let n = data.blocks.len();
        let tail = data.fragment.is_some();
        let count = n.div_ceil(CHUNK_BLOCKS).max(usize::from(tail));
        let mut work = Vec::new();
        let mut pos = data.start;
        for i in 0..count {
            let blocks = (i * CHUNK_BLOCKS).min(n)..((i + 1) * CHUNK_BLOCKS).min(n);
            let words = &data.blocks[blocks.clone()];
            let with_tail = tail && i + 1 == count;
            if with_tail || words.iter().any(|w| w & !DATA_UNCOMPRESSED != 0) {
                work.push((blocks, pos, with_tail));
            }
            pos += words
                .iter()
                .map(|w| u64::from(w & !DATA_UNCOMPRESSED))
                .sum::<u64>();
        }
        let file = Arc::new(OpenFile {
            fd: File::from(created),
            path: path.to_path_buf(),
            inode: inode.clone(),
            data: data.clone(),
            xattrs,
            pending: AtomicUsize::new(work.len()),
        });
        if work.is_empty() {
            return self
                .sh
                .apply_fd(file.fd.as_fd(), &file.inode, &file.xattrs, path);
        }
        for (blocks, pos, tail) in work {
            let chunk = Chunk {
                file: file.clone(),
                blocks,
                pos,
                tail,
            };
            if self.tx.send(chunk).is_err() {
                return Err(self.sh.img.corrupt("the workers stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

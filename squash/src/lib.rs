//! ramstick-squash: a squashfs 4.0 codec that keeps every bit of overlayfs
//! state — xattrs of all namespaces (`trusted.overlay.*`,
//! `security.capability`, `user.*`), hardlinks as hardlinks, whiteouts and
//! other device nodes, fifos, sockets, sparse files, owners, modes and mtimes —
//! with data blocks compressed and decompressed in parallel.
//!
//! * [`pack`] writes a directory tree into an image (streaming: file data
//!   passes through bounded queues; only per-entry metadata is kept).
//! * [`unpack`] writes an image into a directory and never outside it; any
//!   damage is a typed [`Error`], never a panic or a hang.
//! * [`verify`] lists every difference between an image and a directory.
//! * [`merge`] merges a chain of overlayfs layer images (a base's deltas)
//!   into one image that stacks the same way, streaming file data from the
//!   input images into the writer (nothing is unpacked on disk).
//!
//! [`format`] holds the on-disk constants shared by [`write`] and [`read`].

// The codec never panics on bad input, not even a crafted image (the
// standards): these lints make that checked, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod digest;
pub mod error;
pub mod exclude;
pub mod format;
pub mod read;
pub mod verify;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use digest::{digests, drop_cache, meta_digest, probe, summary, Digests, Summary};
pub use error::{Error, Result};
pub use exclude::Exclude;
pub use verify::Difference;

/// Block compressor of a new image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// zstd at a level (1–22); mksquashfs' default level is 15.
    Zstd(i32),
    /// gzip (zlib stream) at a level (1–9).
    Gzip(u32),
    /// xz (CRC32 check, as the kernel requires).
    Xz,
    /// lz4 (block format).
    Lz4,
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor::Zstd(15)
    }
}

/// Counters passed to a progress callback (and returned at the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Directory entries done (each name of a hardlinked file counts).
    pub entries: u64,
    /// File content bytes done (uncompressed).
    pub bytes: u64,
    /// File content bytes in total, when known up front (pack scans first).
    pub total_bytes: Option<u64>,
}

/// A progress callback: called from the calling thread, at most a few
/// times per second and once at the end.
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Sync);

/// How [`pack`] and [`merge`] write an image.
#[derive(Clone, Copy)]
pub struct PackOptions<'a> {
    pub compressor: Compressor,
    /// Data block size, a power of two in 4 KiB ..= 1 MiB.
    pub block_size: u32,
    /// Compression threads; 0 = one per core.
    pub threads: usize,
    /// Entries left out (with everything below them); [`merge`] ignores it.
    pub exclude: &'a Exclude,
    /// What to do with a file that changes while it is read; [`merge`]
    /// ignores it (its inputs are images).
    pub changing: Changing,
    pub progress: Option<ProgressFn<'a>>,
}

/// What [`pack`] does with a regular file that changes while it is read:
/// its size or mtime (nanoseconds) differ from the scan's or from one
/// block to the next, or the read ends before the size. (Its metadata —
/// type, mode, owner, xattrs — is the scan's either way; a change of those
/// during the pack is not looked for.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Changing {
    /// The pack fails with [`Error::Changed`]; a later attempt may find the
    /// file at rest.
    #[default]
    Fail,
    /// The file is read again from the start, up to [`SETTLE_READS`] reads
    /// in all. A read that sees no change is stored; if the last one sees a
    /// change too, the file is stored as that read saw it: the bytes it read
    /// (up to the size the file had when the read began, fewer if the file
    /// ended sooner), that many as its size, and the mtime the file had when
    /// the read ended. Either way the file's names are listed in
    /// [`PackStats::changed`]; the blocks of the reads given up are not kept
    /// in the image.
    Settle,
}

/// Reads of a changing file under [`Changing::Settle`], the last included.
pub const SETTLE_READS: u32 = 4;

impl Default for PackOptions<'_> {
    fn default() -> Self {
        static NONE: Exclude = Exclude::none();
        PackOptions {
            compressor: Compressor::default(),
            block_size: format::DEFAULT_BLOCK_SIZE,
            threads: 0,
            exclude: &NONE,
            changing: Changing::Fail,
            progress: None,
        }
    }
}

/// A regular file stored as it was at one moment while it changed (see
/// [`Changing::Settle`] and [`VerifyOptions::changed_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Path from the root of the tree, with a leading `/`.
    pub path: PathBuf,
    /// Its size in the image.
    pub size: u64,
    /// Its mtime in the image (whole seconds).
    pub mtime: SystemTime,
}

/// What a [`pack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Directory entries written (names, so hardlinks count per name).
    pub entries: u64,
    /// Inodes written.
    pub inodes: u32,
    /// File content bytes read from the tree.
    pub bytes_in: u64,
    /// Size of the image file (padded).
    pub image_size: u64,
    /// Xattrs left out because squashfs cannot hold their namespace
    /// (`system.*`, e.g. POSIX ACLs; mksquashfs skips them too).
    pub skipped_xattrs: u64,
    /// Files that changed while they were packed (only under
    /// [`Changing::Settle`]; the other mode fails instead), each name of a
    /// hardlinked one, sorted by path.
    pub changed: Vec<ChangedFile>,
}

/// How [`verify_with`] compares.
#[derive(Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Entries left out of the directory (with everything below them).
    pub exclude: &'a Exclude,
    /// Files stored while changing (a pack's [`PackStats::changed`]): their
    /// type, mode, owner, xattrs and hardlinks are compared, not their size,
    /// mtime or content.
    pub changing: &'a [ChangedFile],
    /// When set, a regular file whose size, mtime or content differ is not
    /// a difference if its ctime is at or after this time (it was written
    /// since: the image holds it as it was before); it is listed in
    /// [`Verified::changed`] instead. Pass the time the pack began (less
    /// the file system's timestamp granularity).
    pub changed_since: Option<SystemTime>,
}

impl Default for VerifyOptions<'_> {
    fn default() -> Self {
        static NONE: Exclude = Exclude::none();
        VerifyOptions {
            exclude: &NONE,
            changing: &[],
            changed_since: None,
        }
    }
}

/// What [`verify_with`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Every difference; empty means identical.
    pub differences: Vec<Difference>,
    /// Files that differ in size, mtime or content only because they were
    /// written after [`VerifyOptions::changed_since`], as the image holds them.
    pub changed: Vec<ChangedFile>,
}

/// How [`unpack`] works.
#[derive(Clone, Copy, Default)]
pub struct UnpackOptions<'a> {
    /// Decompression threads; 0 = one per core.
    pub threads: usize,
    pub progress: Option<ProgressFn<'a>>,
}

/// What an [`unpack`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// File content bytes written (holes not counted).
    pub bytes: u64,
}

/// Packs the tree at `dir` into a new image at `image` (created or
/// truncated; the caller renames it into place).
pub fn pack(dir: &Path, image: &Path, options: &PackOptions) -> Result<PackStats> {
    write::pack(dir, image, options)
}

/// Merges `layers` (bottom first) into one new image at `out` (created or
/// truncated; the caller renames it into place) that, used as one overlayfs
/// lower layer over any base, shows exactly what the stack of `layers` over
/// that same base shows (for mounts with `redirect_dir=off,metacopy=off`).
///
/// For each path the topmost layer that has it decides: a non-directory
/// there (whiteouts included, and kept: they hide the base) hides all
/// below; a directory takes the topmost directory's metadata and xattrs and
/// merges its children with the directories below it, down to an opaque
/// directory (`trusted.overlay.opaque=y`, included) or a non-directory
/// (excluded); such a stop makes the output directory opaque. The layers'
/// root directories always merge. Names of one inode of one layer that stay
/// visible stay hardlinked (link count = visible names); names from
/// different layers are never linked. All xattrs of visible entries are
/// kept; a directory merged from several layers that holds whiteouts gets an
/// empty `trusted.overlay.origin` so that overlayfs keeps hiding them where
/// the base lacks the directory (it lists a one-layer directory as stored).
///
/// File data is decompressed from the inputs and recompressed with
/// `options.compressor` and `options.block_size`, holes stay holes; memory
/// holds per-entry metadata only. `options.exclude` is not applied: leaving
/// out a whiteout or an opaque directory would uncover the base. The inputs
/// are checked as [`unpack`] checks an image (any damage is an [`Error`]);
/// `out` may not be one of them.
pub fn merge(layers: &[&Path], out: &Path, options: &PackOptions) -> Result<PackStats> {
    write::merge::merge(layers, out, options)
}

/// Unpacks `image` into the directory `dir` (which must exist; the root's
/// owner, mode, xattrs and mtime are applied to it). Existing entries are
/// never followed or overwritten: a name that exists already is an error.
pub fn unpack(image: &Path, dir: &Path, options: &UnpackOptions) -> Result<UnpackStats> {
    read::unpack(image, dir, options)
}

/// Compares `image` with the tree at `dir` (minus `exclude`): names, types,
/// modes, owners, mtimes (seconds, as squashfs stores them), xattrs,
/// symlink targets, device numbers, hardlink groups and file contents.
/// Returns every difference found; empty means identical.
pub fn verify(image: &Path, dir: &Path, exclude: &Exclude) -> Result<Vec<Difference>> {
    let options = VerifyOptions {
        exclude,
        ..VerifyOptions::default()
    };
    Ok(verify::verify(image, dir, &options)?.differences)
}

/// [`verify`] with [`VerifyOptions`]: files that changed while or after
/// they were packed are compared without their size, mtime and content.
pub fn verify_with(image: &Path, dir: &Path, options: &VerifyOptions) -> Result<Verified> {
    verify::verify(image, dir, options)
}

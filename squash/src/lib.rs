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

pub mod digest;
pub mod error;
pub mod exclude;
pub mod format;
pub mod read;
pub mod verify;
pub mod write;

use std::path::Path;

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
    pub progress: Option<ProgressFn<'a>>,
}

impl Default for PackOptions<'_> {
    fn default() -> Self {
        static NONE: Exclude = Exclude::none();
        PackOptions {
            compressor: Compressor::default(),
            block_size: format::DEFAULT_BLOCK_SIZE,
            threads: 0,
            exclude: &NONE,
            progress: None,
        }
    }
}

/// What a [`pack`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    verify::verify(image, dir, exclude)
}

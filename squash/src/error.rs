//! The one error type of the codec: every failure names what it failed on.

use std::io;
use std::path::PathBuf;

/// A failed pack, unpack or verify.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a path of the tree or the image failed.
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// The image is not a valid squashfs 4.0 image (or is damaged).
    #[error("corrupt image {image}: {what}")]
    Corrupt { image: PathBuf, what: String },
    /// A valid image uses a feature this codec does not implement.
    #[error("unsupported image {image}: {what}")]
    Unsupported { image: PathBuf, what: String },
    /// An image entry would be written over something in the target
    /// directory (a name that exists already, e.g. a symlink). Names that
    /// could leave the directory (`..`, `/`, duplicates) are
    /// [`Error::Corrupt`]: no valid image has them.
    #[error("refusing to write outside {root}: {what}")]
    Unsafe { root: PathBuf, what: String },
    /// The tree cannot be represented in squashfs, or read back by our
    /// reader (name too long, directories nested too deep, more than 65536
    /// owners, …).
    #[error("cannot pack {path}: {what}")]
    Unpackable { path: PathBuf, what: String },
    /// A file of the tree changed while it was being packed (something still
    /// writes to it); a later attempt may find it at rest.
    #[error("{path} changed while being packed: {what}")]
    Changed { path: PathBuf, what: String },
    /// A compressor or decompressor failed on a block.
    #[error("{codec} failed: {what}")]
    Codec { codec: &'static str, what: String },
    /// An exclusion pattern is not a valid glob.
    #[error("invalid exclude pattern {pattern:?}: {what}")]
    Pattern { pattern: String, what: String },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            error,
        }
    }
}

/// Result of the codec.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Directory trees on a real filesystem, walked without following symlinks
//! and without leaving the given root, by one walk (`walk.rs`):
//!
//! * [`remove_contents`] empties a directory, optionally leaving mount
//!   points and what leads to them (init frees the initramfs with it and
//!   removes a layer it could not unpack whole);
//! * [`tree_listing`] describes a tree one line per entry so that two trees
//!   can be compared (the saver checks the image it wrote against the upper
//!   with it; the codec's tests use it as their measure of fidelity);
//! * [`copy_contents`] copies a small tree of our own (init keeps its
//!   initramfs for the saver's kernel hook with it);
//! * [`resolve_in_root`] resolves a path inside a tree as a chroot would.
//!
//! Unpacking a saved layer into the upper is the codec's job
//! (`ramstick_squash::unpack`), not a tree copy.

mod copy;
mod hash;
mod listing;
mod remove;
mod resolve;
mod walk;

use std::io;
use std::path::PathBuf;

pub use copy::copy_contents;
pub use listing::tree_listing;
pub use remove::remove_contents;
pub use resolve::resolve_in_root;
pub use walk::is_plain_name;

/// A failed step of a tree operation, with the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot read directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot stat {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot read symlink {path}: {source}")]
    ReadLink { path: PathBuf, source: io::Error },
    #[error("cannot read extended attribute {name} of {path}: {source}")]
    Xattr {
        path: PathBuf,
        name: String,
        source: io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("{path} changed while being processed")]
    Changed { path: PathBuf },
    #[error("refusing directory entry that would leave the target: {path}")]
    OutsideTarget { path: PathBuf },
}

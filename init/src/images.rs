//! What init asks of the squashfs codec, behind one trait like the system
//! calls of [`crate::sys`]: [`LinuxImages`] runs the codec, and the
//! recording fake of the tests answers from a table and records each call.

use ramstick_squash::{Error, UnpackOptions};
use std::io;
use std::path::Path;

pub trait Images {
    /// The size and metadata digest of a layer file (read from the device).
    fn meta_digest(&self, image: &Path) -> Result<(u64, String), Error>;
    /// Checks that an image without a manifest record opens as squashfs.
    fn probe(&self, image: &Path) -> Result<(), Error>;
    /// Unpacks `image` into the existing empty directory `dir`.
    fn unpack(&self, image: &Path, dir: &Path) -> Result<(), Error>;
    /// Removes `dir` and everything in it, never leaving its filesystem.
    fn remove_tree(&self, dir: &Path) -> io::Result<()>;
    /// Bytes free on the filesystem holding `path`.
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// The real codec.
pub struct LinuxImages;

impl Images for LinuxImages {
    fn meta_digest(&self, image: &Path) -> Result<(u64, String), Error> {
        ramstick_squash::meta_digest(image)
    }

    fn probe(&self, image: &Path) -> Result<(), Error> {
        ramstick_squash::probe(image)
    }

    fn unpack(&self, image: &Path, dir: &Path) -> Result<(), Error> {
        ramstick_squash::unpack(image, dir, &UnpackOptions::default()).map(drop)
    }

    fn remove_tree(&self, dir: &Path) -> io::Result<()> {
        ramstick_common::tree::remove_contents(dir, true).map_err(io::Error::other)?;
        std::fs::remove_dir(dir)
    }

    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(path)?;
        Ok(st.blocks_available() * st.fragment_size())
    }
}

#[cfg(test)]
pub mod fake {
    //! A recording fake: every call is one line; answers come from tables.
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::path::PathBuf;

    #[derive(Default)]
    pub struct RecordingImages {
        pub calls: RefCell<Vec<String>>,
        /// `meta_digest` answers by path; a missing path is an I/O error.
        pub digests: HashMap<PathBuf, (u64, String)>,
        /// Images whose probe or unpack reports them corrupt.
        pub corrupt: Vec<PathBuf>,
        /// Images whose unpack runs out of space.
        pub no_space: Vec<PathBuf>,
        pub free: u64,
    }

    impl RecordingImages {
        fn record(&self, line: String) {
            self.calls.borrow_mut().push(line);
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }

        fn corrupt_error(image: &Path) -> Error {
            Error::Corrupt {
                image: image.to_path_buf(),
                what: "bad superblock".into(),
            }
        }
    }

    impl Images for RecordingImages {
        fn meta_digest(&self, image: &Path) -> Result<(u64, String), Error> {
            self.record(format!("digest {}", image.display()));
            self.digests.get(image).cloned().ok_or_else(|| {
                Error::io("read", image, io::Error::from_raw_os_error(nix::libc::EIO))
            })
        }

        fn probe(&self, image: &Path) -> Result<(), Error> {
            self.record(format!("probe {}", image.display()));
            if self.corrupt.iter().any(|c| c == image) {
                return Err(Self::corrupt_error(image));
            }
            Ok(())
        }

        fn unpack(&self, image: &Path, dir: &Path) -> Result<(), Error> {
            self.record(format!("unpack {} {}", image.display(), dir.display()));
            if self.corrupt.iter().any(|c| c == image) {
                return Err(Self::corrupt_error(image));
            }
            if self.no_space.iter().any(|c| c == image) {
                let enospc = io::Error::from_raw_os_error(nix::libc::ENOSPC);
                return Err(Error::io("write", dir.join("x"), enospc));
            }
            Ok(())
        }

        fn remove_tree(&self, dir: &Path) -> io::Result<()> {
            self.record(format!("remove {}", dir.display()));
            Ok(())
        }

        fn free_bytes(&self, path: &Path) -> io::Result<u64> {
            self.record(format!("free {}", path.display()));
            Ok(self.free)
        }
    }
}

//! The squashfs reader (see [`crate::unpack`]).

use crate::{Error, Result, UnpackOptions, UnpackStats};
use std::path::Path;

pub(crate) fn unpack(image: &Path, _dir: &Path, _options: &UnpackOptions) -> Result<UnpackStats> {
    Err(Error::Unsupported {
        image: image.to_path_buf(),
        what: "the reader is not written yet".into(),
    })
}

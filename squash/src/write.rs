//! The squashfs writer (see [`crate::pack`]).

use crate::{Error, PackOptions, PackStats, Result};
use std::path::Path;

pub(crate) fn pack(dir: &Path, _image: &Path, _options: &PackOptions) -> Result<PackStats> {
    Err(Error::Unpackable {
        path: dir.to_path_buf(),
        what: "the writer is not written yet".into(),
    })
}

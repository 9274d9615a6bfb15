//! The content hash of a listed file: equal for equal bytes however they
//! are stored, so a hole and a run of written zeros hash alike.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use super::TreeError;
use crate::digest::Fnv1a;
use crate::io::read_full_at;

/// Granularity of zero detection.
const BLOCK: usize = 4096;

static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];

/// FNV-1a 64 of `size` and of every non-zero 4 KiB block of the first
/// `size` bytes of `file` with its offset; `buf` is the read buffer and
/// `path` is for messages.
pub(super) fn hash_content(
    file: &File,
    size: u64,
    path: &Path,
    buf: &mut [u8],
) -> Result<u64, TreeError> {
    let mut fnv = Fnv1a::new();
    fnv.update(&size.to_le_bytes());
    for_each_data(file, size, path, buf, |offset, data| {
        let mut block_offset = offset;
        for block in data.chunks(BLOCK) {
            if block != &ZERO_BLOCK[..block.len()] {
                fnv.update(&block_offset.to_le_bytes());
                fnv.update(block);
            }
            block_offset += BLOCK as u64;
        }
    })?;
    Ok(fnv.finish())
}

/// Reads the first `size` bytes of `file`, skipping the holes the filesystem
/// reports (SEEK_DATA/SEEK_HOLE: a 1 GiB sparse file is not read as 1 GiB
/// of zeros), and passes each buffer with its offset to `sink`. Offsets are
/// multiples of [`BLOCK`].
fn for_each_data(
    file: &File,
    size: u64,
    path: &Path,
    buf: &mut [u8],
    mut sink: impl FnMut(u64, &[u8]),
) -> Result<(), TreeError> {
    let read_err = |e: io::Error| TreeError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    let block = BLOCK as u64;
    // Everything before `pos` (a multiple of BLOCK or the end) is done.
    let mut pos = 0u64;
    while pos < size {
        let offset = i64::try_from(pos).map_err(|e| read_err(io::Error::other(e)))?;
        let data = match lseek(file, offset, Whence::SeekData) {
            Ok(data) => data,
            Err(Errno::ENXIO) => return Ok(()), // only a hole is left
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => offset,
            Err(e) => return Err(read_err(e.into())),
        };
        let hole = match lseek(file, data, Whence::SeekHole) {
            Ok(hole) => hole,
            Err(Errno::ENXIO | Errno::EINVAL | Errno::EOPNOTSUPP) => i64::MAX,
            Err(e) => return Err(read_err(e.into())),
        };
        let data = u64::try_from(data).unwrap_or(0);
        let hole = u64::try_from(hole).unwrap_or(0);
        let mut offset = (data / block * block).max(pos);
        let end = hole.div_ceil(block).saturating_mul(block).min(size);
        while offset < end {
            let want = usize::try_from(end - offset).map_or(buf.len(), |n| n.min(buf.len()));
            let got = read_full_at(file, &mut buf[..want], offset).map_err(read_err)?;
            if got == 0 {
                return Ok(()); // the file shrank
            }
            sink(offset, &buf[..got]);
            offset += got as u64;
        }
        if end <= pos {
            return Ok(());
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_hash_as_zeros_and_every_byte_and_offset_counts() {
        let tmp = ramstick_testkit::TempDir::new("tree-hash");
        let path = tmp.join("f");
        let mut buf = vec![0; 1 << 20];
        let mut hash_of = |content: &dyn Fn(&File)| {
            let file = File::create(&path).unwrap();
            content(&file);
            let file = File::open(&path).unwrap();
            let size = file.metadata().unwrap().len();
            hash_content(&file, size, &path, &mut buf).unwrap()
        };
        let zeros = hash_of(&|f| f.write_all_at(&vec![0; 3 << 20], 0).unwrap());
        let holes = hash_of(&|f| f.set_len(3 << 20).unwrap());
        let one = hash_of(&|f| {
            f.set_len(3 << 20).unwrap();
            f.write_all_at(b"1", 2 << 20).unwrap();
        });
        let moved = hash_of(&|f| {
            f.set_len(3 << 20).unwrap();
            f.write_all_at(b"1", 1 << 20).unwrap();
        });
        let shorter = hash_of(&|f| f.set_len(2 << 20).unwrap());
        assert_eq!(zeros, holes);
        assert_ne!(zeros, one);
        assert_ne!(one, moved);
        assert_ne!(zeros, shorter);
    }
}

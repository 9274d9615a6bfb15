//! Block compressors of the writer: one [`Codec`] per thread, and the
//! compressor options block written after the superblock.

use crate::format::{compressor, DATA_UNCOMPRESSED};
use crate::{Compressor, Error, Result};

/// zstd level and gzip level that need no options block (mksquashfs'
/// defaults, which the kernel and unsquashfs assume without one).
const ZSTD_DEFAULT_LEVEL: i32 = 15;
const GZIP_DEFAULT_LEVEL: u32 = 9;
/// xz preset (mksquashfs uses liblzma's default, 6).
const XZ_PRESET: u32 = 6;

/// A compressor with its reusable state.
pub(crate) enum Codec {
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Gzip(u32),
    Xz(u32),
    Lz4,
}

impl Codec {
    /// A compressor for `choice`; `block_size` bounds the xz dictionary
    /// (the kernel allocates one of block size).
    pub(crate) fn new(choice: Compressor, block_size: u32) -> Result<Self> {
        Ok(match choice {
            Compressor::Zstd(level) => Codec::Zstd(Box::new(
                zstd::bulk::Compressor::new(level).map_err(|e| codec_err("zstd", e))?,
            )),
            Compressor::Gzip(level) => Codec::Gzip(level.clamp(1, 9)),
            Compressor::Xz => Codec::Xz(block_size),
            Compressor::Lz4 => Codec::Lz4,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Codec::Zstd(_) => "zstd",
            Codec::Gzip(_) => "gzip",
            Codec::Xz(_) => "xz",
            Codec::Lz4 => "lz4",
        }
    }

    /// Compresses `data`; `None` when the result would not be smaller
    /// (the caller then stores the data uncompressed).
    pub(crate) fn compress(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>> {
        let name = self.name();
        let out = match self {
            Codec::Zstd(c) => c.compress(data).map_err(|e| codec_err(name, e))?,
            Codec::Gzip(level) => gzip(data, *level).map_err(|e| codec_err(name, e))?,
            Codec::Xz(dict) => xz(data, *dict).map_err(|e| codec_err(name, e))?,
            Codec::Lz4 => lz4_flex::block::compress(data),
        };
        Ok((out.len() < data.len()).then_some(out))
    }

    /// Compresses a data or fragment block: the bytes to store and the
    /// size word of the block list / fragment table.
    pub(crate) fn data_block(&mut self, data: Vec<u8>) -> Result<(Vec<u8>, u32)> {
        let raw_len = block_len(data.len())?;
        Ok(match self.compress(&data)? {
            Some(packed) => {
                let len = block_len(packed.len())?;
                (packed, len)
            }
            None => (data, raw_len | DATA_UNCOMPRESSED),
        })
    }
}

/// A block length as the u32 of the format.
fn block_len(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Codec {
        codec: "block",
        what: format!("block of {len} bytes"),
    })
}

fn codec_err(codec: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Codec {
        codec,
        what: e.to_string(),
    }
}

/// A zlib stream (squashfs' "gzip").
fn gzip(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(data.len()),
        flate2::Compression::new(level),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// An xz stream with a CRC32 check and an LZMA2 dictionary of at most
/// `dict` bytes, as the kernel's decoder requires.
fn xz(data: &[u8], dict: u32) -> std::io::Result<Vec<u8>> {
    let mut opts = xz2::stream::LzmaOptions::new_preset(XZ_PRESET)?;
    opts.dict_size(dict.max(8192));
    let mut filters = xz2::stream::Filters::new();
    filters.lzma2(&opts);
    let mut stream = xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::Crc32)?;
    let mut out = Vec::with_capacity(data.len() + data.len() / 2 + 128);
    loop {
        let consumed = usize::try_from(stream.total_in()).unwrap_or(data.len());
        let input = data.get(consumed..).unwrap_or(&[]);
        let status = stream.process_vec(input, &mut out, xz2::stream::Action::Finish)?;
        if status == xz2::stream::Status::StreamEnd {
            return Ok(out);
        }
        out.reserve(out.capacity().max(4096));
    }
}

/// The superblock compressor id of `choice`.
pub(crate) fn id(choice: Compressor) -> u16 {
    match choice {
        Compressor::Zstd(_) => compressor::ZSTD,
        Compressor::Gzip(_) => compressor::GZIP,
        Compressor::Xz => compressor::XZ,
        Compressor::Lz4 => compressor::LZ4,
    }
}

/// The compressor options of `choice`, written only when they differ
/// from the defaults (like mksquashfs); lz4 always has them (the kernel
/// requires its "legacy" version word).
pub(crate) fn options(choice: Compressor) -> Option<Vec<u8>> {
    match choice {
        Compressor::Zstd(level) if level != ZSTD_DEFAULT_LEVEL => {
            Some(level.to_le_bytes().to_vec())
        }
        Compressor::Gzip(level) if level.clamp(1, 9) != GZIP_DEFAULT_LEVEL => {
            let mut b = level.clamp(1, 9).to_le_bytes().to_vec();
            b.extend_from_slice(&15u16.to_le_bytes()); // window bits
            b.extend_from_slice(&0u16.to_le_bytes()); // strategies
            Some(b)
        }
        Compressor::Lz4 => {
            let mut b = 1u32.to_le_bytes().to_vec(); // LZ4_LEGACY
            b.extend_from_slice(&0u32.to_le_bytes()); // flags
            Some(b)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompressible_blocks_are_stored_raw() {
        let mut c = Codec::new(Compressor::default(), 4096).unwrap();
        let text = b"abcabcabc".repeat(1000);
        let (packed, size) = c.data_block(text.clone()).unwrap();
        assert_eq!(size as usize, packed.len());
        assert!(packed.len() < text.len());
        let noise = ramstick_testkit::noise(4096, false);
        let (raw, size) = c.data_block(noise.clone()).unwrap();
        assert!(raw == noise, "noise was not stored as is");
        assert_eq!(size, 4096 | DATA_UNCOMPRESSED);
    }

    #[test]
    fn every_codec_shrinks_text() {
        let text = b"squashfs writer ".repeat(500);
        for choice in [
            Compressor::Zstd(3),
            Compressor::Gzip(6),
            Compressor::Xz,
            Compressor::Lz4,
        ] {
            let mut c = Codec::new(choice, 131_072).unwrap();
            let out = c.compress(&text).unwrap().unwrap();
            assert!(out.len() < text.len() / 4, "{choice:?}: {}", out.len());
        }
        assert_eq!(options(Compressor::Zstd(15)), None);
        assert_eq!(
            options(Compressor::Zstd(19)),
            Some(19i32.to_le_bytes().to_vec())
        );
        assert_eq!(options(Compressor::Lz4).map(|o| o.len()), Some(8));
    }
}

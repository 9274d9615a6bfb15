//! Bounded block decompression: every call names the most bytes the block may
//! produce (the block size, or 8 KiB for metadata) and fails when the stream
//! would produce more, is truncated or is not a valid stream.

use crate::format::compressor;

/// Most memory an xz stream may ask for (mksquashfs' dictionary is at most
/// the block size, 1 MiB).
const XZ_MEMLIMIT: u64 = 64 << 20;

/// The block codec of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    Xz,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec of a superblock's compressor id; `Err((supported_elsewhere, what))`.
    pub(crate) fn from_id(id: u16) -> Result<Codec, (bool, String)> {
        match id {
            compressor::GZIP => Ok(Codec::Gzip),
            compressor::XZ => Ok(Codec::Xz),
            compressor::LZ4 => Ok(Codec::Lz4),
            compressor::ZSTD => Ok(Codec::Zstd),
            compressor::LZO => Err((true, "lzo compression is not supported".into())),
            compressor::LZMA => Err((true, "legacy lzma compression is not supported".into())),
            other => Err((false, format!("unknown compressor id {other}"))),
        }
    }
}

/// Per-thread decompression state (contexts are reused between blocks).
pub(crate) struct Decoder {
    codec: Codec,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    zlib: flate2::Decompress,
}

impl Decoder {
    pub(crate) fn new(codec: Codec) -> Decoder {
        Decoder {
            codec,
            // Creating a context only fails on allocation failure; a block
            // then reports the error instead.
            zstd: zstd::bulk::Decompressor::new().ok(),
            zlib: flate2::Decompress::new(true),
        }
    }

    /// Decompresses `src` into `dst` (replacing its contents); at most
    /// `limit` bytes may come out. `Err` says what went wrong.
    pub(crate) fn decompress(
        &mut self,
        src: &[u8],
        dst: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), String> {
        dst.clear();
        match self.codec {
            Codec::Zstd => {
                let z = self.zstd.as_mut().ok_or("cannot create a zstd context")?;
                dst.reserve_exact(limit);
                z.decompress_to_buffer(src, dst)
                    .map_err(|e| format!("zstd: {e}"))?;
            }
            Codec::Gzip => {
                self.zlib.reset(true);
                dst.reserve_exact(limit);
                let status = self
                    .zlib
                    .decompress_vec(src, dst, flate2::FlushDecompress::Finish)
                    .map_err(|e| format!("gzip: {e}"))?;
                if status != flate2::Status::StreamEnd {
                    return Err("gzip: stream truncated or larger than the block".into());
                }
            }
            Codec::Lz4 => {
                dst.resize(limit, 0);
                let n =
                    lz4_flex::block::decompress_into(src, dst).map_err(|e| format!("lz4: {e}"))?;
                dst.truncate(n);
            }
            Codec::Xz => {
                let mut xz = xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                    .map_err(|e| format!("xz: {e}"))?;
                dst.reserve_exact(limit);
                let status = xz
                    .process_vec(src, dst, xz2::stream::Action::Finish)
                    .map_err(|e| format!("xz: {e}"))?;
                if status != xz2::stream::Status::StreamEnd {
                    return Err("xz: stream truncated or larger than the block".into());
                }
            }
        }
        if dst.len() > limit {
            return Err(format!(
                "block decompresses to more than {limit} bytes ({})",
                dst.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn limits_are_enforced() {
        let data = vec![7u8; 10_000];
        let z = zstd::bulk::compress(&data, 3).unwrap();
        let mut d = Decoder::new(Codec::Zstd);
        let mut out = Vec::new();
        d.decompress(&z, &mut out, 10_000).unwrap();
        assert_eq!(out, data);
        assert!(d.decompress(&z, &mut out, 8192).is_err());
        assert!(d.decompress(&z[..z.len() - 3], &mut out, 10_000).is_err());

        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let g = enc.finish().unwrap();
        let mut d = Decoder::new(Codec::Gzip);
        d.decompress(&g, &mut out, 10_000).unwrap();
        assert_eq!(out, data);
        assert!(d.decompress(&g, &mut out, 9_999).is_err());
        assert!(d.decompress(&g[..g.len() / 2], &mut out, 10_000).is_err());

        let l = lz4_flex::block::compress(&data);
        let mut d = Decoder::new(Codec::Lz4);
        d.decompress(&l, &mut out, 10_000).unwrap();
        assert_eq!(out, data);
        assert!(d.decompress(&l, &mut out, 4096).is_err());

        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&data).unwrap();
        let x = enc.finish().unwrap();
        let mut d = Decoder::new(Codec::Xz);
        d.decompress(&x, &mut out, 10_000).unwrap();
        assert_eq!(out, data);
        assert!(d.decompress(&x, &mut out, 9_000).is_err());
        assert!(Codec::from_id(compressor::LZO).unwrap_err().0);
        assert!(!Codec::from_id(77).unwrap_err().0);
    }
}

//! Content digests: xxh3-128, printed as 32 hex digits. Not a cryptographic
//! hash: it detects damage (torn writes, bit rot, a stick that lies), which
//! is all the manifest and the layer checks ask of it.

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

/// The xxh3-128 of `bytes` as 32 lowercase hex digits.
pub fn xxh3_hex(bytes: &[u8]) -> String {
    format!("{:032x}", xxh3_128(bytes))
}

/// An incremental xxh3-128 (for files read in pieces).
#[derive(Default, Clone)]
pub struct Digest(Xxh3);

impl Digest {
    pub fn new() -> Digest {
        Digest(Xxh3::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest so far, as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_equal_the_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut d = Digest::new();
        for chunk in data.chunks(333) {
            d.update(chunk);
        }
        assert_eq!(d.hex(), xxh3_hex(&data));
        assert_eq!(xxh3_hex(b"").len(), 32);
        assert_ne!(xxh3_hex(b"a"), xxh3_hex(b"b"));
    }
}

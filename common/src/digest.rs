//! Content digests: xxh3-128, printed as 32 hex digits. Not a cryptographic
//! hash: it detects damage (torn writes, bit rot, a stick that lies), which
//! is all the manifest and the layer checks ask of it. And FNV-1a 64, for
//! values that must never change with a library's version (tree listings).

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

/// An incremental FNV-1a 64 hash, written out here so that its values
/// never change.
#[derive(Clone)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn new() -> Fnv1a {
        Fnv1a::default()
    }

    /// Mixes in raw bytes (no length prefix).
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
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

    #[test]
    fn fnv1a_known_values() {
        // Reference values of FNV-1a 64.
        let mut h = Fnv1a::new();
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        h.update(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
        let mut h = Fnv1a::new();
        h.update(b"foo");
        h.update(b"bar");
        assert_eq!(h.finish(), 0x8594_4171_f739_67e8);
    }
}

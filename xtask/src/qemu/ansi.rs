//! The guest's output as text: terminal escape sequences and control
//! characters removed from a byte stream read in arbitrary chunks, and a
//! watch for one literal string in such a stream.

/// Removes terminal escape sequences and control characters (except `\n` and
/// `\t`) from a byte stream fed in arbitrary chunks.
#[derive(Default)]
pub struct AnsiStripper {
    state: Scan,
}

/// Where the stripper is inside an escape sequence.
#[derive(Default, Clone, Copy)]
enum Scan {
    #[default]
    Text,
    /// After ESC.
    Start,
    /// Inside `ESC [ … final`.
    Csi,
    /// Inside `ESC ] …` (ended by BEL or `ESC \`).
    Osc,
    /// ESC inside an OSC.
    OscEsc,
    /// Inside `ESC ( B`-like sequences (intermediate bytes, then one final byte).
    Intermediate,
}

impl AnsiStripper {
    /// Append the printable part of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match (self.state, b) {
                (Scan::Text, 0x1b) => Scan::Start,
                (Scan::Text, b'\n' | b'\t') => {
                    out.push(b);
                    Scan::Text
                }
                (Scan::Text, 0..=0x1f | 0x7f) => Scan::Text,
                (Scan::Text, _) => {
                    out.push(b);
                    Scan::Text
                }
                (Scan::Start, b'[') => Scan::Csi,
                (Scan::Start, b']') => Scan::Osc,
                (Scan::Start, 0x20..=0x2f) => Scan::Intermediate,
                (Scan::Start, _) => Scan::Text,
                (Scan::Csi, 0x40..=0x7e) => Scan::Text,
                (Scan::Csi, _) => Scan::Csi,
                (Scan::Osc, 0x07) => Scan::Text,
                (Scan::Osc, 0x1b) => Scan::OscEsc,
                (Scan::Osc, _) => Scan::Osc,
                (Scan::OscEsc, _) => Scan::Text,
                (Scan::Intermediate, 0x20..=0x2f) => Scan::Intermediate,
                (Scan::Intermediate, _) => Scan::Text,
            };
        }
    }
}

/// Watches a raw output stream for one literal string (escapes stripped).
pub(super) struct Watcher {
    strip: AnsiStripper,
    needle: Vec<u8>,
    window: Vec<u8>,
}

impl Watcher {
    pub(super) fn new(needle: &str) -> Watcher {
        Watcher {
            strip: AnsiStripper::default(),
            needle: needle.as_bytes().to_vec(),
            window: Vec::new(),
        }
    }

    /// Feed a chunk; true once the needle has been seen.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> bool {
        self.strip.feed(chunk, &mut self.window);
        if find(&self.window, &self.needle).is_some() {
            return true;
        }
        let keep = self.needle.len().saturating_sub(1);
        let cut = self.window.len().saturating_sub(keep);
        self.window.drain(..cut);
        false
    }
}

/// Position of the first `needle` in `hay`.
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The last occurrence of `needle` in `hay`.
pub(super) fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(hay.len());
    }
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_common::bootmenu;

    fn strip(chunks: &[&[u8]]) -> String {
        let mut s = AnsiStripper::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn finds_first_and_last() {
        assert_eq!(find(b"abcabc", b"bc"), Some(1));
        assert_eq!(rfind(b"abcabc", b"bc"), Some(4));
        assert_eq!(rfind(b"abc", b"x"), None);
        assert_eq!(rfind(b"ab", b"abc"), None);
        assert_eq!(rfind(b"ab", b""), Some(2));
    }

    #[test]
    fn strips_csi_osc_charset_and_carriage_returns() {
        let raw = b"\x1b[2J\x1b[1;1Hramstick \x1b[7m(default)\x1b[0m\r\n\x1b]0;title\x07ok\x1b(B!\x1b]2;t\x1b\\.";
        assert_eq!(strip(&[raw]), "ramstick (default)\nok!.");
    }

    #[test]
    fn strips_escapes_split_across_chunks() {
        assert_eq!(
            strip(&[b"ab\x1b", b"[12", b";3", b"Hc\x1b", b"(", b"Bd\r", b"\n"]),
            "abcd\n"
        );
    }

    #[test]
    fn keeps_tabs_and_utf8_drops_other_controls() {
        assert_eq!(strip(&["a\tb\x08\x0e\x00é\x7f".as_bytes()]), "a\tbé");
    }

    #[test]
    fn watcher_finds_needle_across_chunks_and_escapes() {
        let mut w = Watcher::new(&bootmenu::first_title());
        assert!(!w.feed(b"\x1b[5;3H ramstick (def"));
        assert!(!w.feed(b"\x1b[0"));
        assert!(w.feed(b"mault) "));
        let mut w = Watcher::new(&bootmenu::first_title());
        assert!(!w.feed(b"ramstick (backup)"));
    }
}

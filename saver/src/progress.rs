//! Progress lines on the console (stderr) while packing or unpacking: one
//! every few seconds, with a percentage when the total is known.

use crate::space::human;
use ramstick_squash::Progress;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time between two progress lines.
const EVERY: Duration = Duration::from_secs(3);

/// Prints `<what>: <progress>` lines at most every 3 seconds (`EVERY`).
pub struct Reporter {
    what: &'static str,
    last: Mutex<Option<Instant>>,
}

impl Reporter {
    pub fn new(what: &'static str) -> Reporter {
        Reporter {
            what,
            last: Mutex::new(None),
        }
    }

    /// The progress callback.
    pub fn report(&self, p: &Progress) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        let done = p.total_bytes.is_some_and(|t| p.bytes >= t);
        if last.is_some_and(|l| now.duration_since(l) < EVERY) && !done {
            return;
        }
        *last = Some(now);
        eprintln!("saver: {}: {}", self.what, line(p));
    }
}

/// "42% (1.2 MiB of 2.9 MiB, 310 entries)" or "1.2 MiB, 310 entries".
pub fn line(p: &Progress) -> String {
    match p.total_bytes {
        Some(total) if total > 0 => format!(
            "{}% ({} of {}, {} entries)",
            p.bytes.min(total) * 100 / total,
            human(p.bytes),
            human(total),
            p.entries
        ),
        _ => format!("{}, {} entries", human(p.bytes), p.entries),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_a_percentage_when_the_total_is_known() {
        let p = Progress {
            entries: 310,
            bytes: 1 << 20,
            total_bytes: Some(4 << 20),
        };
        assert_eq!(line(&p), "25% (1.0 MiB of 4.0 MiB, 310 entries)");
        let p = Progress {
            total_bytes: None,
            ..p
        };
        assert_eq!(line(&p), "1.0 MiB, 310 entries");
    }
}

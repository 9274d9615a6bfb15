//! A tiny `log` backend for PID 1: records go to `/dev/kmsg` as
//! `<level>ramstick: message`, split under the kernel's 1 KiB record limit.
//! The console sees a record once: the kernel echoes kmsg records whose level
//! is below the console loglevel, and we print the others ourselves, so
//! nothing shows twice. Without `/dev/kmsg` everything goes to stdout.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Longest message part written in one kmsg record (the kernel limit is 1024
/// bytes including the `<n>ramstick: ` prefix).
const MAX_RECORD: usize = 900;

pub struct KmsgLogger {
    kmsg: Mutex<Option<File>>,
    console_loglevel: u8,
}

/// Syslog priority for a `log` level.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Split `msg` into parts of at most `max` bytes, on char boundaries.
pub fn split_record(msg: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = msg;
    while rest.len() > max {
        let mut cut = max;
        while cut > 0 && !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            break;
        }
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    parts.push(rest);
    parts
}

impl KmsgLogger {
    /// Install the logger of the system at `root` (its /dev/kmsg and
    /// /proc), at the Info level until the plan sets it ([`Self::set_debug`]).
    pub fn install(root: &Path) {
        // Let our records through however many there are.
        let _ = std::fs::write(root.join("proc/sys/kernel/printk_devkmsg"), "on\n");
        let kmsg = OpenOptions::new()
            .write(true)
            .open(root.join("dev/kmsg"))
            .ok();
        let console_loglevel = std::fs::read_to_string(root.join("proc/sys/kernel/printk"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(4);
        let logger = KmsgLogger {
            kmsg: Mutex::new(kmsg),
            console_loglevel,
        };
        if log::set_boxed_logger(Box::new(logger)).is_ok() {
            Self::set_debug(false);
        }
    }

    /// Raise or lower the level once the command line is known.
    pub fn set_debug(debug: bool) {
        log::set_max_level(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}

impl Log for KmsgLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prio = priority(record.level());
        let msg = record.args().to_string();
        let mut echoed_by_kernel = false;
        if let Ok(mut guard) = self.kmsg.lock() {
            if let Some(kmsg) = guard.as_mut() {
                let mut ok = true;
                for part in split_record(&msg, MAX_RECORD) {
                    ok &= kmsg
                        .write_all(format!("<{prio}>ramstick: {part}\n").as_bytes())
                        .is_ok();
                }
                echoed_by_kernel = ok && prio < self.console_loglevel;
            }
        }
        if !echoed_by_kernel {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ramstick: {msg}");
            let _ = out.flush();
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_records_are_split_on_char_boundaries() {
        let msg = "é".repeat(1000); // 2000 bytes
        let parts = split_record(&msg, 901);
        assert!(parts.iter().all(|p| p.len() <= 901));
        assert_eq!(parts.concat(), msg);
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn short_records_are_one_part() {
        assert_eq!(split_record("hello", MAX_RECORD), vec!["hello"]);
    }
}

//! Fields of `/proc/meminfo`, in bytes.

/// The value of field `name` (e.g. `MemTotal`) of /proc/meminfo's text, in
/// bytes: the kernel writes these fields in KiB (`MemTotal:  2048 kB`).
/// `None` when the field is missing, malformed or too large.
pub fn field_bytes(meminfo: &str, name: &str) -> Option<u64> {
    let value = meminfo
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?;
    let kib: u64 = value.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The RAM the kernel manages (`MemTotal`), in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    field_bytes(meminfo, "MemTotal")
}

/// The memory available without swapping (`MemAvailable`), in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    field_bytes(meminfo, "MemAvailable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_total(text), Some(24_000_000 * 1024));
        assert_eq!(mem_available(text), Some(2 << 20));
        assert_eq!(field_bytes(text, "MemFree"), Some(1024));
        // A prefix of a field's name is not the field.
        assert_eq!(field_bytes(text, "Mem"), None);
        assert_eq!(mem_available("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(mem_total(&format!("MemTotal: {} kB\n", u64::MAX)), None);
    }
}

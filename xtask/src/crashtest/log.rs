//! The write log of QEMU's `blklogwrites` filter, which uses the format of
//! Linux's dm-log-writes (`Documentation/admin-guide/device-mapper/
//! log-writes.rst`, QEMU's `block/blklogwrites.c`). All fields are
//! little-endian; the log is a sequence of sectors of `sectorsize` bytes:
//!
//! - sector 0, the superblock: magic `0x6a736677736872`, version 1, the
//!   number of entries, the sector size (u64, u64, u64, u32);
//! - from sector 1, each entry: one sector starting with its header
//!   (sector, nr_sectors, flags, data_len: four u64), then, unless it is a
//!   discard, the `nr_sectors` sectors of data it wrote. `sector` and
//!   `nr_sectors` count sectors of `sectorsize` bytes. A mark (dm-log-writes
//!   only) carries its name in the header sector after the header.
//!
//! QEMU writes an entry when the request completes (so entries are in
//! completion order), logs write-zeroes as a plain write whose data is
//! zeros, never sets the FUA flag (a FUA request reaches the filter as a
//! write, then a flush), and updates the superblock's count only at a flush
//! (or every `log-super-update-interval` entries): entries after the last
//! update are in the file but not counted. They are read too, as long as
//! they are whole and well-formed; the first sector that is not ends the log.

use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The superblock's magic number.
pub const MAGIC: u64 = 0x006a_7366_7773_6872;
/// The only log version there is.
pub const VERSION: u64 = 1;
/// An entry that asks for the device's cache to be flushed.
pub const FLUSH: u64 = 1 << 0;
/// A write with forced unit access (durable when it completes).
pub const FUA: u64 = 1 << 1;
/// A discard: no data follows.
pub const DISCARD: u64 = 1 << 2;
/// A named position in the log (dm-log-writes' `dmsetup message … mark`).
pub const MARK: u64 = 1 << 3;
const ALL_FLAGS: u64 = FLUSH | FUA | DISCARD | MARK;
/// Bytes of an entry's header.
const HEADER: usize = 32;

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// First byte on the device.
    pub offset: u64,
    /// Bytes written (or discarded); 0 for a flush or a mark.
    pub len: u64,
    pub flags: u64,
    /// Where its data starts in the log file (writes only).
    pub data: u64,
    /// A mark's name.
    pub mark: Option<String>,
}

impl Entry {
    /// True for a flush, and for a FUA write (durable with all before it,
    /// as Linux's flush machinery makes it on a device without FUA).
    pub fn is_barrier(&self) -> bool {
        self.flags & (FLUSH | FUA) != 0
    }

    /// True when it changes the device's bytes (a write with data).
    pub fn is_write(&self) -> bool {
        self.len > 0 && self.flags & (DISCARD | MARK) == 0
    }

    pub fn is_discard(&self) -> bool {
        self.flags & DISCARD != 0
    }
}

/// A parsed log; the data stays in the file and is read on demand.
#[derive(Debug)]
pub struct Log {
    pub path: PathBuf,
    file: File,
    pub sector_size: u64,
    /// The superblock's count (entries after it are in `entries` too).
    pub counted: u64,
    pub entries: Vec<Entry>,
}

impl Log {
    /// Reads the log at `path`.
    pub fn open(path: &Path) -> Result<Log> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        let (sector_size, counted, entries) = parse(&file, len)
            .with_context(|| format!("reading the write log {}", path.display()))?;
        Ok(Log {
            path: path.to_path_buf(),
            file,
            sector_size,
            counted,
            entries,
        })
    }

    /// Reads `buf.len()` bytes of entry data from `at` in the log file.
    pub fn read_data(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, at)
            .with_context(|| format!("reading {} at {at}", self.path.display()))
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The sector size, the superblock's count and every entry of a log of
/// `len` bytes.
fn parse(file: &File, len: u64) -> Result<(u64, u64, Vec<Entry>)> {
    let mut sb = [0u8; 28];
    file.read_exact_at(&mut sb, 0)
        .context("the log has no superblock (the guest never flushed?)")?;
    let magic = u64_at(&sb, 0);
    ensure!(
        magic == MAGIC,
        "bad superblock magic {magic:#x} (want {MAGIC:#x})"
    );
    let version = u64_at(&sb, 8);
    ensure!(version == VERSION, "unsupported log version {version}");
    let counted = u64_at(&sb, 16);
    let sector_size = u64::from(u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]));
    ensure!(
        sector_size.is_power_of_two() && sector_size >= HEADER as u64 && sector_size < 1 << 24,
        "bad log sector size {sector_size}"
    );
    let mut entries = Vec::new();
    let mut head = vec![0u8; sector_size as usize];
    let mut at = sector_size;
    loop {
        let n = entries.len() as u64;
        let counted_entry = n < counted;
        if at + sector_size > len {
            ensure!(
                !counted_entry,
                "the superblock counts {counted} entries, the file ends after {n}"
            );
            break;
        }
        file.read_exact_at(&mut head, at)
            .with_context(|| format!("reading entry {n} at {at}"))?;
        match entry(&head, at, sector_size, len) {
            Ok(e) => {
                at += sector_size + if e.flags & DISCARD == 0 { e.len } else { 0 };
                entries.push(e);
            }
            Err(why) if counted_entry => bail!("entry {n} at byte {at}: {why}"),
            // Past the count: a sector never written (or cut short) ends the log.
            Err(_) => break,
        }
    }
    Ok((sector_size, counted, entries))
}

/// The entry whose header sector `head` is at `at` in a log of `len` bytes.
fn entry(head: &[u8], at: u64, sector_size: u64, len: u64) -> Result<Entry, String> {
    let sector = u64_at(head, 0);
    let sectors = u64_at(head, 8);
    let flags = u64_at(head, 16);
    let data_len = u64_at(head, 24);
    if flags & !ALL_FLAGS != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    if head.iter().all(|&b| b == 0) {
        return Err("an empty sector".into());
    }
    let bytes = sectors
        .checked_mul(sector_size)
        .ok_or_else(|| format!("{sectors} sectors overflow"))?;
    let offset = sector
        .checked_mul(sector_size)
        .filter(|o| o.checked_add(bytes).is_some())
        .ok_or_else(|| format!("sector {sector} overflows"))?;
    let data = at + sector_size;
    if flags & DISCARD == 0 && data.checked_add(bytes).is_none_or(|end| end > len) {
        return Err(format!(
            "its {bytes} bytes of data run past the end of the log"
        ));
    }
    let mark = if flags & MARK != 0 {
        let end = HEADER
            .checked_add(usize::try_from(data_len).map_err(|_| "mark too long")?)
            .filter(|&e| e <= head.len())
            .ok_or_else(|| format!("a mark of {data_len} bytes does not fit its sector"))?;
        Some(String::from_utf8_lossy(&head[HEADER..end]).into_owned())
    } else {
        None
    };
    Ok(Entry {
        offset,
        len: bytes,
        flags,
        data,
        mark,
    })
}

/// Writing logs, for tests: the layout QEMU writes.
#[cfg(test)]
pub mod craft {
    use super::*;

    /// A log being built in memory, with 512-byte sectors.
    pub struct Crafted {
        pub bytes: Vec<u8>,
        pub count: u64,
    }

    pub const SECTOR: u64 = 512;

    impl Crafted {
        pub fn new() -> Crafted {
            Crafted {
                bytes: vec![0; SECTOR as usize],
                count: 0,
            }
        }

        fn header(&mut self, sector: u64, sectors: u64, flags: u64, extra: &[u8]) {
            let mut head = vec![0u8; SECTOR as usize];
            head[0..8].copy_from_slice(&sector.to_le_bytes());
            head[8..16].copy_from_slice(&sectors.to_le_bytes());
            head[16..24].copy_from_slice(&flags.to_le_bytes());
            head[24..32].copy_from_slice(&(extra.len() as u64).to_le_bytes());
            head[32..32 + extra.len()].copy_from_slice(extra);
            self.bytes.extend_from_slice(&head);
            self.count += 1;
        }

        /// A write of `data` (whole sectors) at byte `offset`.
        pub fn write(&mut self, offset: u64, data: &[u8]) -> &mut Self {
            assert!(offset.is_multiple_of(SECTOR) && (data.len() as u64).is_multiple_of(SECTOR));
            self.header(offset / SECTOR, data.len() as u64 / SECTOR, 0, &[]);
            self.bytes.extend_from_slice(data);
            self
        }

        pub fn flush(&mut self) -> &mut Self {
            self.header(0, 0, FLUSH, &[]);
            self.super_block(self.count);
            self
        }

        pub fn discard(&mut self, offset: u64, len: u64) -> &mut Self {
            self.header(offset / SECTOR, len / SECTOR, DISCARD, &[]);
            self
        }

        pub fn mark(&mut self, name: &str) -> &mut Self {
            self.header(0, 0, MARK, name.as_bytes());
            self
        }

        /// Writes the superblock counting `count` entries.
        pub fn super_block(&mut self, count: u64) -> &mut Self {
            self.bytes[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            self.bytes[8..16].copy_from_slice(&VERSION.to_le_bytes());
            self.bytes[16..24].copy_from_slice(&count.to_le_bytes());
            self.bytes[24..28].copy_from_slice(&(SECTOR as u32).to_le_bytes());
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::craft::{Crafted, SECTOR};
    use super::*;

    /// The log read from a file holding `bytes` (open, it outlives the
    /// file's directory).
    fn parsed(bytes: &[u8]) -> Result<Log> {
        let dir = ramstick_testkit::TempDir::new("wlog");
        let path = dir.join("write.log");
        std::fs::write(&path, bytes).unwrap();
        Log::open(&path)
    }

    #[test]
    fn reads_writes_flushes_discards_and_marks_in_order() {
        let mut c = Crafted::new();
        let a = vec![0xaa; 1024];
        let b = vec![0xbb; 512];
        c.write(4096, &a)
            .discard(1 << 20, 8192)
            .mark("before-b")
            .write(512, &b)
            .flush();
        let log = parsed(&c.bytes).unwrap();
        assert_eq!((log.sector_size, log.counted), (SECTOR, 5));
        let e = &log.entries;
        assert_eq!(e.len(), 5);
        assert_eq!((e[0].offset, e[0].len, e[0].flags), (4096, 1024, 0));
        assert!(e[0].is_write() && !e[0].is_barrier());
        assert!(e[1].is_discard() && !e[1].is_write() && e[1].len == 8192);
        assert_eq!(e[2].mark.as_deref(), Some("before-b"));
        assert!(!e[2].is_write());
        assert_eq!((e[3].offset, e[3].len), (512, 512));
        assert!(e[4].is_barrier() && !e[4].is_write());
        let mut buf = vec![0u8; 1024];
        log.read_data(e[0].data, &mut buf).unwrap();
        assert_eq!(buf, a);
        let mut buf = vec![0u8; 512];
        log.read_data(e[3].data, &mut buf).unwrap();
        assert_eq!(buf, b);
    }

    #[test]
    fn entries_after_the_counted_ones_are_read_until_a_blank_or_cut_sector() {
        let mut c = Crafted::new();
        c.write(0, &[1; 512]).flush().write(1024, &[2; 1024]);
        // Counted: 2; the third entry is whole but not counted yet.
        let log = parsed(&c.bytes).unwrap();
        assert_eq!((log.counted, log.entries.len()), (2, 3));
        // A blank sector after it ends the log.
        let mut blank = c.bytes.clone();
        blank.extend_from_slice(&[0; 512]);
        assert_eq!(parsed(&blank).unwrap().entries.len(), 3);
        // An uncounted entry cut short is not read.
        let cut = &c.bytes[..c.bytes.len() - 512];
        assert_eq!(parsed(cut).unwrap().entries.len(), 2);
    }

    #[test]
    fn damage_within_the_counted_entries_is_an_error() {
        let mut c = Crafted::new();
        c.write(0, &[1; 512]).write(512, &[2; 512]).flush();
        assert!(parsed(&c.bytes[..c.bytes.len() - 512]).is_err(), "cut");
        let mut flags = c.bytes.clone();
        flags[512 + 16] = 0x40;
        let err = parsed(&flags).unwrap_err();
        assert!(format!("{err:#}").contains("unknown flags"), "{err:#}");
        let mut magic = c.bytes.clone();
        magic[0] ^= 1;
        assert!(format!("{:#}", parsed(&magic).unwrap_err()).contains("magic"));
        let mut version = c.bytes.clone();
        version[8] = 2;
        assert!(parsed(&version).is_err());
        let mut size = c.bytes.clone();
        size[24..28].copy_from_slice(&500u32.to_le_bytes());
        assert!(format!("{:#}", parsed(&size).unwrap_err()).contains("sector size"));
        assert!(parsed(&[0; 10]).is_err(), "no superblock");
        let mut long = c.bytes.clone();
        long[512 + 8..512 + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(format!("{:#}", parsed(&long).unwrap_err()).contains("past the end"));
    }

    #[test]
    fn a_log_without_a_flush_has_no_superblock() {
        let mut c = Crafted::new();
        c.write(0, &[1; 512]);
        let err = parsed(&c.bytes).unwrap_err();
        assert!(format!("{err:#}").contains("magic"), "{err:#}");
    }
}

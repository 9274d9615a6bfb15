//! A tiny `blkid`: identify filesystems and GPT partitions from on-disk bytes.
//!
//! Everything here is pure over [`Read`] + [`Seek`], so init can use it on a
//! block device and tests on byte fixtures or image files. Only what the boot
//! needs is recognised: ext2/3/4, LUKS1/2, FAT12/16/32 and squashfs
//! superblocks, and the GPT partition table (PARTUUID and PARTLABEL, which the
//! kernel does not export in sysfs).
//!
//! Known simplifications against util-linux `blkid`: one signature wins (no
//! "ambivalent" detection; the checks run LUKS, squashfs, FAT, ext in that
//! order), the FAT label comes from the boot sector (not the root directory
//! entry), and MBR partition tables are not read (no MBR PARTUUIDs).

use crate::cmdline::DeviceSpec;
use std::io::{self, Read, Seek, SeekFrom};

/// A filesystem (or container) type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (the ext4 driver mounts all three).
    Ext4,
    /// A LUKS1 or LUKS2 encrypted container.
    Luks,
    /// FAT12, FAT16 or FAT32.
    Vfat,
    Squashfs,
}

impl FsKind {
    /// The `blkid` TYPE name, which is also the `mount` type for filesystems.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Luks => "crypto_LUKS",
            FsKind::Vfat => "vfat",
            FsKind::Squashfs => "squashfs",
        }
    }
}

/// What a superblock says about a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: FsKind,
    /// Lowercase canonical `8-4-4-4-12` for ext and LUKS; `XXXX-XXXX` (upper
    /// case, as `blkid` prints it) for FAT. `None` when absent or all zero.
    pub uuid: Option<String>,
    /// `None` when absent or empty.
    pub label: Option<String>,
}

/// One used GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPart {
    /// The kernel's partition number: entry index + 1.
    pub number: u32,
    /// Unique partition GUID, lowercase canonical.
    pub partuuid: String,
    /// Partition name (may be empty).
    pub partlabel: String,
}

/// Everything a block device can be matched on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The device node, e.g. `/dev/vda2`.
    pub path: String,
    pub fs: Option<FsInfo>,
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
}

/// Whether the device `id` is the one `spec` asks for: LABEL and PARTLABEL
/// compare exactly, UUID and PARTUUID ignoring ASCII case, a path exactly.
pub fn matches(spec: &DeviceSpec, id: &Identity) -> bool {
    let fs = id.fs.as_ref();
    match spec {
        DeviceSpec::Label(label) => fs.and_then(|f| f.label.as_ref()) == Some(label),
        DeviceSpec::Uuid(uuid) => fs
            .and_then(|f| f.uuid.as_ref())
            .is_some_and(|u| u.eq_ignore_ascii_case(uuid)),
        DeviceSpec::PartUuid(uuid) => id
            .partuuid
            .as_ref()
            .is_some_and(|u| u.eq_ignore_ascii_case(uuid)),
        DeviceSpec::PartLabel(label) => id.partlabel.as_ref() == Some(label),
        DeviceSpec::Path(path) => &id.path == path,
    }
}

/// How many bytes from the start of a device [`probe`] looks at: enough for
/// the ext superblock (1024..2048) and every header at offset 0.
const PROBE_LEN: usize = 4096;

/// Identifies the filesystem at the start of `r`.
///
/// `Ok(None)` means no known signature (including a device shorter than the
/// signature's offset). Errors are only I/O errors from `r`.
pub fn probe<R: Read + Seek>(r: &mut R) -> io::Result<Option<FsInfo>> {
    let mut buf = [0u8; PROBE_LEN];
    read_at(r, 0, &mut buf)?;
    Ok(probe_luks(&buf)
        .or_else(|| probe_squashfs(&buf))
        .or_else(|| probe_vfat(&buf))
        .or_else(|| probe_ext(&buf)))
}

/// Reads into `buf` from `offset` until it is full or the input ends; the
/// rest of `buf` is left as it was. Returns the number of bytes read.
fn read_at<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    r.seek(SeekFrom::Start(offset))?;
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Text up to the first NUL, `None` when empty.
fn nul_terminated(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let text = String::from_utf8_lossy(&b[..end]).into_owned();
    (!text.is_empty()).then_some(text)
}

/// 16 bytes in order as a lowercase `8-4-4-4-12` UUID; `None` when all zero.
fn uuid_text(b: &[u8]) -> Option<String> {
    if b.iter().all(|&c| c == 0) {
        return None;
    }
    let hex =
        |r: std::ops::Range<usize>| -> String { b[r].iter().map(|c| format!("{c:02x}")).collect() };
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    ))
}

/// A GUID as stored on disk (first three fields little-endian) as lowercase
/// canonical text. All-zero GUIDs give the all-zero text.
fn guid_text(b: &[u8]) -> String {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[..16]);
    x[0..4].reverse();
    x[4..6].reverse();
    x[6..8].reverse();
    uuid_text(&x).unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".to_string())
}

/// ext2/3/4: superblock at 1024, magic 0xEF53 at +56, UUID at +104, label at +120.
fn probe_ext(buf: &[u8]) -> Option<FsInfo> {
    const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
    let sb = &buf[1024..2048];
    if le16(sb, 56) != 0xEF53 || le32(sb, 96) & INCOMPAT_JOURNAL_DEV != 0 {
        return None;
    }
    Some(FsInfo {
        kind: FsKind::Ext4,
        uuid: uuid_text(&sb[104..120]),
        label: nul_terminated(&sb[120..136]),
    })
}

/// LUKS1/2: magic `LUKS\xba\xbe` at 0, UUID text at 168, LUKS2 label at 24.
fn probe_luks(buf: &[u8]) -> Option<FsInfo> {
    if &buf[0..6] != b"LUKS\xba\xbe" {
        return None;
    }
    let version = u16::from_be_bytes([buf[6], buf[7]]);
    Some(FsInfo {
        kind: FsKind::Luks,
        uuid: nul_terminated(&buf[168..208]).map(|u| u.to_ascii_lowercase()),
        label: if version == 2 {
            nul_terminated(&buf[24..72])
        } else {
            None
        },
    })
}

/// squashfs: magic `hsqs` at 0 (no UUID or label).
fn probe_squashfs(buf: &[u8]) -> Option<FsInfo> {
    (&buf[0..4] == b"hsqs").then_some(FsInfo {
        kind: FsKind::Squashfs,
        uuid: None,
        label: None,
    })
}

/// FAT: boot sector signature 0x55AA at 510, a sane BPB, and the file system
/// type text `FAT32   ` at 82 (FAT32) or `FAT` at 54 (FAT12/16). The extended
/// boot signature (0x29: serial and label, 0x28: serial only) precedes the
/// volume serial and label.
fn probe_vfat(buf: &[u8]) -> Option<FsInfo> {
    let bytes_per_sector = le16(buf, 11);
    let sectors_per_cluster = buf[13];
    let sane_bpb = matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && buf[16] > 0;
    if buf[510..512] != [0x55, 0xAA] || !sane_bpb {
        return None;
    }
    let ext_bpb = if &buf[82..90] == b"FAT32   " {
        64
    } else if &buf[54..57] == b"FAT" {
        36
    } else {
        return None;
    };
    // Relative to ext_bpb: +2 signature, +3 serial (4 bytes), +7 label (11 bytes).
    let signature = buf[ext_bpb + 2];
    let serial = le32(buf, ext_bpb + 3);
    let uuid = matches!(signature, 0x28 | 0x29)
        .then(|| format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF));
    let label = if signature == 0x29 {
        let raw = String::from_utf8_lossy(&buf[ext_bpb + 7..ext_bpb + 18]).into_owned();
        let trimmed = raw.trim_end_matches([' ', '\0']);
        (!trimmed.is_empty() && trimmed != "NO NAME").then(|| trimmed.to_string())
    } else {
        None
    };
    Some(FsInfo {
        kind: FsKind::Vfat,
        uuid,
        label,
    })
}

/// The CRC-32 (IEEE 802.3, as GPT uses) of `data`.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// An upper bound on the entry array, against corrupt headers (the usual array is 16 KiB).
const MAX_ENTRIES_BYTES: u64 = 1 << 20;

/// A GPT partition entry array and the size of one entry.
struct GptEntries {
    bytes: Vec<u8>,
    entry_size: usize,
}

/// Reads the GPT whose header is at `lba` and checks it like the kernel:
/// signature, header size, header CRC, the header's own LBA, entry geometry
/// and the entry array CRC. `None` when any check fails.
fn read_gpt<R: Read + Seek>(
    disk: &mut R,
    lba: u64,
    sector_size: u64,
) -> io::Result<Option<GptEntries>> {
    let Some(offset) = lba.checked_mul(sector_size) else {
        return Ok(None);
    };
    // The caller checked sector_size <= 65536.
    let mut sector = vec![0u8; sector_size as usize];
    if read_at(disk, offset, &mut sector)? < sector.len() || &sector[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let header_size = le32(&sector, 12) as usize;
    if !(92..=sector.len()).contains(&header_size) || le64(&sector, 24) != lba {
        return Ok(None);
    }
    let stored_crc = le32(&sector, 16);
    sector[16..20].fill(0);
    if crc32(&sector[..header_size]) != stored_crc {
        return Ok(None);
    }

    let entries_lba = le64(&sector, 72);
    let entry_count = u64::from(le32(&sector, 80));
    let entry_size = u64::from(le32(&sector, 84));
    let array_bytes = entry_count * entry_size;
    if entry_size < 128 || entry_size % 8 != 0 || array_bytes > MAX_ENTRIES_BYTES {
        return Ok(None);
    }
    let Some(entries_offset) = entries_lba.checked_mul(sector_size) else {
        return Ok(None);
    };
    // Both bounded by MAX_ENTRIES_BYTES, so the conversions cannot truncate.
    let mut bytes = vec![0u8; array_bytes as usize];
    if read_at(disk, entries_offset, &mut bytes)? < bytes.len()
        || crc32(&bytes) != le32(&sector, 88)
    {
        return Ok(None);
    }
    Ok(Some(GptEntries {
        bytes,
        entry_size: entry_size as usize,
    }))
}

/// Whether the MBR sector holds a protective (or hybrid) entry of type 0xEE.
fn has_protective_mbr(mbr: &[u8]) -> bool {
    mbr[510..512] == [0x55, 0xAA] && (0..4).any(|i| mbr[446 + i * 16 + 4] == 0xEE)
}

/// The used partitions of a GPT disk, in entry order.
///
/// Like the kernel, this needs a protective MBR, takes the primary GPT at LBA
/// 1 and falls back to the backup GPT at the last LBA when the primary header
/// or entry array is invalid. A disk without a valid GPT gives an empty list.
/// `sector_size` is the logical block size (512 or 4096 usually; see
/// `/sys/block/<disk>/queue/logical_block_size`).
pub fn gpt_partitions<R: Read + Seek>(disk: &mut R, sector_size: u64) -> io::Result<Vec<GptPart>> {
    if !(512..=65536).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("sector size {sector_size} is not a power of two from 512 to 65536"),
        ));
    }
    let mut mbr = [0u8; 512];
    if read_at(disk, 0, &mut mbr)? < mbr.len() || !has_protective_mbr(&mbr) {
        return Ok(Vec::new());
    }
    let mut table = read_gpt(disk, 1, sector_size)?;
    if table.is_none() {
        let disk_len = disk.seek(SeekFrom::End(0))?;
        if let Some(last_lba) = (disk_len / sector_size).checked_sub(1).filter(|&l| l > 1) {
            table = read_gpt(disk, last_lba, sector_size)?;
        }
    }
    let Some(table) = table else {
        return Ok(Vec::new());
    };

    let mut parts = Vec::new();
    for (index, entry) in table.bytes.chunks_exact(table.entry_size).enumerate() {
        if entry[0..16].iter().all(|&b| b == 0) {
            continue; // unused entry
        }
        let name: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&unit| unit != 0)
            .collect();
        parts.push(GptPart {
            number: u32::try_from(index + 1).unwrap_or(u32::MAX),
            partuuid: guid_text(&entry[16..32]),
            partlabel: String::from_utf16_lossy(&name),
        });
    }
    Ok(parts)
}

/// Test data for this crate's tests and other crates' (feature `testdata`).
#[cfg(any(test, feature = "testdata"))]
pub mod testdata {
    use super::crc32;

    /// A GPT disk of `sectors` sectors with the given (type GUID byte, unique
    /// GUID, name) entries, primary and backup headers.
    pub fn gpt_disk(sector: usize, sectors: usize, parts: &[(u8, [u8; 16], &str)]) -> Vec<u8> {
        let mut disk = vec![0u8; sector * sectors];
        // Protective MBR.
        disk[446 + 4] = 0xEE;
        disk[510] = 0x55;
        disk[511] = 0xAA;
        let entry_count = 128usize;
        let mut entries = vec![0u8; entry_count * 128];
        for (i, (type_byte, guid, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0] = *type_byte;
            e[16..32].copy_from_slice(guid);
            for (j, unit) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        let entries_crc = crc32(&entries);
        let last = (sectors - 1) as u64;
        let entry_sectors = entries.len() / sector;
        let put_header = |disk: &mut Vec<u8>, my_lba: u64, alt_lba: u64, entries_lba: u64| {
            let mut h = vec![0u8; 92];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my_lba.to_le_bytes());
            h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&(entry_count as u32).to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
            let crc = crc32(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            let at = my_lba as usize * sector;
            disk[at..at + 92].copy_from_slice(&h);
            let at = entries_lba as usize * sector;
            disk[at..at + entries.len()].copy_from_slice(&entries);
        };
        put_header(&mut disk, 1, last, 2);
        put_header(&mut disk, last, 1, last - entry_sectors as u64);
        disk
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::gpt_disk;
    use super::*;
    use std::io::Cursor;

    fn probe_bytes(bytes: Vec<u8>) -> Option<FsInfo> {
        probe(&mut Cursor::new(bytes)).expect("probe of in-memory bytes")
    }

    fn ext_image(uuid: [u8; 16], label: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 8192];
        img[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[1024 + 104..1024 + 120].copy_from_slice(&uuid);
        img[1024 + 120..1024 + 120 + label.len()].copy_from_slice(label);
        img
    }

    const UUID: [u8; 16] = [
        0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67,
        0x89,
    ];

    #[test]
    fn ext_superblock() {
        let info = probe_bytes(ext_image(UUID, b"RAMSTICK")).expect("ext found");
        assert_eq!(
            info,
            FsInfo {
                kind: FsKind::Ext4,
                uuid: Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
                label: Some("RAMSTICK".into()),
            }
        );
        // A label using all 16 bytes has no NUL.
        let info = probe_bytes(ext_image(UUID, b"0123456789abcdef")).expect("ext found");
        assert_eq!(info.label.as_deref(), Some("0123456789abcdef"));
        let info = probe_bytes(ext_image([0; 16], b"")).expect("ext found");
        assert_eq!((info.uuid, info.label), (None, None));
        // An external journal device is not a filesystem.
        let mut journal = ext_image(UUID, b"J");
        journal[1024 + 96] = 0x08;
        assert_eq!(probe_bytes(journal), None);
    }

    #[test]
    fn nothing_known_and_short_devices() {
        assert_eq!(probe_bytes(vec![0; 8192]), None);
        assert_eq!(probe_bytes(vec![]), None);
        // The ext magic beyond the end of a short device is not seen.
        assert_eq!(probe_bytes(ext_image(UUID, b"X")[..1070].to_vec()), None);
    }

    #[test]
    fn luks_headers() {
        let mut img = vec![0u8; 4096];
        img[0..6].copy_from_slice(b"LUKS\xba\xbe");
        img[6..8].copy_from_slice(&2u16.to_be_bytes());
        img[24..30].copy_from_slice(b"secret");
        img[168..204].copy_from_slice(b"12345678-9ABC-DEF0-1234-56789ABCDEF0");
        let info = probe_bytes(img.clone()).expect("luks found");
        assert_eq!(
            info,
            FsInfo {
                kind: FsKind::Luks,
                uuid: Some("12345678-9abc-def0-1234-56789abcdef0".into()),
                label: Some("secret".into()),
            }
        );
        // LUKS1 has no label field (offset 24 is the cipher mode there).
        img[6..8].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(probe_bytes(img).expect("luks found").label, None);
    }

    #[test]
    fn squashfs_magic() {
        let mut img = vec![0u8; 4096];
        img[0..4].copy_from_slice(b"hsqs");
        let info = probe_bytes(img).expect("squashfs found");
        assert_eq!(info.kind, FsKind::Squashfs);
        assert_eq!((info.uuid, info.label), (None, None));
    }

    fn fat_boot_sector(fat32: bool, signature: u8, label: &[u8; 11]) -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        img[11..13].copy_from_slice(&512u16.to_le_bytes());
        img[13] = 4;
        img[16] = 2;
        let ext = if fat32 { 64 } else { 36 };
        img[ext + 2] = signature;
        img[ext + 3..ext + 7].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        img[ext + 7..ext + 18].copy_from_slice(label);
        if fat32 {
            img[82..90].copy_from_slice(b"FAT32   ");
        } else {
            img[54..62].copy_from_slice(b"FAT16   ");
        }
        img[510] = 0x55;
        img[511] = 0xAA;
        img
    }

    #[test]
    fn fat_boot_sectors() {
        for fat32 in [true, false] {
            let info = probe_bytes(fat_boot_sector(fat32, 0x29, b"ESP        ")).expect("fat");
            assert_eq!(
                info,
                FsInfo {
                    kind: FsKind::Vfat,
                    uuid: Some("1234-ABCD".into()),
                    label: Some("ESP".into()),
                },
                "fat32={fat32}"
            );
            let info = probe_bytes(fat_boot_sector(fat32, 0x29, b"NO NAME    ")).expect("fat");
            assert_eq!(info.label, None);
            let info = probe_bytes(fat_boot_sector(fat32, 0x28, b"IGNORED    ")).expect("fat");
            assert_eq!(
                (info.uuid.as_deref(), info.label),
                (Some("1234-ABCD"), None)
            );
            let info = probe_bytes(fat_boot_sector(fat32, 0, b"IGNORED    ")).expect("fat");
            assert_eq!((info.uuid, info.label), (None, None));
        }
        // An MBR (signature but no BPB) is not FAT.
        let mut mbr = vec![0u8; 4096];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(probe_bytes(mbr), None);
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    const GUID_ON_DISK: [u8; 16] = [
        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];

    fn parts_of(disk: Vec<u8>, sector: u64) -> Vec<GptPart> {
        gpt_partitions(&mut Cursor::new(disk), sector).expect("gpt read")
    }

    #[test]
    fn gpt_entries_with_mixed_endian_guids_and_utf16_names() {
        let mut guid2 = GUID_ON_DISK;
        guid2[15] = 0x01;
        let disk = gpt_disk(
            512,
            100,
            &[
                (1, GUID_ON_DISK, "EFI system"),
                (0, [9; 16], ""),
                (2, guid2, "RAMSTICK \u{e9}"),
            ],
        );
        let expected = vec![
            GptPart {
                number: 1,
                partuuid: "00112233-4455-6677-8899-aabbccddeeff".into(),
                partlabel: "EFI system".into(),
            },
            GptPart {
                number: 3,
                partuuid: "00112233-4455-6677-8899-aabbccddee01".into(),
                partlabel: "RAMSTICK \u{e9}".into(),
            },
        ];
        assert_eq!(parts_of(disk.clone(), 512), expected);
        // A 4096-byte-sector disk is laid out in bigger sectors.
        let disk4k = gpt_disk(4096, 40, &[(1, GUID_ON_DISK, "EFI system")]);
        assert_eq!(parts_of(disk4k.clone(), 4096), expected[..1]);
        assert_eq!(parts_of(disk4k, 512), []);
        // A full 36-unit name has no terminating NUL.
        let long = "abcdefghijklmnopqrstuvwxyz0123456789";
        let disk = gpt_disk(512, 100, &[(1, GUID_ON_DISK, long)]);
        assert_eq!(parts_of(disk, 512)[0].partlabel, long);
    }

    #[test]
    fn gpt_backup_header_and_invalid_tables() {
        let good = gpt_disk(512, 100, &[(1, GUID_ON_DISK, "p")]);
        // Primary header CRC broken: the backup at the last LBA is used.
        let mut disk = good.clone();
        disk[512 + 40] ^= 1;
        assert_eq!(parts_of(disk.clone(), 512).len(), 1);
        // Both broken: nothing.
        disk[99 * 512 + 40] ^= 1;
        assert_eq!(parts_of(disk, 512), []);
        // Primary entry array corrupt: the primary is rejected, the backup used.
        let mut disk = good.clone();
        disk[2 * 512 + 100] ^= 1;
        assert_eq!(parts_of(disk, 512).len(), 1);
        // No protective MBR: not GPT (as for the kernel).
        let mut disk = good.clone();
        disk[446 + 4] = 0x83;
        assert_eq!(parts_of(disk, 512), []);
        // Too short, empty, or a bad sector size.
        assert_eq!(parts_of(good[..600].to_vec(), 512), []);
        assert_eq!(parts_of(Vec::new(), 512), []);
        assert!(gpt_partitions(&mut Cursor::new(good), 1000).is_err());
    }

    #[test]
    fn device_specs_match_identities() {
        let id = Identity {
            path: "/dev/vda2".into(),
            fs: Some(FsInfo {
                kind: FsKind::Ext4,
                uuid: Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
                label: Some("RAMSTICK".into()),
            }),
            partuuid: Some("00112233-4455-6677-8899-aabbccddeeff".into()),
            partlabel: Some("data".into()),
        };
        let yes = [
            DeviceSpec::Label("RAMSTICK".into()),
            DeviceSpec::Uuid("0A1B2C3D-4E5F-6789-ABCD-EF0123456789".into()),
            DeviceSpec::PartUuid("00112233-4455-6677-8899-AABBCCDDEEFF".into()),
            DeviceSpec::PartLabel("data".into()),
            DeviceSpec::Path("/dev/vda2".into()),
        ];
        for spec in &yes {
            assert!(matches(spec, &id), "{spec}");
        }
        let no = [
            DeviceSpec::Label("ramstick".into()),
            DeviceSpec::Uuid("0a1b2c3d".into()),
            DeviceSpec::PartUuid("00112233-4455-6677-8899-aabbccddeef0".into()),
            DeviceSpec::PartLabel("Data".into()),
            DeviceSpec::Path("/dev/vda".into()),
        ];
        for spec in &no {
            assert!(!matches(spec, &id), "{spec}");
        }
        let bare = Identity {
            path: "/dev/sda".into(),
            ..Identity::default()
        };
        for spec in yes.iter().take(4) {
            assert!(!matches(spec, &bare), "{spec}");
        }
    }
}

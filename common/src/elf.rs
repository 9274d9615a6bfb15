//! Just enough of the ELF format (64-bit little-endian, as on x86-64) to
//! tell how a program is loaded: its program interpreter (`PT_INTERP`, the
//! dynamic loader), the libraries it needs (`DT_NEEDED`) and where it looks
//! for them first (`DT_RUNPATH`). xtask uses it to check that init and the
//! saver are static and to collect the unlock program's libraries; init uses
//! it to check, before it frees the initramfs, that the real init's loader
//! exists in the new root, and to read the real init's libraries ahead.

/// Where the dynamic loader looks for a library after the object's own
/// search path ([`search_path`]), in order: Debian's multiarch directories,
/// then the usual ones (Alpine's musl: /lib, /usr/lib).
pub const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Why bytes could not be read as an ELF file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("no ELF magic")]
    NotElf,
    #[error("not a 64-bit little-endian ELF")]
    Not64Le,
    #[error("truncated ELF headers")]
    Truncated,
    #[error("DT_NEEDED or DT_RUNPATH entries without a DT_STRTAB")]
    NoStrtab,
    #[error("DT_STRTAB is outside every PT_LOAD segment")]
    StrtabOutside,
}

type Result<T> = std::result::Result<T, ElfError>;

/// Whether `b` starts with the ELF magic.
pub fn is_elf(b: &[u8]) -> bool {
    b.starts_with(b"\x7fELF")
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
/// `p_flags`: the segment is executable.
const PF_X: u32 = 1;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// `N` bytes at `off`, or `None` past the end (overflow-safe).
fn field<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..)?.get(..N)?.try_into().ok()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    field(b, off).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    field(b, off).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    field(b, off).map(u64::from_le_bytes)
}

fn usize_at(b: &[u8], off: usize) -> Option<usize> {
    usize::try_from(u64_at(b, off)?).ok()
}

fn truncated() -> ElfError {
    ElfError::Truncated
}

/// One program header.
struct Segment {
    p_type: u32,
    p_flags: u32,
    offset: usize,
    vaddr: u64,
    /// Size in the file.
    size: usize,
}

impl Segment {
    fn bytes<'a>(&self, b: &'a [u8]) -> Result<&'a [u8]> {
        let end = self.offset.checked_add(self.size).ok_or_else(truncated)?;
        b.get(self.offset..end).ok_or_else(truncated)
    }
}

/// The program headers of a 64-bit little-endian ELF file.
fn segments(b: &[u8]) -> Result<Vec<Segment>> {
    if !is_elf(b) {
        return Err(ElfError::NotElf);
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err(ElfError::Not64Le);
    }
    let phoff = usize_at(b, 0x20).ok_or_else(truncated)?;
    let phentsize = usize::from(u16_at(b, 0x36).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(b, 0x38).ok_or_else(truncated)?);
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = i
            .checked_mul(phentsize)
            .and_then(|x| x.checked_add(phoff))
            .ok_or_else(truncated)?;
        // Reading p_type proves `ph` is inside `b`, so `ph + 0x20` cannot overflow.
        out.push(Segment {
            p_type: u32_at(b, ph).ok_or_else(truncated)?,
            p_flags: u32_at(b, ph + 4).ok_or_else(truncated)?,
            offset: usize_at(b, ph + 8).ok_or_else(truncated)?,
            vaddr: u64_at(b, ph + 0x10).ok_or_else(truncated)?,
            size: usize_at(b, ph + 0x20).ok_or_else(truncated)?,
        });
    }
    Ok(out)
}

/// The file ranges of the segments the dynamic loader maps that are not
/// code (`PT_LOAD` without `PF_X`): what it reads while it links (symbol
/// tables, relocations, data), where code is paged in as it runs. Needs
/// only the ELF header and the program headers in `b`.
pub fn data_ranges(b: &[u8]) -> Result<Vec<std::ops::Range<usize>>> {
    segments(b)?
        .iter()
        .filter(|s| s.p_type == PT_LOAD && s.p_flags & PF_X == 0)
        .map(|s| {
            let end = s.offset.checked_add(s.size).ok_or_else(truncated)?;
            Ok(s.offset..end)
        })
        .collect()
}

/// The `(tag, value)` entries of the dynamic section, up to `DT_NULL`.
fn dynamic_entries(b: &[u8], segs: &[Segment]) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for seg in segs.iter().filter(|s| s.p_type == PT_DYNAMIC) {
        let bytes = seg.bytes(b)?;
        for entry in bytes.chunks(16) {
            let tag = u64_at(entry, 0).ok_or_else(truncated)?;
            if tag == DT_NULL {
                break;
            }
            out.push((tag, u64_at(entry, 8).ok_or_else(truncated)?));
        }
    }
    Ok(out)
}

/// The program interpreter (dynamic loader) path, if any.
pub fn interpreter(b: &[u8]) -> Result<Option<String>> {
    let segs = segments(b)?;
    let Some(seg) = segs.iter().find(|s| s.p_type == PT_INTERP) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(seg.bytes(b)?);
    Ok(Some(text.trim_end_matches('\0').to_string()))
}

/// Why a 64-bit little-endian ELF file would need a dynamic loader: its
/// `PT_INTERP` and each `DT_NEEDED` entry. Empty means static.
pub fn dynamic_reasons(b: &[u8]) -> Result<Vec<String>> {
    let mut reasons = Vec::new();
    if let Some(interp) = interpreter(b)? {
        reasons.push(format!("PT_INTERP {interp}"));
    }
    let needed = dynamic_entries(b, &segments(b)?)?
        .iter()
        .filter(|(tag, _)| *tag == DT_NEEDED)
        .count();
    reasons.extend(std::iter::repeat_n("DT_NEEDED entry".to_string(), needed));
    Ok(reasons)
}

/// The `DT_NEEDED` library names (sonames) of an ELF file, in order.
pub fn needed_libraries(b: &[u8]) -> Result<Vec<String>> {
    dynamic_strings(b, DT_NEEDED)
}

/// The directories of an ELF file's own library search path, in order:
/// `DT_RUNPATH`, or the older `DT_RPATH` when it has none (entries are
/// `:`-separated; `$ORIGIN` is left for the caller to expand).
pub fn search_path(b: &[u8]) -> Result<Vec<String>> {
    let mut path = dynamic_strings(b, DT_RUNPATH)?;
    if path.is_empty() {
        path = dynamic_strings(b, DT_RPATH)?;
    }
    Ok(path
        .iter()
        .flat_map(|p| p.split(':'))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect())
}

/// The strings of the dynamic entries tagged `tag`, in order. The names are
/// in the string table `DT_STRTAB` points to, a virtual address mapped to
/// the file through the `PT_LOAD` segment holding it.
fn dynamic_strings(b: &[u8], tag: u64) -> Result<Vec<String>> {
    let segs = segments(b)?;
    let entries = dynamic_entries(b, &segs)?;
    let offsets: Vec<u64> = entries
        .iter()
        .filter(|(t, _)| *t == tag)
        .map(|(_, v)| *v)
        .collect();
    if offsets.is_empty() {
        return Ok(Vec::new());
    }
    let strtab = entries
        .iter()
        .find(|(tag, _)| *tag == DT_STRTAB)
        .map(|(_, v)| *v)
        .ok_or(ElfError::NoStrtab)?;
    let load = segs
        .iter()
        .find(|s| s.p_type == PT_LOAD && s.vaddr <= strtab && strtab - s.vaddr < s.size as u64)
        .ok_or(ElfError::StrtabOutside)?;
    let table = &load.bytes(b)?[usize::try_from(strtab - load.vaddr).map_err(|_| truncated())?..];
    offsets
        .iter()
        .map(|&off| {
            let name = table
                .get(usize::try_from(off).map_err(|_| truncated())?..)
                .ok_or_else(truncated)?;
            let end = name.iter().position(|&c| c == 0).ok_or_else(truncated)?;
            Ok(String::from_utf8_lossy(&name[..end]).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with program headers `phs` = (type, content).
    fn elf(phs: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(phs.len() as u16).to_le_bytes());
        let mut data_off = 64 + 56 * phs.len();
        let mut data: Vec<u8> = Vec::new();
        for (ty, content) in phs {
            let mut ph = vec![0u8; 56];
            ph[0..4].copy_from_slice(&ty.to_le_bytes());
            ph[8..16].copy_from_slice(&(data_off as u64).to_le_bytes());
            ph[0x20..0x28].copy_from_slice(&(content.len() as u64).to_le_bytes());
            b.extend(ph);
            data.extend(content);
            data_off += content.len();
        }
        b.extend(data);
        b
    }

    fn dyn_entries(tags: &[u64]) -> Vec<u8> {
        tags.iter()
            .flat_map(|t| [t.to_le_bytes(), 0u64.to_le_bytes()].concat())
            .collect()
    }

    #[test]
    fn static_and_static_pie_pass() {
        assert!(dynamic_reasons(&elf(&[(1, vec![0; 8])]))
            .unwrap()
            .is_empty());
        // static-pie: PT_DYNAMIC without DT_NEEDED.
        let pie = elf(&[(PT_DYNAMIC, dyn_entries(&[5, 6, DT_NULL, DT_NEEDED]))]);
        assert!(dynamic_reasons(&pie).unwrap().is_empty());
    }

    #[test]
    fn interp_and_needed_are_reported() {
        let dynamic = elf(&[
            (PT_INTERP, b"/lib64/ld-linux-x86-64.so.2\0".to_vec()),
            (PT_DYNAMIC, dyn_entries(&[DT_NEEDED, DT_NEEDED, DT_NULL])),
        ]);
        let reasons = dynamic_reasons(&dynamic).unwrap();
        assert_eq!(
            reasons,
            [
                "PT_INTERP /lib64/ld-linux-x86-64.so.2",
                "DT_NEEDED entry",
                "DT_NEEDED entry"
            ]
        );
    }

    #[test]
    fn needed_names_come_from_the_string_table() {
        // One PT_LOAD mapping file offset 0 at vaddr 0x1000, with the string
        // table at file offset 0x300 (vaddr 0x1300).
        let mut b = elf(&[
            (PT_LOAD, vec![]),
            (
                PT_DYNAMIC,
                dyn_entries(&[DT_NEEDED, DT_NEEDED, DT_STRTAB, DT_NULL]),
            ),
        ]);
        // Values of the dynamic entries: string offsets 1 and 11, table at 0x1300.
        let dyn_off = 64 + 2 * 56;
        b[dyn_off + 8..dyn_off + 16].copy_from_slice(&1u64.to_le_bytes());
        b[dyn_off + 24..dyn_off + 32].copy_from_slice(&11u64.to_le_bytes());
        b[dyn_off + 40..dyn_off + 48].copy_from_slice(&0x1300u64.to_le_bytes());
        b.resize(0x400, 0);
        b[0x300..0x315].copy_from_slice(b"\0libc.so.6\0libm.so.6\0");
        let load = 64;
        b[load + 8..load + 16].copy_from_slice(&0u64.to_le_bytes());
        b[load + 0x10..load + 0x18].copy_from_slice(&0x1000u64.to_le_bytes());
        b[load + 0x20..load + 0x28].copy_from_slice(&0x400u64.to_le_bytes());
        assert_eq!(needed_libraries(&b).unwrap(), ["libc.so.6", "libm.so.6"]);
        // A string table outside the loaded bytes is an error, not a guess.
        b[dyn_off + 40..dyn_off + 48].copy_from_slice(&0x9000u64.to_le_bytes());
        assert!(needed_libraries(&b).is_err());
        // Static: nothing needed.
        assert!(needed_libraries(&elf(&[(PT_LOAD, vec![0; 8])]))
            .unwrap()
            .is_empty());
    }

    /// An ELF whose dynamic entries are `tags` with values `values`, one
    /// PT_LOAD mapping file offset 0 at vaddr 0x1000 and `strings` as the
    /// string table at file offset 0x300 (vaddr 0x1300).
    fn with_strings(tags: &[u64], values: &[u64], strings: &[u8]) -> Vec<u8> {
        let mut b = elf(&[(PT_LOAD, vec![]), (PT_DYNAMIC, dyn_entries(tags))]);
        let dyn_off = 64 + 2 * 56;
        for (i, v) in values.iter().enumerate() {
            b[dyn_off + 16 * i + 8..dyn_off + 16 * i + 16].copy_from_slice(&v.to_le_bytes());
        }
        b.resize(0x400, 0);
        b[0x300..0x300 + strings.len()].copy_from_slice(strings);
        let load = 64;
        b[load + 8..load + 16].copy_from_slice(&0u64.to_le_bytes());
        b[load + 0x10..load + 0x18].copy_from_slice(&0x1000u64.to_le_bytes());
        b[load + 0x20..load + 0x28].copy_from_slice(&0x400u64.to_le_bytes());
        b
    }

    #[test]
    fn search_path_is_runpath_else_rpath_split_at_colons() {
        let strings = b"\0libc.so.6\0/opt/a:$ORIGIN/../lib\0/old\0";
        let runpath = with_strings(
            &[DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_STRTAB, DT_NULL],
            &[1, 33, 11, 0x1300],
            strings,
        );
        assert_eq!(search_path(&runpath).unwrap(), ["/opt/a", "$ORIGIN/../lib"]);
        assert_eq!(needed_libraries(&runpath).unwrap(), ["libc.so.6"]);
        let rpath = with_strings(&[DT_RPATH, DT_STRTAB, DT_NULL], &[33, 0x1300], strings);
        assert_eq!(search_path(&rpath).unwrap(), ["/old"]);
        let none = with_strings(&[DT_NEEDED, DT_STRTAB, DT_NULL], &[1, 0x1300], strings);
        assert!(search_path(&none).unwrap().is_empty());
    }

    #[test]
    fn data_ranges_leave_out_code() {
        let mut b = elf(&[
            (PT_LOAD, vec![1; 16]),
            (PT_LOAD, vec![2; 8]),
            (PT_INTERP, vec![]),
        ]);
        // The first PT_LOAD is code (R-X), the second data (RW-).
        let (first, second) = (64, 64 + 56);
        b[first + 4..first + 8].copy_from_slice(&5u32.to_le_bytes());
        b[second + 4..second + 8].copy_from_slice(&6u32.to_le_bytes());
        let data = 64 + 3 * 56 + 16;
        let ranges = data_ranges(&b).unwrap();
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0], data..data + 8);
        assert!(data_ranges(b"#!/bin/sh").is_err());
    }

    #[test]
    fn host_needed_libraries_match_ldd() {
        let path = std::path::Path::new("/bin/sh");
        let (Ok(bytes), Ok(out)) = (
            std::fs::read(path),
            std::process::Command::new("ldd").arg(path).output(),
        ) else {
            println!("skipped: no /bin/sh or ldd");
            return;
        };
        let ldd = String::from_utf8_lossy(&out.stdout).into_owned();
        let needed = needed_libraries(&bytes).unwrap();
        assert!(needed.iter().any(|n| n == "libc.so.6"), "{needed:?}");
        for name in &needed {
            assert!(
                ldd.contains(&format!("{name} => ")),
                "{name} not in ldd: {ldd}"
            );
        }
        let interp = interpreter(&bytes).unwrap().expect("dynamic /bin/sh");
        assert!(ldd.contains(&interp), "{interp} not in ldd: {ldd}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(dynamic_reasons(b"#!/bin/sh\n").is_err());
        let mut truncated = elf(&[(PT_INTERP, b"/x".to_vec())]);
        truncated.truncate(80);
        assert!(dynamic_reasons(&truncated).is_err());
    }
}

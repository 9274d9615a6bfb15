//! Builds the static musl `init` and `saver` binaries and checks that they
//! really are static (no `PT_INTERP`, no `DT_NEEDED`): the initramfs has no
//! dynamic loader and no libc.

use crate::deps;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Paths of the built static binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub init: PathBuf,
    pub saver: PathBuf,
}

/// `cargo build --release --target x86_64-unknown-linux-musl` of init and saver.
pub fn static_binaries() -> Result<Binaries> {
    deps::ensure_musl_target()?;
    // loopdev-3 (in init) generates its bindings with bindgen → libclang;
    // zstd-sys (the saver's codec) compiles C for musl → musl-gcc.
    deps::ensure_packages(&["libclang-dev", "musl-tools"])?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    deps::run(
        Command::new(cargo)
            .current_dir(crate::workspace_root())
            .args(["build", "--release", "--target", MUSL_TARGET])
            .args(["-p", "ramstick-init", "-p", "ramstick-saver"]),
    )?;
    let dir = crate::target_dir().join(MUSL_TARGET).join("release");
    let bins = Binaries {
        init: dir.join("init"),
        saver: dir.join("saver"),
    };
    check_static(&bins.init)?;
    check_static(&bins.saver)?;
    Ok(bins)
}

/// Fails unless `path` is a statically linked ELF executable.
pub fn check_static(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reasons = dynamic_reasons(&bytes)
        .with_context(|| format!("{} is not a valid ELF", path.display()))?;
    if !reasons.is_empty() {
        bail!("{} is not static: {}", path.display(), reasons.join(", "));
    }
    Ok(())
}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

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

/// Why a 64-bit little-endian ELF file would need a dynamic loader: its
/// `PT_INTERP` and each `DT_NEEDED` entry. Empty means static.
pub fn dynamic_reasons(b: &[u8]) -> Result<Vec<String>> {
    if b.get(0..4) != Some(b"\x7fELF".as_slice()) {
        bail!("no ELF magic");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF");
    }
    let truncated = || anyhow::anyhow!("truncated ELF headers");
    let phoff = usize_at(b, 0x20).ok_or_else(truncated)?;
    let phentsize = usize::from(u16_at(b, 0x36).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(b, 0x38).ok_or_else(truncated)?);
    let mut reasons = Vec::new();
    for i in 0..phnum {
        let ph = i
            .checked_mul(phentsize)
            .and_then(|x| x.checked_add(phoff))
            .ok_or_else(truncated)?;
        // Reading p_type proves `ph` is inside `b`, so `ph + 0x20` cannot overflow.
        let p_type = u32_at(b, ph).ok_or_else(truncated)?;
        let offset = usize_at(b, ph + 8).ok_or_else(truncated)?;
        let size = usize_at(b, ph + 0x20).ok_or_else(truncated)?;
        let end = offset.checked_add(size).ok_or_else(truncated)?;
        if p_type == PT_INTERP {
            let interp = b.get(offset..end).ok_or_else(truncated)?;
            let interp = String::from_utf8_lossy(interp);
            reasons.push(format!("PT_INTERP {}", interp.trim_end_matches('\0')));
        }
        if p_type == PT_DYNAMIC {
            for entry in (offset..end).step_by(16) {
                let tag = u64_at(b, entry).ok_or_else(truncated)?;
                if tag == DT_NULL {
                    break;
                }
                if tag == DT_NEEDED {
                    reasons.push("DT_NEEDED entry".to_string());
                }
            }
        }
    }
    Ok(reasons)
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
    fn garbage_is_an_error() {
        assert!(dynamic_reasons(b"#!/bin/sh\n").is_err());
        let mut truncated = elf(&[(PT_INTERP, b"/x".to_vec())]);
        truncated.truncate(80);
        assert!(dynamic_reasons(&truncated).is_err());
    }

    #[test]
    fn host_binaries() {
        // /bin/sh on Debian is dynamic; skip where it is not there.
        let Ok(sh) = std::fs::read("/bin/sh") else {
            println!("skipped: no /bin/sh");
            return;
        };
        assert!(!dynamic_reasons(&sh).unwrap().is_empty());
        assert!(check_static(Path::new("/bin/sh")).is_err());
    }
}

//! The encrypted persist partition: the ext4 image encrypted in place into
//! a LUKS2 container (argon2id key slots, label `RAMSTICK`) by `cryptsetup
//! reencrypt` in user space, no device-mapper and no root.

use super::layout::MIB;
use crate::deps;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// The default argon2id memory cost (KiB): small, so that unlocking in QEMU
/// without KVM takes about a second. A real stick should use more (README).
pub const LUKS_TEST_MEMORY_KIB: u32 = 16 * 1024;
/// The default argon2id time cost (passes), see [`LUKS_TEST_MEMORY_KIB`].
pub const LUKS_TEST_ITERATIONS: u32 = 4;
/// The room the LUKS2 header takes at the start of the partition.
pub(super) const LUKS_HEADER: u64 = 16 * MIB;

/// How to encrypt the persist partition.
#[derive(Debug, Clone)]
pub struct LuksSpec {
    /// The passphrase (without a trailing newline).
    pub passphrase_file: PathBuf,
    /// A second key slot opened by this file, which the initramfs carries.
    pub keyfile_in_initramfs: Option<PathBuf>,
    pub pbkdf_memory_kib: u32,
    /// `None`: `iterations` passes; `Some(ms)`: cryptsetup's benchmark.
    pub iter_time_ms: Option<u32>,
    pub iterations: u32,
    /// The glibc unlock program (see [`crate::build::unlock_binary`]).
    pub unlock: PathBuf,
}

/// Encrypts the ext4 image file `image` in place into a LUKS2 container of
/// `size` bytes (the file grows to it: the header takes the room the ext4
/// left free), with the label `RAMSTICK` that init's auto-detection matches.
pub(super) fn encrypt(image: &Path, size: u64, luks: &LuksSpec, work: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = fs::read(&luks.passphrase_file)
        .with_context(|| format!("cannot read {}", luks.passphrase_file.display()))?;
    let passphrase = strip_newline(&text);
    if passphrase.is_empty() {
        bail!(
            "the passphrase file {} is empty",
            luks.passphrase_file.display()
        );
    }
    // cryptsetup takes a key file byte for byte: write the passphrase as typed.
    let key = work.join("luks-passphrase");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| std::io::Write::write_all(&mut f, passphrase))
        .with_context(|| format!("cannot write {}", key.display()))?;
    File::options()
        .write(true)
        .open(image)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("cannot grow {}", image.display()))?;
    let cost = pbkdf_args(luks);
    let result = deps::run(
        deps::cmd("cryptsetup")
            .args(["reencrypt", "--encrypt", "--type", "luks2", "--batch-mode"])
            .args(["--reduce-device-size", &format!("{}M", LUKS_HEADER / MIB)])
            .args(["--label", "RAMSTICK", "--key-file"])
            .arg(&key)
            .args(&cost)
            .arg(image),
    )
    .and_then(|()| match &luks.keyfile_in_initramfs {
        None => Ok(()),
        Some(keyfile) => deps::run(
            deps::cmd("cryptsetup")
                .args(["luksAddKey", "--batch-mode", "--key-file"])
                .arg(&key)
                .args(&cost)
                .arg(image)
                .arg(keyfile),
        ),
    });
    fs::remove_file(&key).with_context(|| format!("cannot remove {}", key.display()))?;
    result.with_context(|| format!("cannot encrypt {}", image.display()))
}

/// `text` without one trailing `\n` or `\r\n`.
fn strip_newline(text: &[u8]) -> &[u8] {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.strip_suffix(b"\r").unwrap_or(text)
}

/// cryptsetup's key-slot cost options for `luks`.
fn pbkdf_args(luks: &LuksSpec) -> Vec<String> {
    let mut args = vec![
        "--pbkdf".to_string(),
        "argon2id".to_string(),
        "--pbkdf-memory".to_string(),
        luks.pbkdf_memory_kib.to_string(),
        "--pbkdf-parallel".to_string(),
        "1".to_string(),
    ];
    match luks.iter_time_ms {
        Some(ms) => args.extend(["--iter-time".to_string(), ms.to_string()]),
        None => args.extend([
            "--pbkdf-force-iterations".to_string(),
            luks.iterations.to_string(),
        ]),
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luks_options() {
        assert_eq!(strip_newline(b"secret\n"), b"secret");
        assert_eq!(strip_newline(b"secret\r\n"), b"secret");
        assert_eq!(strip_newline(b"secret\n\n"), b"secret\n");
        assert_eq!(strip_newline(b"secret"), b"secret");
        let mut luks = LuksSpec {
            passphrase_file: PathBuf::from("p"),
            keyfile_in_initramfs: None,
            pbkdf_memory_kib: 1024,
            iter_time_ms: None,
            iterations: 4,
            unlock: PathBuf::from("u"),
        };
        assert_eq!(
            pbkdf_args(&luks).join(" "),
            "--pbkdf argon2id --pbkdf-memory 1024 --pbkdf-parallel 1 --pbkdf-force-iterations 4"
        );
        luks.iter_time_ms = Some(2000);
        assert!(pbkdf_args(&luks)
            .join(" ")
            .ends_with("--pbkdf-parallel 1 --iter-time 2000"));
    }
}

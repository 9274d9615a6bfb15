//! Builds the static musl `init` and `saver` binaries and checks that they
//! really are static (no `PT_INTERP`, no `DT_NEEDED`): the initramfs has no
//! dynamic loader and no libc. Also builds the glibc `ramstick-unlock` for
//! LUKS images, whose shared libraries `ramstick_common::elf` reads from its
//! ELF dynamic section.

use crate::deps;
use anyhow::{bail, Context, Result};
pub use ramstick_common::elf::dynamic_reasons;
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

/// `cargo build --release -p ramstick-unlock` for the host (glibc) target:
/// libcryptsetup has no static library on Debian, so this one binary is
/// dynamically linked and the initramfs carries its libraries.
pub fn unlock_binary() -> Result<PathBuf> {
    // libcryptsetup-rs-sys: bindgen (libclang) over libcryptsetup.h.
    deps::ensure_packages(&["libclang-dev", "libcryptsetup-dev"])?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    deps::run(
        Command::new(cargo)
            .current_dir(crate::workspace_root())
            .args(["build", "--release", "-p", "ramstick-unlock"]),
    )?;
    let bin = crate::target_dir().join("release/ramstick-unlock");
    let bytes = std::fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))?;
    if dynamic_reasons(&bytes)?.is_empty() {
        bail!("{} is static: expected a glibc binary", bin.display());
    }
    Ok(bin)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries() {
        // /bin/sh (dash) on Debian is dynamic.
        let sh = Path::new(ramstick_testkit::SH.0);
        let Ok(bytes) = std::fs::read(sh) else {
            ramstick_testkit::skip("no /bin/sh");
            return;
        };
        assert!(!dynamic_reasons(&bytes).unwrap().is_empty());
        assert!(check_static(sh).is_err());
    }
}

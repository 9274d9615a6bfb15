//! The ESP: a FAT32 image holding a standalone GRUB (cached by its inputs)
//! that finds the ESP by its marker file and reads `grub/grub.cfg`, the menu
//! record that file is written from, the kernel and the initramfs.

use super::layout::{round_up_mib, MIB};
use super::unique_partial;
use crate::cache::Hasher;
use crate::deps;
use crate::kernel::Kernel;
use anyhow::{Context, Result};
use ramstick_common::bootmenu::{self, slots, Menu, ESP_LABEL};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// The smallest ESP (FAT32 needs ≥ 33 MiB; 64 leaves room for kernels).
const ESP_MIN: u64 = 64 * MIB;
const GRUB_STUB: &str = include_str!("../../../grub/stub.cfg");
const GRUB_MODULES: &str = "part_gpt fat ext2 search search_fs_file search_label regexp normal \
                            linux serial terminal echo test configfile all_video gfxterm loadenv";
pub(super) const GRUB_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Builds the FAT32 ESP image at `esp`; returns its size.
pub(crate) fn make_esp(
    esp: &Path,
    work: &Path,
    kernel: &Kernel,
    initrd: &Path,
    extra: &str,
) -> Result<u64> {
    let grub = grub_efi()?;
    let menu = Menu::new(&kernel.version, extra)?;
    let cfg = work.join("grub.cfg");
    fs::write(&cfg, menu.render()).with_context(|| format!("cannot write {}", cfg.display()))?;
    let record = work.join("ramstick-menu.json");
    fs::write(&record, menu.to_json())
        .with_context(|| format!("cannot write {}", record.display()))?;
    let id = work.join(bootmenu::ESP_ID);
    fs::write(&id, "ramstick ESP\n").with_context(|| format!("cannot write {}", id.display()))?;
    // GRUB's environment block: which slot boots (see bootmenu::slots).
    let grubenv = work.join("grubenv");
    fs::write(&grubenv, slots::initial_grubenv()?)
        .with_context(|| format!("cannot write {}", grubenv.display()))?;
    let on_esp = |name: &str| format!("::/{name}");
    let files: [(&Path, String); 7] = [
        (&grub, on_esp("EFI/BOOT/BOOTX64.EFI")),
        (&cfg, on_esp(bootmenu::GRUB_CFG)),
        (&record, on_esp(bootmenu::MENU_RECORD)),
        (&id, on_esp(bootmenu::ESP_ID)),
        (&grubenv, on_esp(slots::GRUBENV)),
        (&kernel.vmlinuz, on_esp(&bootmenu::vmlinuz(&kernel.version))),
        (initrd, on_esp(&bootmenu::initramfs(&kernel.version))),
    ];
    let mut content = 0;
    for (src, _) in &files {
        content += src
            .metadata()
            .with_context(|| format!("cannot stat {}", src.display()))?
            .len();
    }
    let size = ESP_MIN.max(round_up_mib(content * 5 / 4 + 16 * MIB));
    File::create(esp)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("cannot create {}", esp.display()))?;
    deps::run(
        deps::cmd("mkfs.vfat")
            .args(["-F", "32", "-n", ESP_LABEL])
            .arg(esp)
            .stdout(std::process::Stdio::null()),
    )?;
    deps::run(
        deps::cmd("mmd")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(esp)
            .args(["::/EFI", "::/EFI/BOOT", "::/grub"]),
    )?;
    for (src, dest) in files {
        deps::run(
            deps::cmd("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(esp)
                .arg(src)
                .arg(dest),
        )?;
    }
    Ok(size)
}

/// The standalone GRUB EFI binary with `grub/stub.cfg` embedded, cached in
/// `target/grub/` by a hash of its inputs (stub, modules, GRUB build).
fn grub_efi() -> Result<PathBuf> {
    let mut h = Hasher::default();
    h.str(GRUB_STUB);
    h.str(GRUB_MODULES);
    for file in ["kernel.img", "moddep.lst"] {
        h.file(&Path::new(GRUB_DIR).join(file))?;
    }
    let hash = h.finish();
    let dir = crate::target_dir().join("grub");
    let efi = dir.join(format!("bootx64-{hash:016x}.efi"));
    if efi.is_file() {
        return Ok(efi);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stub = dir.join(format!("stub-{}.cfg", std::process::id()));
    fs::write(&stub, GRUB_STUB).with_context(|| format!("cannot write {}", stub.display()))?;
    let partial = unique_partial(&efi);
    let result = deps::run(
        deps::cmd("grub-mkstandalone")
            .args(["-O", "x86_64-efi", "--locales=", "--themes=", "--fonts="])
            .arg(format!("--modules={GRUB_MODULES}"))
            .arg("-o")
            .arg(&partial)
            .arg(format!("boot/grub/grub.cfg={}", stub.display())),
    );
    // Best effort: a leftover stub file is harmless.
    let _ = fs::remove_file(&stub);
    result?;
    fs::rename(&partial, &efi)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), efi.display()))?;
    Ok(efi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_has_the_modules_of_the_slot_script() {
        let ours: Vec<&str> = GRUB_MODULES.split_whitespace().collect();
        for m in slots::GRUB_MODULES {
            assert!(ours.contains(m), "{m} is not in the standalone GRUB");
        }
    }
}

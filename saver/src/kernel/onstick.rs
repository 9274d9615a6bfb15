//! The real [`KernelFs`]: the modules image packed by our codec onto
//! /persist and read back, the initramfs built in RAM by `ramstick-initrd`
//! from init's kit (/run/ramstick/initramfs) and the new kernel's boot
//! modules, and the ESP files written under a temporary name, synced and
//! renamed.

use super::plan::{modules_image, KernelFs, Payload};
use crate::progress::Reporter;
use crate::space::{self, human};
use crate::stick::{say, sync_dir, sync_file};
use anyhow::{bail, Context, Result};
use ramstick_common::bootmenu::{Menu, GRUB_CFG, MENU_RECORD};
use ramstick_initrd::{Archive, Perms, UNLOCK_IN_ARCHIVE};
use ramstick_squash::{Compressor, Exclude, PackOptions};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// zstd level of a modules image: as the images `cargo xtask image` builds.
const MODULES_LEVEL: i32 = 9;
/// zstd level of an initramfs built on the stick: level 19 (xtask's, for
/// reproducible archives) takes 20 times longer for 10% less.
const INITRAMFS_LEVEL: i32 = 9;
/// Room left free on the ESP after a write.
const ESP_SLACK: u64 = 1 << 20;

/// The stick as a kernel hook sees it.
pub struct OnStick {
    /// /persist
    pub persist: PathBuf,
    /// The mounted ESP.
    pub esp: PathBuf,
    /// `/lib/modules`
    pub modules_root: PathBuf,
    /// init's copy of its initramfs.
    pub kit: PathBuf,
    /// The kernel image the package installed.
    pub image: PathBuf,
    /// The initramfs once built.
    pub initramfs: Option<Vec<u8>>,
}

impl OnStick {
    fn modules_dir(&self, kver: &str) -> PathBuf {
        self.modules_root.join(kver)
    }
}

impl KernelFs for OnStick {
    fn pack_modules(&mut self, kver: &str) -> Result<()> {
        let dir = self.modules_dir(kver);
        if !dir.join("modules.dep").is_file() {
            say(&format!("kernel {kver}: running depmod"));
            let status = std::process::Command::new("depmod")
                .arg(kver)
                .status()
                .context("cannot run depmod")?;
            if !status.success() || !dir.join("modules.dep").is_file() {
                bail!(
                    "{} has no modules.dep and depmod {kver} failed",
                    dir.display()
                );
            }
        }
        let image = self.persist.join(modules_image(kver));
        let tmp = temporary(&image);
        say(&format!(
            "kernel {kver}: packing {} into {}",
            dir.display(),
            image.display()
        ));
        let reporter = Reporter::new("packing the modules");
        let progress = |p: &ramstick_squash::Progress| reporter.report(p);
        let options = PackOptions {
            compressor: Compressor::Zstd(MODULES_LEVEL),
            progress: Some(&progress),
            ..PackOptions::default()
        };
        let written = ramstick_squash::pack(&dir, &tmp, &options)
            .with_context(|| format!("cannot pack {} into {}", dir.display(), tmp.display()))
            .and_then(|stats| {
                sync_file(&tmp)?;
                ramstick_squash::drop_cache(&tmp)?;
                let diffs = ramstick_squash::verify(&tmp, &dir, &Exclude::none())
                    .with_context(|| format!("cannot read back {}", tmp.display()))?;
                if let Some(first) = diffs.first() {
                    bail!("{} differs from {}: {first}", tmp.display(), dir.display());
                }
                Ok(stats)
            });
        let stats = match written {
            Ok(stats) => stats,
            Err(e) => {
                // Best effort: the error is the one to report.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &image)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), image.display()))?;
        sync_dir(&self.persist)?;
        say(&format!(
            "kernel {kver}: {} of modules in {} ({}), read back identical",
            human(stats.bytes_in),
            image.display(),
            human(stats.image_size)
        ));
        Ok(())
    }

    fn build_initramfs(&mut self, kver: &str) -> Result<()> {
        if !self.kit.join("init").is_file() {
            bail!(
                "{} has no init: this session was booted by an older ramstick; rebuild the \
                 stick with `cargo xtask image` to let kernel updates reach it",
                self.kit.display()
            );
        }
        let mut archive = Archive::new();
        archive.host_tree(&self.kit, "", Perms::Keep)?;
        // The booted initramfs was an encrypted stick's when it had the
        // unlock program: the new one carries the LUKS modules too.
        let luks = self.kit.join(UNLOCK_IN_ARCHIVE).is_file();
        for warning in archive.modules(&self.modules_dir(kver), kver, luks)? {
            say(&format!("kernel {kver}: {warning}"));
        }
        let bytes = archive.to_bytes(INITRAMFS_LEVEL, 0)?;
        say(&format!(
            "kernel {kver}: built its initramfs ({})",
            human(bytes.len() as u64)
        ));
        self.initramfs = Some(bytes);
        Ok(())
    }

    fn esp_write(&mut self, name: &str, payload: Payload) -> Result<()> {
        let bytes = match payload {
            Payload::Kernel => std::fs::read(&self.image)
                .with_context(|| format!("cannot read {}", self.image.display()))?,
            Payload::Initramfs => self
                .initramfs
                .clone()
                .context("the initramfs was not built")?,
        };
        let dest = self.esp.join(name);
        let replaced = dest.metadata().map_or(0, |m| m.len());
        let free = space::free(&self.esp)?;
        let needed = bytes.len() as u64 + ESP_SLACK;
        if free + replaced < needed {
            bail!(
                "the ESP has {} free and {name} needs {}: remove a kernel you do not use \
                 (apt-get remove linux-image-<version>)",
                human(free),
                human(needed)
            );
        }
        write_synced(&self.esp, name, &bytes)
    }

    fn write_record(&mut self, menu: &Menu) -> Result<()> {
        write_synced(&self.esp, MENU_RECORD, menu.to_json().as_bytes())
    }

    fn write_grub_cfg(&mut self, menu: &Menu) -> Result<()> {
        write_synced(&self.esp, GRUB_CFG, menu.render().as_bytes())
    }

    fn esp_remove(&mut self, name: &str) -> Result<()> {
        remove(&self.esp.join(name))
    }

    fn persist_remove(&mut self, name: &str) -> Result<()> {
        remove(&self.persist.join(name))?;
        sync_dir(&self.persist)
    }
}

/// Reads the ESP's menu record.
pub fn read_menu(esp: &Path) -> Result<Menu> {
    let path = esp.join(MENU_RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "the ESP has no /{MENU_RECORD}: it was made by an older `cargo xtask image`; \
             rebuild the stick to let kernel updates reach it"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Menu::from_json(&text).with_context(|| format!("in {}", path.display()))
}

/// `<path>.tmp`
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `rel` under `dir` as `<rel>.tmp`, syncs it, renames it into place
/// and syncs the directory.
fn write_synced(dir: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
    let dest = dir.join(rel);
    let tmp = temporary(&dest);
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .with_context(|| format!("cannot write {}", tmp.display()));
    if let Err(e) = written {
        // Best effort: the write error is the one to report.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))?;
    sync_dir(dest.parent().unwrap_or(dir))
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::plan::{plan_add, plan_remove, run};

    /// The real file operations on scratch directories standing in for
    /// /persist, the ESP, /lib/modules and the kit: an add, then a remove.
    #[test]
    fn a_kernel_added_then_removed_on_scratch_directories() {
        let base = ramstick_testkit::TempDir::new("saver-kernel");
        let kver = "6.2.0-test";
        let modules = base.join("modules").join(kver);
        base.file(
            &format!("modules/{kver}/kernel/fs/ext4.ko"),
            "ext4 module",
            0o644,
        )
        .file(
            &format!("modules/{kver}/modules.dep"),
            "kernel/fs/ext4.ko:\n",
            0o644,
        )
        .file("kit/init", "init", 0o755)
        .file("kit/bin/busybox", "busybox", 0o755);
        let old = Menu::new("6.1.0-old", "x=1").unwrap();
        base.file(&format!("esp/{MENU_RECORD}"), old.to_json(), 0o644)
            .file("vmlinuz", "kernel image", 0o644);
        let (kit, esp, image) = (base.join("kit"), base.join("esp"), base.join("vmlinuz"));
        let persist = base.mkdir("persist");
        base.mkdir("esp/grub");
        let mut fs = OnStick {
            persist: persist.clone(),
            esp: esp.clone(),
            modules_root: base.join("modules"),
            kit,
            image,
            initramfs: None,
        };
        let menu = read_menu(&esp).unwrap();
        run(&mut fs, kver, &plan_add(&menu, kver).unwrap()).unwrap();
        let added = read_menu(&esp).unwrap();
        assert_eq!(added.kernels, [kver, "6.1.0-old"]);
        assert_eq!(
            std::fs::read_to_string(esp.join(GRUB_CFG)).unwrap(),
            added.render()
        );
        assert_eq!(
            std::fs::read(esp.join(format!("vmlinuz-{kver}"))).unwrap(),
            b"kernel image"
        );
        let initramfs = std::fs::read(esp.join(format!("initramfs-{kver}.img"))).unwrap();
        let cpio = String::from_utf8_lossy(&zstd::stream::decode_all(&initramfs[..]).unwrap())
            .into_owned();
        assert!(cpio.contains("lib/modules/6.2.0-test/kernel/fs/ext4.ko"));
        assert!(cpio.contains("bin/busybox"));
        let squashfs = persist.join(format!("modules-{kver}.squashfs"));
        assert!(
            ramstick_squash::verify(&squashfs, &modules, &Exclude::none())
                .unwrap()
                .is_empty()
        );
        let leftovers: Vec<_> = std::fs::read_dir(&esp)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        run(&mut fs, kver, &plan_remove(&added, kver).unwrap()).unwrap();
        assert_eq!(read_menu(&esp).unwrap(), old);
        assert!(!esp.join(format!("vmlinuz-{kver}")).exists());
        assert!(!esp.join(format!("initramfs-{kver}.img")).exists());
        assert!(!squashfs.exists());
    }

    /// The new kernel's initramfs carries dm-crypt when the booted one had
    /// the unlock program (an encrypted stick), and only then.
    #[test]
    fn an_encrypted_sticks_new_initramfs_carries_dm_crypt() {
        let base = ramstick_testkit::TempDir::new("saver-kernel-luks");
        let kver = "6.2.0-test";
        base.file(&format!("modules/{kver}/kernel/fs/ext4.ko"), "ext4", 0o644)
            .file(&format!("modules/{kver}/kernel/md/dm-mod.ko"), "dm", 0o644)
            .file(
                &format!("modules/{kver}/kernel/md/dm-crypt.ko"),
                "crypt",
                0o644,
            )
            .file(
                &format!("modules/{kver}/modules.dep"),
                "kernel/fs/ext4.ko:\nkernel/md/dm-crypt.ko: kernel/md/dm-mod.ko\n\
                 kernel/md/dm-mod.ko:\n",
                0o644,
            )
            .file("kit/init", "init", 0o755);
        let mut fs = OnStick {
            persist: base.mkdir("persist"),
            esp: base.mkdir("esp"),
            modules_root: base.join("modules"),
            kit: base.join("kit"),
            image: base.join("vmlinuz"),
            initramfs: None,
        };
        let built = |fs: &mut OnStick| {
            fs.build_initramfs(kver).unwrap();
            let bytes = fs.initramfs.take().unwrap();
            String::from_utf8_lossy(&zstd::stream::decode_all(&bytes[..]).unwrap()).into_owned()
        };
        let crypt = format!("lib/modules/{kver}/kernel/md/dm-crypt.ko");
        let plain = built(&mut fs);
        assert!(plain.contains("kernel/fs/ext4.ko") && !plain.contains(&crypt));
        base.file(&format!("kit/{UNLOCK_IN_ARCHIVE}"), "unlock", 0o755);
        let luks = built(&mut fs);
        assert!(luks.contains(&crypt) && luks.contains("kernel/md/dm-mod.ko"));
    }

    #[test]
    fn an_esp_without_a_record_is_named() {
        let dir = ramstick_testkit::TempDir::new("saver-norecord");
        let err = read_menu(&dir).unwrap_err().to_string();
        assert!(err.contains("older `cargo xtask image`"), "{err}");
    }
}

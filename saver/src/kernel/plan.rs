//! What `saver kernel add|remove` does, as a plan of steps run over
//! [`KernelFs`] (the stick, or a recording fake in the tests).
//!
//! Adding a kernel writes everything it boots from before the menu names
//! it: the modules image on /persist, the kernel and its initramfs on the
//! ESP (each under a temporary name, synced, renamed), then the menu record
//! and `grub.cfg`. Removing one takes it out of the record and `grub.cfg`
//! first, then deletes its files. So a power cut at any moment leaves a
//! menu whose every entry boots (a cut add leaves at most unused files,
//! which the next add of that kernel overwrites).

use anyhow::{bail, Result};
use ramstick_common::bootmenu::{self, check_version, Menu};

/// The modules image of `kver` on /persist.
pub fn modules_image(kver: &str) -> String {
    format!("modules-{kver}.squashfs")
}

/// What an ESP file is written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The kernel image the package installed (`/boot/vmlinuz-<kver>`).
    Kernel,
    /// The initramfs [`Step::BuildInitramfs`] made.
    Initramfs,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `/lib/modules/<kver>` packed into `/persist/modules-<kver>.squashfs`
    /// and read back.
    PackModules,
    /// The kernel's initramfs built in RAM from init's kit.
    BuildInitramfs,
    EspWrite {
        name: String,
        payload: Payload,
    },
    /// `grub/ramstick-menu.json`.
    WriteRecord(Menu),
    /// `grub/grub.cfg`, rendered from the menu.
    WriteGrubCfg(Menu),
    EspRemove(String),
    PersistRemove(String),
}

/// The plan that makes `kver` the default kernel of `menu`.
pub fn plan_add(menu: &Menu, kver: &str) -> Result<Vec<Step>> {
    let next = menu.with_default(kver)?;
    Ok(vec![
        Step::PackModules,
        Step::BuildInitramfs,
        Step::EspWrite {
            name: bootmenu::vmlinuz(kver),
            payload: Payload::Kernel,
        },
        Step::EspWrite {
            name: bootmenu::initramfs(kver),
            payload: Payload::Initramfs,
        },
        Step::WriteRecord(next.clone()),
        Step::WriteGrubCfg(next),
    ])
}

/// The plan that removes `kver` from `menu` and the stick. The last kernel
/// of the menu is never removed: the stick would not boot.
pub fn plan_remove(menu: &Menu, kver: &str) -> Result<Vec<Step>> {
    check_version(kver)?;
    if menu.kernels == [kver] {
        bail!(
            "kernel {kver} is the only one the stick boots: its files stay on the stick \
             (install another kernel first)"
        );
    }
    let mut steps = Vec::new();
    if menu.has(kver) {
        let next = menu.without(kver);
        steps.push(Step::WriteRecord(next.clone()));
        steps.push(Step::WriteGrubCfg(next));
    }
    steps.extend([
        Step::EspRemove(bootmenu::vmlinuz(kver)),
        Step::EspRemove(bootmenu::initramfs(kver)),
        Step::PersistRemove(modules_image(kver)),
    ]);
    Ok(steps)
}

/// Where the steps act.
pub trait KernelFs {
    fn pack_modules(&mut self, kver: &str) -> Result<()>;
    fn build_initramfs(&mut self, kver: &str) -> Result<()>;
    /// Writes the ESP file `name` under a temporary name, syncs it and
    /// renames it into place.
    fn esp_write(&mut self, name: &str, payload: Payload) -> Result<()>;
    fn write_record(&mut self, menu: &Menu) -> Result<()>;
    fn write_grub_cfg(&mut self, menu: &Menu) -> Result<()>;
    /// Removes an ESP file (a missing one is no error).
    fn esp_remove(&mut self, name: &str) -> Result<()>;
    /// Removes a file of /persist (a missing one is no error).
    fn persist_remove(&mut self, name: &str) -> Result<()>;
}

/// Runs `steps` for kernel `kver`, stopping at the first error.
pub fn run(fs: &mut dyn KernelFs, kver: &str, steps: &[Step]) -> Result<()> {
    for step in steps {
        match step {
            Step::PackModules => fs.pack_modules(kver)?,
            Step::BuildInitramfs => fs.build_initramfs(kver)?,
            Step::EspWrite { name, payload } => fs.esp_write(name, *payload)?,
            Step::WriteRecord(menu) => fs.write_record(menu)?,
            Step::WriteGrubCfg(menu) => fs.write_grub_cfg(menu)?,
            Step::EspRemove(name) => fs.esp_remove(name)?,
            Step::PersistRemove(name) => fs.persist_remove(name)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const OLD: &str = "6.1.0-57-amd64";
    const NEW: &str = "6.1.0-54-cloud-amd64";

    /// A stick whose writes stop ("power cut") after `budget` steps.
    #[derive(Debug, Clone, Default)]
    struct Fake {
        esp: BTreeSet<String>,
        persist: BTreeSet<String>,
        record: Option<Menu>,
        /// The kernels grub.cfg boots.
        grub: Vec<String>,
        built: bool,
        budget: usize,
    }

    impl Fake {
        /// A stick built for OLD.
        fn built_for(kver: &str) -> Fake {
            let menu = Menu::new(kver, "").unwrap();
            Fake {
                esp: menu.files().into_iter().collect(),
                persist: [modules_image(kver)].into(),
                grub: menu.kernels.clone(),
                record: Some(menu),
                budget: usize::MAX,
                ..Fake::default()
            }
        }

        fn spend(&mut self) -> Result<()> {
            if self.budget == 0 {
                bail!("power cut");
            }
            self.budget -= 1;
            Ok(())
        }

        /// Every kernel the record or grub.cfg names can boot.
        fn consistent(&self) -> Result<(), String> {
            let record = self.record.as_ref().map(|m| m.kernels.clone());
            for kernels in [Some(self.grub.clone()), record].into_iter().flatten() {
                if kernels.is_empty() {
                    return Err("a menu without kernels".into());
                }
                for k in kernels {
                    for f in [bootmenu::vmlinuz(&k), bootmenu::initramfs(&k)] {
                        if !self.esp.contains(&f) {
                            return Err(format!("{f} is named but missing"));
                        }
                    }
                    if !self.persist.contains(&modules_image(&k)) {
                        return Err(format!("modules of {k} are missing"));
                    }
                }
            }
            Ok(())
        }
    }

    impl KernelFs for Fake {
        fn pack_modules(&mut self, kver: &str) -> Result<()> {
            self.spend()?;
            self.persist.insert(modules_image(kver));
            Ok(())
        }
        fn build_initramfs(&mut self, _: &str) -> Result<()> {
            self.spend()?;
            self.built = true;
            Ok(())
        }
        fn esp_write(&mut self, name: &str, payload: Payload) -> Result<()> {
            self.spend()?;
            assert!(
                payload == Payload::Kernel || self.built,
                "initramfs not built"
            );
            self.esp.insert(name.to_string());
            Ok(())
        }
        fn write_record(&mut self, menu: &Menu) -> Result<()> {
            self.spend()?;
            self.record = Some(menu.clone());
            Ok(())
        }
        fn write_grub_cfg(&mut self, menu: &Menu) -> Result<()> {
            self.spend()?;
            self.grub = menu.kernels.clone();
            Ok(())
        }
        fn esp_remove(&mut self, name: &str) -> Result<()> {
            self.spend()?;
            self.esp.remove(name);
            Ok(())
        }
        fn persist_remove(&mut self, name: &str) -> Result<()> {
            self.spend()?;
            self.persist.remove(name);
            Ok(())
        }
    }

    #[test]
    fn adding_writes_the_files_before_the_menu() {
        let menu = Menu::new(OLD, "x=1").unwrap();
        let steps = plan_add(&menu, NEW).unwrap();
        let next = Menu {
            kernels: vec![NEW.into(), OLD.into()],
            ..menu.clone()
        };
        assert_eq!(
            steps,
            [
                Step::PackModules,
                Step::BuildInitramfs,
                Step::EspWrite {
                    name: format!("vmlinuz-{NEW}"),
                    payload: Payload::Kernel
                },
                Step::EspWrite {
                    name: format!("initramfs-{NEW}.img"),
                    payload: Payload::Initramfs
                },
                Step::WriteRecord(next.clone()),
                Step::WriteGrubCfg(next),
            ]
        );
        assert!(plan_add(&menu, "../x").is_err());
    }

    #[test]
    fn removing_takes_it_out_of_the_menu_before_deleting_files() {
        let menu = Menu::new(OLD, "").unwrap().with_default(NEW).unwrap();
        let steps = plan_remove(&menu, OLD).unwrap();
        let next = Menu::new(NEW, "").unwrap();
        assert_eq!(
            steps,
            [
                Step::WriteRecord(next.clone()),
                Step::WriteGrubCfg(next),
                Step::EspRemove(format!("vmlinuz-{OLD}")),
                Step::EspRemove(format!("initramfs-{OLD}.img")),
                Step::PersistRemove(format!("modules-{OLD}.squashfs")),
            ]
        );
        // A kernel the menu never booted: only its files, if any, go.
        let steps = plan_remove(&menu, "6.1.0-1-amd64").unwrap();
        assert!(steps
            .iter()
            .all(|s| matches!(s, Step::EspRemove(_) | Step::PersistRemove(_))));
        // The last kernel stays.
        let only = Menu::new(OLD, "").unwrap();
        let err = plan_remove(&only, OLD).unwrap_err().to_string();
        assert!(err.contains("the only one the stick boots"), "{err}");
    }

    /// Runs `steps` on copies of `start` cut after 0, 1, … all of them:
    /// only the whole run succeeds, and every stick it leaves boots.
    fn cut_after_every_step(start: &Fake, kver: &str, steps: &[Step], what: &str) {
        for cut in 0..=steps.len() {
            let mut fake = Fake {
                budget: cut,
                ..start.clone()
            };
            let result = run(&mut fake, kver, steps);
            assert_eq!(result.is_ok(), cut == steps.len(), "{what} cut after {cut}");
            fake.consistent()
                .unwrap_or_else(|e| panic!("{what} cut after {cut} steps: {e}"));
        }
    }

    /// A power cut after every step of an add, then of a remove: the menu
    /// on the stick always boots, and the complete run ends as planned.
    #[test]
    fn a_power_cut_at_any_step_leaves_a_bootable_menu() {
        let start = Fake::built_for(OLD);
        let add = plan_add(start.record.as_ref().unwrap(), NEW).unwrap();
        cut_after_every_step(&start, NEW, &add, "add");
        let mut added = start.clone();
        run(&mut added, NEW, &add).unwrap();
        assert_eq!(added.grub, [NEW, OLD]);
        assert_eq!(added.record.as_ref().unwrap().kernels, [NEW, OLD]);

        let remove = plan_remove(added.record.as_ref().unwrap(), OLD).unwrap();
        cut_after_every_step(&added, OLD, &remove, "remove");
        let mut removed = added.clone();
        run(&mut removed, OLD, &remove).unwrap();
        assert_eq!(removed.grub, [NEW]);
        assert_eq!(
            removed.esp,
            [format!("initramfs-{NEW}.img"), format!("vmlinuz-{NEW}")].into()
        );
        assert_eq!(removed.persist, [modules_image(NEW)].into());
    }
}

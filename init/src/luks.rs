//! The encrypted persist partition: find it, open it, hand back the mapping.
//!
//! init is static musl and libcryptsetup exists only as a glibc shared
//! library, so opening runs `/bin/ramstick-unlock` (the `unlock` crate),
//! which the initramfs carries with its libraries when the image was built
//! for LUKS. It asks for the passphrase on the console itself, on each
//! console a person may be at (`consoles`), so the passphrase never passes
//! through init, and the volume key stays inside libcryptsetup and the
//! kernel.
//!
//! A container is opened when `ramstick.luks` names one (then the persist
//! spec defaults to the mapping), or when the device the persist spec finds
//! carries a LUKS header (auto-detection: the LUKS2 label `RAMSTICK`
//! matches the default `LABEL=RAMSTICK`). Nothing closes the mapping: it
//! lives until power-off; the init system's shutdown unmounts (or remounts
//! read-only) /persist and syncs, and dm-crypt writes through, so the
//! container is consistent without closing it (systemd also detaches it).

use ramstick_common::blkid::{FsKind, Identity};
use ramstick_common::cmdline::DeviceSpec;
use ramstick_common::modules::LUKS_OPTIONAL_MODULES;
use ramstick_common::plan::{LuksPlan, Plan};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::devices;
use crate::failure::{Failure, Step};
use crate::modload::Loader;
use crate::sys::Sys;

/// Where the initramfs carries the unlock program (LUKS images only).
pub const UNLOCK_IN_INITRAMFS: &str = "/bin/ramstick-unlock";
/// Where the initramfs carries the unlock program's shared libraries.
pub const LIBRARY_PATH: &str = "/lib/x86_64-linux-gnu";
/// The unlock program's exit status when every passphrase was wrong.
const EXIT_WRONG: i32 = 2;

const PERSIST_HINT: &str =
    "plug the stick in, or boot with ramstick.persist=LABEL=...|UUID=...|/dev/... naming its data partition";
const LUKS_HINT: &str =
    "plug the stick in, or boot with ramstick.luks=LABEL=...|UUID=...|/dev/... naming the encrypted partition";

/// The device to mount at /persist: found by the persist spec and, when it
/// is (or `ramstick.luks` names) a LUKS container, unlocked first.
pub fn find_persist(
    sys: &dyn Sys,
    plan: &Plan,
    loader: &mut Loader,
    sys_root: &Path,
    dev_root: &Path,
) -> Result<PathBuf, Failure> {
    let timeout = Duration::from_secs(u64::from(plan.device_timeout_secs));
    let mapping = PathBuf::from(plan.luks.mapping_path());
    let mut opened = None;
    if let Some(spec) = &plan.luks.container {
        let (container, _) =
            devices::wait_for("ramstick.luks", spec, timeout, loader, sys_root, dev_root)
                .map_err(|e| e.into_failure("find the encrypted partition", LUKS_HINT))?;
        open(sys, &plan.luks, &container, loader)?;
        if plan.persist_device == DeviceSpec::Path(plan.luks.mapping_path()) {
            return Ok(mapping);
        }
        opened = Some(container);
    }
    let (device, id) = devices::wait_for(
        "ramstick.persist",
        &plan.persist_device,
        timeout,
        loader,
        sys_root,
        dev_root,
    )
    .map_err(|e| e.into_failure("find the persist device", PERSIST_HINT))?;
    if !is_luks(&id) {
        return Ok(device);
    }
    if opened.as_ref() != Some(&device) {
        log::info!(
            "{} (ramstick.persist={}) is encrypted",
            device.display(),
            plan.persist_device
        );
        open(sys, &plan.luks, &device, loader)?;
    }
    Ok(mapping)
}

/// Whether a scanned device is a LUKS container.
pub fn is_luks(id: &Identity) -> bool {
    id.fs.as_ref().is_some_and(|fs| fs.kind == FsKind::Luks)
}

/// Load dm-crypt and the cipher modules, then run the unlock program on
/// `container` until it is open as the plan's mapping.
fn open(
    sys: &dyn Sys,
    luks: &LuksPlan,
    container: &Path,
    loader: &mut Loader,
) -> Result<(), Failure> {
    let what = format!("unlock the encrypted partition {}", container.display());
    if !sys.exists(Path::new(UNLOCK_IN_INITRAMFS)) {
        return Err(anyhow::anyhow!(
            "{} is a LUKS container but this initramfs has no {UNLOCK_IN_INITRAMFS}",
            container.display()
        ))
        .step(
            &what,
            "rebuild the stick with LUKS support (cargo xtask image --luks-passphrase-file FILE)",
        );
    }
    let names: Vec<&str> = luks.modules.iter().map(String::as_str).collect();
    loader
        .load(&names)
        .step(&what, "rebuild the initramfs for this kernel")?;
    for m in LUKS_OPTIONAL_MODULES {
        if let Err(e) = loader.load(&[m]) {
            log::debug!("optional module {m} not loaded: {e:#}");
        }
    }
    // A USB keyboard that appeared after the stick gets its driver now.
    loader.autoload_hardware();
    // Asked on every console (see `consoles`); the key file is tried by the
    // one on /dev/console only, so that no two of them open the container
    // by it at once.
    let argv = unlock_argv(luks, container, true);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let others = unlock_argv(luks, container, false);
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    let env = [("DM_DISABLE_UDEV", "1"), ("LD_LIBRARY_PATH", LIBRARY_PATH)];
    let code = sys.run_console(&argv, &others, &env).step(
        &what,
        "the initramfs's unlock program cannot run; rebuild the stick (cargo xtask image)",
    )?;
    exit_meaning(code, luks, container).step(&what, &hint_for(code))?;
    log::info!("{} opened as {}", container.display(), luks.mapping_path());
    Ok(())
}

/// The unlock program's command line for `container` (with the plan's key
/// file when `keyfile`).
fn unlock_argv(luks: &LuksPlan, container: &Path, keyfile: bool) -> Vec<String> {
    let mut argv = vec![
        UNLOCK_IN_INITRAMFS.to_string(),
        container.display().to_string(),
        luks.mapping.clone(),
        "--tries".to_string(),
        luks.tries.to_string(),
    ];
    if let Some(file) = luks.keyfile.as_ref().filter(|_| keyfile) {
        argv.extend(["--keyfile".to_string(), file.clone()]);
    }
    argv
}

/// What the unlock program's exit status `code` means.
fn exit_meaning(code: i32, luks: &LuksPlan, container: &Path) -> anyhow::Result<()> {
    match code {
        0 => Ok(()),
        EXIT_WRONG => anyhow::bail!(
            "{} wrong passphrase(s) for {}",
            luks.tries,
            container.display()
        ),
        _ => {
            anyhow::bail!("{UNLOCK_IN_INITRAMFS} failed with status {code} (its message is above)")
        }
    }
}

fn hint_for(code: i32) -> String {
    if code == EXIT_WRONG {
        "reboot and type the passphrase again (check the keyboard layout: the initramfs uses US); \
         without it the data cannot be recovered"
            .to_string()
    } else {
        "check that the partition is the stick's LUKS container; rebuild the stick if the initramfs is damaged"
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_common::blkid::FsInfo;
    use ramstick_common::plan::{plan_of, Facts};

    fn luks_plan(cmdline: &str) -> LuksPlan {
        let facts = Facts {
            kernel_version: "6.1.0-56-amd64".into(),
            mem_total_bytes: 1 << 30,
        };
        plan_of(cmdline, &facts).luks
    }

    #[test]
    fn argv_names_container_mapping_tries_and_keyfile() {
        let plan = luks_plan("ramstick.luks.tries=5");
        assert_eq!(
            unlock_argv(&plan, Path::new("/dev/vda2"), true),
            [
                "/bin/ramstick-unlock",
                "/dev/vda2",
                "ramstick",
                "--tries",
                "5"
            ]
        );
        let plan = luks_plan("ramstick.luks=LABEL=x ramstick.luks.keyfile=/etc/stick.key");
        assert_eq!(
            unlock_argv(&plan, Path::new("/dev/sda2"), true),
            [
                "/bin/ramstick-unlock",
                "/dev/sda2",
                "ramstick",
                "--tries",
                "3",
                "--keyfile",
                "/etc/stick.key"
            ]
        );
        // The other consoles' ask for the passphrase only.
        assert_eq!(
            unlock_argv(&plan, Path::new("/dev/sda2"), false),
            [
                "/bin/ramstick-unlock",
                "/dev/sda2",
                "ramstick",
                "--tries",
                "3"
            ]
        );
    }

    #[test]
    fn exit_statuses() {
        let plan = luks_plan("");
        let dev = Path::new("/dev/vda2");
        assert!(exit_meaning(0, &plan, dev).is_ok());
        let wrong = exit_meaning(EXIT_WRONG, &plan, dev)
            .unwrap_err()
            .to_string();
        assert_eq!(wrong, "3 wrong passphrase(s) for /dev/vda2");
        assert!(hint_for(EXIT_WRONG).contains("type the passphrase again"));
        let other = exit_meaning(1, &plan, dev).unwrap_err().to_string();
        assert!(other.contains("failed with status 1"), "{other}");
        assert!(!hint_for(1).contains("passphrase again"));
    }

    #[test]
    fn luks_identities() {
        let id = |kind| Identity {
            path: "/dev/vda2".into(),
            fs: Some(FsInfo {
                kind,
                uuid: None,
                label: Some("RAMSTICK".into()),
            }),
            ..Identity::default()
        };
        assert!(is_luks(&id(FsKind::Luks)));
        assert!(!is_luks(&id(FsKind::Ext4)));
        assert!(!is_luks(&Identity::default()));
    }
}

//! e2e: a kernel update inside the running stick. The Debian/systemd
//! stick gets Debian's cloud kernel package (another `uname -r`, fetched
//! by xtask like the current one and put on the data partition), installed
//! with `apt-get install ./…deb`: the kernel hook puts its modules image on
//! /persist and its kernel and initramfs on the ESP; after a reboot the
//! default entry runs it, the previous kernel's entry still boots, and the
//! saved state holds nothing under /lib/modules or /boot.

use super::guest::{boot_debian, out, poweroff_expecting, GrubEntry, CMD, SAVE, SAVED, SAVER};
use super::{Ctx, DiskSpec, Scenario};
use crate::rootfs::Kind;
use crate::{deps, kernel};
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

pub const ALL: &[Scenario] = &[Scenario {
    name: "kernel-update",
    run: kernel_update,
}];

/// The package's unpacking and the hook (packing 100 MB of modules,
/// building an initramfs) under TCG.
const INSTALL: Duration = Duration::from_secs(900);

fn kernel_update(ctx: &mut Ctx) -> Result<()> {
    if !deps::is_root() {
        println!("  kernel-update: skipped: mmdebstrap needs root (run as root to include it)");
        return Ok(());
    }
    let (new, deb) = kernel::fetch_other_deb()?;
    let deb_name = deb
        .file_name()
        .context("the kernel package has no file name")?
        .to_string_lossy()
        .into_owned();
    let spec = DiskSpec {
        persist_extra: vec![(deb, deb_name.clone())],
        ..DiskSpec::default()
    };
    let disk = ctx.kind_disk(Kind::Debian, false, &spec)?;

    let mut vm = boot_debian(ctx, &disk, GrubEntry::Default)?;
    let old = out(&mut vm, "uname -r")?;
    ensure!(old != new, "the stick already runs {new}");
    let started = Instant::now();
    let (rc, log) = vm.run_status(
        &format!("(cd /persist && apt-get install -y --no-install-recommends ./{deb_name}) 2>&1"),
        INSTALL,
    )?;
    ensure!(rc == 0, "apt-get install failed:\n{log}");
    println!(
        "  kernel-update: apt-get install with the kernel hook took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    ensure!(
        log.contains(&format!(
            "kernel {new} is on the stick; GRUB boots {new} by default (fallback entries: {old})"
        )),
        "the kernel hook did not put {new} on the stick:\n{log}"
    );
    poweroff_expecting(&mut vm, SAVED)?;
    drop(vm);

    let mut vm = boot_debian(ctx, &disk, GrubEntry::Default)?;
    ensure!(
        out(&mut vm, "uname -r")? == new,
        "the default entry does not boot {new}"
    );
    let mounted = out(
        &mut vm,
        "grep -c \" /[a-z/]*modules/$(uname -r) squashfs \" /proc/mounts",
    )?;
    ensure!(mounted == "1", "modules-{new}.squashfs is not mounted");
    // The install is saved (dpkg knows the package), its files are not.
    let listed = vm.run_status(
        &format!("ls /run/ramstick/layers/*/var/lib/dpkg/info/linux-image-{new}.list"),
        CMD,
    )?;
    ensure!(listed.0 == 0, "dpkg's record of the package was not saved");
    let kept = out(
        &mut vm,
        "ls -d /run/ramstick/layers/*/boot /run/ramstick/layers/*/lib/modules \
         /run/ramstick/layers/*/usr/lib/modules /run/ramstick/layers/*/lib/firmware \
         /run/ramstick/layers/*/usr/lib/firmware 2>/dev/null | wc -l",
    )?;
    ensure!(
        kept == "0",
        "the saved state holds /boot, modules or firmware"
    );
    let upper = out(
        &mut vm,
        "ls -A /run/ramstick/upper/upper/usr/lib 2>/dev/null | grep -c modules || true",
    )?;
    ensure!(
        upper == "0",
        "the new kernel's mount point was made in the upper"
    );
    let status = out(&mut vm, &format!("{SAVER} status"))?;
    ensure!(
        status.contains("saver hook:   systemd"),
        "saver status:\n{status}"
    );
    vm.poweroff(SAVE)?;
    drop(vm);

    let mut vm = boot_debian(ctx, &disk, GrubEntry::PreviousKernel)?;
    ensure!(
        out(&mut vm, "uname -r")? == old,
        "the previous kernel's entry does not boot {old}"
    );
    ensure!(
        out(&mut vm, "cat /proc/cmdline")?.contains("ramstick.boot=default"),
        "the fallback entry is not a default boot"
    );
    vm.poweroff(SAVE)?;
    Ok(())
}

//! The QEMU command line of a machine: q35 under OVMF, the stick as
//! virtio-blk or USB storage (its writes logged when asked), more disks, and
//! the serial console on stdio for a person or for the harness.

use crate::deps;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// OVMF firmware code (read-only pflash), from Debian's `ovmf` package.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Pristine OVMF variable store; every boot gets a fresh copy in target/.
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Virtual CPUs unless a harness asks for fewer. Under TCG two vCPUs use
/// both host cores (MTTCG).
pub const CPUS: u32 = 2;

/// Install QEMU and OVMF if they are missing.
pub fn ensure_tools() -> Result<()> {
    deps::ensure(&[("qemu-system-x86_64", "qemu-system-x86")])?;
    deps::ensure_files(&[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")])
}

/// How to start QEMU.
#[derive(Debug, Clone)]
pub struct Machine {
    pub disk: PathBuf,
    pub kvm: bool,
    /// Guest memory in MiB.
    pub mem: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    pub usb: bool,
    /// Where to put this machine's copy of the OVMF variable store.
    pub vars: PathBuf,
    /// `cache=unsafe` for the disk: faster, fine for throwaway test disks.
    pub unsafe_cache: bool,
    /// More virtio disks, attached after `disk` (e.g. a cloned stick).
    pub extra_disks: Vec<PathBuf>,
}

/// Who talks to the serial port on QEMU's stdio.
#[derive(Clone, Copy)]
pub(super) enum Console {
    /// A person: the QEMU monitor is multiplexed in (Ctrl-A X quits, Ctrl-A C monitor).
    Interactive,
    /// The test harness: serial only, no monitor.
    Harness,
}

impl Machine {
    /// The QEMU command line; also puts a fresh copy of the OVMF variables in place.
    pub(super) fn command(&self, console: Console) -> Result<Command> {
        self.command_logged(console, None)
    }

    /// [`Machine::command`], with every write and flush the guest sends to
    /// `disk` logged to `write_log` when given (see [`super::Vm::spawn_logged`]).
    pub(super) fn command_logged(
        &self,
        console: Console,
        write_log: Option<&Path>,
    ) -> Result<Command> {
        if !self.disk.is_file() {
            bail!("disk image {} does not exist", self.disk.display());
        }
        if let Some(dir) = self.vars.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::copy(OVMF_VARS, &self.vars)
            .with_context(|| format!("copying {OVMF_VARS} to {}", self.vars.display()))?;

        let mut cmd = deps::cmd("qemu-system-x86_64");
        cmd.args(["-machine", "q35"]);
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.args(["-m", &self.mem.to_string(), "-smp", &self.cpus.to_string()]);
        cmd.args(["-display", "none", "-nic", "none"]);
        cmd.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            qemu_path(Path::new(OVMF_CODE))
        ));
        cmd.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            qemu_path(&self.vars)
        ));
        let cache = if self.unsafe_cache {
            ",cache=unsafe"
        } else {
            ""
        };
        match write_log {
            None => cmd.arg("-drive").arg(format!(
                "if=none,id=stick,format=raw,file={}{cache}",
                qemu_path(&self.disk)
            )),
            Some(log) => cmd.args(write_log_blockdevs(&self.disk, log)),
        };
        if write_log.is_some() {
            if self.usb {
                bail!("a logged disk is attached as virtio-blk only");
            }
            // A write-back cache, so that the guest sends the flushes the log records.
            cmd.args([
                "-device",
                "virtio-blk-pci,drive=stick,bootindex=0,write-cache=on",
            ]);
        } else if self.usb {
            cmd.args(["-device", "qemu-xhci,id=xhci"]);
            cmd.args(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]);
        } else {
            cmd.args(["-device", "virtio-blk-pci,drive=stick,bootindex=0"]);
        }
        for (i, extra) in self.extra_disks.iter().enumerate() {
            cmd.arg("-drive").arg(format!(
                "if=none,id=extra{i},format=raw,file={}{cache}",
                qemu_path(extra)
            ));
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive=extra{i}"));
        }
        match console {
            Console::Interactive => cmd.args([
                "-chardev",
                "stdio,id=con,mux=on,signal=off",
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con,mode=readline",
            ]),
            Console::Harness => cmd.args([
                "-chardev",
                "stdio,id=con,signal=off",
                "-serial",
                "chardev:con",
                "-monitor",
                "none",
            ]),
        };
        Ok(cmd)
    }
}

/// The `-blockdev` options of a disk whose writes go through QEMU's
/// `blklogwrites` filter: every write, write-zeroes, discard and flush the
/// guest sends is appended to `log` in dm-log-writes' format (512-byte log
/// sectors), in the order the requests complete. No `cache.no-flush`
/// (`cache=unsafe`): the guest's flushes must reach the filter to be logged.
fn write_log_blockdevs(disk: &Path, log: &Path) -> [String; 6] {
    [
        "-blockdev".into(),
        format!(
            "driver=file,node-name=stick-file,filename={}",
            qemu_path(disk)
        ),
        "-blockdev".into(),
        format!(
            "driver=file,node-name=stick-log,filename={}",
            qemu_path(log)
        ),
        "-blockdev".into(),
        "driver=blklogwrites,node-name=stick,file=stick-file,log=stick-log,log-sector-size=512"
            .into(),
    ]
}

/// A path as a QEMU option value (commas are doubled).
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_disk_goes_through_blklogwrites_with_flushes() {
        let args = write_log_blockdevs(Path::new("/d,1.img"), Path::new("/w.log"));
        assert_eq!(
            args[1],
            "driver=file,node-name=stick-file,filename=/d,,1.img"
        );
        assert_eq!(args[3], "driver=file,node-name=stick-log,filename=/w.log");
        assert!(args[5]
            .starts_with("driver=blklogwrites,node-name=stick,file=stick-file,log=stick-log"));
        assert!(args
            .iter()
            .all(|a| !a.contains("no-flush") && !a.contains("unsafe")));
    }

    #[test]
    fn qemu_paths_escape_commas() {
        assert_eq!(qemu_path(Path::new("/a,b/c.img")), "/a,,b/c.img");
    }
}

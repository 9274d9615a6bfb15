//! `/init` of the ramstick initramfs.
//!
//! As PID 1 it boots (see `boot.rs`) and never exits: any failure, even a
//! panic, ends in the emergency shell or a reboot. Run as a normal program
//! it only supports `--dry-run`, which prints the boot plan, `--params`,
//! which lists the boot parameters, and `--warm ROOT INIT`, the read-ahead
//! process PID 1 starts near the end of the boot (see `warm.rs`):
//!
//! ```text
//! init --dry-run [--cmdline 'LINE' | --root DIR] [--mem BYTES] [--kernel-version V] [--persist DIR]
//! init --params
//! ```
//! `--root DIR` reads `DIR/proc/cmdline` (and `DIR/proc/meminfo` for the RAM size).
//! `--persist DIR` reads the saved state of a data partition mounted at DIR
//! and shows the chain of layers the boot type uses and the overlay with it.

// PID 1 never panics (the standards): these lints make that checked,
// outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use ramstick_common::chain::{self, Saved};
use ramstick_common::cmdline;
use ramstick_common::meminfo;
use ramstick_common::plan::{plan_of, Facts};
use ramstick_common::slotboot::BaseCheck;
use ramstick_init::images::LinuxImages;
use ramstick_init::sys::LinuxSys;
use ramstick_init::{boot, failure};
use std::path::Path;

fn main() {
    if std::process::id() == 1 {
        pid1();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, root, init] = args.as_slice() {
        if flag == ramstick_init::warm::WARM_FLAG {
            // Started by PID 1 once the new root is mounted (see `warm`).
            std::process::exit(ramstick_init::warm::run(root, init));
        }
    }
    std::process::exit(cli(args));
}

fn pid1() -> ! {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ramstick: init panicked: {info}");
        log::error!("BOOT FAILED: init panicked: {info}");
        log::error!(
            "what to do: this is a bug in ramstick; report this message. The stick is untouched"
        );
        failure::emergency();
    }));
    let sys = LinuxSys::new();
    match boot::boot(&sys, &LinuxImages, Path::new("/")) {
        Ok(never) => match never {},
        Err(f) => failure::fail(&f),
    }
}

const USAGE: &str =
    "usage: init --dry-run [--cmdline LINE | --root DIR] [--mem BYTES] [--kernel-version V]
                    [--persist DIR]
       init --params
  As PID 1 (in the initramfs) it boots ramstick; otherwise it only prints the boot plan
  (--dry-run; with --persist DIR also the saved chain of the data partition mounted at DIR)
  or the boot parameters with their values, defaults and meaning (--params).";

fn cli(args: Vec<String>) -> i32 {
    let mut dry_run = false;
    let mut line: Option<String> = None;
    let mut root: Option<String> = None;
    let mut persist: Option<String> = None;
    let mut mem: u64 = 2 << 30;
    let mut kver = String::from("6.1.0-56-amd64");
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let r = match arg.as_str() {
            "--dry-run" => {
                dry_run = true;
                Ok(())
            }
            "--cmdline" => value("--cmdline").map(|v| line = Some(v)),
            "--root" => value("--root").map(|v| root = Some(v)),
            "--persist" => value("--persist").map(|v| persist = Some(v)),
            "--mem" => value("--mem").and_then(|v| {
                v.parse()
                    .map(|m| mem = m)
                    .map_err(|_| format!("--mem {v}: not a number of bytes"))
            }),
            "--kernel-version" => value("--kernel-version").map(|v| kver = v),
            "--params" => {
                print!("{}", cmdline::console_table());
                return 0;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = r {
            eprintln!("init: {e}\n{USAGE}");
            return 2;
        }
    }
    if !dry_run {
        eprintln!("init: not PID 1; only --dry-run and --params are available here\n{USAGE}");
        return 2;
    }
    if let Some(dir) = &root {
        let path = std::path::Path::new(dir).join("proc/cmdline");
        match std::fs::read_to_string(&path) {
            Ok(s) => line = Some(s),
            Err(e) => {
                eprintln!("init: cannot read {}: {e}", path.display());
                return 1;
            }
        }
        let meminfo = std::path::Path::new(dir).join("proc/meminfo");
        if let Some(bytes) = std::fs::read_to_string(meminfo)
            .ok()
            .and_then(|m| meminfo::mem_total(&m))
        {
            mem = bytes;
        }
    }
    let line = line.unwrap_or_default();
    let facts = Facts {
        kernel_version: kver,
        mem_total_bytes: mem,
    };
    let plan = plan_of(&line, &facts);
    print!("{plan}");
    if let Some(dir) = &persist {
        let dir = std::path::Path::new(dir);
        let manifest = dir.join(plan.layers.file(&chain::manifest_path()));
        let legacy = plan.legacy_present(|n| dir.join(n).exists());
        let saved = Saved::from_read(
            std::fs::read_to_string(&manifest),
            legacy,
            &manifest.to_string_lossy(),
        );
        print!("{}", chain::describe(&plan, &saved));
        if let Saved::Manifest(m) = &saved {
            let base = dir.join(&plan.base_image);
            let check = BaseCheck::compare(m.base.as_deref(), || {
                ramstick_squash::meta_digest(&base)
                    .map(|(_, d)| d)
                    .map_err(|e| e.to_string())
            });
            match check.message(plan.slot) {
                Some(message) => println!("base: {message}"),
                None if check == BaseCheck::Same => {
                    println!("base: the saved state was made on {}", plan.base_image)
                }
                None => println!("base: the manifest names none (applied on any base)"),
            }
        }
    }
    if plan.has_fatal() {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::cli;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn params_lists_without_dry_run_and_bad_arguments_fail() {
        assert_eq!(cli(args(&["--params"])), 0);
        assert_eq!(cli(args(&["--dry-run", "--params"])), 0);
        assert_eq!(cli(args(&[])), 2);
        assert_eq!(cli(args(&["--dry-run", "--bogus"])), 2);
    }
}

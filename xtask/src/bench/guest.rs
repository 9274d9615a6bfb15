//! Measuring a command in a bench guest: the bytes written to the persist
//! partition (field 7 of `/sys/class/block/<part>/stat`, sectors, read after
//! a `sync` on both sides so the command's writeback is counted and nothing
//! before it is) and the time it took (`/proc/uptime`, the guest's clock).

use crate::qemu::Vm;
use anyhow::{bail, Context, Result};
use ramstick_common::bootinfo::{BootInfo, BOOT_JSON};
use ramstick_common::cmdline::LayersMode;
use ramstick_common::manifest;
use std::time::Duration;

/// What a command cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Bytes written to the persist partition.
    pub written: f64,
    /// Seconds, by the guest's clock.
    pub seconds: f64,
}

/// The saver in the guest.
pub const SAVER: &str = "/run/ramstick/bin/saver";

/// What `saver save` prints when it saved.
pub const SAVED: &str = "saver: saved the session";
/// What it prints when the session is unchanged.
pub const NOTHING: &str = "nothing to save, nothing was written";

/// Run `cmd` (a shell command line) in the guest and measure it; a non-zero
/// exit is an error showing its output.
pub fn measure(vm: &mut Vm, cmd: &str, timeout: Duration) -> Result<Cost> {
    let script = format!(
        "sync; P=$(awk '$2==\"/persist\"{{print $1}}' /proc/mounts); P=${{P##*/}}; \
         S0=$(awk '{{print $7}}' /sys/class/block/$P/stat); T0=$(cut -d' ' -f1 /proc/uptime); \
         ( {cmd} ) 2>&1; RC=$?; sync; \
         S1=$(awk '{{print $7}}' /sys/class/block/$P/stat); T1=$(cut -d' ' -f1 /proc/uptime); \
         echo \"BENCH-COST $RC $S0 $S1 $T0 $T1\""
    );
    let out = vm.run(&script, timeout)?;
    parse_cost(&out).with_context(|| format!("measuring {cmd:?}"))
}

/// `saver save` in the guest: saved, or found nothing to save.
pub fn save(vm: &mut Vm, timeout: Duration) -> Result<Cost> {
    const LOG: &str = "/tmp/bench-save.log";
    let cost = measure(vm, &format!("{SAVER} save >{LOG} 2>&1"), timeout);
    let said = vm.run(&format!("cat {LOG}"), timeout)?;
    let cost = cost.with_context(|| format!("`saver save` said:\n{said}"))?;
    if !said.contains(SAVED) && !said.contains(NOTHING) {
        bail!("`saver save` neither saved nor found nothing to save:\n{said}");
    }
    Ok(cost)
}

/// The newest layer file on the stick (the highest number) and its size, if any.
pub fn newest_layer(vm: &mut Vm, timeout: Duration) -> Result<Option<(String, u64)>> {
    let out = vm.run(
        "for f in /persist/layers/layer-[0-9][0-9][0-9][0-9][0-9][0-9].squashfs; do \
         [ -e \"$f\" ] && echo \"BENCH-LAYER ${f##*/} $(stat -c %s \"$f\")\"; done; true",
        timeout,
    )?;
    parse_newest(&out)
}

/// The `BENCH-LAYER name size` line with the highest layer name.
fn parse_newest(out: &str) -> Result<Option<(String, u64)>> {
    let mut newest: Option<(String, u64)> = None;
    for line in out.lines() {
        let Some(rest) = line.trim().strip_prefix("BENCH-LAYER ") else {
            continue;
        };
        let (name, size) = rest
            .split_once(' ')
            .with_context(|| format!("bad BENCH-LAYER line {line:?}"))?;
        let size: u64 = size
            .trim()
            .parse()
            .with_context(|| format!("bad size in {line:?}"))?;
        if newest.as_ref().is_none_or(|(n, _)| name > n.as_str()) {
            newest = Some((name.to_string(), size));
        }
    }
    Ok(newest)
}

/// The layer files of the stick's chain, bottom first, as guest paths: every
/// layer file in `/persist/layers` (after a save on a stick without a kept
/// chain, the garbage is gone and backup is a prefix of current).
pub fn chain_files(vm: &mut Vm, timeout: Duration) -> Result<Vec<String>> {
    let out = vm.run(
        "ls /persist/layers | grep -E '^layer-[0-9]{6}\\.squashfs$' | sort",
        timeout,
    )?;
    // Only layer names: a console message may land between the lines.
    let files: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| manifest::layer_number(l).is_some())
        .map(|l| format!("/persist/layers/{l}"))
        .collect();
    if files.is_empty() {
        bail!("no layer on the stick");
    }
    Ok(files)
}

/// What init recorded of the boot (`/run/ramstick/boot.json`). The console
/// also carries what other programs print (the saver daemon says hello
/// when it starts), so the object is taken from the output, and read once
/// more if a message cut into it.
pub fn boot_info(vm: &mut Vm, timeout: Duration) -> Result<BootInfo> {
    let mut tries = 0;
    loop {
        let out = vm.run(&format!("cat {BOOT_JSON}"), timeout)?;
        match BootInfo::from_json(json_object(&out)) {
            Ok(info) => return Ok(info),
            Err(_) if tries < 2 => tries += 1,
            Err(e) => bail!("parsing {BOOT_JSON}: {e}: {out}"),
        }
    }
}

/// From the first `{` to the last `}` of `text` (all of it if there is none).
fn json_object(text: &str) -> &str {
    match (text.find('{'), text.rfind('}')) {
        (Some(a), Some(b)) if a < b => &text[a..=b],
        _ => text,
    }
}

/// Check that the boot used `layers` saved layers, each the way `how` says
/// (a bench row about a saved state must not be measured without it).
pub fn expect_layers(vm: &mut Vm, layers: usize, how: LayersMode, timeout: Duration) -> Result<()> {
    let info = boot_info(vm, timeout)?;
    let used: Vec<LayersMode> = info.layers.iter().map(|l| l.how).collect();
    if used.len() != layers || used.iter().any(|h| *h != how) {
        bail!(
            "the boot was to use {layers} saved layers ({how:?}) but used {used:?}; \
             failures {:?}, notes {:?}",
            info.failures,
            info.notes
        );
    }
    Ok(())
}

/// Parse the `BENCH-COST rc s0 s1 t0 t1` line of [`measure`]'s output.
fn parse_cost(out: &str) -> Result<Cost> {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("BENCH-COST "))
        .with_context(|| format!("no BENCH-COST line in:\n{out}"))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad BENCH-COST line {line:?}"))?;
    let [rc, s0, s1, t0, t1] = f[..] else {
        bail!("bad BENCH-COST line {line:?}");
    };
    if rc != 0.0 {
        bail!("exited with {rc}; output:\n{out}");
    }
    if s1 < s0 || t1 < t0 {
        bail!("counters went backwards in {line:?}");
    }
    Ok(Cost {
        written: (s1 - s0) * 512.0,
        seconds: t1 - t0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_line_is_parsed() {
        let out = "saver: packing\nBENCH-COST 0 1000 3048 10.50 12.75\n";
        assert_eq!(
            parse_cost(out).unwrap(),
            Cost {
                written: 1048576.0,
                seconds: 2.25
            }
        );
        let failed = parse_cost("BENCH-COST 1 0 0 1 2\n")
            .unwrap_err()
            .to_string();
        assert!(failed.contains("exited with 1"), "{failed}");
        assert!(parse_cost("nothing\n").is_err());
        assert!(parse_cost("BENCH-COST 0 1 2\n").is_err());
        assert!(parse_cost("BENCH-COST 0 9 2 1 2\n").is_err());
    }

    #[test]
    fn json_is_taken_from_console_noise() {
        let out = "saver: checkpoints every 15 min\n{\n  \"a\": {\"b\": 1}\n}\n";
        assert_eq!(json_object(out), "{\n  \"a\": {\"b\": 1}\n}");
        assert_eq!(json_object("no object"), "no object");
        assert_eq!(json_object("} {"), "} {");
    }

    #[test]
    fn newest_layer_is_the_highest_name() {
        let out = "BENCH-LAYER layer-000002.squashfs 4096\n\
                   BENCH-LAYER layer-000010.squashfs 1052672\n\
                   BENCH-LAYER layer-000009.squashfs 8192\n";
        assert_eq!(
            parse_newest(out).unwrap(),
            Some(("layer-000010.squashfs".to_string(), 1052672))
        );
        assert_eq!(parse_newest("\n").unwrap(), None);
        assert!(parse_newest("BENCH-LAYER layer-000001.squashfs big\n").is_err());
    }
}

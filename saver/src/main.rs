//! `saver`: persists the session at shutdown (issue 5 builds the save path).
//! For now it reports the boot record (`saver status`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ramstick_common::bootinfo::{BootInfo, BOOT_JSON};

#[derive(Parser)]
#[command(name = "saver", about = "ramstick session saver")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show how this system booted and which images are on the stick.
    Status,
    /// Save the session to the stick (not built yet: writes nothing).
    Save,
    /// Run until SIGTERM/SIGINT (then save and exit); SIGUSR1 saves and keeps running.
    Daemon,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Status => status(),
        Cmd::Save => save(),
        Cmd::Daemon => daemon(),
    };
    if let Err(e) = result {
        eprintln!("saver: error: {e:#}");
        std::process::exit(1);
    }
}

fn save() -> Result<()> {
    eprintln!("saver: saving is not built yet; nothing was written to the stick");
    Ok(())
}

/// Wait for the init system's signal; save on SIGUSR1 (and go on) or on
/// SIGTERM/SIGINT (and exit with the save's result).
fn daemon() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR1])
        .context("cannot install signal handlers")?;
    for signal in signals.forever() {
        save()?;
        if signal != SIGUSR1 {
            break;
        }
    }
    Ok(())
}

fn status() -> Result<()> {
    let text = std::fs::read_to_string(BOOT_JSON)
        .with_context(|| format!("cannot read {BOOT_JSON} (not booted by ramstick?)"))?;
    let info = BootInfo::from_json(&text).with_context(|| format!("cannot parse {BOOT_JSON}"))?;
    println!("boot asked: {:?}", info.asked);
    println!("boot used:  {:?}", info.used);
    if let Some(image) = &info.image {
        println!(
            "unpacked:   {image} ({} bytes)",
            info.image_size.unwrap_or(0)
        );
    }
    for r in &info.reasons {
        println!("note:       {r}");
    }
    let mut images: Vec<_> = std::fs::read_dir("/persist")
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    images.sort_by_key(|e| e.file_name());
    for e in images {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".squashfs") {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            println!("image:      /persist/{name} ({size} bytes)");
        }
    }
    Ok(())
}

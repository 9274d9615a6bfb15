//! `saver status`: how this system booted, the saved chain on the stick,
//! how full the RAM upper is and what changed since the last save.

use crate::session::{self, session_exclude, Paths, Session};
use crate::space::{self, human};
use anyhow::Result;
use ramstick_common::chain::Saved;
use ramstick_common::cmdline::BootType;
use ramstick_common::manifest::Manifest;

/// Prints the status to stdout.
pub fn status(paths: &Paths) -> Result<()> {
    let session = Session::load(paths)?;
    let info = &session.info;
    println!(
        "boot asked:   {} (layers: {})",
        info.asked, info.layers_mode
    );
    println!("boot used:    {}", info.used);
    match (&info.saver_hook.warning, &info.saver_hook.init) {
        (Some(warning), _) => println!("saver hook:   MISSING: {warning}"),
        (None, Some(init)) => println!("saver hook:   {init}: the session is saved at shutdown"),
        (None, None) => {}
    }
    for l in &info.layers {
        println!("  in use:     {} ({}, {})", l.name, human(l.size), l.how);
    }
    for f in &info.failures {
        println!("  NOT used:   {} ({}: {})", f.layer, f.class, f.message);
    }
    for n in &info.notes {
        println!("boot note:    {n}");
    }
    match session::read_saved(paths) {
        Saved::Manifest(m) => print_chains(&m),
        Saved::Legacy { default, backup } => println!(
            "on the stick: the legacy layout (upperfs.squashfs: {}, upperfs-backup.squashfs: {}); \
             the next save converts it to layers",
            if default { "yes" } else { "no" },
            if backup { "yes" } else { "no" }
        ),
        Saved::Damaged(why) => {
            println!("on the stick: UNREADABLE manifest ({why}); saving is refused")
        }
        Saved::Nothing => println!("on the stick: nothing saved yet"),
    }
    match space::usage(&paths.upper_mount) {
        Ok((used, size)) => println!(
            "upper:        {} used of {} ({})",
            human(used),
            human(size),
            info.upper
        ),
        Err(e) => println!("upper:        {e:#}"),
    }
    if let Some(layer) = &session.state.layer {
        println!("saved:        during this session, as {layer}");
    }
    println!("changes:      {}", changes(paths, &session));
    Ok(())
}

/// The chains of the manifest, one layer a line.
fn print_chains(m: &Manifest) {
    let total: u64 = m
        .current
        .iter()
        .filter_map(|n| m.layers.get(n))
        .map(|l| l.size)
        .sum();
    println!(
        "chain:        {} layers, {} (manifest generation {})",
        m.current.len(),
        human(total),
        m.generation
    );
    for name in &m.current {
        if let Some(l) = m.layers.get(name) {
            println!(
                "  {name}  {:>10}  {}  {} (level {})",
                human(l.size),
                l.saved,
                l.origin,
                l.level
            );
        }
    }
    let shared = m.shared_prefix();
    if m.backup.is_empty() {
        println!("backup:       none (the backup entry starts clean)");
    } else if shared == m.backup.len() {
        println!("backup:       the first {shared} layers of the chain");
    } else {
        println!("backup:       {}", m.backup.join(", "));
    }
    for k in &m.kept {
        println!(
            "kept aside:   {} since {}: {}",
            k.layers.join(", "),
            k.stamp,
            k.why
        );
    }
}

/// How much differs from what this session last saved.
fn changes(paths: &Paths, session: &Session) -> String {
    let exclude = match session_exclude(&paths.exclude) {
        Ok(e) => e,
        Err(e) => return format!("unknown ({e:#})"),
    };
    let not_saved = if session.info.asked == BootType::Clean {
        " (clean boot: not saved at shutdown)"
    } else {
        ""
    };
    match &session.state.layer {
        Some(layer) => {
            match ramstick_squash::verify(&paths.layers().join(layer), &paths.upperdir, &exclude) {
                Ok(d) => format!("{} entries differ from {layer}{not_saved}", d.len()),
                Err(e) => format!("unknown: cannot compare with {layer}: {e}"),
            }
        }
        None => match space::estimate(&paths.upperdir, &exclude) {
            Ok(est) => format!(
                "{} entries ({} of file data) since boot{not_saved}",
                est.entries,
                human(est.data)
            ),
            Err(e) => format!("unknown: {e:#}"),
        },
    }
}

//! `saver status`: how this system booted, its slot (and a trial's state), the saved chain on the stick,
//! whether saving is on, the session's last save, how full the RAM upper
//! is (and how much RAM it holds against what is still available), what
//! the checkpoints may still write this hour and what changed
//! since the last save; `--json` gives the same for scripts.

use crate::daemon::{self, Spent};
use crate::diff;
use crate::onoff;
use crate::pressure::Sources;
use crate::session::{self, session_exclude, session_patterns, Paths, Session};
use crate::space::{self, human};
use anyhow::Result;
use ramstick_common::chain::Saved;
use ramstick_common::cmdline::BootType;
use ramstick_common::manifest::Manifest;
use serde_json::{json, Value};

/// Prints the status to stdout (as JSON with `json`).
pub fn status(paths: &Paths, json: bool) -> Result<()> {
    let session = Session::load(paths)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json(paths, &session))?
        );
        return Ok(());
    }
    let info = &session.info;
    println!("saving:       {}", saving(paths, &session).1);
    println!("slot:         {}", crate::slot::status_summary(paths).0);
    println!(
        "profile:      {} (its saved state: {})",
        info.profile,
        paths.layers().display()
    );
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
        Ok(u) => println!(
            "upper:        {} used of {} ({})",
            human(u.used),
            human(u.size),
            info.upper
        ),
        Err(e) => println!("upper:        {e:#}"),
    }
    if let Some(ram) = Sources::system(paths).sample(&info.upper).ram() {
        println!(
            "ram:          the upper holds {}, {} more is available ({}% of what it can have; \
             the daemon warns at 80%)",
            human(ram.used),
            human(ram.of.saturating_sub(ram.used)),
            ram.percent()
        );
    }
    println!("last save:    {}", last_save(paths, &session));
    println!("checkpoints:  {}", checkpoints(paths).1);
    println!("changes:      {}", changes(paths, &session));
    Ok(())
}

/// Whether the session will be saved: (on, what to say).
fn saving(paths: &Paths, session: &Session) -> (bool, String) {
    if session.info.asked == BootType::Clean {
        return (false, "off: clean boot (ramstick.boot=clean)".into());
    }
    match onoff::why_off(paths) {
        Some(why) => (false, format!("OFF: {why}")),
        None => (true, "on: the session is saved at shutdown".into()),
    }
}

/// The session's last save, from the manifest's record of its layer.
fn last_save(paths: &Paths, session: &Session) -> String {
    let Some(layer) = &session.state.layer else {
        return "none in this session".into();
    };
    match session::read_saved(paths) {
        Saved::Manifest(m) => match m.layers.get(layer) {
            Some(l) => format!("{layer} at {} ({})", l.saved, human(l.size)),
            None => format!("{layer} (no longer in the manifest: compacted)"),
        },
        _ => layer.clone(),
    }
}

/// The daemon's checkpoint settings and the budget left this hour:
/// (as JSON, what to say).
fn checkpoints(paths: &Paths) -> (Value, String) {
    let conf = std::fs::read_to_string(daemon::CONF).unwrap_or_default();
    let line = std::fs::read_to_string(&paths.cmdline).unwrap_or_default();
    let s = daemon::settings(&conf, &line).unwrap_or_else(|_| daemon::defaults());
    let spent = Spent::load(paths).in_last_hour(daemon::now_secs());
    let left = s.budget.saturating_sub(spent);
    let value = json!({"minutes": s.checkpoint, "budget": s.budget, "left": left});
    let text = match s.checkpoint {
        Some(m) => format!(
            "every {m} min when something changed; {} of the {} hourly budget left",
            human(left),
            human(s.budget)
        ),
        None => "off (saves at shutdown and on demand only)".into(),
    };
    (value, text)
}

/// The status for scripts.
fn as_json(paths: &Paths, session: &Session) -> Value {
    let (on, why) = saving(paths, session);
    let chain = match session::read_saved(paths) {
        Saved::Manifest(m) => json!({
            "generation": m.generation,
            "current": m.current.iter().map(|n| json!({"name": n, "layer": m.layers.get(n)})).collect::<Vec<_>>(),
            "backup": m.backup,
            "kept": m.kept,
        }),
        Saved::Legacy { default, backup } => {
            json!({"legacy": {"default": default, "backup": backup}})
        }
        Saved::Damaged(why) => json!({"damaged": why}),
        Saved::Nothing => Value::Null,
    };
    let sample = Sources::system(paths).sample(&session.info.upper);
    let ram = sample
        .ram
        .map(|(held, available)| json!({"held": held, "available": available}));
    let upper = sample
        .fs
        .map(|(used, size)| json!({"used": used, "size": size, "kind": session.info.upper, "ram": ram}))
        .unwrap_or(Value::Null);
    json!({
        "boot": session.info,
        "profile": {"name": session.info.profile, "layers": paths.layers()},
        "saving": {"on": on, "why": why},
        "slot": crate::slot::status_summary(paths).1,
        "last_save": session.state.layer.as_ref().map(|_| last_save(paths, session)),
        "chain": chain,
        "upper": upper,
        "checkpoints": checkpoints(paths).0,
        "changes": changes(paths, session),
    })
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
        None => {
            let report = session_patterns(&paths.exclude)
                .and_then(|lines| diff::Patterns::new(&lines))
                .and_then(|p| diff::diff(&paths.upperdir, &paths.lowers(&session.info), &p));
            match report {
                Ok(r) => format!(
                    "{} since boot{not_saved} (`saver diff` lists them)",
                    r.counts().line()
                ),
                Err(e) => format!("unknown: {e:#}"),
            }
        }
    }
}

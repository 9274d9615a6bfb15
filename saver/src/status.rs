//! `saver status`: how this system booted, which images are on the stick,
//! how full the RAM upper is and how much changed since boot.

use crate::clock;
use crate::session::{self, load_exclude, Paths, Session};
use crate::space::{self, human};
use anyhow::Result;
use ramstick_common::cmdline::BootType;

/// Prints the status to stdout.
pub fn status(paths: &Paths) -> Result<()> {
    let session = Session::load(paths)?;
    let info = &session.info;
    println!("boot asked:   {}", info.asked);
    println!("boot used:    {}", info.used);
    if let Some(image) = &info.image {
        println!(
            "unpacked:     {image} ({})",
            human(info.image_size.unwrap_or(0))
        );
    }
    for r in &info.reasons {
        println!("boot note:    {r}");
    }
    let mut images: Vec<_> = std::fs::read_dir(&paths.persist)
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    images.sort_by_key(|e| e.file_name());
    for e in images {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("upperfs") || !name.ends_with(".squashfs") {
            continue;
        }
        match e.metadata() {
            Ok(m) => println!(
                "image:        {name}: {}, {}",
                human(m.len()),
                m.modified().map_or("?".into(), clock::display)
            ),
            Err(err) => println!("image:        {name}: cannot stat: {err}"),
        }
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
    if session.saved {
        println!("saved:        yes, during this session");
    }
    println!("changes:      {}", changes(paths, &session));
    Ok(())
}

/// How much differs between the upper and the image it came from.
fn changes(paths: &Paths, session: &Session) -> String {
    let exclude = match load_exclude(&paths.exclude) {
        Ok(e) => e,
        Err(e) => return format!("unknown ({e:#})"),
    };
    let not_saved = if session.info.asked == BootType::Clean {
        " (clean boot: not saved at shutdown)"
    } else {
        ""
    };
    match session.reference() {
        Some(name) => match session::changes(paths, name, &exclude) {
            Ok(d) => format!("{} entries differ from {name}{not_saved}", d.len()),
            Err(e) => format!("unknown: cannot compare with {name}: {e}"),
        },
        None => match space::estimate(&paths.upperdir, &exclude) {
            Ok(est) => format!(
                "{} entries ({} of file data) since a clean start{not_saved}",
                est.entries,
                human(est.data)
            ),
            Err(e) => format!("unknown: {e:#}"),
        },
    }
}

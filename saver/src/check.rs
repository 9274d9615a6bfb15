//! `saver check`: every layer the manifest names, read whole from the
//! device and compared with its record (size, metadata digest, digest).

use crate::session::{self, Paths};
use crate::space::human;
use anyhow::{bail, Result};
use ramstick_common::chain::Saved;

/// Prints one line per layer; Ok(true) when all match.
pub fn check(paths: &Paths) -> Result<bool> {
    let m = match session::read_saved(paths) {
        Saved::Manifest(m) => m,
        Saved::Damaged(why) => bail!("the manifest cannot be read: {why}"),
        Saved::Legacy { .. } => bail!("this stick has the legacy layout (no layers to check yet)"),
        Saved::Nothing => bail!("nothing is saved on this stick"),
    };
    let mut good = true;
    for (name, record) in &m.layers {
        let path = paths.layers().join(name);
        let verdict = match ramstick_squash::digests(&path) {
            Ok(d) if d.size != record.size => {
                format!("BAD: {} bytes, the manifest says {}", d.size, record.size)
            }
            Ok(d) if d.meta != record.meta_digest => {
                "BAD: its metadata differs from the manifest's digest".into()
            }
            Ok(d) if d.full != record.digest => {
                "BAD: its data differs from the manifest's digest".into()
            }
            Ok(_) => format!("ok ({})", human(record.size)),
            Err(e) => format!("BAD: {e}"),
        };
        good &= verdict.starts_with("ok");
        println!("{name}: {verdict}");
    }
    Ok(good)
}

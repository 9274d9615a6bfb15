//! `saver diff`'s output: the counts of a [`Report`], its text (a summary,
//! or every path with `--all`) and JSON, and the command, whose exit status
//! says whether the next save would write anything.

use crate::diff::{diff, Change, Patterns, Report};
use crate::onoff;
use crate::session::{session_patterns, Paths, Session};
use crate::space::human;
use anyhow::Result;
use ramstick_common::cmdline::BootType;

/// The numbers of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub added: usize,
    pub added_bytes: u64,
    pub modified: usize,
    pub modified_bytes: u64,
    /// Modified entries whose content is the lower's.
    pub metadata_only: usize,
    pub deleted: usize,
    pub replaced: usize,
    pub excluded: usize,
    pub excluded_bytes: u64,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in &self.entries {
            match &e.change {
                Change::Added => (c.added, c.added_bytes) = (c.added + 1, c.added_bytes + e.bytes),
                Change::Modified(_) => {
                    c.modified += 1;
                    c.modified_bytes += e.bytes;
                    c.metadata_only += usize::from(e.change.metadata_only());
                }
                Change::Deleted => c.deleted += 1,
                Change::Replaced => c.replaced += 1,
            }
        }
        c.excluded = self.excluded.len();
        c.excluded_bytes = self.excluded.iter().map(|x| x.bytes).sum();
        c
    }
}

impl Counts {
    /// One line: `1 added (6 B), 2 modified (1.1 KiB; 0 metadata only), 1 deleted`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} added ({}), {} modified ({}; {} metadata only), {} deleted",
            self.added,
            human(self.added_bytes),
            self.modified,
            human(self.modified_bytes),
            self.metadata_only,
            self.deleted
        );
        if self.replaced > 0 {
            line.push_str(&format!(", {} directories replaced", self.replaced));
        }
        line
    }
}

/// `saver diff`'s text: a summary, or (`all`) one line per entry.
pub fn render(report: &Report, all: bool) -> String {
    let mut out = String::new();
    let c = report.counts();
    if report.packed == 0 {
        out.push_str("nothing to save: the session changed nothing the save keeps\n");
    } else if report.entries.is_empty() {
        out.push_str(&format!(
            "no change, but a save would write {} directories the overlay copied up\n",
            report.packed
        ));
    } else {
        out.push_str(&format!(
            "added:     {} ({})\nmodified:  {} ({}; {} of them metadata only)\ndeleted:   {}\n",
            c.added,
            human(c.added_bytes),
            c.modified,
            human(c.modified_bytes),
            c.metadata_only,
            c.deleted
        ));
        if c.replaced > 0 {
            out.push_str(&format!(
                "replaced:  {} directories (opaque: what was below them is hidden)\n",
                c.replaced
            ));
        }
    }
    if c.excluded > 0 {
        out.push_str(&format!(
            "excluded:  {} ({}), not saved\n",
            c.excluded,
            human(c.excluded_bytes)
        ));
    }
    if !all {
        if !report.entries.is_empty() || !report.excluded.is_empty() {
            out.push_str("(`saver diff --all` lists every path)\n");
        }
        return out;
    }
    for e in &report.entries {
        let (mark, note) = match &e.change {
            Change::Added => ("A", String::new()),
            Change::Deleted => ("D", String::new()),
            Change::Replaced => ("R", "opaque: the saved contents below are hidden".into()),
            Change::Modified(what) if what.is_empty() => ("M", "copied up, unchanged".into()),
            Change::Modified(what) => {
                let list: Vec<&str> = what.iter().map(|w| w.word()).collect();
                let only = if e.change.metadata_only() {
                    "metadata only: "
                } else {
                    ""
                };
                ("M", format!("{only}{}", list.join(", ")))
            }
        };
        let size = if e.bytes > 0 {
            human(e.bytes)
        } else {
            String::new()
        };
        let line = format!("{mark}  {:<50} {size:>10}  {note}", e.path);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for x in &report.excluded {
        out.push_str(&format!(
            "X  {:<50} {:>10}  excluded by {}\n",
            x.path,
            human(x.bytes),
            x.pattern
        ));
    }
    out
}

/// `saver diff [--all] [--json]`: prints what the next save would write;
/// true when it would write nothing (exit 0), false otherwise (exit 1).
pub fn diff_command(paths: &Paths, all: bool, json: bool) -> Result<bool> {
    let session = Session::load(paths)?;
    let patterns = Patterns::new(&session_patterns(&paths.exclude)?)?;
    let report = diff(&paths.upperdir, &paths.lowers(&session.info), &patterns)?;
    // Whether the next save writes anything, as `save` decides it: an
    // upper with nothing to pack, or one still equal to the layer this
    // session saved last.
    let unchanged_since = session.state.layer.as_ref().filter(|layer| {
        ramstick_squash::verify(&paths.layers().join(layer), &paths.upperdir, &patterns.all)
            .is_ok_and(|d| d.is_empty())
    });
    let nothing = match &session.state.layer {
        None => report.packed == 0,
        Some(_) => unchanged_since.is_some(),
    };
    let off = onoff::why_off(paths);
    if json {
        let value = serde_json::json!({
            "changes": !nothing,
            "unchanged_since_save": unchanged_since,
            "saving_off": off.as_ref().map(ToString::to_string),
            "entries": report.entries,
            "excluded": report.excluded,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(nothing);
    }
    print!("{}", render(&report, all));
    if let Some(layer) = unchanged_since {
        println!("all of this is saved already ({layer}, this session's save): the next save writes nothing");
    }
    if let Some(why) = off {
        println!("saving is off ({why}): none of this will be saved");
    } else if session.info.asked == BootType::Clean {
        println!("clean boot (ramstick.boot=clean): none of this will be saved");
    }
    Ok(nothing)
}

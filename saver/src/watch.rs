//! The RAM upper watched: what the daemon does about how full the upper is
//! (pure; [`crate::pressure`] measures, the daemon delivers).
//!
//! Two pressures count, and the higher one decides: the upper
//! filesystem's own fill (it refuses writes when full), and the RAM the
//! upper holds against what the kernel still has available (a zram upper
//! compresses, so RAM can run out before its filesystem fills, and then
//! the system runs out of memory instead). At 80% and 90% the daemon
//! warns; at 95% it also checkpoints when checkpoints are on, so that the
//! work is on the stick before anything fails. Each threshold warns once
//! per crossing and is rearmed only when the pressure falls [`REARM`]
//! points below it: a pressure hovering at a threshold does not spam.

use crate::space::human;

/// The thresholds that warn, in percent, lowest first.
pub const THRESHOLDS: [u64; 3] = [80, 90, CHECKPOINT_AT];
/// The threshold that also checkpoints.
pub const CHECKPOINT_AT: u64 = 95;
/// Points below a threshold the pressure must fall to warn again.
pub const REARM: u64 = 5;

/// Which resource runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The upper filesystem's blocks.
    Filesystem,
    /// The RAM the upper may still take.
    Ram,
}

/// One pressure: `used` of `of` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    pub kind: Kind,
    pub used: u64,
    pub of: u64,
}

impl Pressure {
    /// Whole percent, rounded down (an empty total is no pressure).
    pub fn percent(&self) -> u64 {
        if self.of == 0 {
            return 0;
        }
        (u128::from(self.used) * 100 / u128::from(self.of)) as u64
    }
}

/// What one look at the upper found (`None`: that figure was unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// The upper filesystem: (bytes used, bytes used + bytes available).
    pub fs: Option<(u64, u64)>,
    /// RAM: (bytes the upper holds, bytes still available: MemAvailable).
    pub ram: Option<(u64, u64)>,
}

impl Sample {
    /// The filesystem's pressure.
    pub fn filesystem(&self) -> Option<Pressure> {
        self.fs.map(|(used, of)| Pressure {
            kind: Kind::Filesystem,
            used,
            of,
        })
    }

    /// The RAM pressure: what the upper holds of all it could hold (what
    /// it holds plus what is still available).
    pub fn ram(&self) -> Option<Pressure> {
        self.ram.map(|(held, available)| Pressure {
            kind: Kind::Ram,
            used: held,
            of: held.saturating_add(available),
        })
    }

    /// The higher of the two pressures (the filesystem's on a tie).
    pub fn worst(&self) -> Option<Pressure> {
        match (self.filesystem(), self.ram()) {
            (Some(f), Some(r)) if r.percent() > f.percent() => Some(r),
            (Some(f), _) => Some(f),
            (None, r) => r,
        }
    }
}

/// Whether and how the session is saved (what the warnings advise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saving {
    /// Saved at shutdown and by checkpoints.
    Checkpoints,
    /// Saved at shutdown and on demand only (checkpoints off).
    AtShutdown,
    /// Not saved; why (`saver off`, `ramstick.save=off`, a clean boot).
    Off(String),
}

/// What the daemon does after a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Warn that `pressure` crossed `threshold` percent.
    Warn { threshold: u64, pressure: Pressure },
    /// Save a checkpoint now.
    Checkpoint,
}

/// The thresholds warned of and not rearmed yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    warned: [bool; THRESHOLDS.len()],
}

impl Watch {
    /// The actions for `sample`. A sample that crosses several thresholds
    /// at once warns of the highest only (one message, not three) and
    /// counts the lower ones as warned.
    pub fn decide(&mut self, sample: &Sample, saving: &Saving) -> Vec<Action> {
        let Some(pressure) = sample.worst() else {
            return Vec::new();
        };
        let pct = pressure.percent();
        for (warned, t) in self.warned.iter_mut().zip(THRESHOLDS) {
            if pct + REARM < t {
                *warned = false;
            }
        }
        let Some(i) = (0..THRESHOLDS.len())
            .rev()
            .find(|&i| pct >= THRESHOLDS[i] && !self.warned[i])
        else {
            return Vec::new();
        };
        for warned in &mut self.warned[..=i] {
            *warned = true;
        }
        let threshold = THRESHOLDS[i];
        let mut actions = vec![Action::Warn {
            threshold,
            pressure,
        }];
        if threshold >= CHECKPOINT_AT && *saving == Saving::Checkpoints {
            actions.push(Action::Checkpoint);
        }
        actions
    }
}

/// The warning's lines: what is full, what fills it (`largest`: user
/// paths with their bytes, largest first), what the daemon does and what
/// to do.
pub fn message(
    threshold: u64,
    pressure: &Pressure,
    saving: &Saving,
    largest: &[(String, u64)],
) -> Vec<String> {
    let pct = pressure.percent();
    let mut lines = vec![match pressure.kind {
        Kind::Filesystem => format!(
            "WARNING: the RAM upper (where this session's changes live) is {pct}% \
             full: {} used of {}",
            human(pressure.used),
            human(pressure.of)
        ),
        Kind::Ram => format!(
            "WARNING: the RAM upper takes {pct}% of the RAM it can have: it holds {}, \
             {} more is available",
            human(pressure.used),
            human(pressure.of.saturating_sub(pressure.used))
        ),
    }];
    if !largest.is_empty() {
        let dirs: Vec<String> = largest
            .iter()
            .map(|(path, bytes)| format!("{path} {}", human(*bytes)))
            .collect();
        lines.push(format!("largest directories: {}", dirs.join(", ")));
    }
    let at_end = threshold >= CHECKPOINT_AT;
    lines.push(match (saving, at_end) {
        (Saving::Checkpoints, true) => {
            "taking a checkpoint now: the session is saved to the stick before the \
             RAM runs out"
                .into()
        }
        (Saving::AtShutdown, true) => {
            "checkpoints are off: run `saver save` now, or what is not saved is lost \
             when the RAM runs out"
                .into()
        }
        (Saving::Off(why), true) => {
            format!("saving is off ({why}): no checkpoint; copy what you need elsewhere now")
        }
        (Saving::Off(why), false) => {
            format!("saving is off ({why}): nothing of this session reaches the stick")
        }
        (_, false) => format!("at {CHECKPOINT_AT}% the session is saved or lost"),
    });
    lines.push(match saving {
        Saving::Off(_) => "to do: delete files you do not need (`saver diff` lists \
                           the changes), or copy them elsewhere and delete them"
            .into(),
        _ => "to do: `saver save` moves the changes to the stick, then reboot to \
              empty the RAM; add a cache to /etc/ramstick/exclude and delete it; delete files \
              you do not need (`saver diff` lists the changes)"
            .into(),
    });
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A sample of the filesystem only, `pct` percent full.
    fn fs(pct: u64) -> Sample {
        Sample {
            fs: Some((pct * MIB, 100 * MIB)),
            ram: None,
        }
    }

    /// The thresholds `actions` warn of, and whether they checkpoint.
    fn said(actions: &[Action]) -> (Vec<u64>, bool) {
        let warned = actions
            .iter()
            .filter_map(|a| match a {
                Action::Warn { threshold, .. } => Some(*threshold),
                Action::Checkpoint => None,
            })
            .collect();
        (warned, actions.contains(&Action::Checkpoint))
    }

    #[test]
    fn each_threshold_warns_once_per_crossing() {
        let mut w = Watch::default();
        let on = Saving::Checkpoints;
        // (usage, the threshold warned of, whether it checkpoints)
        let steps = [
            (10, None, false),
            (79, None, false),
            (80, Some(80), false),
            (85, None, false),
            // Hovering around a threshold does not warn again…
            (78, None, false),
            (81, None, false),
            (90, Some(90), false),
            (94, None, false),
            (95, Some(95), true),
            (99, None, false),
            (100, None, false),
            // …falling below threshold - REARM rearms it, not the lower ones.
            (89, None, false),
            (95, Some(95), true),
            (84, None, false),
            (90, Some(90), false),
            (74, None, false),
            (80, Some(80), false),
        ];
        for (pct, warned, checkpoint) in steps {
            let want = (warned.into_iter().collect::<Vec<u64>>(), checkpoint);
            assert_eq!(said(&w.decide(&fs(pct), &on)), want, "at {pct}%");
        }
    }

    #[test]
    fn a_jump_warns_of_the_highest_threshold_only() {
        let mut w = Watch::default();
        assert_eq!(
            said(&w.decide(&fs(97), &Saving::Checkpoints)),
            (vec![95], true)
        );
        assert_eq!(
            said(&w.decide(&fs(91), &Saving::Checkpoints)),
            (vec![], false)
        );
        let mut w = Watch::default();
        assert_eq!(
            said(&w.decide(&fs(92), &Saving::Checkpoints)),
            (vec![90], false)
        );
        assert_eq!(
            said(&w.decide(&fs(82), &Saving::Checkpoints)),
            (vec![], false)
        );
    }

    #[test]
    fn only_checkpoints_on_checkpoint_at_95() {
        for saving in [Saving::AtShutdown, Saving::Off("saver off".into())] {
            let mut w = Watch::default();
            assert_eq!(said(&w.decide(&fs(80), &saving)), (vec![80], false));
            assert_eq!(said(&w.decide(&fs(96), &saving)), (vec![95], false));
        }
    }

    #[test]
    fn the_higher_pressure_decides() {
        // The filesystem is half full, but the RAM it holds is 90% of what
        // it can have (zram: 9 MiB held, 1 MiB available).
        let s = Sample {
            fs: Some((50 * MIB, 100 * MIB)),
            ram: Some((9 * MIB, MIB)),
        };
        let worst = s.worst().unwrap();
        assert_eq!((worst.kind, worst.percent()), (Kind::Ram, 90));
        let mut w = Watch::default();
        assert_eq!(
            w.decide(&s, &Saving::AtShutdown),
            vec![Action::Warn {
                threshold: 90,
                pressure: worst
            }]
        );
        let s = Sample {
            ram: Some((MIB, 99 * MIB)),
            ..s
        };
        assert_eq!(s.worst().unwrap().kind, Kind::Filesystem);
        // Unreadable figures are no pressure; either alone counts.
        assert_eq!(
            Watch::default().decide(&Sample::default(), &Saving::Checkpoints),
            vec![]
        );
        let ram_only = Sample {
            fs: None,
            ram: Some((96, 4)),
        };
        assert_eq!(
            said(&Watch::default().decide(&ram_only, &Saving::Checkpoints)),
            (vec![95], true)
        );
        let empty = Pressure {
            kind: Kind::Filesystem,
            used: 0,
            of: 0,
        };
        assert_eq!(empty.percent(), 0);
    }

    #[test]
    fn the_message_says_what_fills_it_and_what_to_do() {
        let p = fs(83).filesystem().unwrap();
        let dirs = vec![("/root/fill".to_string(), 40 * MIB), ("/etc".into(), 4096)];
        let text = message(80, &p, &Saving::Checkpoints, &dirs).join("\n");
        for want in [
            "the RAM upper (where this session's changes live) is 83% full: 83.0 MiB used of 100.0 MiB",
            "largest directories: /root/fill 40.0 MiB, /etc 4.0 KiB",
            "at 95% the session is saved or lost",
            "`saver save` moves the changes to the stick",
            "/etc/ramstick/exclude",
            "`saver diff`",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let text = message(95, &p, &Saving::Checkpoints, &[]).join("\n");
        assert!(text.contains("taking a checkpoint now"), "{text}");
        assert!(!text.contains("largest"), "{text}");
        let text = message(95, &p, &Saving::AtShutdown, &dirs).join("\n");
        assert!(
            text.contains("checkpoints are off: run `saver save` now"),
            "{text}"
        );
        let off = Saving::Off("turned off by `saver off`".into());
        let text = message(95, &p, &off, &dirs).join("\n");
        assert!(
            text.contains("saving is off (turned off by `saver off`): no checkpoint"),
            "{text}"
        );
        assert!(!text.contains("`saver save`"), "{text}");
        let text = message(80, &p, &off, &dirs).join("\n");
        assert!(
            text.contains("nothing of this session reaches the stick"),
            "{text}"
        );
        let ram = Sample {
            fs: None,
            ram: Some((9 * MIB, MIB)),
        };
        let text = message(90, &ram.ram().unwrap(), &Saving::AtShutdown, &[]).join("\n");
        assert!(
            text.contains(
                "takes 90% of the RAM it can have: it holds 9.0 MiB, 1.0 MiB more is available"
            ),
            "{text}"
        );
    }
}

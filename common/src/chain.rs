//! Which saved layers a boot uses: the chain the boot type asks for, cut at
//! the first layer that fails (the longest valid prefix), with the reason
//! and its class recorded. Pure: the per-layer work (check, then mount or
//! unpack) is the caller's closure, so init and the saver's crash tests
//! decide the same way.
//!
//! - `default`: the manifest's `current` chain. If not even its first layer
//!   works and the `backup` chain starts with another layer, that.
//! - `backup`: the manifest's `backup` chain.
//! - `clean`: nothing.
//!
//! A stick from before layered saves has no manifest: its `upperfs.squashfs`
//! is a one-layer chain (a full upper is a valid layer over rootfs) and
//! `upperfs-backup.squashfs` the backup.

use crate::cmdline::BootType;
use crate::human;
use crate::manifest::{
    LayerInfo, Manifest, LAYERS_DIR, LEGACY_BACKUP_IMAGE, LEGACY_IMAGE, MANIFEST,
};
use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the persist partition holds of the saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// A manifest (the layered layout).
    Manifest(Manifest),
    /// No manifest; which legacy images exist.
    Legacy { default: bool, backup: bool },
    /// A manifest that cannot be read: boot starts clean, and nothing may be
    /// saved over the layers it describes (the saver refuses).
    Damaged(String),
    /// Nothing saved yet.
    Nothing,
}

impl Saved {
    /// Interprets what was read: the manifest file's text (or the error
    /// reading it) and which legacy images exist. `where_` names the file
    /// in messages.
    pub fn from_read(manifest: std::io::Result<String>, legacy: [bool; 2], where_: &str) -> Saved {
        match manifest {
            Ok(text) => match Manifest::parse(&text) {
                Ok(m) => Saved::Manifest(m),
                Err(e) => Saved::Damaged(format!("{where_}: {e}")),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match legacy {
                [false, false] => Saved::Nothing,
                [default, backup] => Saved::Legacy { default, backup },
            },
            Err(e) => Saved::Damaged(format!("cannot read {where_}: {e}")),
        }
    }
}

/// One layer a chain asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its name (a manifest's layer name, or a legacy image name).
    pub name: String,
    /// Its path relative to the persist partition's root.
    pub file: String,
    /// What the manifest says of it (none for a legacy image).
    pub info: Option<LayerInfo>,
}

/// Why a layer was not used. Only [`FailureClass::Corrupt`] and
/// [`FailureClass::Missing`] are facts about the stick; the others are
/// about this machine or this moment, and a save must not act on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureClass {
    /// The file is not on the stick.
    Missing,
    /// Proven damage: wrong size, a digest mismatch, an invalid image.
    Corrupt,
    /// The RAM upper is too small to hold it.
    NoSpace,
    /// The upper filesystem cannot hold what it holds (e.g. `user.*`
    /// xattrs on an old tmpfs).
    Unsupported,
    /// A read or mount error that may not happen again.
    Io,
}

impl FailureClass {
    /// True when the failure proves the stick's copy is unusable for ever.
    pub fn is_permanent(self) -> bool {
        matches!(self, FailureClass::Corrupt | FailureClass::Missing)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureClass::Missing => "missing",
            FailureClass::Corrupt => "corrupt",
            FailureClass::NoSpace => "no space",
            FailureClass::Unsupported => "unsupported",
            FailureClass::Io => "i/o error",
        })
    }
}

/// A layer boot could not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFailure {
    pub layer: String,
    pub class: FailureClass,
    pub message: String,
}

/// What a boot uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The boot type asked for.
    pub asked: BootType,
    /// The boot type whose chain is used (`clean` when none is).
    pub used: BootType,
    /// The layers used, bottom first.
    pub layers: Vec<Candidate>,
    /// The chain the boot type asked for (names, bottom first).
    pub asked_chain: Vec<String>,
    /// Layers tried and not used, in the order they were tried.
    pub failures: Vec<LayerFailure>,
}

/// The candidates of a chain of the manifest.
fn manifest_chain(m: &Manifest, names: &[String]) -> Vec<Candidate> {
    names
        .iter()
        .map(|name| Candidate {
            name: name.clone(),
            file: format!("{LAYERS_DIR}/{name}"),
            info: m.layers.get(name).cloned(),
        })
        .collect()
}

/// A legacy image as a one-layer chain.
fn legacy_chain(present: bool, name: &str) -> Vec<Candidate> {
    if !present {
        return Vec::new();
    }
    vec![Candidate {
        name: name.to_string(),
        file: name.to_string(),
        info: None,
    }]
}

/// The chains to try for `asked`, in order, with the boot type each stands for.
pub fn chains(saved: &Saved, asked: BootType) -> Vec<(BootType, Vec<Candidate>)> {
    use BootType::*;
    let (current, backup) = match saved {
        Saved::Manifest(m) => (manifest_chain(m, &m.current), manifest_chain(m, &m.backup)),
        Saved::Legacy { default, backup } => (
            legacy_chain(*default, LEGACY_IMAGE),
            legacy_chain(*backup, LEGACY_BACKUP_IMAGE),
        ),
        Saved::Damaged(_) | Saved::Nothing => return Vec::new(),
    };
    match asked {
        Clean => Vec::new(),
        Backup => vec![(Backup, backup)],
        // The backup is worth a try only when it does not start with the
        // same layer (that layer failing is why it would be tried).
        Default if backup.first().is_none_or(|b| current.first() == Some(b)) => {
            vec![(Default, current)]
        }
        Default => vec![(Default, current), (Backup, backup)],
    }
}

/// Decides the layers of a boot: each chain of [`chains`] in turn, each
/// layer through `try_layer` (which checks and mounts or unpacks it, and
/// cleans up after itself when it fails), stopping at the first failure;
/// the first chain of which at least one layer works is used. A chain is
/// only tried when the one before gave nothing; when none gives anything
/// the boot is clean.
pub fn choose(
    saved: &Saved,
    asked: BootType,
    mut try_layer: impl FnMut(&Candidate) -> Result<(), LayerFailure>,
) -> Choice {
    let chains = chains(saved, asked);
    let asked_chain = chains
        .first()
        .map(|(_, c)| c.iter().map(|l| l.name.clone()).collect())
        .unwrap_or_default();
    let mut failures = Vec::new();
    for (used, chain) in chains {
        let mut layers = Vec::new();
        for candidate in &chain {
            match try_layer(candidate) {
                Ok(()) => layers.push(candidate.clone()),
                Err(f) => {
                    failures.push(f);
                    break;
                }
            }
        }
        if !layers.is_empty() {
            return Choice {
                asked,
                used,
                layers,
                asked_chain,
                failures,
            };
        }
    }
    Choice {
        asked,
        used: BootType::Clean,
        layers: Vec::new(),
        asked_chain,
        failures,
    }
}

/// Where the manifest is, relative to the persist partition's root.
pub fn manifest_path() -> String {
    format!("{LAYERS_DIR}/{MANIFEST}")
}

/// What `init --dry-run --persist DIR` adds to the plan: the saved state
/// found, the chain the plan's boot type asks for with each layer's place,
/// and the overlay options with those layers (as if every layer passes its
/// check; boot cuts the chain at the first one that does not).
pub fn describe(plan: &Plan, saved: &Saved) -> String {
    let mut out = String::new();
    let state = match saved {
        Saved::Manifest(m) => format!(
            "manifest generation {}, {} layers in the current chain",
            m.generation,
            m.current.len()
        ),
        Saved::Legacy { default, backup } => format!(
            "legacy images ({LEGACY_IMAGE}: {}, {LEGACY_BACKUP_IMAGE}: {})",
            if *default { "yes" } else { "no" },
            if *backup { "yes" } else { "no" }
        ),
        Saved::Damaged(why) => format!("UNUSABLE manifest ({why}): boot starts clean"),
        Saved::Nothing => "nothing saved".to_string(),
    };
    out.push_str(&format!("saved state: {state}\n"));
    let mut first = None;
    for (i, (kind, chain)) in chains(saved, plan.boot_asked).iter().enumerate() {
        let when = if i == 0 {
            ""
        } else {
            " (if the first layer above fails)"
        };
        out.push_str(&format!("chain {kind}{when}: {} layers\n", chain.len()));
        for c in chain {
            let size = c.info.as_ref().map_or("size unknown".to_string(), |l| {
                format!("{}, saved {}, {}", human::bytes(l.size), l.saved, l.origin)
            });
            let target = plan.layers.target(&c.name, plan.layers.mode);
            let file = plan.layers.file(&c.file);
            out.push_str(&format!("  {file} ({size}) -> {target}\n"));
        }
        first.get_or_insert(chain.clone());
    }
    let dirs: Vec<String> = first
        .unwrap_or_default()
        .iter()
        .map(|c| plan.layers.target(&c.name, plan.layers.mode))
        .collect();
    out.push_str(&format!(
        "overlay with the chain: {}\n",
        plan.overlay_options_with(&dirs)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{layer_name, Origin};

    fn info() -> LayerInfo {
        LayerInfo {
            size: 1,
            meta_digest: String::new(),
            digest: String::new(),
            saved: String::new(),
            entries: 0,
            data_bytes: 0,
            level: 0,
            origin: Origin::Session,
        }
    }

    fn manifest(current: &[u64], backup: &[u64]) -> Saved {
        let mut m = Manifest::empty();
        for &n in current.iter().chain(backup) {
            m.layers.insert(layer_name(n), info());
            m.next_layer = m.next_layer.max(n + 1);
        }
        m.current = current.iter().map(|&n| layer_name(n)).collect();
        m.backup = backup.iter().map(|&n| layer_name(n)).collect();
        Saved::Manifest(m)
    }

    /// `choose` where the layers numbered in `bad` fail as `class`.
    fn run(saved: &Saved, asked: BootType, bad: &[u64], class: FailureClass) -> Choice {
        choose(saved, asked, |c| {
            if bad
                .iter()
                .any(|&n| c.name == layer_name(n) || c.name == format!("{n}"))
            {
                Err(LayerFailure {
                    layer: c.name.clone(),
                    class,
                    message: "bad".into(),
                })
            } else {
                Ok(())
            }
        })
    }

    fn names(c: &Choice) -> Vec<String> {
        c.layers.iter().map(|l| l.name.clone()).collect()
    }

    #[test]
    fn default_uses_the_whole_current_chain() {
        let saved = manifest(&[1, 2, 3], &[1, 2]);
        let c = run(&saved, BootType::Default, &[], FailureClass::Io);
        assert_eq!(c.used, BootType::Default);
        assert_eq!(names(&c), [layer_name(1), layer_name(2), layer_name(3)]);
        assert_eq!(c.layers[0].file, "layers/layer-000001.squashfs");
        assert!(c.failures.is_empty());
        let c = run(&saved, BootType::Backup, &[], FailureClass::Io);
        assert_eq!(
            (c.used, names(&c)),
            (BootType::Backup, vec![layer_name(1), layer_name(2)])
        );
        let c = run(&saved, BootType::Clean, &[], FailureClass::Io);
        assert_eq!((c.used, c.layers.len()), (BootType::Clean, 0));
    }

    #[test]
    fn a_bad_middle_layer_gives_the_prefix_before_it() {
        let saved = manifest(&[1, 2, 3, 4], &[1, 2, 3]);
        let c = run(&saved, BootType::Default, &[3], FailureClass::Corrupt);
        assert_eq!(c.used, BootType::Default);
        assert_eq!(names(&c), [layer_name(1), layer_name(2)]);
        assert_eq!(c.asked_chain.len(), 4);
        assert_eq!(c.failures.len(), 1);
        assert_eq!(c.failures[0].class, FailureClass::Corrupt);
    }

    #[test]
    fn a_bad_first_layer_tries_a_different_backup_then_clean() {
        // After a save from a backup boot, backup is not a prefix of current.
        let saved = manifest(&[1, 5], &[2, 3]);
        let c = run(&saved, BootType::Default, &[1], FailureClass::Corrupt);
        assert_eq!(
            (c.used, names(&c)),
            (BootType::Backup, vec![layer_name(2), layer_name(3)])
        );
        assert_eq!(c.asked_chain, [layer_name(1), layer_name(5)]);
        let c = run(&saved, BootType::Default, &[1, 2], FailureClass::Io);
        assert_eq!(
            (c.used, c.layers.len(), c.failures.len()),
            (BootType::Clean, 0, 2)
        );
        // A shared first layer: the backup is not tried again.
        let saved = manifest(&[1, 2], &[1]);
        let c = run(&saved, BootType::Default, &[1], FailureClass::Io);
        assert_eq!((c.used, c.failures.len()), (BootType::Clean, 1));
    }

    #[test]
    fn legacy_images_are_one_layer_chains() {
        let saved = Saved::Legacy {
            default: true,
            backup: true,
        };
        let c = choose(&saved, BootType::Default, |_| Ok(()));
        assert_eq!(
            (c.used, names(&c)),
            (BootType::Default, vec![LEGACY_IMAGE.to_string()])
        );
        assert_eq!(c.layers[0].file, LEGACY_IMAGE);
        let c = choose(&saved, BootType::Default, |l| {
            if l.name == LEGACY_IMAGE {
                Err(LayerFailure {
                    layer: l.name.clone(),
                    class: FailureClass::Corrupt,
                    message: "x".into(),
                })
            } else {
                Ok(())
            }
        });
        assert_eq!(
            (c.used, names(&c)),
            (BootType::Backup, vec![LEGACY_BACKUP_IMAGE.to_string()])
        );
        let only_backup = Saved::Legacy {
            default: false,
            backup: true,
        };
        let c = choose(&only_backup, BootType::Default, |_| Ok(()));
        assert_eq!(
            (c.used, names(&c)),
            (BootType::Backup, vec![LEGACY_BACKUP_IMAGE.to_string()])
        );
    }

    #[test]
    fn the_dry_run_shows_each_layer_and_the_overlay() {
        let facts = crate::plan::Facts {
            kernel_version: "6.1.0-56-amd64".into(),
            mem_total_bytes: 2 << 30,
        };
        let plan = crate::plan::plan_of("ramstick.layers=ram", &facts);
        let text = describe(&plan, &manifest(&[1, 2], &[3]));
        assert!(
            text.starts_with("saved state: manifest generation 0, 2 layers"),
            "{text}"
        );
        assert!(text.contains("\nchain default: 2 layers\n  layers/layer-000001.squashfs (1 B, saved , session) -> /sysroot/upper/layers/layer-000001\n"), "{text}");
        assert!(
            text.contains("\nchain backup (if the first layer above fails): 1 layers\n"),
            "{text}"
        );
        assert!(text.contains("lowerdir=/sysroot/upper/layers/layer-000002:/sysroot/upper/layers/layer-000001:/sysroot/rootfs,"), "{text}");
        let text = describe(&plan, &Saved::Nothing);
        assert!(text.contains("saved state: nothing saved\n"), "{text}");
        assert!(text.contains("lowerdir=/sysroot/rootfs,"), "{text}");
    }

    #[test]
    fn nothing_or_a_damaged_manifest_boots_clean() {
        for saved in [Saved::Nothing, Saved::Damaged("checksum".into())] {
            let c = choose(&saved, BootType::Default, |_| Ok(()));
            assert_eq!((c.used, c.layers.len()), (BootType::Clean, 0));
        }
    }
}

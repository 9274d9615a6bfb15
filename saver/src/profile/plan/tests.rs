//! The profile plans against a fake stick, cut after every step.

use super::*;
use ramstick_common::manifest::{layer_name, LayerInfo, Origin};
use std::collections::BTreeMap;

/// A file's content or a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(String),
}

/// A stick whose writes stop ("power cut") after `budget` steps.
#[derive(Debug, Clone)]
struct Fake {
    nodes: BTreeMap<String, Node>,
    budget: usize,
}

impl Fake {
    fn spend(&mut self) -> Result<()> {
        if self.budget == 0 {
            bail!("power cut");
        }
        self.budget -= 1;
        Ok(())
    }

    fn parent_is_dir(&self, path: &str) -> bool {
        match path.rsplit_once('/') {
            None => true,
            Some((parent, _)) => self.nodes.get(parent) == Some(&Node::Dir),
        }
    }

    /// The paths under `dir` (itself included), relative to it.
    fn tree(&self, dir: &str) -> BTreeMap<String, Node> {
        let prefix = format!("{dir}/");
        self.nodes
            .iter()
            .filter_map(|(p, n)| {
                if p == dir {
                    Some((String::new(), n.clone()))
                } else {
                    p.strip_prefix(&prefix).map(|r| (r.to_string(), n.clone()))
                }
            })
            .collect()
    }

    /// What the plans are told about the slot (a's).
    fn facts(&self, running: &str) -> Facts {
        let entries = self
            .nodes
            .keys()
            .filter_map(|p| p.strip_prefix("profiles/"))
            .filter(|r| !r.contains('/'))
            .map(String::from)
            .collect();
        Facts {
            slot: Slot::A,
            profiles_dir: self.nodes.contains_key("profiles"),
            entries,
            running: running.into(),
        }
    }

    /// What `name`'s state holds.
    fn saved(&self, name: &str) -> Saved {
        let manifest = place::join(
            &place::state_dir(Slot::A, Some(name)),
            "layers/manifest.json",
        );
        match self.nodes.get(&manifest) {
            Some(Node::File(text)) => match Manifest::parse(text) {
                Ok(m) => Saved::Manifest(m),
                Err(e) => Saved::Damaged(e.to_string()),
            },
            _ => Saved::Nothing,
        }
    }
}

impl ProfileFs for Fake {
    fn mkdir(&mut self, dir: &str) -> Result<()> {
        self.spend()?;
        assert!(self.parent_is_dir(dir), "mkdir {dir} without its parent");
        assert!(!self.nodes.contains_key(dir), "mkdir {dir}: exists");
        self.nodes.insert(dir.into(), Node::Dir);
        Ok(())
    }
    fn link(&mut self, from: &str, to: &str) -> Result<()> {
        self.spend()?;
        let Some(Node::File(text)) = self.nodes.get(from).cloned() else {
            bail!("link: no file {from}");
        };
        assert!(
            self.parent_is_dir(to) && !self.nodes.contains_key(to),
            "link {to}"
        );
        self.nodes.insert(to.into(), Node::File(text));
        Ok(())
    }
    fn write(&mut self, path: &str, text: &str) -> Result<()> {
        self.spend()?;
        assert!(self.parent_is_dir(path), "write {path} without its parent");
        self.nodes.insert(path.into(), Node::File(text.into()));
        Ok(())
    }
    fn sync_dir(&mut self, dir: &str) -> Result<()> {
        self.spend()?;
        assert!(
            dir.is_empty() || self.nodes.get(dir) == Some(&Node::Dir),
            "sync {dir}"
        );
        Ok(())
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.spend()?;
        assert!(!self.nodes.contains_key(to), "rename over {to}");
        let moved = self.tree(from);
        assert!(!moved.is_empty(), "rename: no {from}");
        self.nodes
            .retain(|p, _| p != from && !p.starts_with(&format!("{from}/")));
        for (rel, node) in moved {
            self.nodes.insert(place::join(to, &rel), node);
        }
        Ok(())
    }
    /// One entry at a time, deepest first, as remove_dir_all does: a cut
    /// leaves part of the tree.
    fn remove_tree(&mut self, dir: &str) -> Result<()> {
        let mut doomed: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| *p == dir || p.starts_with(&format!("{dir}/")))
            .cloned()
            .collect();
        doomed.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in doomed {
            self.spend()?;
            self.nodes.remove(&p);
        }
        Ok(())
    }
}

fn info(n: u64) -> LayerInfo {
    LayerInfo {
        size: 4096 * n,
        meta_digest: format!("m{n}"),
        digest: format!("d{n}"),
        saved: format!("20261206-12000{n}"),
        entries: 1,
        data_bytes: 1,
        level: 0,
        origin: Origin::Session,
    }
}

/// A chain of layers 2, 3 over a backup of 1, 2 in `dir`.
fn put_state(nodes: &mut BTreeMap<String, Node>, dir: &str) {
    let layers = place::join(dir, "layers");
    nodes.insert(layers.clone(), Node::Dir);
    let mut m = Manifest::empty();
    for n in 1..=3 {
        m.layers.insert(layer_name(n), info(n));
        nodes.insert(
            place::join(&layers, &layer_name(n)),
            Node::File(format!("{dir} layer {n}")),
        );
    }
    m.next_layer = 4;
    m.generation = 7;
    m.current = vec![layer_name(2), layer_name(3)];
    m.backup = vec![layer_name(1), layer_name(2)];
    nodes.insert(
        place::join(&layers, "manifest.json"),
        Node::File(m.render()),
    );
}

/// A stick with a default state and a profile `work`.
fn stick() -> Fake {
    let mut nodes = BTreeMap::new();
    nodes.insert("rootfs.squashfs".into(), Node::File("base".into()));
    put_state(&mut nodes, "");
    nodes.insert("profiles".into(), Node::Dir);
    nodes.insert("profiles/work".into(), Node::Dir);
    put_state(&mut nodes, "profiles/work");
    Fake {
        nodes,
        budget: usize::MAX,
    }
}

/// The plan of `command` on `fake` booted into `running`.
type Planner = fn(&Fake) -> Result<Vec<Step>>;

/// Runs `plan` cut after every step, then again whole (the user runs the
/// command again): each cut leaves every profile whole or absent under its
/// name (`check`), and the rerun ends where an uncut run does.
fn crash_everywhere(start: &Fake, plan: Planner, check: impl Fn(&Fake) -> Result<(), String>) {
    let steps = plan(start).unwrap();
    let mut done = start.clone();
    run(&mut done, &steps).unwrap();
    check(&done).unwrap();
    // The budget counts units of work (a step, or an entry a tree removal
    // removes): every cut until the run completes.
    for cut in 0.. {
        let mut fake = Fake {
            budget: cut,
            ..start.clone()
        };
        if run(&mut fake, &steps).is_ok() {
            assert!(
                cut >= steps.len(),
                "ran {} steps in {cut} units",
                steps.len()
            );
            break;
        }
        fake.budget = usize::MAX;
        check(&fake).unwrap_or_else(|e| panic!("after {cut} steps: {e}"));
        // The command again: it completes (or has nothing left to do).
        if let Ok(again) = plan(&fake) {
            run(&mut fake, &again).unwrap();
        }
        assert_eq!(fake.nodes, done.nodes, "after {cut} steps and a rerun");
    }
}

/// Everything but `profiles/<name>` and the leftovers is as in `start`.
fn others_untouched(start: &Fake, fake: &Fake, name: &str) -> Result<(), String> {
    let skip = |p: &str| {
        p.starts_with(&format!("profiles/{name}"))
            || p.starts_with("profiles/.new-")
            || p.starts_with("profiles/.del-")
    };
    let a: Vec<_> = start.nodes.iter().filter(|(p, _)| !skip(p)).collect();
    let b: Vec<_> = fake.nodes.iter().filter(|(p, _)| !skip(p)).collect();
    (a == b)
        .then_some(())
        .ok_or_else(|| "another profile changed".into())
}

#[test]
fn create_makes_an_empty_profile_whole_or_not_at_all() {
    let start = stick();
    crash_everywhere(
        &start,
        |f| plan_create(&f.facts("default"), "new"),
        |f| {
            others_untouched(&start, f, "new")?;
            match f.tree("profiles/new").len() {
                0 | 2 if f.saved("new") == Saved::Nothing => Ok(()),
                n => Err(format!("profiles/new has {n} entries")),
            }
        },
    );
    // On a stick without profiles/ too.
    let mut bare = stick();
    bare.nodes.retain(|p, _| !p.starts_with("profiles"));
    crash_everywhere(
        &bare,
        |f| plan_create(&f.facts("default"), "new"),
        |f| match f.tree("profiles/new").len() {
            0 | 2 => Ok(()),
            n => Err(format!("profiles/new has {n} entries")),
        },
    );
}

#[test]
fn copy_starts_as_the_source_chain_whole_or_not_at_all() {
    let start = stick();
    let Saved::Manifest(source) = start.saved("default") else {
        panic!("no source manifest");
    };
    crash_everywhere(
        &start,
        |f| plan_copy(&f.facts("work"), "default", &f.saved("default"), "copy"),
        |f| {
            others_untouched(&start, f, "copy")?;
            if f.tree("profiles/copy").is_empty() {
                return Ok(());
            }
            let Saved::Manifest(m) = f.saved("copy") else {
                return Err("profiles/copy without its manifest".into());
            };
            if m.current != source.current || m.backup != source.current {
                return Err(format!("copied chains {m:?}"));
            }
            // Each layer named is there, with the source's contents.
            for l in &m.current {
                let got = f.nodes.get(&format!("profiles/copy/layers/{l}"));
                if got != start.nodes.get(&format!("layers/{l}")) {
                    return Err(format!("{l}: {got:?}"));
                }
            }
            // Only the current chain's layers: layer 1 is the source's backup.
            let files = f.tree("profiles/copy/layers").len();
            (files == 4)
                .then_some(())
                .ok_or(format!("{files} entries in layers/"))
        },
    );
    // A profile with nothing saved copies as an empty one.
    let mut fresh = stick();
    fresh.nodes.insert("profiles/empty".into(), Node::Dir);
    let steps = plan_copy(&fresh.facts("default"), "empty", &Saved::Nothing, "e2").unwrap();
    run(&mut fresh, &steps).unwrap();
    assert_eq!(fresh.tree("profiles/e2").len(), 2);
}

#[test]
fn delete_renames_aside_first_and_refuses_default_running_and_unknown() {
    let start = stick();
    let work = start.tree("profiles/work");
    crash_everywhere(
        &start,
        |f| plan_delete(&f.facts("default"), "work"),
        |f| {
            others_untouched(&start, f, "work")?;
            let now = f.tree("profiles/work");
            (now.is_empty() || now == work)
                .then_some(())
                .ok_or("profiles/work is half deleted".into())
        },
    );
    let facts = start.facts("work");
    for (name, why) in [
        ("default", "never deleted"),
        ("work", "is running"),
        ("nope", "no profile nope"),
        ("../x", "no profile"),
    ] {
        let e = plan_delete(&facts, name).unwrap_err().to_string();
        assert!(e.contains(why), "{name}: {e}");
    }
}

#[test]
fn bad_and_taken_names_are_refused() {
    let facts = stick().facts("default");
    for (name, why) in [
        ("work", "exists already"),
        ("default", "exists already"),
        ("Work", "cannot name"),
        (".new-x", "cannot name"),
    ] {
        let e = plan_create(&facts, name).unwrap_err().to_string();
        assert!(e.contains(why), "{name}: {e}");
    }
    let e = plan_copy(&facts, "nope", &Saved::Nothing, "x").unwrap_err();
    assert!(e.to_string().contains("no profile nope"), "{e}");
    let legacy = Saved::Legacy {
        default: true,
        backup: false,
    };
    let e = plan_copy(&facts, "default", &legacy, "x").unwrap_err();
    assert!(e.to_string().contains("save once"), "{e}");
}

#[test]
fn a_leftover_of_a_cut_command_is_removed_first() {
    let mut fake = stick();
    fake.nodes.insert("profiles/.new-half".into(), Node::Dir);
    fake.nodes.insert("profiles/.del-old".into(), Node::Dir);
    fake.nodes
        .insert("profiles/.del-old/layers".into(), Node::Dir);
    let steps = plan_create(&fake.facts("default"), "half").unwrap();
    assert_eq!(steps[0], Step::RemoveTree("profiles/.del-old".into()));
    run(&mut fake, &steps).unwrap();
    assert!(
        !fake.nodes.keys().any(|p| p.contains("/.")),
        "{:?}",
        fake.nodes
    );
    assert_eq!(fake.tree("profiles/half").len(), 2);
}

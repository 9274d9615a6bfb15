//! Power cuts injected into every plan that changes the saved state: after
//! every step of a save, a conversion and a compaction, and, at each of
//! those points, with any suffix of the directory operations not yet synced
//! lost (ext4 commits metadata in order; a sync commits all of it). For
//! each outcome, what boot would use must be the old state or the new one,
//! never a mix and never a missing or partial layer, and the next save must
//! leave nothing behind but the committed chain.

use crate::commit::{self, Done, Source, Stick};
use crate::compact;
use crate::saveplan::{self, SessionState, Situation};
use anyhow::{bail, Result};
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::chain::{self, FailureClass, LayerFailure, Saved};
use ramstick_common::cmdline::{BootType, LayersMode};
use ramstick_common::manifest::{
    layer_name, layer_number, LayerInfo, Manifest, Origin, LAYERS_DIR, LEGACY_BACKUP_IMAGE,
    LEGACY_IMAGE,
};
use std::collections::BTreeMap;

/// What a file of the fake stick holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum File {
    /// A complete layer: the sessions whose changes it holds, in order.
    Layer(Vec<u32>),
    /// A write cut short.
    Partial,
    Text(String),
}

type Files = BTreeMap<String, File>;

/// A directory operation not yet made durable by a sync.
#[derive(Debug, Clone)]
enum Op {
    Put(String, File),
    Del(String),
    Move(String, String),
}

fn apply(files: &mut Files, op: &Op) {
    match op {
        Op::Put(path, f) => drop(files.insert(path.clone(), f.clone())),
        Op::Del(path) => drop(files.remove(path)),
        Op::Move(from, to) => {
            if let Some(f) = files.remove(from) {
                files.insert(to.clone(), f);
            }
        }
    }
}

/// The record a layer holding `content` gets.
fn info(content: &[u32]) -> LayerInfo {
    LayerInfo {
        size: 100 * content.len() as u64,
        meta_digest: format!("m{content:?}"),
        digest: format!("f{content:?}"),
        saved: "20261129-120000".into(),
        entries: content.len() as u64,
        data_bytes: content.len() as u64,
        level: 0,
        origin: Origin::Session,
    }
}

/// A stick that stops working ("loses power") after `budget` changes.
struct Fake {
    durable: Files,
    pending: Vec<Op>,
    budget: usize,
    crashed: bool,
    /// The session whose upper `Source::Session` writes.
    session: u32,
}

impl Fake {
    fn new(files: &Files, budget: usize, session: u32) -> Fake {
        Fake {
            durable: files.clone(),
            pending: Vec::new(),
            budget,
            crashed: false,
            session,
        }
    }

    fn live(&self) -> Files {
        let mut files = self.durable.clone();
        self.pending.iter().for_each(|op| apply(&mut files, op));
        files
    }

    fn tick(&mut self) -> Result<()> {
        if self.budget == 0 {
            self.crashed = true;
        }
        if self.crashed {
            bail!("power cut");
        }
        self.budget -= 1;
        Ok(())
    }

    fn sync(&mut self) {
        self.durable = self.live();
        self.pending.clear();
    }

    /// Every state the stick may come back with after the power cut.
    fn outcomes(&self) -> Vec<Files> {
        (0..=self.pending.len())
            .map(|k| {
                let mut files = self.durable.clone();
                self.pending[..k]
                    .iter()
                    .for_each(|op| apply(&mut files, op));
                files
            })
            .collect()
    }

    fn content(&self, path: &str) -> Result<Vec<u32>> {
        match self.live().get(path) {
            Some(File::Layer(c)) => Ok(c.clone()),
            other => bail!("{path} is not a layer: {other:?}"),
        }
    }
}

impl Stick for Fake {
    fn write_layer(&mut self, name: &str, source: &Source) -> Result<LayerInfo> {
        let path = commit::layer_path(name);
        self.tick()?;
        self.pending.push(Op::Put(path.clone(), File::Partial));
        self.tick()?;
        let content = match source {
            Source::Session => vec![self.session],
            Source::Merge(run) => {
                let mut all = Vec::new();
                for n in run {
                    all.extend(self.content(&commit::layer_path(n))?);
                }
                all
            }
        };
        self.pending
            .push(Op::Put(path, File::Layer(content.clone())));
        self.sync();
        Ok(info(&content))
    }

    fn describe(&mut self, path: &str) -> Result<LayerInfo> {
        Ok(info(&self.content(path)?))
    }

    fn link(&mut self, from: &str, to: &str) -> Result<()> {
        self.tick()?;
        let content = self.content(from)?;
        self.pending.push(Op::Put(to.into(), File::Layer(content)));
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.tick()?;
        if !self.live().contains_key(from) {
            bail!("no {from}");
        }
        self.pending.push(Op::Move(from.into(), to.into()));
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        self.tick()?;
        self.pending.push(Op::Del(path.into()));
        Ok(())
    }

    fn write_synced(&mut self, path: &str, text: &str) -> Result<()> {
        self.tick()?;
        self.pending.push(Op::Put(path.into(), File::Partial));
        self.tick()?;
        self.pending
            .push(Op::Put(path.into(), File::Text(text.into())));
        self.sync();
        Ok(())
    }

    fn sync_dir(&mut self, _dir: &str) -> Result<()> {
        self.tick()?;
        self.sync();
        Ok(())
    }
}

/// What the stick holds of the saved state, as init reads it.
fn saved(files: &Files) -> Saved {
    match files.get(&commit::manifest_path()) {
        Some(File::Text(t)) => Manifest::parse(t)
            .map(Saved::Manifest)
            .unwrap_or_else(|e| Saved::Damaged(e.to_string())),
        Some(_) => Saved::Damaged("not text".into()),
        None => {
            let layer = |n| matches!(files.get(n), Some(File::Layer(_)));
            match (layer(LEGACY_IMAGE), layer(LEGACY_BACKUP_IMAGE)) {
                (false, false) => Saved::Nothing,
                (default, backup) => Saved::Legacy { default, backup },
            }
        }
    }
}

/// A boot of `files` as `asked`: the record init would write, and the
/// sessions the used chain shows, in order.
fn boot(files: &Files, asked: BootType) -> (BootInfo, Vec<u32>) {
    let saved = saved(files);
    let mut shown = BTreeMap::new();
    let choice = chain::choose(&saved, asked, |c| {
        let fail = |class, message: &str| LayerFailure {
            layer: c.name.clone(),
            class,
            message: message.into(),
        };
        match files.get(&c.file) {
            None => Err(fail(FailureClass::Missing, "missing")),
            Some(File::Layer(content)) => match &c.info {
                Some(i) if i.meta_digest != info(content).meta_digest => {
                    Err(fail(FailureClass::Corrupt, "digest"))
                }
                _ => {
                    shown.insert(c.name.clone(), content.clone());
                    Ok(())
                }
            },
            Some(_) => Err(fail(FailureClass::Corrupt, "not a layer")),
        }
    });
    let sessions = choice
        .layers
        .iter()
        .flat_map(|c| shown.get(&c.name).cloned().unwrap_or_default())
        .collect();
    let info = BootInfo::chosen(&saved, choice, LayersMode::Mount);
    (info, sessions)
}

/// The names in `layers/`.
fn layer_files(files: &Files) -> Vec<String> {
    files
        .keys()
        .filter_map(|p| p.strip_prefix(&format!("{LAYERS_DIR}/")))
        .map(String::from)
        .collect()
}

/// The save plan of a session booted from `files` as `boot`.
fn save_plan(
    files: &Files,
    boot: &BootInfo,
    session: &SessionState,
    reclaim: bool,
) -> Result<saveplan::SavePlan> {
    let saved = saved(files);
    let present = |n| files.contains_key(n);
    saveplan::plan(&Situation {
        saved: &saved,
        boot,
        session,
        layer_files: &layer_files(files),
        legacy_present: [present(LEGACY_IMAGE), present(LEGACY_BACKUP_IMAGE)],
        stamp: "20261129-130000",
        onto_partial: false,
        reclaim_corrupt: reclaim,
    })
}

/// Only the committed chain is left: every layer file is referenced, no
/// tmp manifest, no legacy image beside a manifest.
fn assert_tidy(files: &Files, what: &str) {
    let Saved::Manifest(m) = saved(files) else {
        panic!("{what}: no manifest after a save: {files:?}");
    };
    let used = m.referenced();
    for name in layer_files(files) {
        let ok = name == "manifest.json"
            || used.contains(name.as_str())
            || (layer_number(&name).is_none() && name.contains("-corrupt-"));
        assert!(ok, "{what}: garbage layers/{name} left; files {files:?}");
    }
    assert!(
        !files.contains_key(LEGACY_IMAGE) && !files.contains_key(LEGACY_BACKUP_IMAGE),
        "{what}: legacy images beside the manifest: {files:?}"
    );
}

/// Runs `steps` with a power cut after every number of changes; for every
/// outcome checks `check(outcome)`, then saves once more (a later session)
/// and checks that this leaves a tidy stick. Returns the completed result.
fn crash_everywhere(
    what: &str,
    files: &Files,
    session: u32,
    steps: &[commit::Step],
    check: &dyn Fn(&Files, usize),
) -> (Files, Done) {
    for budget in 0..200 {
        let mut fake = Fake::new(files, budget, session);
        let result = commit::run(&mut fake, steps);
        // A power cut after the commit still lets the run end Ok (a removal
        // failing then is only reported): only a run that never crashed is complete.
        if let (Ok(done), false) = (result, fake.crashed) {
            let after = fake.live();
            check(&after, budget);
            return (after, done);
        }
        for outcome in fake.outcomes() {
            check(&outcome, budget);
            // The next session boots what is there and saves.
            let (info, _) = boot(&outcome, BootType::Default);
            let next = SessionState::booted(&info);
            let plan = save_plan(&outcome, &info, &next, false)
                .unwrap_or_else(|e| panic!("{what}: budget {budget}: next save refused: {e:#}"));
            let mut fake = Fake::new(&outcome, usize::MAX, 99);
            commit::run(&mut fake, &plan.steps)
                .unwrap_or_else(|e| panic!("{what}: budget {budget}: next save failed: {e:#}"));
            assert_tidy(&fake.live(), &format!("{what}: budget {budget}, next save"));
            let (after, sessions) = boot(&fake.live(), BootType::Default);
            assert!(after.failures.is_empty(), "{what}: {:?}", after.failures);
            assert_eq!(sessions.last(), Some(&99), "{what}");
        }
    }
    panic!("{what}: the plan never completed");
}

/// A manifest stick whose current chain holds one layer per session in
/// `current`, the backup its first `backup_len`.
fn layered(current: &[u32], backup_len: usize) -> Files {
    let mut m = Manifest::empty();
    let mut files = Files::new();
    for (i, s) in current.iter().enumerate() {
        let name = layer_name(i as u64 + 1);
        m.layers.insert(name.clone(), info(&[*s]));
        m.current.push(name.clone());
        files.insert(commit::layer_path(&name), File::Layer(vec![*s]));
    }
    m.backup = m.current[..backup_len].to_vec();
    m.next_layer = current.len() as u64 + 1;
    m.generation = 1;
    files.insert(commit::manifest_path(), File::Text(m.render()));
    files
}

/// A save of session `new` from a boot of `files` as `asked` (with the
/// session's earlier save `session`, if any), crashed everywhere.
fn save_case(what: &str, files: &Files, asked: BootType, session: Option<SessionState>, new: u32) {
    let (info, _) = boot(files, asked);
    let session = session.unwrap_or_else(|| SessionState::booted(&info));
    let plan = save_plan(files, &info, &session, false)
        .unwrap_or_else(|e| panic!("{what}: refused: {e:#}"));
    let before = [
        boot(files, BootType::Default),
        boot(files, BootType::Backup),
    ];
    let mut after_fake = Fake::new(files, usize::MAX, new);
    commit::run(&mut after_fake, &plan.steps).unwrap();
    let complete = after_fake.live();
    let after = [
        boot(&complete, BootType::Default),
        boot(&complete, BootType::Backup),
    ];
    // The completed save: the session on top of the chain it booted.
    let base: Vec<u32> = session
        .base
        .iter()
        .flat_map(|n| {
            let path = match n.starts_with("layer-") {
                true => commit::layer_path(n),
                false => n.clone(),
            };
            match files.get(&path) {
                Some(File::Layer(c)) => c.clone(),
                _ => Vec::new(),
            }
        })
        .collect();
    let expected: Vec<u32> = base.iter().copied().chain([new]).collect();
    assert_eq!(after[0].1, expected, "{what}: the new default state");
    assert!(
        after[0].0.failures.is_empty(),
        "{what}: {:?}",
        after[0].0.failures
    );
    assert_tidy(&complete, what);
    let check = |outcome: &Files, budget: usize| {
        for (i, asked) in [BootType::Default, BootType::Backup]
            .into_iter()
            .enumerate()
        {
            let (got_info, got) = boot(outcome, asked);
            assert!(
                got == before[i].1 || got == after[i].1,
                "{what}: power cut after {budget} changes: {asked} boot shows {got:?}, \
                 expected {:?} (old) or {:?} (new); files {outcome:?}",
                before[i].1,
                after[i].1
            );
            // Never a layer the committed manifest names that is partial.
            let new_failures: Vec<_> = got_info
                .failures
                .iter()
                .filter(|f| !before[i].0.failures.contains(f))
                .collect();
            assert!(
                new_failures.is_empty(),
                "{what}: budget {budget}: {new_failures:?}"
            );
        }
    };
    crash_everywhere(what, files, new, &plan.steps, &check);
}

#[test]
fn saves_survive_a_power_cut_anywhere() {
    save_case("first save", &Files::new(), BootType::Default, None, 1);
    save_case(
        "second session",
        &layered(&[1], 0),
        BootType::Default,
        None,
        2,
    );
    save_case(
        "fourth session",
        &layered(&[1, 2, 3], 2),
        BootType::Default,
        None,
        4,
    );
    // A checkpoint replaces the session's own layer; backup stays the state before it.
    let files = layered(&[1, 2, 3], 2);
    let session = SessionState {
        base: vec![layer_name(1), layer_name(2)],
        layer: Some(layer_name(3)),
    };
    save_case("checkpoint", &files, BootType::Default, Some(session), 3);
    save_case(
        "after a backup boot",
        &layered(&[1, 2, 3], 2),
        BootType::Backup,
        None,
        4,
    );
    // Garbage from an interrupted save: removed first.
    let mut files = layered(&[1, 2], 1);
    files.insert(commit::layer_path(&layer_name(3)), File::Partial);
    files.insert(commit::manifest_tmp_path(), File::Partial);
    save_case("with garbage", &files, BootType::Default, None, 3);
}

#[test]
fn a_corrupt_layer_is_set_aside_and_the_layers_above_it_kept() {
    let mut files = layered(&[1, 2, 3, 4], 3);
    files.insert(commit::layer_path(&layer_name(2)), File::Layer(vec![666]));
    save_case("corrupt middle layer", &files, BootType::Default, None, 5);
    let (info, _) = boot(&files, BootType::Default);
    let plan = save_plan(&files, &info, &SessionState::booted(&info), false).unwrap();
    let mut fake = Fake::new(&files, usize::MAX, 5);
    commit::run(&mut fake, &plan.steps).unwrap();
    let after = fake.live();
    let Saved::Manifest(m) = saved(&after) else {
        panic!()
    };
    assert_eq!(m.current, [layer_name(1), layer_name(5)]);
    assert_eq!(m.kept.len(), 1, "{m:?}");
    assert_eq!(m.kept[0].layers, [layer_name(3), layer_name(4)]);
    assert!(after.contains_key("layers/layer-000002-corrupt-20261129-130000.squashfs"));
    // When space is short, the proven-corrupt layer is deleted instead.
    let plan = save_plan(&files, &info, &SessionState::booted(&info), true).unwrap();
    let mut fake = Fake::new(&files, usize::MAX, 5);
    commit::run(&mut fake, &plan.steps).unwrap();
    assert!(!fake.live().keys().any(|k| k.contains("layer-000002")));
}

#[test]
fn a_transient_failure_refuses_the_save() {
    let files = layered(&[1, 2, 3], 2);
    let (mut info, _) = boot(&files, BootType::Default);
    info.layers.truncate(1);
    info.failures.push(LayerFailure {
        layer: layer_name(2),
        class: FailureClass::Io,
        message: "Input/output error".into(),
    });
    let err = save_plan(&files, &info, &SessionState::booted(&info), false).unwrap_err();
    assert!(format!("{err:#}").contains("not proof"), "{err:#}");
    // Asked to go on: the whole chain is kept aside, nothing deleted.
    let saved = saved(&files);
    let session = SessionState::booted(&info);
    let plan = saveplan::plan(&Situation {
        saved: &saved,
        boot: &info,
        session: &session,
        layer_files: &layer_files(&files),
        legacy_present: [false, false],
        stamp: "s",
        onto_partial: true,
        reclaim_corrupt: true,
    })
    .unwrap();
    assert_eq!(plan.manifest.current, [layer_name(1), layer_name(4)]);
    assert_eq!(plan.manifest.kept[0].layers, [layer_name(2), layer_name(3)]);
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, commit::Step::Remove(_))));
}

#[test]
fn legacy_sticks_are_converted_by_their_first_save() {
    let legacy = |default: bool| {
        let mut files = Files::new();
        if default {
            files.insert(LEGACY_IMAGE.into(), File::Layer(vec![2]));
        }
        files.insert(LEGACY_BACKUP_IMAGE.into(), File::Layer(vec![1]));
        files
    };
    save_case("legacy", &legacy(true), BootType::Default, None, 3);
    save_case(
        "legacy, default missing",
        &legacy(false),
        BootType::Default,
        None,
        3,
    );
    save_case(
        "legacy, backup boot",
        &legacy(true),
        BootType::Backup,
        None,
        3,
    );
    let mut broken = legacy(true);
    broken.insert(LEGACY_IMAGE.into(), File::Partial);
    save_case(
        "legacy, default unreadable",
        &broken,
        BootType::Default,
        None,
        3,
    );
    // A conversion cut short after its commit: the next save removes the leftovers.
    let (info, _) = boot(&legacy(true), BootType::Default);
    let plan = save_plan(&legacy(true), &info, &SessionState::booted(&info), false).unwrap();
    let commit_at = plan
        .steps
        .iter()
        .position(|s| *s == commit::Step::Commit)
        .unwrap();
    let mut fake = Fake::new(&legacy(true), usize::MAX, 3);
    commit::run(&mut fake, &plan.steps[..=commit_at + 1]).unwrap();
    let cut = fake.live();
    assert!(cut.contains_key(LEGACY_IMAGE));
    save_case("conversion leftovers", &cut, BootType::Default, None, 4);
}

#[test]
fn compaction_never_changes_what_boot_shows() {
    let sessions: Vec<u32> = (1..=10).collect();
    let files = layered(&sessions, 9);
    let Saved::Manifest(m) = saved(&files) else {
        panic!()
    };
    let run = compact::pick(&m, &compact::POLICY).unwrap();
    let plan = compact::plan(&m, &run, &layer_files(&files));
    let before = [
        boot(&files, BootType::Default).1,
        boot(&files, BootType::Backup).1,
    ];
    let check = |outcome: &Files, budget: usize| {
        for (i, asked) in [BootType::Default, BootType::Backup]
            .into_iter()
            .enumerate()
        {
            let (info, got) = boot(outcome, asked);
            assert_eq!(
                got, before[i],
                "budget {budget}: {asked}; files {outcome:?}"
            );
            assert!(
                info.failures.is_empty(),
                "budget {budget}: {:?}",
                info.failures
            );
        }
    };
    let (after, done) = crash_everywhere("compaction", &files, 0, &plan.steps, &check);
    assert_tidy(&after, "compaction");
    let m = done.manifest.unwrap();
    assert_eq!(m.current.len(), 2);
    assert_eq!(m.layers[&plan.merged].size, 900);
}

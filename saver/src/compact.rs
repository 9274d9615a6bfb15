//! Compaction: merging consecutive layers into one (our codec's `merge`,
//! overlay semantics), so the chain stays short and boot stays fast, while
//! the bytes it rewrites stay a small multiple of what the sessions changed.
//!
//! The policy is tiered by level: a session's layer is level 0, a merge one
//! more than the highest of its inputs. When the newest layers below the
//! latest session hold [`Policy::fan_in`] layers of the same level, they
//! become one layer of the next level; a byte is therefore rewritten about
//! once per level, i.e. log_fan_in(sessions) times (twice in 64 sessions at
//! fan-in 8). Independently of the levels, the chain never exceeds
//! [`Policy::max_chain`] layers: when the next save would reach it, the
//! newest mergeable layers are merged.
//!
//! Only the bottom of `current` that `backup` shares is merged (the layer
//! of the latest session never is), so both chains name the merged layer
//! and each still shows exactly what it showed. The plan, like a save's:
//! the merged layer is written and verified under a new name, the manifest
//! committed, then the merged layers removed.

use crate::commit::{layer_path, Source, Step};
use crate::saveplan::garbage;
use ramstick_common::chain::Saved;
use ramstick_common::manifest::{layer_name, LayerInfo, Manifest, Origin, LAYERS_DIR, MAX_CHAIN};

/// When to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Layers of one level merged at once.
    pub fan_in: usize,
    /// The longest chain.
    pub max_chain: usize,
}

/// The policy of the saver.
pub const POLICY: Policy = Policy {
    fan_in: 8,
    max_chain: MAX_CHAIN,
};

/// The layers that may be merged: the bottom of `current` that `backup` shares.
fn mergeable(m: &Manifest) -> &[String] {
    // The newest layer of current is the latest session's: never merged.
    &m.current[..m.shared_prefix().min(m.current.len().saturating_sub(1))]
}

fn level(m: &Manifest, name: &str) -> u32 {
    m.layers.get(name).map_or(0, |l| l.level)
}

/// The run to merge now, if any.
pub fn pick(m: &Manifest, policy: &Policy) -> Option<Vec<String>> {
    let cands = mergeable(m);
    // Room for the next session's layer.
    if m.current.len() >= policy.max_chain {
        let k = (m.current.len() + 2 - policy.max_chain).min(cands.len());
        return (k >= 2).then(|| cands[cands.len() - k..].to_vec());
    }
    let top = level(m, cands.last()?);
    let run = cands
        .iter()
        .rev()
        .take_while(|n| level(m, n) == top)
        .count();
    (run >= policy.fan_in).then(|| cands[cands.len() - run..].to_vec())
}

/// Everything that may be merged, when it is two layers or more (`saver compact`).
pub fn pick_all(m: &Manifest) -> Option<Vec<String>> {
    let cands = mergeable(m);
    (cands.len() >= 2).then(|| cands.to_vec())
}

/// Bytes a merge of `run` reads.
pub fn input_bytes(m: &Manifest, run: &[String]) -> u64 {
    run.iter()
        .filter_map(|n| m.layers.get(n))
        .map(|l| l.size)
        .sum()
}

/// A compaction to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactPlan {
    pub steps: Vec<Step>,
    pub merged: String,
    pub manifest: Manifest,
}

/// Plans the merge of `run` (consecutive in `current`) on the stick holding
/// `saved` (whose layers directory lists `layer_files`).
pub fn plan(old: &Manifest, run: &[String], layer_files: &[String]) -> CompactPlan {
    let mut m = old.clone();
    let merged = layer_name(m.next_layer);
    m.next_layer += 1;
    m.generation += 1;
    let top = run.iter().map(|n| level(old, n)).max().unwrap_or(0);
    m.layers.insert(
        merged.clone(),
        LayerInfo::planned(top + 1, Origin::Compacted),
    );
    m.substitute(run, &merged);
    m.prune();
    let mut steps = garbage(&Saved::Manifest(old.clone()), layer_files);
    steps.push(Step::WriteLayer {
        name: merged.clone(),
        source: Source::Merge(run.to_vec()),
    });
    steps.push(Step::WriteManifest(Box::new(m.clone())));
    steps.push(Step::Commit);
    steps.push(Step::SyncDir(LAYERS_DIR.into()));
    let freed: Vec<Step> = run
        .iter()
        .filter(|n| !m.layers.contains_key(*n))
        .map(|n| Step::Remove(layer_path(n)))
        .collect();
    if !freed.is_empty() {
        steps.extend(freed);
        steps.push(Step::SyncDir(LAYERS_DIR.into()));
    }
    CompactPlan {
        steps,
        merged,
        manifest: m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_common::manifest::Kept;

    fn manifest(levels: &[u32], backup_len: usize) -> Manifest {
        let mut m = Manifest::empty();
        for (i, &level) in levels.iter().enumerate() {
            let name = layer_name(i as u64 + 1);
            m.layers.insert(
                name.clone(),
                LayerInfo {
                    size: 10,
                    meta_digest: String::new(),
                    digest: String::new(),
                    saved: String::new(),
                    entries: 1,
                    data_bytes: 10,
                    level,
                    origin: Origin::Session,
                },
            );
            m.current.push(name);
        }
        m.backup = m.current[..backup_len].to_vec();
        m.next_layer = levels.len() as u64 + 1;
        m
    }

    #[test]
    fn eight_layers_of_a_level_below_the_latest_session_merge() {
        // 8 session layers below the newest one: merged.
        let m = manifest(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0], 9);
        let run = pick(&m, &POLICY).unwrap();
        assert_eq!(run, m.current[1..9]);
        // Seven are not enough; the newest is never counted.
        let m = manifest(&[3, 0, 0, 0, 0, 0, 0, 0, 0], 8);
        assert_eq!(pick(&m, &POLICY), None);
        // A run of level 1 above level 0 layers is not mixed with them.
        let m = manifest(&[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0], 10);
        assert_eq!(pick(&m, &POLICY).unwrap(), m.current[2..10]);
    }

    #[test]
    fn only_the_part_backup_shares_is_merged() {
        // After a backup boot's save the backup is another chain.
        let mut m = manifest(&[0; 12], 11);
        m.backup = vec![layer_name(1), layer_name(2)];
        assert_eq!(pick(&m, &POLICY), None);
    }

    #[test]
    fn the_chain_bound_is_kept_whatever_the_levels() {
        let levels: Vec<u32> = (0..16).map(|i| (i % 4) as u32).collect();
        let m = manifest(&levels, 15);
        let run = pick(&m, &POLICY).unwrap();
        // 16 layers: merge 2 → 15, room for the next session's.
        assert_eq!(run, m.current[13..15]);
        let p = plan(&m, &run, &[]);
        assert_eq!(p.manifest.current.len(), 15);
        assert!(p.manifest.current.len() < POLICY.max_chain);
    }

    #[test]
    fn the_plan_substitutes_everywhere_and_removes_only_unreferenced_inputs() {
        let mut m = manifest(&[0; 10], 9);
        m.kept.push(Kept {
            why: "x".into(),
            stamp: "s".into(),
            layers: vec![layer_name(2)],
        });
        let run = pick(&m, &POLICY).unwrap();
        assert_eq!(run.len(), 9, "{run:?}");
        let files: Vec<String> = m.layers.keys().cloned().collect();
        let p = plan(&m, &run, &files);
        assert_eq!(p.merged, layer_name(11));
        assert_eq!(p.manifest.current, [layer_name(11), layer_name(10)]);
        assert_eq!(p.manifest.backup, [layer_name(11)]);
        assert_eq!(p.manifest.layers[&layer_name(11)].level, 1);
        assert_eq!(p.manifest.generation, m.generation + 1);
        // Layer 2 is kept aside by another chain: not removed.
        let removed: Vec<&Step> = p
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Remove(_)))
            .collect();
        assert_eq!(removed.len(), 8);
        assert!(!removed.contains(&&Step::Remove(layer_path(&layer_name(2)))));
        let commit = p.steps.iter().position(|s| *s == Step::Commit).unwrap();
        let write = p
            .steps
            .iter()
            .position(|s| matches!(s, Step::WriteLayer { .. }))
            .unwrap();
        let first_remove = p
            .steps
            .iter()
            .position(|s| matches!(s, Step::Remove(_)))
            .unwrap();
        assert!(write < commit && commit < first_remove);
        assert_eq!(input_bytes(&m, &run), 90);
    }
}

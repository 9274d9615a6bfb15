//! The root filesystem trees other than the busybox one, and the cached
//! disks of them: the Debian kinds (built once with `mmdebstrap` and kept in
//! `target/rootfs-<kind>[-minimal]`, rebuilt when `rootfs-skel/` or their
//! builders change) and any other tree a scenario makes.

use super::{cache, spec_hash, Ctx, DiskSpec};
use crate::hooks::Saver;
use crate::{image, rootfs, target_dir, workspace_root};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

impl Ctx {
    /// The tree of `kind` (`minimal` as `rootfs --minimal`), built when
    /// missing or stale; with its stamp (the hash of what built it).
    pub fn kind_tree(&mut self, kind: rootfs::Kind, minimal: bool) -> Result<(PathBuf, String)> {
        let name = format!(
            "rootfs-{}{}",
            kind_name(kind),
            if minimal { "-minimal" } else { "" }
        );
        let dir = target_dir().join(&name);
        let stamp = target_dir().join(format!("{name}.stamp"));
        let _building = Ctx::building();
        let mut h = cache::Hasher::default();
        let root = workspace_root();
        h.tree(&root.join("rootfs-skel"))?;
        for source in [
            "xtask/src/rootfs.rs",
            "xtask/src/hooks.rs",
            "common/src/initsys.rs",
        ] {
            h.file(&root.join(source))?;
        }
        h.str(&format!("{kind:?} {minimal}"));
        let want = format!("{:016x}", h.finish());
        let have = fs::read_to_string(&stamp).unwrap_or_default();
        if have.trim() != want || !dir.join(rootfs::MARKER).is_file() {
            println!("e2e: building {name} (mmdebstrap, a few minutes)");
            rootfs::build_with(kind, minimal, &dir)?;
            fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
        }
        Ok((dir, want))
    }

    /// A fresh copy of the disk of `kind`'s tree with `spec`, built into
    /// the cache when needed.
    pub fn kind_disk(
        &mut self,
        kind: rootfs::Kind,
        minimal: bool,
        spec: &DiskSpec,
    ) -> Result<PathBuf> {
        let (tree, stamp) = self.kind_tree(kind, minimal)?;
        self.tree_disk(&tree, &stamp, spec, Saver::Required)
    }

    /// A fresh copy of the disk of the tree `tree` (whose content `stamp`
    /// names) with `spec`, its saver hook as `saver` says.
    pub fn tree_disk(
        &mut self,
        tree: &Path,
        stamp: &str,
        spec: &DiskSpec,
        saver: Saver,
    ) -> Result<PathBuf> {
        let name = format!(
            "{}-{stamp}-{:016x}-{saver:?}",
            tree.file_name().unwrap_or_default().to_string_lossy(),
            spec_hash(spec)?
        );
        let tree = tree.to_path_buf();
        self.cached_disk(&name, |ctx, out| {
            let image_spec = image::Spec {
                rootfs: tree.clone(),
                ..ctx.image_spec(spec, out)
            };
            image::build_full(&image_spec, None, saver)
        })
    }
}

/// The kind as `--kind` spells it.
fn kind_name(kind: rootfs::Kind) -> String {
    use clap::ValueEnum;
    kind.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{kind:?}"))
}

//! The ramstick files a root filesystem tree needs, chosen for the tree:
//! the saver hook of its init system (see [`ramstick_common::initsys`];
//! the files are in `rootfs-skel/hooks/`), the default exclusion list when
//! the tree has none, and on a dpkg tree the kernel hooks that put a kernel
//! installed in the session on the stick.
//!
//! `cargo xtask image` adds them to `rootfs.squashfs` as mksquashfs pseudo
//! files ([`Plan::mksquashfs_args`]), never touching the tree; `cargo xtask
//! rootfs` writes them into the trees it builds ([`Plan::apply`]). A hook
//! the tree already has is kept. A tree whose init system is not
//! recognised is refused, unless the stick is to save nothing (`--no-saver`).

use anyhow::{bail, Context, Result};
use ramstick_common::initsys::{
    self, InitSystem, INITTAB, INITTAB_START, INITTAB_STOP, OPENRC_RUNLEVEL, SERVICE_PATH,
    SYSTEMD_UNIT, SYSTEMD_UNIT_PATH, SYSTEMD_WANTS,
};
use ramstick_common::tree::resolve_in_root;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The default exclusion list, in the tree.
const EXCLUDE: &str = "etc/ramstick/exclude";
/// The kernel hooks, in a dpkg tree.
const KERNEL_HOOKS: [&str; 2] = [
    "etc/kernel/postinst.d/zz-ramstick",
    "etc/kernel/postrm.d/zz-ramstick",
];
/// The inittab ids of the sysvinit lines (unique within an inittab).
const SYSV_START_ID: &str = "rsS";
const SYSV_STOP_ID: &str = "rsK";
/// What busybox init runs without an /etc/inittab (its built-in table).
const BUSYBOX_DEFAULT_INITTAB: &str = "::sysinit:/etc/init.d/rcS\n::askfirst:-/bin/sh\n\
    tty2::askfirst:-/bin/sh\ntty3::askfirst:-/bin/sh\ntty4::askfirst:-/bin/sh\n\
    ::ctrlaltdel:/sbin/reboot\n::shutdown:/sbin/swapoff -a\n::shutdown:/bin/umount -a -r\n\
    ::restart:/sbin/init\n";

/// Whether the stick must save its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saver {
    /// Add the saver hook; refuse a tree whose init system is unknown.
    Required,
    /// `--no-saver`: add none (sessions are not saved, and init says so).
    None,
}

/// What one added path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Dir,
    File { content: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A path (relative to the tree, symlinked parents resolved) to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub body: Body,
    /// The tree has something else at `path`, which this replaces.
    pub replaces: bool,
}

/// What a tree gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The init system found.
    pub init: Option<InitSystem>,
    pub entries: Vec<Entry>,
    /// What was decided, for people.
    pub notes: Vec<String>,
}

/// The plan for the tree `root` (read only).
pub fn plan(root: &Path, saver: Saver) -> Result<Plan> {
    let skel = crate::workspace_root().join("rootfs-skel");
    let mut plan = Plan::default();
    let mut wanted: Vec<(String, Body)> = Vec::new();
    match (initsys::detect(root, "/sbin/init"), saver) {
        (Err(e), Saver::Required) => bail!(
            "{e}.\nThe stick would not save its sessions: build it with --no-saver to accept \
             that (every boot then says so)"
        ),
        (Err(e), Saver::None) => plan.notes.push(format!(
            "no saver hook (--no-saver; {e}): sessions are not saved"
        )),
        (Ok(system), Saver::None) => {
            plan.init = Some(system);
            plan.notes.push(match initsys::hook_present(root, system) {
                Ok(()) => format!("--no-saver: the tree's own {system} saver hook is kept"),
                Err(_) => {
                    format!("no saver hook for {system} (--no-saver): sessions are not saved")
                }
            });
        }
        (Ok(system), Saver::Required) => {
            plan.init = Some(system);
            match initsys::hook_present(root, system) {
                Ok(()) => plan
                    .notes
                    .push(format!("the tree has the {system} saver hook already")),
                Err(why) => {
                    plan.notes.push(format!(
                        "init system {system}: adding its saver hook ({why})"
                    ));
                    wanted.extend(saver_hook(root, &skel, system)?);
                }
            }
        }
    }
    if resolve_in_root(root, Path::new(EXCLUDE)).is_none() {
        wanted.push((
            EXCLUDE.into(),
            file(&skel.join("common").join(EXCLUDE), 0o644)?,
        ));
    }
    if root.join("var/lib/dpkg").is_dir() {
        for hook in KERNEL_HOOKS {
            wanted.push((
                hook.into(),
                file(&skel.join("hooks/kernel/zz-ramstick"), 0o755)?,
            ));
        }
    }
    for (path, body) in wanted {
        add(&mut plan, root, &path, body)?;
    }
    Ok(plan)
}

/// The files of `system`'s saver hook.
fn saver_hook(root: &Path, skel: &Path, system: InitSystem) -> Result<Vec<(String, Body)>> {
    let hooks = skel.join("hooks");
    let link = |target: &str| Body::Symlink(format!("/{target}"));
    Ok(match system {
        InitSystem::Systemd => vec![
            (
                SYSTEMD_UNIT_PATH.into(),
                file(&hooks.join("systemd").join(SYSTEMD_UNIT), 0o644)?,
            ),
            (
                format!("{SYSTEMD_WANTS}/{SYSTEMD_UNIT}"),
                link(SYSTEMD_UNIT_PATH),
            ),
        ],
        InitSystem::OpenRc => vec![
            (
                SERVICE_PATH.into(),
                file(&hooks.join("openrc/ramstick-saver"), 0o755)?,
            ),
            (
                format!("{OPENRC_RUNLEVEL}/ramstick-saver"),
                link(SERVICE_PATH),
            ),
        ],
        InitSystem::SysVinit | InitSystem::Busybox => {
            let current = resolve_in_root(root, Path::new(INITTAB))
                .and_then(|p| std::fs::read_to_string(p).ok());
            let inittab = match system {
                InitSystem::SysVinit => sysvinit_inittab(current.as_deref().unwrap_or(""))?,
                _ => busybox_inittab(current.as_deref()),
            };
            vec![
                (
                    SERVICE_PATH.into(),
                    file(&hooks.join("sysv/ramstick-saver"), 0o755)?,
                ),
                (
                    INITTAB.into(),
                    Body::File {
                        content: inittab.into_bytes(),
                        mode: 0o644,
                    },
                ),
            ]
        }
    })
}

/// A skel file's content with `mode`.
fn file(path: &Path, mode: u32) -> Result<Body> {
    Ok(Body::File {
        content: std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        mode,
    })
}

/// Adds `path` (and the directories it needs) to the plan unless the tree
/// has it already, at the path its symlinked parents lead to.
fn add(plan: &mut Plan, root: &Path, path: &str, body: Body) -> Result<()> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = real_dir(plan, root, parent)?;
    let path = if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    };
    let host = root.join(&path);
    let existing = host.symlink_metadata().ok();
    let same = match (&existing, &body) {
        (Some(m), Body::File { content, .. }) if m.is_file() => {
            std::fs::read(&host).is_ok_and(|c| &c == content)
        }
        (Some(m), Body::Symlink(target)) if m.file_type().is_symlink() => {
            std::fs::read_link(&host).is_ok_and(|t| t == Path::new(target))
        }
        (Some(m), Body::Dir) => m.is_dir(),
        _ => false,
    };
    if !same {
        plan.entries.push(Entry {
            path,
            body,
            replaces: existing.is_some(),
        });
    }
    Ok(())
}

/// The path of directory `dir` of the tree with its symlinks resolved,
/// adding the directories that are missing to the plan.
fn real_dir(plan: &mut Plan, root: &Path, dir: &str) -> Result<String> {
    if dir.is_empty() {
        return Ok(String::new());
    }
    if let Some(host) = resolve_in_root(root, Path::new(dir)) {
        if host.is_dir() {
            let rel = host.strip_prefix(root).unwrap_or(Path::new(dir));
            return Ok(rel.to_string_lossy().into_owned());
        }
        bail!("{dir} in the tree is not a directory");
    }
    let planned = |p: &Plan| {
        p.entries
            .iter()
            .any(|e| e.path == dir && e.body == Body::Dir)
    };
    let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
    let parent = real_dir(plan, root, parent)?;
    let path = if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    };
    if !planned(plan) {
        plan.entries.push(Entry {
            path: path.clone(),
            body: Body::Dir,
            replaces: false,
        });
    }
    Ok(path)
}

/// A sysvinit inittab with the saver's lines: the daemon started once in
/// the multi-user runlevels, and its save waited for at runlevels 0 and 6
/// before the line that runs the rc scripts of those runlevels.
pub fn sysvinit_inittab(text: &str) -> Result<String> {
    let lines: Vec<_> = initsys::inittab_lines(text).collect();
    for id in [SYSV_START_ID, SYSV_STOP_ID] {
        if lines.iter().any(|l| l.id == id) {
            bail!("/etc/inittab already has an entry with id {id}");
        }
    }
    let ours = format!(
        "# ramstick: the saver daemon, and the session saved before the system stops\n\
         {SYSV_START_ID}:2345:once:{INITTAB_START}\n{SYSV_STOP_ID}:06:wait:{INITTAB_STOP}\n"
    );
    let at_halt = |line: &str| {
        initsys::inittab_lines(line)
            .next()
            .is_some_and(|l| l.runlevels.contains(['0', '6']))
    };
    let mut out = String::new();
    let mut placed = false;
    for line in text.lines() {
        if !placed && at_halt(line) {
            out.push_str(&ours);
            placed = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !placed {
        out.push_str(&ours);
    }
    Ok(out)
}

/// A busybox inittab (or its built-in one when the tree has none) with the
/// saver's lines: the daemon started after the other `sysinit` lines, the
/// session saved before the first `shutdown` line (which unmounts).
pub fn busybox_inittab(text: Option<&str>) -> String {
    let text = text.unwrap_or(BUSYBOX_DEFAULT_INITTAB);
    let is = |line: &str, action: &str| {
        initsys::inittab_lines(line)
            .next()
            .is_some_and(|l| l.action == action)
    };
    let lines: Vec<&str> = text.lines().collect();
    let last_sysinit = lines.iter().rposition(|l| is(l, "sysinit"));
    let first_shutdown = lines.iter().position(|l| is(l, "shutdown"));
    let start = format!("::sysinit:{INITTAB_START}\n");
    let stop = format!(
        "# ramstick: save the session before anything is unmounted\n::shutdown:{INITTAB_STOP}\n"
    );
    let mut out = String::new();
    if last_sysinit.is_none() {
        out.push_str(&start);
    }
    for (i, line) in lines.iter().enumerate() {
        if Some(i) == first_shutdown {
            out.push_str(&stop);
        }
        out.push_str(line);
        out.push('\n');
        if Some(i) == last_sysinit {
            out.push_str(&start);
        }
    }
    if first_shutdown.is_none() {
        out.push_str(&stop);
    }
    out
}

impl Plan {
    /// One line per decision and per added path.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = self.notes.clone();
        for e in &self.entries {
            let what = match &e.body {
                Body::Dir => "directory".to_string(),
                Body::File { .. } => "file".to_string(),
                Body::Symlink(target) => format!("link to {target}"),
            };
            lines.push(format!(
                "{} /{} ({what})",
                if e.replaces { "replaced" } else { "added" },
                e.path
            ));
        }
        lines
    }

    /// Writes the entries into the tree `root`.
    pub fn apply(&self, root: &Path) -> Result<()> {
        for e in &self.entries {
            let path = root.join(&e.path);
            if e.replaces && e.body != Body::Dir {
                crate::deps::remove_if_exists(&path)?;
            }
            match &e.body {
                Body::Dir => std::fs::create_dir_all(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
                Body::File { content, mode } => {
                    std::fs::write(&path, content)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                        .with_context(|| format!("cannot chmod {}", path.display()))?;
                }
                Body::Symlink(target) => std::os::unix::fs::symlink(target, &path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            }
        }
        Ok(())
    }

    /// mksquashfs arguments that put the entries into the image of the
    /// tree: `-p` pseudo definitions (file contents written under `work`)
    /// and the paths to exclude from the tree (those replaced).
    pub fn mksquashfs_args(&self, work: &Path) -> Result<(Vec<String>, Vec<String>)> {
        let mut pseudo = Vec::new();
        let mut excludes = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.replaces {
                excludes.push(e.path.clone());
            }
            let path = pseudo_path(&e.path)?;
            pseudo.push(match &e.body {
                Body::Dir => format!("{path} d 755 0 0"),
                Body::Symlink(target) => format!("{path} s 777 0 0 {target}"),
                Body::File { content, mode } => {
                    let host: PathBuf = work.join(format!("hook-{i}"));
                    std::fs::write(&host, content)
                        .with_context(|| format!("cannot write {}", host.display()))?;
                    format!("{path} f {mode:o} 0 0 cat {}", shell_quote(&host)?)
                }
            });
        }
        Ok((pseudo, excludes))
    }
}

/// A tree path as a pseudo definition names it (no spaces or quotes: ours
/// never have them).
fn pseudo_path(path: &str) -> Result<String> {
    if path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        bail!("cannot add {path:?} as a pseudo file");
    }
    Ok(path.to_string())
}

/// `path` in single quotes for the shell mksquashfs runs pseudo commands with.
fn shell_quote(path: &Path) -> Result<String> {
    let text = path.to_string_lossy();
    if text.contains('\'') {
        bail!("the scratch path {text:?} has a quote");
    }
    Ok(format!("'{text}'"))
}

#[cfg(test)]
mod tests;

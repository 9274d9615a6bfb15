//! Which init system a root filesystem runs, and whether the saver's hook
//! for it is there: the thing that saves the session when the system stops.
//!
//! `cargo xtask image` uses [`detect`] to pick the hook it adds to a tree,
//! and init uses [`check`] on the new root at every boot, so that a session
//! that nothing will save says so before the user starts working.
//!
//! The hooks, per init system (the files are in `rootfs-skel/hooks/`):
//!
//! * systemd: `ramstick-saver.service` (runs `saver daemon`, which saves on
//!   SIGTERM), enabled by a link in an `/etc/systemd/system/*.wants/`;
//! * OpenRC (Alpine's busybox init + OpenRC, `openrc-init`, or Debian's
//!   sysvinit + OpenRC): the service `/etc/init.d/ramstick-saver`, in a
//!   runlevel under `/etc/runlevels/`;
//! * sysvinit and busybox init: the script `/etc/init.d/ramstick-saver`,
//!   started and stopped by lines of `/etc/inittab` (its `stop` saves).
//!
//! Everything here only reads files of the tree.

use crate::tree::resolve_in_root;
use std::fmt;
use std::path::Path;

/// The systemd unit's file name.
pub const SYSTEMD_UNIT: &str = "ramstick-saver.service";
/// Where `cargo xtask image` puts the unit.
pub const SYSTEMD_UNIT_PATH: &str = "etc/systemd/system/ramstick-saver.service";
/// The target whose `.wants/` enables the unit.
pub const SYSTEMD_WANTS: &str = "etc/systemd/system/multi-user.target.wants";
/// The OpenRC service, or the sysvinit/busybox script.
pub const SERVICE_PATH: &str = "etc/init.d/ramstick-saver";
/// The OpenRC runlevel the service is added to.
pub const OPENRC_RUNLEVEL: &str = "etc/runlevels/default";
/// The inittab of sysvinit and busybox init.
pub const INITTAB: &str = "etc/inittab";
/// What an inittab line runs to start the saver daemon.
pub const INITTAB_START: &str = "/etc/init.d/ramstick-saver start";
/// What an inittab line runs to save the session at shutdown.
pub const INITTAB_STOP: &str = "/etc/init.d/ramstick-saver stop";
/// The saver's path in a running stick (older busybox hooks call it directly).
const SAVER: &str = "/run/ramstick/bin/saver";

/// What [`detect`] looks for, for messages.
pub const LOOKED_FOR: &str = "systemd (init is …/systemd), OpenRC (init is openrc-init, or \
    /etc/inittab runs openrc), busybox init (init is busybox) or sysvinit (init is an `init` \
    program with /etc/inittab)";

/// An init system ramstick has a saver hook for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitSystem {
    Systemd,
    OpenRc,
    SysVinit,
    Busybox,
}

impl fmt::Display for InitSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitSystem::Systemd => "systemd",
            InitSystem::OpenRc => "OpenRC",
            InitSystem::SysVinit => "sysvinit",
            InitSystem::Busybox => "busybox init",
        })
    }
}

/// The init program could not be matched to an init system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrecognised {
    /// The init path asked for (e.g. `/sbin/init`).
    pub init: String,
    /// What was found instead.
    pub why: String,
}

impl fmt::Display for Unrecognised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot tell the init system of {}: {} (looked for {LOOKED_FOR})",
            self.init, self.why
        )
    }
}

/// The init system whose program is `init` (an absolute path inside the
/// tree `root`, symlinks resolved there as a chroot would).
pub fn detect(root: &Path, init: &str) -> Result<InitSystem, Unrecognised> {
    let unrecognised = |why: String| Unrecognised {
        init: init.to_string(),
        why,
    };
    let host = resolve_in_root(root, Path::new(init))
        .filter(|p| p.is_file())
        .ok_or_else(|| unrecognised("it does not exist in the tree".into()))?;
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "systemd" {
        return Ok(InitSystem::Systemd);
    }
    if name == "openrc-init" {
        return Ok(InitSystem::OpenRc);
    }
    let inittab = read(root, INITTAB);
    if let Some(text) = &inittab {
        if runs_openrc(root, text) {
            return Ok(InitSystem::OpenRc);
        }
    }
    if name == "busybox" || is_busybox(&host) {
        return Ok(InitSystem::Busybox);
    }
    match inittab {
        Some(text) if name == "init" && inittab_lines(&text).next().is_some() => {
            Ok(InitSystem::SysVinit)
        }
        Some(_) if name == "init" => Err(unrecognised(
            "it is an `init` program, but /etc/inittab has no entries".into(),
        )),
        None if name == "init" => Err(unrecognised(
            "it is an `init` program without /etc/inittab (not sysvinit)".into(),
        )),
        _ => Err(unrecognised(format!(
            "it is {}",
            host.strip_prefix(root)
                .map(|p| format!("/{}", p.display()))
                .unwrap_or(name)
        ))),
    }
}

/// Whether the saver hook for `system` is in the tree; `Err` says what is
/// missing.
pub fn hook_present(root: &Path, system: InitSystem) -> Result<(), String> {
    match system {
        InitSystem::Systemd => systemd_hook(root),
        InitSystem::OpenRc => {
            executable(root, SERVICE_PATH)?;
            let levels = list(root, "etc/runlevels");
            if levels
                .iter()
                .any(|l| exists(root, &format!("etc/runlevels/{l}/ramstick-saver")))
            {
                Ok(())
            } else {
                Err("the service ramstick-saver is in no runlevel (/etc/runlevels/*/)".into())
            }
        }
        InitSystem::SysVinit => {
            executable(root, SERVICE_PATH)?;
            let text = read(root, INITTAB).ok_or("there is no /etc/inittab")?;
            let stops_at = |level: char| {
                inittab_lines(&text).any(|l| l.runlevels.contains(level) && stops_saver(l.process))
            };
            if stops_at('0') && stops_at('6') {
                Ok(())
            } else {
                Err(format!(
                    "no /etc/inittab line runs `{INITTAB_STOP}` at runlevels 0 and 6"
                ))
            }
        }
        InitSystem::Busybox => {
            let text = read(root, INITTAB).ok_or(
                "there is no /etc/inittab (busybox runs its built-in one, which does not save)",
            )?;
            if inittab_lines(&text).any(|l| l.action == "shutdown" && stops_saver(l.process)) {
                Ok(())
            } else {
                Err(format!(
                    "no ::shutdown: line of /etc/inittab runs `{INITTAB_STOP}`"
                ))
            }
        }
    }
}

/// The unit must be installed (a regular file, not masked) and enabled.
fn systemd_hook(root: &Path) -> Result<(), String> {
    let installed = ["etc", "lib", "usr/lib"].iter().any(|dir| {
        resolve_in_root(
            root,
            &Path::new(dir).join("systemd/system").join(SYSTEMD_UNIT),
        )
        .is_some_and(|p| p.is_file())
    });
    if !installed {
        return Err(format!("{SYSTEMD_UNIT} is not installed (or is masked)"));
    }
    let enabled = list(root, "etc/systemd/system")
        .iter()
        .filter(|d| d.ends_with(".wants") || d.ends_with(".requires"))
        .any(|d| exists(root, &format!("etc/systemd/system/{d}/{SYSTEMD_UNIT}")));
    if enabled {
        Ok(())
    } else {
        Err(format!(
            "{SYSTEMD_UNIT} is not enabled (no link in /etc/systemd/system/*.wants/)"
        ))
    }
}

/// What init records about the saver hook of the root it boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCheck {
    /// The init system, when recognised.
    pub init: Option<InitSystem>,
    /// Why the session will not be saved and the fix; `None`: the hook is there.
    pub warning: Option<String>,
}

/// What the fix is when the hook is missing.
const FIX_MISSING: &str = "rebuild the stick with `cargo xtask image --rootfs <tree>` (it adds \
    the hook), or run `/run/ramstick/bin/saver save` before every shutdown";
/// What the fix is when the init system is not one ramstick knows.
const FIX_UNKNOWN: &str = "run `/run/ramstick/bin/saver save` before every shutdown, or boot a \
    systemd, OpenRC, sysvinit or busybox init (ramstick.init=)";

/// Checks the tree `root` booted with `init`: its init system and whether
/// the saver hook for it is there.
pub fn check(root: &Path, init: &str) -> HookCheck {
    match detect(root, init) {
        Ok(system) => HookCheck {
            init: Some(system),
            warning: hook_present(root, system).err().map(|why| {
                format!(
                    "this session will not be saved: the init system is {system} and {why}; \
                     fix: {FIX_MISSING}"
                )
            }),
        },
        Err(e) => HookCheck {
            init: None,
            warning: Some(format!(
                "this session will not be saved: {e}; fix: {FIX_UNKNOWN}"
            )),
        },
    }
}

/// One entry of an inittab: `id:runlevels:action:process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InittabLine<'a> {
    pub id: &'a str,
    pub runlevels: &'a str,
    pub action: &'a str,
    pub process: &'a str,
}

/// The entries of an inittab (comments, blank and malformed lines skipped).
pub fn inittab_lines(text: &str) -> impl Iterator<Item = InittabLine<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let mut parts = line.splitn(4, ':');
        Some(InittabLine {
            id: parts.next()?,
            runlevels: parts.next()?,
            action: parts.next()?,
            process: parts.next()?,
        })
    })
}

/// Whether an inittab command saves the session (ours, or the older busybox
/// line that ran the saver directly).
fn stops_saver(process: &str) -> bool {
    process.contains(INITTAB_STOP) || process.contains(SAVER)
}

/// Whether an inittab starts OpenRC: a line runs `openrc`, or runs a script
/// that does (Debian's `/etc/init.d/rc` and `rcS` with the openrc package).
fn runs_openrc(root: &Path, inittab: &str) -> bool {
    inittab_lines(inittab).any(|l| {
        let Some(program) = l.process.split_whitespace().next() else {
            return false;
        };
        let program = program.trim_start_matches(['-', '+']);
        Path::new(program)
            .file_name()
            .is_some_and(|n| n == "openrc")
            || read_script(root, program).is_some_and(|script| script.contains("/sbin/openrc"))
    })
}

/// Whether the file is busybox (a copy or hard link named otherwise).
fn is_busybox(host: &Path) -> bool {
    std::fs::read(host)
        .is_ok_and(|b| crate::elf::is_elf(&b) && b.windows(9).any(|w| w == b"BusyBox v"))
}

/// The text of `rel` inside the tree (symlinks resolved there), if a
/// readable text file.
fn read(root: &Path, rel: &str) -> Option<String> {
    let host = resolve_in_root(root, Path::new(rel.trim_start_matches('/')))?;
    std::fs::read_to_string(host).ok()
}

/// The text of `rel` if it is a script (`#!`). A program is not read
/// further than its first two bytes: inittab lines run busybox (2 MiB, read
/// from the squashfs at every boot otherwise).
fn read_script(root: &Path, rel: &str) -> Option<String> {
    use std::io::Read;
    let host = resolve_in_root(root, Path::new(rel.trim_start_matches('/')))?;
    let mut file = std::fs::File::open(host).ok()?;
    let mut text = String::new();
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic).ok()?;
    if &magic != b"#!" {
        return None;
    }
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

fn exists(root: &Path, rel: &str) -> bool {
    root.join(rel).symlink_metadata().is_ok()
}

/// `rel` must be an executable file of the tree.
fn executable(root: &Path, rel: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match resolve_in_root(root, Path::new(rel)).and_then(|p| p.metadata().ok()) {
        Some(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Some(_) => Err(format!("/{rel} is not an executable file")),
        None => Err(format!("/{rel} is missing")),
    }
}

/// The names in the tree's directory `rel` (none when missing).
fn list(root: &Path, rel: &str) -> Vec<String> {
    resolve_in_root(root, Path::new(rel))
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;

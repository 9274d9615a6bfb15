//! The first and the last mounts of the boot, as data: the API filesystems
//! PID 1 mounts before anything else ([`API_MOUNTS`]) and the moves that hand
//! every mount over to the new root ([`moves`]), each with its reason, so
//! `init --dry-run` shows them and init only executes them.

use serde::Serialize;

/// A filesystem PID 1 mounts first, before it can read its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ApiMount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    /// mount(8)-style options: the flags `ro`, `nosuid`, `nodev`, `noexec`,
    /// `noatime`, and the filesystem's own options.
    pub options: &'static str,
    pub why: &'static str,
}

/// Where init keeps what the new root finds under /run/ramstick.
pub const RUN_RAMSTICK: &str = "/run/ramstick";

/// The API filesystems, in mount order. They are the same at every boot:
/// mounted before the command line is read (it is in /proc), and listed in
/// the plan (see [`crate::plan::Plan::api_mounts`]) so the dry run shows them.
pub const API_MOUNTS: [ApiMount; 5] = [
    ApiMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        options: "nosuid,nodev,noexec",
        why: "the command line, the RAM size, mounts",
    },
    ApiMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        options: "nosuid,nodev,noexec",
        why: "block devices, modaliases, zram",
    },
    ApiMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        options: "nosuid,mode=0755",
        why: "device nodes, /dev/kmsg for the log",
    },
    ApiMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        options: "nosuid,nodev,mode=0755",
        why: "moves whole into the new root, so systemd finds /run mounted and keeps it",
    },
    ApiMount {
        source: "tmpfs",
        target: RUN_RAMSTICK,
        fstype: "tmpfs",
        options: "nosuid,nodev,mode=0755",
        why: "holds the saver the new root runs: a tmpfs of its own stays executable when \
              the new root remounts /run noexec (Debian's sysvinit scripts do)",
    },
];

/// Where a moved mount lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Landing {
    /// On a mount point in the new root (made below the rootfs when the
    /// rootfs lacks it).
    NewRoot,
    /// On the initramfs's /run, which moves into the new root later, whole.
    Run,
}

/// A mount to move before switch_root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// Where it is mounted in the initramfs.
    pub from: String,
    /// Where the new root sees it.
    pub to: String,
    pub landing: Landing,
    /// Where it is moved to in the initramfs: `to` under the overlay root,
    /// or `to` itself on the initramfs's /run.
    pub at: String,
    pub why: &'static str,
}

/// The moves, in order: the planned mounts (`(from, to, why)`; one under
/// /run lands on the initramfs's /run), then the API filesystems but
/// /run/ramstick (inside /run), /run last so it carries what landed on it.
pub fn moves<'a>(
    overlay_root: &str,
    mounts: impl IntoIterator<Item = (&'a str, String, &'static str)>,
) -> Vec<Move> {
    let api = API_MOUNTS
        .iter()
        .filter(|a| a.target != RUN_RAMSTICK)
        .map(|a| (a.target, a.target.to_string(), api_why(a.target)));
    mounts
        .into_iter()
        .chain(api)
        .map(|(from, to, why)| {
            let landing = if to.starts_with("/run/") {
                Landing::Run
            } else {
                Landing::NewRoot
            };
            let at = match landing {
                Landing::Run => to.clone(),
                Landing::NewRoot => format!("{overlay_root}{to}"),
            };
            Move {
                from: from.to_string(),
                to,
                landing,
                at,
                why,
            }
        })
        .collect()
}

/// Why an API filesystem moves into the new root.
fn api_why(target: &str) -> &'static str {
    match target {
        "/run" => "last: /run/ramstick and what landed under it go along",
        _ => "the new root's init finds it mounted",
    }
}

//! The boot menu on the stick's ESP: which kernels GRUB offers, and the
//! `grub/grub.cfg` generated from that.
//!
//! The ESP holds `vmlinuz-<kver>` and `initramfs-<kver>.img` per kernel and
//! the record `grub/ramstick-menu.json` ([`Menu`]): the kernels, newest
//! install first, and the extra kernel parameters of every entry. `cargo
//! xtask image` writes it for the kernel it builds with; the saver's kernel
//! hook (`saver kernel add|remove`) changes it when a kernel package is
//! installed or removed inside the running stick, and writes `grub.cfg`
//! again from it (so hand edits of `grub.cfg` last until the next kernel
//! change; the parameters belong in the record's `cmdline`).
//!
//! The menu: the first kernel's entries ([`DEFAULT_KERNEL_ENTRIES`]:
//! default, backup, clean, default with a tmpfs upper, default read-only), then every older
//! kernel's ([`OLDER_KERNEL_ENTRIES`]: default and backup), the fallback when
//! a new kernel does not boot, then the other slot's ([`slots`]: default,
//! backup, clean), when it has a base. Tests pick entries by [`GrubEntry`],
//! whose position is read from those same lists.

pub mod slots;

use serde::{Deserialize, Serialize};
use std::fmt::Write;

mod profiles;
pub use profiles::profile_entries_start;

/// The record's path on the ESP.
pub const MENU_RECORD: &str = "grub/ramstick-menu.json";
/// GRUB's configuration on the ESP.
pub const GRUB_CFG: &str = "grub/grub.cfg";
/// The ESP's FAT volume label (FAT allows at most 11 characters).
pub const ESP_LABEL: &str = "RAMSTICKESP";
/// The marker file GRUB's `search` finds the ESP by.
pub const ESP_ID: &str = "ramstick-esp.id";
/// The record format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Every entry's console parameters.
const CONSOLE: &str = "console=tty0 console=ttyS0,115200";

/// A GRUB menu entry, as the tests (and `cargo xtask`) pick it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrubEntry {
    /// The default kernel, the saved session (`ramstick.boot=default`).
    Default,
    /// The default kernel, the session before the last save.
    Backup,
    /// The default kernel, no saved session.
    Clean,
    /// The default kernel, the saved session under a tmpfs upper.
    TmpfsUpper,
    /// The default kernel, the saved session, never saved
    /// (`ramstick.save=off`): to try something and throw it away.
    ReadOnly,
    /// The second kernel (the default before the last kernel install), its
    /// default entry.
    PreviousKernel,
    /// The second kernel, its backup entry.
    PreviousKernelBackup,
    /// The slot not booted first (the committed one during a trial), its
    /// saved session.
    OtherSlot,
    /// The other slot, the session before its last save.
    OtherSlotBackup,
    /// The other slot, no saved session.
    OtherSlotClean,
}

/// The default kernel's entries, in menu order: the first of the menu.
pub const DEFAULT_KERNEL_ENTRIES: [GrubEntry; 5] = [
    GrubEntry::Default,
    GrubEntry::Backup,
    GrubEntry::Clean,
    GrubEntry::TmpfsUpper,
    GrubEntry::ReadOnly,
];

/// Every older kernel's entries, in menu order, after the default kernel's;
/// named as the second kernel's (the other kernels' repeat them).
pub const OLDER_KERNEL_ENTRIES: [GrubEntry; 2] =
    [GrubEntry::PreviousKernel, GrubEntry::PreviousKernelBackup];

impl GrubEntry {
    /// The entry's place in the menu (0 = first): where [`Menu::render`]
    /// writes it, read from the lists it writes from.
    ///
    /// The other slot's entries come after every kernel's: their position is
    /// the one in a menu of one kernel.
    pub fn position(self) -> usize {
        if let Some(i) = slots::OTHER_SLOT_ENTRIES.iter().position(|e| *e == self) {
            return DEFAULT_KERNEL_ENTRIES.len() + i;
        }
        let mut order = DEFAULT_KERNEL_ENTRIES.iter().chain(&OLDER_KERNEL_ENTRIES);
        // Every variant is in one of the lists (a test checks each one's
        // title at its position), so the fallback is never taken.
        order.position(|e| *e == self).unwrap_or(0)
    }

    /// What the entry's title says of its boot (after the kernel, for an
    /// older kernel's entry) and the kernel parameters that make that boot.
    fn label_and_params(self) -> (&'static str, &'static str) {
        match self {
            GrubEntry::Default | GrubEntry::PreviousKernel | GrubEntry::OtherSlot => {
                ("default", "ramstick.boot=default")
            }
            GrubEntry::Backup | GrubEntry::PreviousKernelBackup | GrubEntry::OtherSlotBackup => {
                ("backup", "ramstick.boot=backup")
            }
            GrubEntry::Clean | GrubEntry::OtherSlotClean => ("clean", "ramstick.boot=clean"),
            GrubEntry::TmpfsUpper => (
                "default, tmpfs upper",
                "ramstick.boot=default ramstick.upper=tmpfs",
            ),
            GrubEntry::ReadOnly => (
                "default, read-only",
                "ramstick.boot=default ramstick.save=off",
            ),
        }
    }
}

/// The title of the menu's first entry, which no other entry has: once a
/// console shows it, the menu is on screen.
pub fn first_title() -> String {
    default_kernel_title(DEFAULT_KERNEL_ENTRIES[0])
}

/// The title of one of the default kernel's entries.
fn default_kernel_title(entry: GrubEntry) -> String {
    format!("ramstick ({})", entry.label_and_params().0)
}

/// The kernel image of `kver` on the ESP.
pub fn vmlinuz(kver: &str) -> String {
    format!("vmlinuz-{kver}")
}

/// The initramfs of `kver` on the ESP.
pub fn initramfs(kver: &str) -> String {
    format!("initramfs-{kver}.img")
}

/// The kernels the menu boots and the parameters every entry adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Menu {
    pub format: u32,
    /// Kernel versions (`uname -r`), the default first.
    pub kernels: Vec<String>,
    /// Appended to every entry's `linux` line.
    pub cmdline: String,
}

/// Why a kernel version or a record cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MenuError {
    #[error(
        "kernel version {0:?} is not usable as a file name (letters, digits and . _ + - only)"
    )]
    BadVersion(String),
    #[error("the boot menu record is not valid: {0}")]
    Invalid(String),
}

/// A kernel version must be a plain file-name part: it names files on the
/// ESP and the stick, and goes into grub.cfg unquoted.
pub fn check_version(kver: &str) -> Result<(), MenuError> {
    let ok = !kver.is_empty()
        && kver.len() <= 128
        && !kver.starts_with('.')
        && kver
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(MenuError::BadVersion(kver.to_string()))
    }
}

/// The extra parameters go into grub.cfg inside an entry's braces: no
/// newline, quote or brace.
fn check_cmdline(cmdline: &str) -> Result<(), MenuError> {
    if cmdline.contains(['\n', '"', '{', '}']) {
        return Err(MenuError::Invalid(format!(
            "its cmdline {cmdline:?} holds a newline, quote or brace"
        )));
    }
    Ok(())
}

impl Menu {
    /// A menu of one kernel.
    pub fn new(kver: &str, cmdline: &str) -> Result<Menu, MenuError> {
        check_version(kver)?;
        check_cmdline(cmdline)?;
        Ok(Menu {
            format: FORMAT,
            kernels: vec![kver.to_string()],
            cmdline: cmdline.trim().to_string(),
        })
    }

    /// This menu with `kver` as the default (added, or moved to the front).
    pub fn with_default(&self, kver: &str) -> Result<Menu, MenuError> {
        check_version(kver)?;
        let mut kernels = vec![kver.to_string()];
        kernels.extend(self.kernels.iter().filter(|k| *k != kver).cloned());
        Ok(Menu {
            kernels,
            ..self.clone()
        })
    }

    /// This menu without `kver` (unchanged when it does not list it).
    pub fn without(&self, kver: &str) -> Menu {
        Menu {
            kernels: self
                .kernels
                .iter()
                .filter(|k| *k != kver)
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// Whether the menu boots `kver`.
    pub fn has(&self, kver: &str) -> bool {
        self.kernels.iter().any(|k| k == kver)
    }

    /// The ESP files the menu's entries load.
    pub fn files(&self) -> Vec<String> {
        self.kernels
            .iter()
            .flat_map(|k| [vmlinuz(k), initramfs(k)])
            .collect()
    }

    pub fn to_json(&self) -> String {
        // Serialising plain owned data cannot fail; fall back to an empty object anyway.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}")) + "\n"
    }

    /// Parses and checks a record.
    pub fn from_json(text: &str) -> Result<Menu, MenuError> {
        let menu: Menu =
            serde_json::from_str(text).map_err(|e| MenuError::Invalid(e.to_string()))?;
        if menu.format != FORMAT {
            return Err(MenuError::Invalid(format!(
                "format {} (this ramstick reads format {FORMAT})",
                menu.format
            )));
        }
        if menu.kernels.is_empty() {
            return Err(MenuError::Invalid("it lists no kernel".into()));
        }
        for k in &menu.kernels {
            check_version(k)?;
        }
        check_cmdline(&menu.cmdline)?;
        Ok(menu)
    }

    /// `grub/grub.cfg` for this menu.
    pub fn render(&self) -> String {
        let mut cfg = String::new();
        let default = self.kernels.first().map_or("", String::as_str);
        // Writing to a String cannot fail.
        let _ = write!(
            cfg,
            "# ramstick boot menu, default kernel {default}: written from /{MENU_RECORD} by\n\
             # `cargo xtask image` and by the saver when a kernel is installed or removed\n\
             # (edits here last until then; put kernel parameters in the record's cmdline).\n\
             # Keep the entry order: the tests select entries by index.\n\
             serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n\
             set timeout=3\n\
             set default=0\n\
             \n\
             # The kernels and initramfs images are on the partition that holds this marker.\n\
             search --no-floppy --file --set=root /{ESP_ID}\n"
        );
        cfg.push_str(&slots::script());
        let slot = slots::boot_slot_params();
        for entry in DEFAULT_KERNEL_ENTRIES {
            let title = default_kernel_title(entry);
            let params = format!("{} {slot}", entry.label_and_params().1);
            self.entry(&mut cfg, &title, default, &params);
        }
        for kver in self.kernels.iter().skip(1) {
            for entry in OLDER_KERNEL_ENTRIES {
                let (label, params) = entry.label_and_params();
                let title = format!("ramstick (kernel {kver}, {label})");
                self.entry(&mut cfg, &title, kver, &format!("{params} {slot}"));
            }
        }
        cfg.push_str(slots::OTHER_SLOT_BEGIN);
        let other = slots::other_slot_params();
        for entry in slots::OTHER_SLOT_ENTRIES {
            let (label, params) = entry.label_and_params();
            let title = slots::other_slot_title(label);
            self.entry(&mut cfg, &title, default, &format!("{params} {other}"));
        }
        cfg.push_str(slots::OTHER_SLOT_END);
        let default_params = GrubEntry::Default.label_and_params().1;
        profiles::write_entries(
            &mut cfg,
            default,
            &self.line(&format!("{default_params} {slot}")),
        );
        cfg
    }

    /// An entry's kernel parameters: the console's, `params`, the record's.
    fn line(&self, params: &str) -> String {
        [CONSOLE, params, self.cmdline.trim()]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn entry(&self, cfg: &mut String, title: &str, kver: &str, params: &str) {
        let line = self.line(params);
        let _ = write!(
            cfg,
            "\nmenuentry \"{title}\" {{\n    linux /{} {line}\n    initrd /{}\n}}\n",
            vmlinuz(kver),
            initramfs(kver)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_lines(cfg: &str) -> Vec<&str> {
        cfg.lines()
            // The fixed entries' (a profile entry's is indented deeper).
            .filter(|l| l.starts_with("    linux "))
            .collect()
    }

    #[test]
    fn one_kernel_has_five_entries_in_order_then_the_other_slots() {
        let cfg = Menu::new("6.1.0-56-amd64", " ramstick.debug=1 ")
            .unwrap()
            .render();
        let k = "/vmlinuz-6.1.0-56-amd64 console=tty0 console=ttyS0,115200";
        let s = "ramstick.slot=$ramstick_boot_slot ramstick.trial=$ramstick_boot_trial";
        let o = "ramstick.slot=$ramstick_other_slot ramstick.trial=off";
        assert_eq!(
            linux_lines(&cfg),
            [
                format!("    linux {k} ramstick.boot=default {s} ramstick.debug=1"),
                format!("    linux {k} ramstick.boot=backup {s} ramstick.debug=1"),
                format!("    linux {k} ramstick.boot=clean {s} ramstick.debug=1"),
                format!(
                    "    linux {k} ramstick.boot=default ramstick.upper=tmpfs {s} ramstick.debug=1"
                ),
                format!(
                    "    linux {k} ramstick.boot=default ramstick.save=off {s} ramstick.debug=1"
                ),
                format!("    linux {k} ramstick.boot=default {o} ramstick.debug=1"),
                format!("    linux {k} ramstick.boot=backup {o} ramstick.debug=1"),
                format!("    linux {k} ramstick.boot=clean {o} ramstick.debug=1"),
            ]
        );
        let titles: Vec<&str> = cfg.lines().filter(|l| l.starts_with("menuentry")).collect();
        assert_eq!(
            titles,
            [
                "menuentry \"ramstick (default)\" {",
                "menuentry \"ramstick (backup)\" {",
                "menuentry \"ramstick (clean)\" {",
                "menuentry \"ramstick (default, tmpfs upper)\" {",
                "menuentry \"ramstick (default, read-only)\" {",
                "menuentry \"ramstick (slot $ramstick_other_slot, default)\" {",
                "menuentry \"ramstick (slot $ramstick_other_slot, backup)\" {",
                "menuentry \"ramstick (slot $ramstick_other_slot, clean)\" {",
            ]
        );
        // Listed only when the other slot has a base (or GRUB cannot look).
        assert!(cfg.contains(
            "\nif [ \"$ramstick_other_listed\" = yes ]; then\n\nmenuentry \"ramstick (slot"
        ));
        assert!(cfg.contains("}\nfi\n\n# One entry per profile"), "{cfg}");
        assert!(cfg.contains("search --no-floppy --file --set=root /ramstick-esp.id\n"));
        assert!(cfg.contains("initrd /initramfs-6.1.0-56-amd64.img\n"));
        assert!(cfg.contains("default kernel 6.1.0-56-amd64"));
        let plain = Menu::new("k", "").unwrap().render();
        assert!(plain.contains("ramstick.boot=clean ramstick.slot=$ramstick_boot_slot ramstick.trial=$ramstick_boot_trial\n"), "{plain}");
    }

    #[test]
    fn a_new_kernel_leads_and_the_previous_one_stays_as_fallback() {
        let menu = Menu::new("6.1.0-57-amd64", "").unwrap();
        let two = menu.with_default("6.1.0-54-cloud-amd64").unwrap();
        assert_eq!(two.kernels, ["6.1.0-54-cloud-amd64", "6.1.0-57-amd64"]);
        let cfg = two.render();
        let lines = linux_lines(&cfg);
        assert_eq!(lines.len(), 10);
        assert!(lines[..5]
            .iter()
            .chain(&lines[7..])
            .all(|l| l.contains("/vmlinuz-6.1.0-54-cloud-amd64 ")));
        assert_eq!(
            lines[5],
            "    linux /vmlinuz-6.1.0-57-amd64 console=tty0 console=ttyS0,115200 ramstick.boot=default \
             ramstick.slot=$ramstick_boot_slot ramstick.trial=$ramstick_boot_trial"
        );
        assert!(lines[6].contains("ramstick.boot=backup ramstick.slot=$ramstick_boot_slot"));
        assert!(cfg.contains("menuentry \"ramstick (kernel 6.1.0-57-amd64, default)\" {\n"));
        assert!(cfg.contains("initrd /initramfs-6.1.0-57-amd64.img\n"));
        // The first title appears once: the tests wait for it to find the menu.
        assert_eq!(cfg.matches("ramstick (default)").count(), 1);
        // Reinstalling the older one makes it the default again, listed once.
        let back = two.with_default("6.1.0-57-amd64").unwrap();
        assert_eq!(back.kernels, ["6.1.0-57-amd64", "6.1.0-54-cloud-amd64"]);
        assert_eq!(back.without("6.1.0-54-cloud-amd64"), menu);
        assert_eq!(back.without("other"), back);
        assert_eq!(
            two.files(),
            [
                "vmlinuz-6.1.0-54-cloud-amd64",
                "initramfs-6.1.0-54-cloud-amd64.img",
                "vmlinuz-6.1.0-57-amd64",
                "initramfs-6.1.0-57-amd64.img"
            ]
        );
        assert!(two.has("6.1.0-57-amd64") && !two.has("6.1.0-57"));
    }

    #[test]
    fn every_entry_is_at_its_position() {
        let menu = Menu::new("new", "").unwrap().with_default("new2").unwrap();
        let cfg = menu.render();
        let titles: Vec<&str> = cfg
            .lines()
            .filter_map(|l| l.strip_prefix("menuentry \""))
            .filter_map(|l| l.split('"').next())
            .collect();
        let lines = linux_lines(&cfg);
        let slot = "ramstick.slot=$ramstick_boot_slot ramstick.trial=$ramstick_boot_trial";
        let other = "ramstick.slot=$ramstick_other_slot ramstick.trial=off";
        let all = [
            (
                GrubEntry::Default,
                "ramstick (default)",
                "ramstick.boot=default",
            ),
            (
                GrubEntry::Backup,
                "ramstick (backup)",
                "ramstick.boot=backup",
            ),
            (GrubEntry::Clean, "ramstick (clean)", "ramstick.boot=clean"),
            (
                GrubEntry::TmpfsUpper,
                "ramstick (default, tmpfs upper)",
                "ramstick.boot=default ramstick.upper=tmpfs",
            ),
            (
                GrubEntry::ReadOnly,
                "ramstick (default, read-only)",
                "ramstick.boot=default ramstick.save=off",
            ),
            (
                GrubEntry::PreviousKernel,
                "ramstick (kernel new, default)",
                "ramstick.boot=default",
            ),
            (
                GrubEntry::PreviousKernelBackup,
                "ramstick (kernel new, backup)",
                "ramstick.boot=backup",
            ),
        ];
        for (entry, title, params) in all {
            assert_eq!(titles[entry.position()], title, "{entry:?}");
            let line = lines[entry.position()];
            assert!(line.ends_with(&format!("{params} {slot}")), "{entry:?}");
        }
        assert_eq!(first_title(), titles[0]);
        assert_eq!(titles.len(), all.len() + slots::OTHER_SLOT_ENTRIES.len());
        // The other slot's entries, at their places in a menu of one kernel.
        let cfg = Menu::new("k", "").unwrap().render();
        let titles: Vec<&str> = cfg
            .lines()
            .filter_map(|l| l.strip_prefix("menuentry \""))
            .filter_map(|l| l.split('"').next())
            .collect();
        let lines = linux_lines(&cfg);
        for (entry, label) in [
            (GrubEntry::OtherSlot, "default"),
            (GrubEntry::OtherSlotBackup, "backup"),
            (GrubEntry::OtherSlotClean, "clean"),
        ] {
            let title = format!("ramstick (slot $ramstick_other_slot, {label})");
            assert_eq!(titles[entry.position()], title, "{entry:?}");
            let params = format!("ramstick.boot={label} {other}");
            assert!(lines[entry.position()].ends_with(&params), "{entry:?}");
        }
        assert_eq!(titles.len(), 8);
    }

    #[test]
    fn versions_are_plain_file_names() {
        for ok in ["6.1.0-57-amd64", "6.12.9+bpo-amd64", "5.10_rc1"] {
            check_version(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", "..", ".hidden", "a b", "a\"b", "a}b"] {
            assert_eq!(check_version(bad), Err(MenuError::BadVersion(bad.into())));
        }
        assert!(Menu::new("a/b", "").is_err());
        assert!(Menu::new("k", "").unwrap().with_default("x y").is_err());
    }

    #[test]
    fn the_record_round_trips_and_bad_ones_are_refused() {
        let menu = Menu::new("a", "ramstick.luks.keyfile=/etc/ramstick/luks.key")
            .unwrap()
            .with_default("b")
            .unwrap();
        assert_eq!(Menu::from_json(&menu.to_json()), Ok(menu.clone()));
        let bad = |m: &Menu| Menu::from_json(&m.to_json()).unwrap_err().to_string();
        let mut m = menu.clone();
        m.format = 2;
        assert!(bad(&m).contains("format 2"));
        m = menu.clone();
        m.kernels.clear();
        assert!(bad(&m).contains("no kernel"));
        m = menu.clone();
        m.kernels.push("../../etc".into());
        assert!(bad(&m).contains("not usable as a file name"));
        m = menu.clone();
        m.cmdline = "x\"}\nmenuentry".into();
        assert!(bad(&m).contains("newline, quote or brace"));
        assert!(Menu::from_json("{").is_err());
        assert!(Menu::new("k", "a=\"b\"").is_err());
    }
}

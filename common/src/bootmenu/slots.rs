//! The slots in `grub.cfg`: which slot GRUB boots, read from its
//! environment block (`grub/grubenv` on the ESP, see [`crate::grubenv`]),
//! and the other slot's entries.
//!
//! - `ramstick_slot` (`a`|`b`, absent: `a`) is the committed slot: the
//!   menu's first entries boot it.
//! - `ramstick_trial` (`a`|`b`|empty) is a slot to boot ONCE. GRUB uses the
//!   flag up before booting: it empties it, sets `ramstick_tried` to that
//!   slot and writes both with `save_env` (in place, one sector), and only
//!   when that write succeeded does the first entry boot the trial slot,
//!   with `ramstick.trial=on`. Whatever happens to the trial (it fails,
//!   hangs until its watchdog restarts the machine, or the power goes), the
//!   next boot finds no flag and boots the committed slot. The running
//!   system commits a good trial (`ramstick_slot=X`, `ramstick_tried`
//!   emptied).
//! - `ramstick_tried` (`a`|`b`|empty): a trial in progress or that did not
//!   commit; GRUB says so on its console when it boots another slot.
//!
//! Every entry names its slot (`ramstick.slot=`) and whether it is a trial
//! (`ramstick.trial=`) through GRUB variables, so one `grub.cfg` serves both
//! slots and the kernel hook writes it unchanged.

use super::GrubEntry;
use crate::cmdline::DEFAULT_PERSIST_LABEL;
use crate::place::{BASE_IMAGE, SLOT_B_DIR};
use crate::slotboot::{ENV_SLOT, ENV_TRIAL, ENV_TRIED};

/// The environment block on the ESP, as GRUB reads it once `root` is the ESP.
pub const GRUBENV: &str = "grub/grubenv";
/// The GRUB variable holding the slot the menu's first entries boot.
pub const BOOT_SLOT_VAR: &str = "ramstick_boot_slot";
/// The GRUB variable holding `on` when they boot it on trial, else `off`.
pub const BOOT_TRIAL_VAR: &str = "ramstick_boot_trial";
/// The GRUB variable holding the other slot.
pub const OTHER_SLOT_VAR: &str = "ramstick_other_slot";
/// The GRUB modules the script needs in the standalone image: `load_env`
/// and `save_env` (loadenv), `[` (test), `search` by label, ext4 (ext2).
pub const GRUB_MODULES: &[&str] = &["loadenv", "test", "search", "search_label", "ext2", "echo"];

/// The other slot's entries, in menu order: after every kernel's entries.
pub const OTHER_SLOT_ENTRIES: [GrubEntry; 3] = [
    GrubEntry::OtherSlot,
    GrubEntry::OtherSlotBackup,
    GrubEntry::OtherSlotClean,
];

/// The kernel parameters of an entry of the slot the menu boots first.
pub fn boot_slot_params() -> String {
    format!("ramstick.slot=${BOOT_SLOT_VAR} ramstick.trial=${BOOT_TRIAL_VAR}")
}

/// The kernel parameters of an entry of the other slot (never a trial).
pub fn other_slot_params() -> String {
    format!("ramstick.slot=${OTHER_SLOT_VAR} ramstick.trial=off")
}

/// The title of an entry of the other slot (`label`: default, backup, …).
pub fn other_slot_title(label: &str) -> String {
    format!("ramstick (slot ${OTHER_SLOT_VAR}, {label})")
}

/// The script after `root` is set to the ESP: reads the environment block,
/// uses up a pending trial, and decides the slots of the entries.
pub fn script() -> String {
    format!(
        r#"
# Slots: grub/grubenv names the committed slot ({ENV_SLOT}) and a slot to boot
# once on trial ({ENV_TRIAL}); see `saver slot`.
set {ENV_SLOT}=a
set {ENV_TRIAL}=
set {ENV_TRIED}=
if [ -f /{GRUBENV} ]; then
    load_env --file /{GRUBENV} {ENV_SLOT} {ENV_TRIAL} {ENV_TRIED}
fi
if [ "${ENV_SLOT}" != b ]; then
    set {ENV_SLOT}=a
fi
set {BOOT_SLOT_VAR}=${ENV_SLOT}
set {BOOT_TRIAL_VAR}=off
set ramstick_pending=
if [ "${ENV_TRIAL}" = a ]; then
    set ramstick_pending=a
fi
if [ "${ENV_TRIAL}" = b ]; then
    set ramstick_pending=b
fi
if [ -n "$ramstick_pending" ]; then
    # One shot: the flag is used up on the stick BEFORE the trial boots, so
    # a trial that fails, hangs or loses power returns to the committed slot.
    set {ENV_TRIED}=$ramstick_pending
    set {ENV_TRIAL}=
    if save_env --file /{GRUBENV} {ENV_TRIAL} {ENV_TRIED}; then
        set {BOOT_SLOT_VAR}=$ramstick_pending
        set {BOOT_TRIAL_VAR}=on
        echo "ramstick: trial boot of slot $ramstick_pending (once; slot ${ENV_SLOT} stays the committed one)"
    else
        echo "ramstick: cannot use up the trial flag in /{GRUBENV}: booting the committed slot ${ENV_SLOT}, not slot $ramstick_pending"
    fi
elif [ -n "${ENV_TRIED}" -a "${ENV_TRIED}" != "${ENV_SLOT}" ]; then
    echo "ramstick: the trial of slot ${ENV_TRIED} did not commit (failed, hung or lost power): booting slot ${ENV_SLOT}"
fi
if [ "${BOOT_SLOT_VAR}" = a ]; then
    set {OTHER_SLOT_VAR}=b
else
    set {OTHER_SLOT_VAR}=a
fi
# The other slot is listed when its base is on the data partition (slot a's
# always is); GRUB cannot look into an encrypted one: listed, and init says
# so if the base is missing.
set ramstick_other_listed=yes
if [ "${OTHER_SLOT_VAR}" = b ]; then
    # Probing a partition no loaded filesystem module reads (an encrypted
    # one) loads modules from the prefix: the standalone image's own, not
    # the ESP's (which has none: each would be a "file not found").
    set ramstick_prefix="$prefix"
    set prefix=(memdisk)/boot/grub
    if search --no-floppy --label --set=ramstick_data {DEFAULT_PERSIST_LABEL}; then
        set ramstick_other_listed=no
        # The directory first: -f in a missing directory prints an error.
        if [ -d "($ramstick_data)/{SLOT_B_DIR}" ]; then
            if [ -f "($ramstick_data)/{SLOT_B_DIR}/{BASE_IMAGE}" ]; then
                set ramstick_other_listed=yes
            fi
        fi
    fi
    set prefix="$ramstick_prefix"
fi
"#
    )
}

/// The environment block a new stick starts with: slot `a` committed, no trial.
pub fn initial_grubenv() -> Result<Vec<u8>, crate::grubenv::EnvError> {
    let mut env = crate::grubenv::Env::default();
    env.set(ENV_SLOT, "a");
    env.to_block()
}

/// Opens the block of the other slot's entries (shown when it is listed).
pub const OTHER_SLOT_BEGIN: &str = "\nif [ \"$ramstick_other_listed\" = yes ]; then\n";
/// Closes it.
pub const OTHER_SLOT_END: &str = "fi\n";

#[cfg(test)]
mod tests {
    use super::super::Menu;
    use super::*;

    #[test]
    fn the_trial_is_used_up_and_saved_before_any_entry_boots_it() {
        let cfg = Menu::new("k", "").unwrap().render();
        let save = cfg.find("if save_env --file /grub/grubenv ramstick_trial ramstick_tried; then");
        let emptied = cfg.find("    set ramstick_trial=\n");
        let booted = cfg.find("set ramstick_boot_trial=on");
        let first_entry = cfg.find("menuentry");
        assert!(
            emptied < save && save < booted && booted < first_entry && emptied.is_some(),
            "{cfg}"
        );
        assert!(cfg.contains(
            "load_env --file /grub/grubenv ramstick_slot ramstick_trial ramstick_tried\n"
        ));
        // The environment block is read only when it is there (older sticks).
        assert!(cfg.contains("if [ -f /grub/grubenv ]; then\n    load_env"));
    }

    #[test]
    fn a_new_stick_commits_slot_a() {
        let block = initial_grubenv().unwrap();
        assert_eq!(block.len(), 1024);
        let env = crate::grubenv::Env::parse(&block).unwrap();
        assert_eq!(env.vars().collect::<Vec<_>>(), [("ramstick_slot", "a")]);
    }

    /// The script and a menu are valid GRUB script, checked by GRUB's own
    /// parser when it is installed.
    #[test]
    fn grub_parses_the_menu() {
        let (name, package) = ramstick_testkit::GRUB_CHECK;
        let Some(check) = ramstick_testkit::tool(name) else {
            ramstick_testkit::skip(&format!(
                "`{name}` is not installed: apt-get install {package}"
            ));
            return;
        };
        let dir = ramstick_testkit::TempDir::new("grub-script-check");
        let cfg = dir.path().join("grub.cfg");
        let menu = Menu::new("k1", "quiet")
            .unwrap()
            .with_default("k2")
            .unwrap();
        std::fs::write(&cfg, menu.render()).unwrap();
        let out = std::process::Command::new(check)
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

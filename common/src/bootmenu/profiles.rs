//! The menu's profile entries: a GRUB script, run at every boot, that adds
//! "ramstick (profile NAME)" for each `profiles/NAME/layers/` on the stick's
//! data partition (see `crate::place`), so `saver profile create|delete`
//! never rewrites the ESP.
//!
//! GRUB reads the data partition by its ext4 label (`search --label`,
//! modules `search_label` and `ext2`); the `for` loop's wildcard needs the
//! `regexp` module, which also picks the name out of the path and skips
//! what is not a profile name (the `.new-`/`.del-` leftovers of a cut
//! `saver profile` command). On an encrypted stick GRUB cannot read the
//! data partition, and the menu has no profile entries.
//!
//! A `menuentry` body is kept as text and run when the entry is chosen,
//! after the loop has moved on: the name is passed as the entry's extra
//! argument, which the body reads as `$2` (`$1` is the title).

use crate::cmdline::DEFAULT_PERSIST_LABEL;
use std::fmt::Write;

/// The GRUB variable each profile's name is read into.
const NAME_VAR: &str = "ramstick_profile";

/// The menu position of the first profile entry of a menu of `kernels`
/// kernels: after every fixed entry, and after the other slot's when GRUB
/// lists them (`other_slot_listed`: see `super::slots`); GRUB lists the
/// profiles in the data partition's directory order.
pub fn profile_entries_start(kernels: usize, other_slot_listed: bool) -> usize {
    super::DEFAULT_KERNEL_ENTRIES.len()
        + super::OLDER_KERNEL_ENTRIES.len() * kernels.saturating_sub(1)
        + if other_slot_listed {
            super::slots::OTHER_SLOT_ENTRIES.len()
        } else {
            0
        }
}

/// Appends the profile script to `cfg`: each entry boots `kver` with
/// `params` (the entry's kernel parameters, the booted slot's among them)
/// and `ramstick.profile=NAME`; the profiles are those of the slot the menu
/// boots first (`profiles/` in its directory, see `crate::place`).
pub(super) fn write_entries(cfg: &mut String, kver: &str, params: &str) {
    let vmlinuz = super::vmlinuz(kver);
    let initramfs = super::initramfs(kver);
    let label = DEFAULT_PERSIST_LABEL;
    let boot_slot = super::slots::BOOT_SLOT_VAR;
    let slot_b = crate::place::SLOT_B_DIR;
    // Writing to a String cannot fail.
    let _ = write!(
        cfg,
        "\n# One entry per profile on the data partition (ext4 \"{label}\"; none on an\n\
         # encrypted stick, which GRUB cannot read): `saver profile` creates them.\n\
         # GRUB's modules are in its memdisk, not under this prefix: for search's\n\
         # file system probes, or every disk it cannot read costs an error per module.\n\
         set ramstick_prefix=\"$prefix\"\n\
         set prefix=(memdisk)/boot/grub\n\
         search --no-floppy --label --set=ramstick_data {label}\n\
         set prefix=\"$ramstick_prefix\"\n\
         set ramstick_slot_dir=\n\
         if test \"${boot_slot}\" = b; then\n\
         \x20   set ramstick_slot_dir=/{slot_b}\n\
         fi\n\
         if test -n \"$ramstick_data\"; then\n\
         \x20   for ramstick_dir in ($ramstick_data)$ramstick_slot_dir/profiles/*; do\n\
         \x20       if regexp --set=1:{NAME_VAR} '/profiles/([a-z0-9][-a-z0-9_]*)/?$' \"$ramstick_dir\"; then\n\
         \x20           if test -d \"($ramstick_data)$ramstick_slot_dir/profiles/${NAME_VAR}/layers\"; then\n\
         \x20               menuentry \"ramstick (profile ${NAME_VAR})\" \"${NAME_VAR}\" {{\n\
         \x20                   echo \"ramstick: booting profile $2\"\n\
         \x20                   linux /{vmlinuz} {params} ramstick.profile=$2\n\
         \x20                   initrd /{initramfs}\n\
         \x20               }}\n\
         \x20           fi\n\
         \x20       fi\n\
         \x20   done\n\
         fi\n"
    );
}

#[cfg(test)]
mod tests {
    use super::super::Menu;

    #[test]
    fn each_profile_entry_boots_the_default_kernel_with_its_name() {
        let cfg = Menu::new("k1", "quiet")
            .unwrap()
            .with_default("k2")
            .unwrap()
            .render();
        let script = &cfg[cfg.find("\n# One entry per profile").unwrap()..];
        assert!(script.contains(
            "linux /vmlinuz-k2 console=tty0 console=ttyS0,115200 ramstick.boot=default \
             ramstick.slot=$ramstick_boot_slot ramstick.trial=$ramstick_boot_trial quiet \
             ramstick.profile=$2\n"
        ));
        assert!(script.contains("initrd /initramfs-k2.img\n"));
        assert!(script.contains("search --no-floppy --label --set=ramstick_data RAMSTICK\n"));
        assert!(script.contains(
            "menuentry \"ramstick (profile $ramstick_profile)\" \"$ramstick_profile\" {"
        ));
        assert_eq!(super::profile_entries_start(2, false), 7);
        assert_eq!(super::profile_entries_start(1, true), 8);
        // After every fixed entry: their positions do not move.
        assert!(cfg.rfind("menuentry \"ramstick (kernel k1").unwrap() < cfg.len() - script.len());
        // Balanced blocks.
        let count = |w: &str| script.matches(w).count();
        assert_eq!(count("{"), count("}"));
        assert_eq!(count(" if ") + count("\nif "), count("fi\n"));
    }
}

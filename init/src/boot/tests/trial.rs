//! A trial boot of slot b, whole, against the recording fakes: its base is
//! mounted, the watchdog armed after the modules (or, without its module,
//! only a warning), and boot.json says so.

use super::*;
use ramstick_common::bootinfo::BootInfo;
use ramstick_common::place::Slot;

/// The boot.json the boot wrote, from its recorded write.
fn boot_json(calls: &[String]) -> BootInfo {
    let line = calls
        .iter()
        .find_map(|c| c.strip_prefix("write /run/ramstick/boot.json "))
        .unwrap_or_default();
    BootInfo::from_json(line).unwrap()
}

fn trial_machine(softdog_built_in: bool) -> (TempDir, RecordingSys) {
    let (root, mut sys) = machine("ramstick.slot=b ramstick.trial=on ramstick.upper=tmpfs");
    sys.files.insert(
        root.join("sysroot/persist/slot-b/rootfs.squashfs"),
        String::new(),
    );
    if softdog_built_in {
        let builtin = root.join(format!("lib/modules/{KVER}/modules.builtin"));
        let mut text = std::fs::read_to_string(&builtin).unwrap();
        text.push_str("kernel/drivers/watchdog/softdog.ko\n");
        std::fs::write(builtin, text).unwrap();
    }
    (root, sys)
}

#[test]
fn a_trial_boot_arms_the_watchdog_after_the_modules_and_says_so() {
    let _one = booting();
    let (root, sys) = trial_machine(true);
    let images = RecordingImages::default();
    let Err(f) = boot(&sys, &images, &root);
    assert_eq!(f.what, "start /sbin/init");
    let calls = calls(&sys, &root);
    let index = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix));
    assert!(index("watchdog /dev/watchdog 600").is_some(), "{calls:?}");
    // Armed before the stick is even looked for: a hang there restarts too.
    assert!(index("watchdog") < index("run-bounded"));
    assert!(calls.contains(&"loop /sysroot/persist/slot-b/rootfs.squashfs".to_string()));
    let info = boot_json(&calls);
    assert_eq!(info.slot.slot, Slot::B);
    assert!(info.slot.trial && info.slot.watchdog_armed);
    assert_eq!(info.state_dir, "slot-b");
    assert_eq!(info.slot.base_image, "slot-b/rootfs.squashfs");
}

#[test]
fn a_trial_without_its_watchdog_module_boots_on() {
    let _one = booting();
    let (root, sys) = trial_machine(false);
    let images = RecordingImages::default();
    let Err(f) = boot(&sys, &images, &root);
    // The boot went all the way: only the real init is missing.
    assert_eq!(f.what, "start /sbin/init");
    let calls = calls(&sys, &root);
    assert!(
        !calls.iter().any(|c| c.starts_with("watchdog")),
        "{calls:?}"
    );
    let info = boot_json(&calls);
    assert!(info.slot.trial && !info.slot.watchdog_armed);
}

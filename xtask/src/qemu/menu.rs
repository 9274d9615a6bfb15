//! Choosing a GRUB menu entry over the serial console as a person would:
//! once the menu's first title (`bootmenu::first_title`) is on screen, press
//! "next entry" so many times, then Enter. The interactive run and
//! [`super::Vm`] both do it this way.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

/// How long GRUB may take to show its menu (OVMF under TCG is slow).
pub(super) const MENU_TIMEOUT: Duration = Duration::from_secs(120);
/// GRUB's menu key for "next entry". Not the Down arrow: its escape sequence
/// can reach GRUB split under load, and a lone ESC leaves the menu for the
/// GRUB command line.
const KEY_DOWN: &str = "v";

/// Choose GRUB menu entry `n` like a person: `n` times Down, then Enter.
pub(super) fn press_entry(w: &mut impl Write, n: usize) -> io::Result<()> {
    thread::sleep(Duration::from_millis(300));
    for _ in 0..n {
        w.write_all(KEY_DOWN.as_bytes())?;
        w.flush()?;
        thread::sleep(Duration::from_millis(150));
    }
    w.write_all(b"\r")?;
    w.flush()
}

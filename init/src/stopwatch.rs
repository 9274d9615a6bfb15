//! Debug timings of the steps inside a boot phase (`ramstick.log=debug`):
//! boot.json holds only the phase totals, these say where they go.

use std::time::Instant;

/// Run `f` and log at debug level how long it took, as `{what}: N ms`.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    log::debug!("{what}: {} ms", start.elapsed().as_millis());
    out
}

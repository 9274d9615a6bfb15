//! e2e scenarios of the encrypted stick (issue 6).

use super::Scenario;

/// The LUKS scenarios, in the order they run.
pub const ALL: &[Scenario] = &[];

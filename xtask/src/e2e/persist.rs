//! e2e scenarios of the saver: sessions persist across poweroffs (issue 5).

use super::Scenario;

/// The persistence scenarios, in the order they run.
pub const ALL: &[Scenario] = &[];

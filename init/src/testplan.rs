//! The plan the unit tests boot with: a command line on the machine they
//! all assume (kernel 6.1.0-56-amd64, 2 GiB of RAM).

use ramstick_common::plan::{plan_of, Facts, Plan};

pub fn plan_for(line: &str) -> Plan {
    let facts = Facts {
        kernel_version: "6.1.0-56-amd64".into(),
        mem_total_bytes: 2 << 30,
    };
    plan_of(line, &facts)
}

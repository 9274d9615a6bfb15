//! Fuzz target: a kernel command line through `cmdline::parse`, `make_plan`
//! and the plan's text (`init --dry-run`), as init does at every boot. No
//! panic, and the plan must be consistent: every problem names the
//! `ramstick.` parameter it is about and is in the text, and every value is
//! within the range the README documents (out-of-range input falls back to a
//! default with a problem, never into the plan).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ramstick_common::cmdline::parse;
use ramstick_common::plan::{make_plan, Facts};

/// RAM sizes the plan is made for: the first input byte picks one.
const MEM: [u64; 4] = [64 << 20, 1 << 30, 24 << 30, 1 << 40];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    // init reads /proc/cmdline as UTF-8; the kernel passes any bytes.
    let line = String::from_utf8_lossy(rest);
    let facts = Facts {
        kernel_version: "6.1.0-57-amd64".into(),
        mem_total_bytes: MEM[usize::from(pick) % MEM.len()],
    };
    let (cfg, problems) = parse(&line);
    let plan = make_plan(&cfg, problems, &facts);
    let text = plan.to_string();

    for p in &plan.problems {
        assert!(p.param.starts_with("ramstick."), "problem without a parameter: {p:?}");
        assert!(p.message.contains(&p.param), "message does not name {}: {p:?}", p.param);
        assert!(text.contains(&p.message), "problem missing from the text: {p:?}");
    }
    assert_eq!(
        plan.has_fatal(),
        plan.problems.iter().any(|p| p.fatal),
        "has_fatal disagrees with the problems"
    );
    let page = 4096;
    assert!(
        plan.upper_size_bytes >= page && plan.upper_size_bytes % page == 0,
        "upper size {} is not whole pages",
        plan.upper_size_bytes
    );
    assert!((1..=3600).contains(&plan.device_timeout_secs), "timeout {}", plan.device_timeout_secs);
    assert!((1..=10).contains(&plan.luks.tries), "tries {}", plan.luks.tries);
    assert!(plan.swappiness <= 200, "swappiness {}", plan.swappiness);
    assert!(plan.init.starts_with('/'), "init {:?} is not absolute", plan.init);
    assert!(!plan.user.is_empty(), "empty user");
    // The same input gives the same plan text (golden files rely on it).
    let (cfg2, problems2) = parse(&line);
    assert_eq!(make_plan(&cfg2, problems2, &facts).to_string(), text);
});

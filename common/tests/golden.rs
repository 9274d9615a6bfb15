//! Golden tests: kernel command line → boot plan text.
//!
//! Every `tests/golden/cmdline/<case>.cmdline` (workspace root) holds one
//! kernel command line, exactly as `/proc/cmdline` would (a trailing newline is
//! whitespace like any other). `<case>.plan` next to it holds the expected
//! `Display` output of [`make_plan`] for it, on a machine with kernel
//! `6.1.0-56-amd64` and 2 GiB of RAM. The expected files are the
//! specification: review every change to them by eye.
//!
//! To (re)write the expected files after an intended change, run
//! `RAMSTICK_BLESS=1 cargo test -p ramstick-common --test golden`
//! and review the result with `git diff tests/golden`.

use ramstick_common::cmdline::parse;
use ramstick_common::plan::{make_plan, Facts};
use std::fs;
use std::path::{Path, PathBuf};

/// The machine every golden case is planned for.
fn facts() -> Facts {
    Facts {
        kernel_version: "6.1.0-56-amd64".to_string(),
        mem_total_bytes: 2 << 30,
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/cmdline")
}

/// A line-by-line comparison: ` ` same, `-` expected only, `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let exp: Vec<&str> = expected.lines().collect();
    let act: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for i in 0..exp.len().max(act.len()) {
        match (exp.get(i), act.get(i)) {
            (Some(e), Some(a)) if e == a => out.push_str(&format!("   {e}\n")),
            (e, a) => {
                if let Some(e) = e {
                    out.push_str(&format!(" - {e}\n"));
                }
                if let Some(a) = a {
                    out.push_str(&format!(" + {a}\n"));
                }
            }
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str(" (the final newline differs)\n");
    }
    out
}

#[test]
fn golden_cmdline_plans() {
    let bless = std::env::var_os("RAMSTICK_BLESS").is_some_and(|v| v == "1");
    let dir = golden_dir();
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();

    let mut cases = 0;
    let mut failures = Vec::new();
    for path in &entries {
        let ext = path.extension().and_then(|e| e.to_str());
        if ext == Some("plan") {
            if !path.with_extension("cmdline").exists() {
                failures.push(format!("{}: no matching .cmdline file", path.display()));
            }
            continue;
        }
        if ext != Some("cmdline") {
            failures.push(format!("{}: unexpected file", path.display()));
            continue;
        }
        cases += 1;
        let cmdline = fs::read_to_string(path).expect("read .cmdline");
        let (cfg, problems) = parse(&cmdline);
        let actual = make_plan(&cfg, problems, &facts()).to_string();
        let plan_path = path.with_extension("plan");
        if bless {
            fs::write(&plan_path, &actual).expect("write .plan");
            continue;
        }
        match fs::read_to_string(&plan_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{} differs (- expected, + actual):\n{}",
                plan_path.display(),
                diff(&expected, &actual)
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run with RAMSTICK_BLESS=1 to create it)",
                plan_path.display()
            )),
        }
    }
    assert!(
        cases >= 20,
        "only {cases} golden cases in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{} golden failure(s); if the change is intended, rerun with RAMSTICK_BLESS=1 \
         and review `git diff tests/golden`:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn diff_marks_changed_lines() {
    let d = diff("a\nb\nc\n", "a\nx\nc\nd\n");
    assert_eq!(d, "   a\n - b\n + x\n   c\n + d\n");
    assert!(diff("a", "a\n").contains("final newline"));
}

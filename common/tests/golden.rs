//! Golden tests: kernel command line → boot plan text.
//!
//! Every `tests/golden/cmdline/<case>.cmdline` (workspace root) holds one
//! kernel command line, exactly as `/proc/cmdline` would (a trailing newline is
//! whitespace like any other). `<case>.plan` next to it holds the expected
//! `Display` output of [`make_plan`] for it, on a machine with kernel
//! `6.1.0-56-amd64` and 2 GiB of RAM. The expected files are the
//! specification: review every change to them by eye.
//!
//! README.md's "Boot parameters" table is also checked here: it must be the
//! one generated from the parameter table (`common/src/cmdline/params.rs`).
//!
//! To (re)write the expected files and the README table after an intended
//! change, run `RAMSTICK_BLESS=1 cargo test -p ramstick-common --test golden`
//! and review the result with `git diff tests/golden README.md`.

use ramstick_common::cmdline::{markdown_table, parse};
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

/// Whether to rewrite the expected output instead of comparing with it.
fn bless() -> bool {
    std::env::var_os("RAMSTICK_BLESS").is_some_and(|v| v == "1")
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
    let bless = bless();
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

/// The README section whose table is generated.
const README_SECTION: &str = "## Boot parameters";

/// The byte range of the first Markdown table (a run of lines starting with
/// `|`, each with its newline) in the section headed by the line `heading`.
fn table_span(text: &str, heading: &str) -> Result<(usize, usize), String> {
    let mut offset = 0;
    let mut in_section = false;
    let mut table: Option<(usize, usize)> = None;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches('\n');
        if content.starts_with("## ") || content.starts_with("# ") {
            if in_section {
                break;
            }
            in_section = content == heading;
            continue;
        }
        if !in_section {
            continue;
        }
        match (&mut table, content.starts_with('|')) {
            (None, true) => table = Some((start, offset)),
            (Some((_, end)), true) if *end == start => *end = offset,
            (Some(_), _) => break,
            (None, false) => {}
        }
    }
    table.ok_or_else(|| format!("no table under a line {heading:?}"))
}

#[test]
fn readme_boot_parameters_table_is_generated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let fresh = markdown_table();
    let (start, end) =
        table_span(&readme, README_SECTION).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let current = &readme[start..end];
    if current == fresh {
        return;
    }
    if bless() {
        let updated = format!("{}{fresh}{}", &readme[..start], &readme[end..]);
        fs::write(&path, updated).expect("write README.md");
        return;
    }
    panic!(
        "the table under {README_SECTION:?} in {} is not the one generated from \
         common/src/cmdline/params.rs (- README, + generated):\n{}\n\
         Rerun with RAMSTICK_BLESS=1 to rewrite it, or paste this table:\n\n{fresh}",
        path.display(),
        diff(current, &fresh)
    );
}

#[test]
fn table_span_finds_the_sections_first_table() {
    let text = "# T\n| a |\n## S\ntext\n| b |\n|---|\n| c |\n\nmore\n| d |\n## U\n| e |\n";
    let (start, end) = table_span(text, "## S").expect("found");
    assert_eq!(&text[start..end], "| b |\n|---|\n| c |\n");
    assert!(table_span(text, "## X").is_err());
    assert!(table_span("## S\ntext\n## U\n| e |\n", "## S").is_err());
    // A table that ends the file without a final newline.
    let (start, end) = table_span("## S\n| b |", "## S").expect("found");
    assert_eq!(end - start, "| b |".len());
}

//! The parameter table for people: the Markdown table of README.md's "Boot
//! parameters" section and the console listing `init --params` prints.

use super::params::{AnyParam, OnBad, PARAMETERS};
use super::syntax::plain;

/// The console listing's line width.
const WIDTH: usize = 80;

/// What the parameter does, then what it needs and what a bad value does (Markdown).
fn meaning(p: &dyn AnyParam) -> String {
    let mut text = p.help().to_string();
    if let Some(needs) = p.only_with() {
        text.push_str(&format!(" Only with `{}`.", needs.setting));
    }
    if let OnBad::Stop { because } = p.on_bad() {
        text.push_str(&format!(" A bad value stops the boot: {because}."));
    }
    text
}

/// `text` fit for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The Markdown table of every parameter, one row each, in the manual's order.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| parameter | values | default | what it does |\n\
         |---|---|---|---|\n",
    );
    for p in PARAMETERS {
        out.push_str(&format!(
            "| `{}=` | {} | {} | {} |\n",
            p.name(),
            cell(&p.forms()),
            cell(&p.default_text()),
            cell(&meaning(*p))
        ));
    }
    out
}

/// Every parameter in plain text for a console: name, accepted values,
/// default and meaning, wrapped to 80 columns.
pub fn console_table() -> String {
    let mut out = String::from(
        "ramstick boot parameters (kernel command line; press e in GRUB to edit it).\n\
         A bad value is reported and the default used, unless said otherwise.\n",
    );
    for p in PARAMETERS {
        out.push_str(&format!("\n{}=\n", p.name()));
        out.push_str(&wrap(&plain(&p.forms()), "  values:  ", "           "));
        out.push_str(&wrap(
            &plain(&p.default_text()),
            "  default: ",
            "           ",
        ));
        out.push_str(&wrap(&plain(&meaning(*p)), "  ", "  "));
    }
    out
}

/// `text` as lines of at most [`WIDTH`] columns (a longer word stays whole),
/// the first line starting with `first`, the others with `rest`.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::PARAMS;

    #[test]
    fn wrap_fits_the_width_and_keeps_every_word() {
        let text = "aaaa bbbb cccc dddd";
        assert_eq!(wrap(text, "> ", "  "), "> aaaa bbbb cccc dddd\n");
        let long = "word ".repeat(40);
        let wrapped = wrap(&long, "first: ", "       ");
        assert!(wrapped.lines().all(|l| l.chars().count() <= WIDTH));
        assert!(wrapped.starts_with("first: word"));
        assert!(wrapped
            .lines()
            .skip(1)
            .all(|l| l.starts_with("       word")));
        assert_eq!(
            wrapped.split_whitespace().filter(|w| *w == "word").count(),
            40
        );
        let huge = "x".repeat(100);
        assert_eq!(wrap(&huge, "", ""), format!("{huge}\n"));
    }

    #[test]
    fn markdown_table_has_one_row_per_parameter() {
        let table = markdown_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + PARAMS.len());
        for (line, name) in lines[2..].iter().zip(PARAMS) {
            assert!(line.starts_with(&format!("| `{name}=` | ")), "{line}");
            // Four cells: no unescaped `|` inside one.
            assert_eq!(line.replace("\\|", "").matches('|').count(), 5, "{line}");
        }
        assert!(table.contains(
            "| `ramstick.boot=` | `default`, `backup` or `clean` | `default` | What the session"
        ));
        assert!(table.contains("Only with `ramstick.upper=zram`."));
        assert!(table.contains(
            "A bad value stops the boot: the persistent partition cannot be found safely."
        ));
    }

    #[test]
    fn console_table_is_plain_and_lists_everything() {
        let text = console_table();
        assert!(!text.contains('`'));
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        for name in PARAMS {
            assert!(text.contains(&format!("\n{name}=\n")), "{name}");
        }
        assert!(text.contains(
            "\nramstick.timeout=\n  values:  a number of seconds from 1 to 3600\n  default: 30\n"
        ));
        assert!(text.contains("\nramstick.swap=\n  values:  off or a size in bytes"));
    }
}

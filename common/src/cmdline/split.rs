//! The kernel's splitting of its command line into `name=value` words.

/// The kernel's `isspace()` for command-line splitting.
pub(super) fn is_kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits a command line into `(name, value)` pairs like the kernel's
/// `next_arg()`: words are separated by whitespace outside double quotes; the
/// name ends at the first `=`; a value that starts with `"` loses that quote
/// and a closing `"` at the end of the word; a word that starts with `"` loses
/// it and a closing `"`. A bare `--` ends the kernel's parameters (what
/// follows is for init), so splitting stops there.
pub fn split_args(cmdline: &str) -> Vec<(&str, Option<&str>)> {
    let bytes = cmdline.as_bytes();
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_kernel_space(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        let quoted = bytes[pos] == b'"';
        let start = if quoted { pos + 1 } else { pos };
        let mut in_quote = quoted;
        let mut equals = None;
        let mut end = start;
        while end < bytes.len() && (in_quote || !is_kernel_space(bytes[end])) {
            if equals.is_none() && bytes[end] == b'=' {
                equals = Some(end);
            }
            if bytes[end] == b'"' {
                in_quote = !in_quote;
            }
            end += 1;
        }
        pos = end;
        // `"`, `=` and whitespace are ASCII, so every index below is a char boundary.
        let mut word_end = end;
        let arg = match equals {
            None => {
                if quoted && word_end > start && bytes[word_end - 1] == b'"' {
                    word_end -= 1;
                }
                (&cmdline[start..word_end], None)
            }
            Some(eq) => {
                let mut value_start = eq + 1;
                let value_quoted = value_start < end && bytes[value_start] == b'"';
                if value_quoted {
                    value_start += 1;
                }
                if (value_quoted || quoted) && word_end > value_start && bytes[word_end - 1] == b'"'
                {
                    word_end -= 1;
                }
                (&cmdline[start..eq], Some(&cmdline[value_start..word_end]))
            }
        };
        if arg == ("--", None) {
            break;
        }
        args.push(arg);
    }
    args
}

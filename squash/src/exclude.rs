//! Exclusion lists: glob patterns over paths inside the packed tree.
//!
//! A path is written from the tree's root with a leading `/` (`/tmp/x`).
//! `*`, `?` and `[…]` never match `/`; `**` matches any number of whole
//! components. An excluded directory is left out with everything below it,
//! so `/tmp/*` keeps `/tmp` itself but none of its contents. In a file,
//! one pattern per line; blank lines and lines starting with `#` are
//! ignored; a pattern without a leading `/` matches at any depth.

use crate::error::{Error, Result};
use glob::{MatchOptions, Pattern};

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A compiled exclusion list.
#[derive(Debug, Clone, Default)]
pub struct Exclude {
    patterns: Vec<Pattern>,
}

impl Exclude {
    /// Excludes nothing.
    pub const fn none() -> Self {
        Exclude {
            patterns: Vec::new(),
        }
    }

    /// Compiles patterns (see the module doc for their form).
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() || p.starts_with('#') {
                continue;
            }
            let full = if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/**/{p}")
            };
            let full = full.trim_end_matches('/');
            let pattern = Pattern::new(if full.is_empty() { "/" } else { full }).map_err(|e| {
                Error::Pattern {
                    pattern: p.to_string(),
                    what: e.to_string(),
                }
            })?;
            out.push(pattern);
        }
        Ok(Exclude { patterns: out })
    }

    /// Compiles the lines of an exclusion file's text.
    pub fn parse(text: &str) -> Result<Self> {
        Self::new(text.lines())
    }

    /// True if `path` (from the root, with a leading `/`) is excluded
    /// itself. Callers skip an excluded directory's contents too.
    pub fn matches(&self, path: &str) -> bool {
        self.patterns.iter().any(|p| p.matches_with(path, MATCH))
    }

    /// True if nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_components() {
        let ex = Exclude::parse(
            "# caches\n/tmp/*\n\n/var/cache/apt/archives/*.deb\n*.pyc\n/home/*/.cache/\n",
        )
        .unwrap();
        assert!(ex.matches("/tmp/x"));
        assert!(!ex.matches("/tmp"));
        assert!(!ex.matches("/tmpx/y"));
        assert!(ex.matches("/var/cache/apt/archives/a.deb"));
        assert!(!ex.matches("/var/cache/apt/archives/partial"));
        assert!(ex.matches("/a/b/c.pyc"));
        assert!(ex.matches("/c.pyc"));
        assert!(ex.matches("/home/user/.cache"));
        assert!(!ex.matches("/home/user/.cachex"));
        assert!(!ex.matches("/home/user/sub/.cache"));
        assert!(Exclude::none().is_empty());
    }

    #[test]
    fn bad_pattern_is_named() {
        let e = Exclude::parse("/ok\n/bad[\n").unwrap_err();
        assert!(e.to_string().contains("/bad["), "{e}");
    }
}

//! The bench table: per-row statistics (median, min–max over the runs), the
//! ratio ours / reference, and the Markdown rendering.

use std::fmt::Write as _;

/// How a row's values are shown (they are stored in seconds or bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    /// A plain number (layers in a chain).
    Count,
}

/// `label: text`, or `text` for an empty label.
fn prefixed(label: &str, text: &str) -> String {
    if label.is_empty() {
        text.to_string()
    } else {
        format!("{label}: {text}")
    }
}

/// One side of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// One value per run; `label` names the tool (empty for ramstick).
    Values {
        label: String,
        unit: Unit,
        values: Vec<f64>,
    },
    /// The measurement failed: the error is shown and the bench fails.
    Failed(String),
    /// Deliberately not measured; the reason is shown.
    Skipped(String),
}

impl Cell {
    /// `values`, or the error that prevented them.
    pub fn from_result(label: &str, unit: Unit, values: anyhow::Result<Vec<f64>>) -> Cell {
        match values {
            Ok(values) if values.is_empty() => Cell::Failed(prefixed(label, "no runs")),
            Ok(values) => Cell::Values {
                label: label.to_string(),
                unit,
                values,
            },
            Err(e) => Cell::Failed(prefixed(label, &format!("{e:#}"))),
        }
    }

    /// The median of the values, if any.
    fn median(&self) -> Option<f64> {
        match self {
            Cell::Values { values, .. } => Stats::of(values).map(|s| s.median),
            _ => None,
        }
    }

    fn render(&self) -> String {
        match self {
            Cell::Values {
                label,
                unit,
                values,
            } => {
                let Some(s) = Stats::of(values) else {
                    return "ERROR: no runs".to_string();
                };
                let median = format_value(s.median, *unit);
                let text = if s.n == 1 {
                    format!("{median} (n=1)")
                } else {
                    let (min, max) = (format_value(s.min, *unit), format_value(s.max, *unit));
                    format!("{median} ({min}–{max}, n={})", s.n)
                };
                prefixed(label, &text)
            }
            Cell::Failed(e) => format!("ERROR: {e}"),
            Cell::Skipped(why) => why.clone(),
        }
    }
}

/// The runs of one tool, `N` figures per run, or the error that stopped them
/// (after which no more runs are made).
pub struct Series<const N: usize> {
    values: [Vec<f64>; N],
    error: Option<anyhow::Error>,
}

impl<const N: usize> Default for Series<N> {
    fn default() -> Self {
        Series {
            values: std::array::from_fn(|_| Vec::new()),
            error: None,
        }
    }
}

impl<const N: usize> Series<N> {
    /// One more run, unless an earlier one failed.
    pub fn record(&mut self, run: impl FnOnce() -> anyhow::Result<[f64; N]>) {
        if self.error.is_some() {
            return;
        }
        match run() {
            Ok(figures) => {
                for (values, v) in self.values.iter_mut().zip(figures) {
                    values.push(v);
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Whether a run failed.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Figure `index` of every run, or the error that stopped the runs.
    pub fn values(&self, index: usize) -> anyhow::Result<Vec<f64>> {
        match (&self.error, self.values.get(index)) {
            (Some(e), _) => Err(anyhow::anyhow!("{e:#}")),
            (None, Some(v)) => Ok(v.clone()),
            (None, None) => Err(anyhow::anyhow!("no figure {index}")),
        }
    }

    /// Figure `index` of every run as a cell.
    pub fn cell(&self, label: &str, unit: Unit, index: usize) -> Cell {
        Cell::from_result(label, unit, self.values(index))
    }
}

/// One line of the table: ramstick's figure and the reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub ours: Cell,
    pub reference: Cell,
}

impl Row {
    /// Figure `index` of `ours` against the same figure of `theirs` (made by `tool`).
    pub fn compare<const N: usize>(
        name: &str,
        unit: Unit,
        index: usize,
        ours: &Series<N>,
        (tool, theirs): (&str, &Series<N>),
    ) -> Row {
        Row {
            name: name.to_string(),
            ours: ours.cell("", unit, index),
            reference: theirs.cell(tool, unit, index),
        }
    }

    /// A row where both sides failed with the same setup error.
    pub fn failed(name: &str, error: &anyhow::Error) -> Row {
        Row {
            name: name.to_string(),
            ours: Cell::Failed(format!("{error:#}")),
            reference: Cell::Failed(format!("{error:#}")),
        }
    }

    /// A row not measured in this mode.
    pub fn skipped(name: &str, why: &str) -> Row {
        Row {
            name: name.to_string(),
            ours: Cell::Skipped(why.to_string()),
            reference: Cell::Skipped(why.to_string()),
        }
    }

    /// Whether a cell of this row failed.
    pub fn failed_cells(&self) -> bool {
        matches!(self.ours, Cell::Failed(_)) || matches!(self.reference, Cell::Failed(_))
    }

    /// ours / reference of the medians, or "—".
    fn ratio(&self) -> String {
        match (self.ours.median(), self.reference.median()) {
            (Some(a), Some(b)) if b > 0.0 => format_ratio(a / b),
            _ => "—".to_string(),
        }
    }
}

/// `1.23×`; below 0.1 with two significant digits (`0.043×`, `0.0011×`),
/// so a tiny ratio does not show as 0.
fn format_ratio(r: f64) -> String {
    if r >= 0.1 || r <= 0.0 || !r.is_finite() {
        return format!("{r:.2}×");
    }
    let decimals = (-r.log10()).ceil() as usize + 1;
    format!("{r:.decimals$}×")
}

/// Median, minimum and maximum of a set of runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    /// `None` for no values; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let (&min, &max) = (v.first()?, v.last()?);
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min,
            max,
            n,
        })
    }
}

/// `1.23 s`, `845 ms`, `12.3 MiB`, `512 B`, `16`.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => format!("{v:.0}"),
        Unit::Seconds if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        Unit::Seconds => format!("{v:.2} s"),
        Unit::Bytes => {
            const KIB: f64 = 1024.0;
            if v < KIB {
                format!("{v:.0} B")
            } else if v < KIB * KIB {
                format!("{:.1} KiB", v / KIB)
            } else {
                format!("{:.1} MiB", v / (KIB * KIB))
            }
        }
    }
}

/// Text safe inside a Markdown table cell: one line, no `|`, at most 300 characters.
fn cell_text(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.replace('|', "\\|");
    if out.chars().count() > 300 {
        out = out.chars().take(297).collect::<String>() + "...";
    }
    out
}

/// The report: `intro` lines, then the table.
pub fn render(intro: &[String], rows: &[Row]) -> String {
    let mut out = String::new();
    for line in intro {
        let _ = writeln!(out, "{line}");
    }
    if !intro.is_empty() {
        out.push('\n');
    }
    out.push_str("| Measure | ramstick | reference | ratio (ours / reference) |\n");
    out.push_str("|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            cell_text(&row.name),
            cell_text(&row.ours.render()),
            cell_text(&row.reference.render()),
            row.ratio()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(label: &str, values: &[f64]) -> Cell {
        Cell::Values {
            label: label.into(),
            unit: Unit::Seconds,
            values: values.to_vec(),
        }
    }

    #[test]
    fn stats_take_the_median_and_range() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stats::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
        assert_eq!(Stats::of(&[]), None);
    }

    #[test]
    fn values_are_formatted_by_unit() {
        assert_eq!(format_value(0.8456, Unit::Seconds), "846 ms");
        assert_eq!(format_value(12.345, Unit::Seconds), "12.35 s");
        assert_eq!(format_value(512.0, Unit::Bytes), "512 B");
        assert_eq!(format_value(1536.0, Unit::Bytes), "1.5 KiB");
        assert_eq!(format_value(3.0 * 1048576.0, Unit::Bytes), "3.0 MiB");
        assert_eq!(format_value(16.0, Unit::Count), "16");
    }

    #[test]
    fn small_ratios_keep_two_significant_digits() {
        assert_eq!(format_ratio(1.234), "1.23×");
        assert_eq!(format_ratio(0.1), "0.10×");
        assert_eq!(format_ratio(0.0434), "0.043×");
        assert_eq!(format_ratio(0.00114), "0.0011×");
        assert_eq!(format_ratio(0.0), "0.00×");
    }

    #[test]
    fn rows_render_with_ratio_errors_and_skips() {
        let rows = [
            Row {
                name: "pack | time".into(),
                ours: secs("", &[2.0, 1.0, 3.0]),
                reference: secs("mksquashfs", &[4.0, 4.0, 5.0]),
            },
            Row {
                name: "unpack".into(),
                ours: Cell::Failed("saver: exit 1\nno such file".into()),
                reference: secs("unsquashfs", &[1.0]),
            },
            Row::skipped("boot", "skipped in --quick"),
        ];
        let text = render(&["# Bench".into()], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# Bench");
        assert_eq!(
            lines[4],
            "| pack \\| time | 2.00 s (1.00 s–3.00 s, n=3) | mksquashfs: 4.00 s (4.00 s–5.00 s, n=3) | 0.50× |"
        );
        assert_eq!(
            lines[5],
            "| unpack | ERROR: saver: exit 1 no such file | unsquashfs: 1.00 s (n=1) | — |"
        );
        assert_eq!(
            lines[6],
            "| boot | skipped in --quick | skipped in --quick | — |"
        );
        assert!(!rows[0].failed_cells());
        assert!(rows[1].failed_cells());
        assert!(!rows[2].failed_cells());
    }

    #[test]
    fn series_stop_at_the_first_error() {
        let mut s = Series::<2>::default();
        s.record(|| Ok([1.0, 10.0]));
        s.record(|| Ok([3.0, 30.0]));
        assert_eq!(s.cell("t", Unit::Seconds, 1), secs("t", &[10.0, 30.0]));
        assert_eq!(s.values(0).unwrap(), [1.0, 3.0]);
        assert!(s.values(2).is_err());
        assert!(!s.failed());
        s.record(|| anyhow::bail!("tool crashed"));
        s.record(|| Ok([5.0, 50.0]));
        assert!(s.failed());
        assert_eq!(
            s.cell("t", Unit::Seconds, 0),
            Cell::Failed("t: tool crashed".into())
        );
    }

    #[test]
    fn empty_or_failed_results_are_failures() {
        let c = Cell::from_result("x", Unit::Bytes, Ok(vec![]));
        assert!(matches!(c, Cell::Failed(_)));
        let c = Cell::from_result("x", Unit::Bytes, Err(anyhow::anyhow!("boom")));
        assert_eq!(c, Cell::Failed("x: boom".into()));
        let c = Cell::from_result("", Unit::Bytes, Err(anyhow::anyhow!("boom")));
        assert_eq!(c, Cell::Failed("boom".into()));
        let row = Row::failed("r", &anyhow::anyhow!("setup"));
        assert!(row.failed_cells());
    }
}

//! Medians, targets and the results table (Markdown, so that a run pastes into BENCHMARKS.md).

use std::fmt::Write;

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// What a row's numbers are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// Wall time, in seconds.
    Seconds,
    /// Peak RSS above the empty-script baseline, per task, in KiB.
    KbPerTask,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::Seconds => format!("{value:.3} s"),
            Unit::KbPerTask => format!("{value:.2} KB/task"),
        }
    }
}

/// The goal a row is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Spindle at most this many times the floor.
    RatioAtMost(f64),
    /// Spindle at most this many KiB per task.
    KbPerTaskAtMost(f64),
    /// Spindle at most this many times Lune (not judged when Lune did not run).
    LuneRatioAtMost(f64),
    /// Shown for reference only.
    None,
}

/// Lune's figure for a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Lune {
    /// Its median, in the row's unit.
    Value(f64),
    /// It did not complete the workload; why, briefly.
    Failed(String),
    /// Lune cannot run this workload (it is Rust-hosted).
    NotApplicable,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The workload, its size and what it is compared with.
    pub workload: String,
    /// The unit of `spindle`, `floor` and a Lune value.
    pub unit: Unit,
    /// Spindle's median.
    pub spindle: f64,
    /// The floor's median.
    pub floor: f64,
    /// The goal.
    pub target: Target,
    /// Spindle's and the floor's median peak RSS, in KiB, for process workloads.
    pub peak_rss_kb: Option<(u64, u64)>,
    /// Lune's figure, when Lune is measured at all.
    pub lune: Option<Lune>,
}

impl Row {
    /// Spindle over the floor.
    pub fn ratio(&self) -> f64 {
        self.spindle / self.floor
    }

    /// Whether the target is met; `None` for a reference row.
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtMost(limit) => Some(self.ratio() <= limit),
            Target::KbPerTaskAtMost(limit) => Some(self.spindle <= limit),
            Target::LuneRatioAtMost(limit) => match self.lune {
                Some(Lune::Value(lune)) => Some(self.spindle / lune <= limit),
                _ => None,
            },
            Target::None => None,
        }
    }
}

fn megabytes(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

/// The rows as a Markdown table; the Lune column appears when any row has a Lune figure.
pub fn table(rows: &[Row]) -> String {
    let with_lune = rows.iter().any(|row| row.lune.is_some());
    let mut header = vec![
        "workload",
        "Spindle",
        "floor",
        "ratio",
        "target",
        "met",
        "peak RSS (Spindle / floor)",
    ];
    if with_lune {
        header.push("Lune 0.11.1");
    }
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for row in rows {
        let target = match row.target {
            Target::RatioAtMost(limit) => format!("<= {limit}x"),
            Target::KbPerTaskAtMost(limit) => format!("<= {limit} KB/task"),
            Target::LuneRatioAtMost(limit) => match &row.lune {
                Some(Lune::Value(lune)) => {
                    format!("<= {limit:.1}x Lune ({:.2}x)", row.spindle / lune)
                }
                _ => format!("<= {limit:.1}x Lune"),
            },
            Target::None => "(reference)".to_owned(),
        };
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        let rss = row.peak_rss_kb.map_or(String::new(), |(s, f)| {
            format!("{} / {}", megabytes(s), megabytes(f))
        });
        let mut line = vec![
            row.workload.clone(),
            row.unit.show(row.spindle),
            row.unit.show(row.floor),
            format!("{:.2}x", row.ratio()),
            target,
            met.to_owned(),
            rss,
        ];
        if with_lune {
            line.push(match &row.lune {
                Some(Lune::Value(value)) => row.unit.show(*value),
                Some(Lune::Failed(why)) => format!("failed: {why}"),
                Some(Lune::NotApplicable) => "n/a".to_owned(),
                None => String::new(),
            });
        }
        lines.push(line);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|line| line[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, line) in lines.iter().enumerate() {
        out.push('|');
        for (cell, width) in line.iter().zip(&widths) {
            let _ = write!(out, " {cell:<width$} |");
        }
        out.push('\n');
        if n == 0 {
            out.push('|');
            for width in &widths {
                let _ = write!(out, "{}|", "-".repeat(width + 2));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[0.5]), Some(0.5));
    }

    fn row(spindle: f64, floor: f64, target: Target) -> Row {
        Row {
            workload: "w".into(),
            unit: Unit::Seconds,
            spindle,
            floor,
            target,
            peak_rss_kb: None,
            lune: None,
        }
    }

    #[test]
    fn targets_judge_the_ratio_or_the_absolute_figure() {
        assert_eq!(row(1.3, 1.0, Target::RatioAtMost(1.3)).met(), Some(true));
        assert_eq!(row(1.31, 1.0, Target::RatioAtMost(1.3)).met(), Some(false));
        let mut memory = row(1.43, 1.31, Target::KbPerTaskAtMost(1.6));
        memory.unit = Unit::KbPerTask;
        assert_eq!(memory.met(), Some(true));
        memory.spindle = 1.7;
        assert_eq!(memory.met(), Some(false));
        assert_eq!(row(4.0, 1.0, Target::None).met(), None);
        let mut compute = row(0.9, 0.8, Target::LuneRatioAtMost(1.0));
        assert_eq!(compute.met(), None, "no Lune figure, nothing to judge");
        compute.lune = Some(Lune::Value(1.0));
        assert_eq!(compute.met(), Some(true));
        compute.lune = Some(Lune::Value(0.8));
        assert_eq!(compute.met(), Some(false));
    }

    #[test]
    fn table_aligns_columns_and_adds_lune_only_when_measured() {
        let mut rows = vec![row(0.41, 0.30, Target::RatioAtMost(1.3))];
        rows[0].peak_rss_kb = Some((317 * 1024, 286 * 1024));
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        assert!(!text.contains("Lune"));
        assert!(
            lines[2].contains("| 0.410 s | 0.300 s | 1.37x | <= 1.3x | NO  | 317 MB / 286 MB"),
            "{text}"
        );

        rows[0].lune = Some(Lune::Failed("exit 1".into()));
        let text = table(&rows);
        assert!(
            text.contains("Lune 0.11.1") && text.contains("failed: exit 1"),
            "{text}"
        );
    }
}

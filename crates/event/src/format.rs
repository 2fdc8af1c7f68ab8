//! Text every notifier shares: fastai's console results table and a one-line epoch summary.
//!
//! The table is byte-exact to fastprogress's console output: each header name right-padded with spaces to
//! width 8 and joined by two spaces; each row cell `t` written as `t` plus `2 + len(padded name) - len(t)`
//! spaces (so rows carry trailing spaces, as fastprogress prints them); integers as they are, floats with
//! six decimals, missing values `#na#`, times `mm:ss` or `h:mm:ss`.

use std::fmt::Write as _;

use crate::event::EpochEnded;

/// Header names are right-padded to this width.
const NAME_WIDTH: usize = 8;

/// One cell of a results-table row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// An integer, written as is (the epoch).
    Int(u64),
    /// A number, written with six decimals.
    Float(f64),
    /// No value, written `#na#` (as fastprogress does).
    Missing,
    /// A duration in seconds, written `mm:ss` or `h:mm:ss`.
    Time(f64),
}

impl Cell {
    fn render(self) -> String {
        match self {
            Cell::Int(i) => i.to_string(),
            Cell::Float(v) => float6(v),
            Cell::Missing => "#na#".to_owned(),
            Cell::Time(s) => format_time(s),
        }
    }
}

/// A float with six decimals, as Python's `f"{v:.6f}"` writes it (`nan`, `inf`, `-inf` for non-finite values).
pub fn float6(v: f64) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".to_owned() } else { "-inf".to_owned() }
    } else {
        format!("{v:.6}")
    }
}

/// Seconds as fastprogress writes them: `mm:ss` under an hour, `h:mm:ss` from an hour on (whole seconds,
/// truncated).
pub fn format_time(seconds: f64) -> String {
    let t = if seconds.is_finite() && seconds > 0.0 { seconds as u64 } else { 0 };
    let (h, m, s) = (t / 3600, (t / 60) % 60, t % 60);
    if h != 0 { format!("{h}:{m:02}:{s:02}") } else { format!("{m:02}:{s:02}") }
}

/// The column names of a results table: `epoch`, `train_loss`, `valid_loss`, the metrics, `time`.
pub fn column_names<S: AsRef<str>>(metric_names: &[S]) -> Vec<String> {
    let mut names = Vec::with_capacity(metric_names.len() + 4);
    names.extend(["epoch", "train_loss", "valid_loss"].map(String::from));
    names.extend(metric_names.iter().map(|n| n.as_ref().to_owned()));
    names.push("time".to_owned());
    names
}

/// A results table being written, fastprogress-style.
#[derive(Debug, Clone)]
pub struct Table {
    padded: Vec<String>,
}

impl Table {
    /// A table with the given column names (see [`column_names`]).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Table {
        let padded = names.iter().map(|n| format!("{:<NAME_WIDTH$}", n.as_ref())).collect();
        Table { padded }
    }

    /// A table with fastai's columns for these metrics.
    pub fn for_metrics<S: AsRef<str>>(metric_names: &[S]) -> Table {
        Table::new(&column_names(metric_names))
    }

    /// The header line, without a newline.
    pub fn header(&self) -> String {
        self.padded.join("  ")
    }

    /// One row, without a newline. Cells past the columns are ignored; missing cells are `#na#`.
    pub fn row(&self, cells: &[Cell]) -> String {
        let mut out = String::new();
        for (i, name) in self.padded.iter().enumerate() {
            let t = cells.get(i).copied().unwrap_or(Cell::Missing).render();
            let pad = (2 + name.chars().count()).saturating_sub(t.chars().count());
            out.push_str(&t);
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out
    }

    /// The row of one epoch; the metric columns are looked up by name in `epoch.metrics`.
    pub fn epoch_row(&self, epoch: &EpochEnded) -> String {
        self.row(&epoch_cells(self.metric_columns(), epoch))
    }

    fn metric_columns(&self) -> impl Iterator<Item = &str> {
        let n = self.padded.len();
        self.padded.iter().take(n.saturating_sub(1)).skip(3).map(|p| p.trim_end())
    }
}

fn epoch_cells<'a>(metric_names: impl Iterator<Item = &'a str>, e: &EpochEnded) -> Vec<Cell> {
    let mut cells = vec![
        Cell::Int(u64::from(e.epoch)),
        Cell::Float(e.train_loss),
        e.valid_loss.map_or(Cell::Missing, Cell::Float),
    ];
    cells.extend(metric_names.map(|name| e.metrics.get(name).map_or(Cell::Missing, Cell::Float)));
    cells.push(Cell::Time(e.elapsed_s));
    cells
}

/// The whole table for a run: header and one row per epoch, each line ending with a newline.
pub fn results_table<S: AsRef<str>>(metric_names: &[S], epochs: &[EpochEnded]) -> String {
    let table = Table::for_metrics(metric_names);
    let mut out = table.header();
    out.push('\n');
    for e in epochs {
        out.push_str(&table.epoch_row(e));
        out.push('\n');
    }
    out
}

/// The compact one-line summary of an epoch, 1-based for people:
/// `epoch 3/10 · train 0.123400 · valid 0.056700 · accuracy 0.982100 · 00:05`.
pub fn summary(e: &EpochEnded) -> String {
    let mut out = format!("epoch {}/{} · train {}", u64::from(e.epoch) + 1, e.n_epochs, float6(e.train_loss));
    if let Some(v) = e.valid_loss {
        let _ = write!(out, " · valid {}", float6(v));
    }
    for (name, value) in e.metrics.iter() {
        let _ = write!(out, " · {name} {}", float6(value));
    }
    let _ = write!(out, " · {}", format_time(e.elapsed_s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Metrics;

    fn epoch(epoch: u32, train: f64, valid: Option<f64>, acc: Option<f64>, secs: f64) -> EpochEnded {
        EpochEnded {
            epoch,
            n_epochs: 10,
            train_loss: train,
            valid_loss: valid,
            metrics: acc.map(|a| Metrics(vec![("accuracy".into(), a)])).unwrap_or_default(),
            elapsed_s: secs,
        }
    }

    #[test]
    fn reference_table_is_byte_exact() {
        // ../shared/REFERENCE.md §1, "The results table": the example, verbatim.
        let expected_header = "epoch     train_loss  valid_loss  accuracy  time";
        let expected_row = "0         0.100888    0.058969    0.978901  00:05";
        let table = Table::for_metrics(&["accuracy"]);
        // Every header name is padded to width 8, `time` too, so the printed header ends in spaces.
        assert_eq!(table.header(), format!("{expected_header}    "));
        assert_eq!(table.header().trim_end(), expected_header);
        let row = table.epoch_row(&epoch(0, 0.100888, Some(0.058969), Some(0.978901), 5.2));
        // fastprogress pads the last cell too: `00:05` + (2 + 8 - 5) spaces.
        assert_eq!(row, format!("{expected_row}     "));
        assert_eq!(row.trim_end(), expected_row);
    }

    #[test]
    fn cells() {
        fn check(cell: Cell, expected: &str) {
            assert_eq!(cell.render(), expected, "{cell:?}");
        }
        check(Cell::Int(12), "12");
        check(Cell::Float(0.1), "0.100000");
        check(Cell::Float(1.0 / 3.0), "0.333333");
        check(Cell::Float(2.5e-7), "0.000000");
        check(Cell::Float(f64::NAN), "nan");
        check(Cell::Float(f64::INFINITY), "inf");
        check(Cell::Missing, "#na#");
        check(Cell::Time(0.4), "00:00");
        check(Cell::Time(65.9), "01:05");
        check(Cell::Time(3599.0), "59:59");
        check(Cell::Time(3600.0), "1:00:00");
        check(Cell::Time(37230.0), "10:20:30");
        check(Cell::Time(f64::NAN), "00:00");
    }

    #[test]
    fn missing_values_and_long_names() {
        let table = Table::for_metrics(&["error_rate", "f1"]);
        assert_eq!(table.header(), "epoch     train_loss  valid_loss  error_rate  f1        time    ");
        let e = epoch(3, 0.5, None, None, 1.0);
        assert_eq!(table.epoch_row(&e), "3         0.500000    #na#        #na#        #na#      00:01     ");
    }

    #[test]
    fn whole_table() {
        let epochs = [epoch(0, 0.3, Some(0.2), Some(0.9), 1.0), epoch(1, 0.2, Some(0.1), Some(0.95), 2.0)];
        let text = results_table(&["accuracy"], &epochs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].trim_end(), "1         0.200000    0.100000    0.950000  00:02");
    }

    #[test]
    fn summary_line() {
        let e = EpochEnded {
            epoch: 2,
            n_epochs: 10,
            train_loss: 0.1234,
            valid_loss: Some(0.0567),
            metrics: Metrics(vec![("accuracy".into(), 0.9821)]),
            elapsed_s: 5.0,
        };
        assert_eq!(summary(&e), "epoch 3/10 · train 0.123400 · valid 0.056700 · accuracy 0.982100 · 00:05");
        let e = epoch(0, 1.0, None, None, 0.0);
        assert_eq!(summary(&e), "epoch 1/10 · train 1.000000 · 00:00");
    }

    #[test]
    fn summary_of_the_last_possible_epoch_does_not_overflow() {
        let e = epoch(u32::MAX, 1.0, None, None, 0.0);
        assert!(summary(&e).starts_with("epoch 4294967296/10 "));
    }
}

//! The results table of a notification in the layout a notifier asks for ([`TableLayout`]): fastai's
//! (`herald_event::format`, byte for byte as the trainer's console prints it), or a compact one that fits a
//! phone held upright.
//!
//! A phone shows about [`COMPACT_WIDTH`] monospace characters across; a wider `<pre>` row wraps and the
//! table is unreadable. The compact table has short headers (`ep`, `train`, `valid`, `acc`), right-aligned
//! numbers with four decimals, single spaces between columns, and the latest [`COMPACT_ROWS`] epochs under a
//! `… N earlier epochs` line. When that is wider than [`COMPACT_WIDTH`] it drops the `time` column, then
//! decimals (three, then two), and as a last resort the rightmost metrics, with a `+N metrics not shown`
//! line. It knows nothing of markup: `render` escapes and wraps it.

use herald_event::EpochEnded;
use herald_event::format::{format_time, results_table};
use serde::{Deserialize, Serialize};

/// The full table in a notification shows the latest this many epochs.
pub const MAX_TABLE_ROWS: usize = 30;
/// The compact table's widest line, in characters: what a phone held upright shows of a monospace block.
pub const COMPACT_WIDTH: usize = 34;
/// The compact table shows the latest this many epochs.
pub const COMPACT_ROWS: usize = 10;

/// How a notification lays out the results table; a notifier's `table` key. The default, `compact`, is the
/// chat notifiers' (Telegram, Slack, Discord, Pushover, ntfy); [`crate::render::notification`] writes `full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableLayout {
    /// At most [`COMPACT_WIDTH`] characters wide and [`COMPACT_ROWS`] epochs long: for phones.
    #[default]
    Compact,
    /// fastai's layout, as the trainer's console prints it, at most [`MAX_TABLE_ROWS`] epochs.
    Full,
}

/// The table of these epochs in `layout`, lines joined by `\n`, no trailing spaces or newline; `None`
/// without epochs.
pub fn table(layout: TableLayout, metric_names: &[String], epochs: &[EpochEnded]) -> Option<String> {
    if epochs.is_empty() {
        return None;
    }
    Some(match layout {
        TableLayout::Full => full(metric_names, epochs),
        TableLayout::Compact => compact(metric_names, epochs),
    })
}

/// fastai's table, trailing spaces trimmed, the latest [`MAX_TABLE_ROWS`] epochs.
fn full(metric_names: &[String], epochs: &[EpochEnded]) -> String {
    let skipped = epochs.len().saturating_sub(MAX_TABLE_ROWS);
    let text = results_table(metric_names, &epochs[skipped..]);
    let mut out: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
    if skipped > 0 {
        out.insert(1, format!("({skipped} earlier epochs not shown)"));
    }
    out.join("\n")
}

/// One column of the compact table: its header and a cell per row.
struct Column {
    header: String,
    cells: Vec<String>,
}

impl Column {
    fn width(&self) -> usize {
        self.cells.iter().chain([&self.header]).map(|c| c.chars().count()).max().unwrap_or(0)
    }
}

/// The compact table: the widest layout that fits in [`COMPACT_WIDTH`] (see the module's doc).
fn compact(metric_names: &[String], epochs: &[EpochEnded]) -> String {
    let skipped = epochs.len().saturating_sub(COMPACT_ROWS);
    let rows = &epochs[skipped..];
    let all = metric_names.len();
    let tries = [(4, true), (4, false), (3, false), (2, false)];
    let fitting = tries.iter().find_map(|&(decimals, time)| {
        let columns = columns(metric_names, rows, decimals, time);
        (line_width(&columns) <= COMPACT_WIDTH).then_some(columns)
    });
    let (columns, shown) = match fitting {
        Some(columns) => (columns, all),
        // Even two decimals without the time are too wide: drop metrics from the right.
        None => (0..all)
            .rev()
            .map(|n| (columns(&metric_names[..n], rows, 2, false), n))
            .find(|(columns, _)| line_width(columns) <= COMPACT_WIDTH)
            .unwrap_or_else(|| (columns(&[], rows, 2, false), 0)),
    };
    let mut lines = vec![line(&columns, |c| c.header.as_str())];
    if skipped > 0 {
        lines.push(format!("… {skipped} earlier epoch{}", if skipped == 1 { "" } else { "s" }));
    }
    lines.extend((0..rows.len()).map(|i| line(&columns, |c| c.cells[i].as_str())));
    if shown < all {
        let hidden = all - shown;
        lines.push(format!("+{hidden} metric{} not shown", if hidden == 1 { "" } else { "s" }));
    }
    lines.join("\n")
}

fn columns(metric_names: &[String], rows: &[EpochEnded], decimals: usize, time: bool) -> Vec<Column> {
    let number = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| compact_number(v, decimals));
    let mut columns = vec![
        Column { header: "ep".into(), cells: rows.iter().map(|e| e.epoch.to_string()).collect() },
        Column { header: "train".into(), cells: rows.iter().map(|e| number(Some(e.train_loss))).collect() },
        Column { header: "valid".into(), cells: rows.iter().map(|e| number(e.valid_loss)).collect() },
    ];
    for name in metric_names {
        let cells = rows.iter().map(|e| number(e.metrics.get(name))).collect();
        columns.push(Column { header: short_name(name), cells });
    }
    if time {
        columns.push(Column {
            header: "time".into(),
            cells: rows.iter().map(|e| format_time(e.elapsed_s)).collect(),
        });
    }
    columns
}

/// The characters of one line: the columns' widths and a space between each two.
fn line_width(columns: &[Column]) -> usize {
    columns.iter().map(Column::width).sum::<usize>() + columns.len().saturating_sub(1)
}

/// One line: each column's text right-aligned to the column's width, a space between.
fn line<'a>(columns: &'a [Column], text: impl Fn(&'a Column) -> &'a str) -> String {
    let cells: Vec<String> = columns.iter().map(|c| format!("{:>w$}", text(c), w = c.width())).collect();
    cells.join(" ")
}

/// A number in at most a few characters: `decimals` decimals, `1.2e5` from ten thousand on, `nan`, `inf`.
fn compact_number(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".to_owned() } else { "-inf".to_owned() }
    } else if v.abs() >= 1e4 {
        format!("{v:.1e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// A metric's header: a known short name (`accuracy` is `acc`), else the name's first five characters.
fn short_name(name: &str) -> String {
    let known = match name {
        "accuracy" => Some("acc"),
        "error_rate" => Some("err"),
        "top_k_accuracy" => Some("topk"),
        "f1_score" | "fbeta" => Some("f1"),
        "precision" => Some("prec"),
        "recall" => Some("rec"),
        "perplexity" => Some("ppl"),
        "roc_auc" | "roc_auc_score" => Some("auc"),
        "r2_score" => Some("r2"),
        "balanced_accuracy" => Some("bacc"),
        _ => None,
    };
    known.map_or_else(|| name.chars().take(5).collect(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use herald_event::Metrics;

    use super::*;

    fn epoch(n: u32, metrics: &[(&str, f64)]) -> EpochEnded {
        let f = f64::from(n);
        EpochEnded {
            epoch: n,
            n_epochs: 60,
            train_loss: 1.028127 / (f + 1.0),
            valid_loss: Some(0.453114 / (f + 1.0)),
            metrics: Metrics(metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
            elapsed_s: 1.4 + f,
        }
    }

    fn run(epochs: u32, metrics: &[&str]) -> (Vec<String>, Vec<EpochEnded>) {
        let names: Vec<String> = metrics.iter().map(|m| (*m).to_owned()).collect();
        let rows = (0..epochs)
            .map(|n| {
                let values: Vec<(&str, f64)> = metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (*m, 0.9 - 0.01 * i as f64 + 0.001 * f64::from(n)))
                    .collect();
                epoch(n, &values)
            })
            .collect();
        (names, rows)
    }

    fn compact_of(epochs: u32, metrics: &[&str]) -> String {
        let (names, rows) = run(epochs, metrics);
        let text = table(TableLayout::Compact, &names, &rows).expect("a table for a run with epochs");
        for line in text.lines() {
            assert!(
                line.chars().count() <= COMPACT_WIDTH,
                "{} characters: {line:?}\n{text}",
                line.chars().count()
            );
            assert_eq!(line, line.trim_end(), "no trailing spaces");
        }
        text
    }

    #[test]
    fn compact_table_of_one_epoch() {
        assert_eq!(
            compact_of(1, &["accuracy"]),
            "ep  train  valid    acc  time\n\
             \x200 1.0281 0.4531 0.9000 00:01"
        );
    }

    #[test]
    fn compact_table_of_ten_epochs_shows_them_all() {
        let text = compact_of(10, &["accuracy"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert_eq!(lines[0], "ep  train  valid    acc  time");
        assert_eq!(lines[10], " 9 0.1028 0.0453 0.9090 00:10");
    }

    #[test]
    fn compact_table_of_sixty_epochs_shows_the_last_ten() {
        let text = compact_of(60, &["accuracy"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 12, "{text}");
        assert_eq!(lines[1], "… 50 earlier epochs");
        assert_eq!(lines[2], "50 0.0202 0.0089 0.9500 00:51");
        assert_eq!(lines[11], "59 0.0171 0.0076 0.9590 01:00");
    }

    #[test]
    fn compact_table_with_three_metrics_drops_the_time_and_a_decimal() {
        let text = compact_of(3, &["accuracy", "error_rate", "f1_score"]);
        assert_eq!(
            text,
            "ep train valid   acc   err    f1\n\
             \x200 1.028 0.453 0.900 0.890 0.880\n\
             \x201 0.514 0.227 0.901 0.891 0.881\n\
             \x202 0.343 0.151 0.902 0.892 0.882"
        );
    }

    #[test]
    fn compact_table_with_two_metrics_drops_the_time_only() {
        let text = compact_of(1, &["accuracy", "error_rate"]);
        assert_eq!(text, "ep  train  valid    acc    err\n 0 1.0281 0.4531 0.9000 0.8900");
    }

    #[test]
    fn compact_table_with_many_metrics_says_which_it_left_out() {
        let text =
            compact_of(2, &["accuracy", "error_rate", "f1_score", "precision", "recall", "perplexity"]);
        assert!(text.ends_with("\n+2 metrics not shown"), "{text}");
        assert!(text.starts_with("ep train valid  acc  err   f1 prec\n"), "{text}");
    }

    #[test]
    fn compact_numbers() {
        fn check(v: f64, decimals: usize, expected: &str) {
            assert_eq!(compact_number(v, decimals), expected, "{v}");
        }
        check(0.123456, 4, "0.1235");
        check(2.3456, 3, "2.346");
        check(12345.6, 4, "1.2e4");
        check(-0.5, 2, "-0.50");
        check(f64::NAN, 4, "nan");
        check(f64::NEG_INFINITY, 4, "-inf");
        assert_eq!(short_name("accuracy"), "acc");
        assert_eq!(short_name("dice_multi"), "dice_");
        assert_eq!(short_name("mae"), "mae");
    }

    #[test]
    fn compact_table_marks_missing_values_and_wide_numbers() {
        let mut e = epoch(0, &[]);
        e.valid_loss = None;
        e.train_loss = 123456.0;
        let text = table(TableLayout::Compact, &["accuracy".to_owned()], &[e]).expect("a table");
        assert_eq!(text, "ep train valid acc  time\n 0 1.2e5     -   - 00:01");
    }

    #[test]
    fn full_table_is_fastais() {
        let (names, rows) = run(2, &["accuracy"]);
        let text = table(TableLayout::Full, &names, &rows).expect("a table");
        assert_eq!(
            text,
            "epoch     train_loss  valid_loss  accuracy  time\n\
             0         1.028127    0.453114    0.900000  00:01\n\
             1         0.514064    0.226557    0.901000  00:02"
        );
        assert_eq!(table(TableLayout::Full, &names, &[]), None);
    }

    #[test]
    fn layouts_by_name() {
        #[derive(Deserialize)]
        struct Config {
            table: TableLayout,
        }
        let parse = |text: &str| toml::from_str::<Config>(text).map(|c| c.table);
        assert_eq!(parse("table = 'compact'").ok(), Some(TableLayout::Compact));
        assert_eq!(parse("table = 'full'").ok(), Some(TableLayout::Full));
        assert!(parse("table = 'wide'").is_err());
    }
}

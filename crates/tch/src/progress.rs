//! [`Progress`]: fastprogress's console output as a callback. While an epoch runs, a bar
//! `NN.NN% [done/total elapsed<remaining smooth_loss]` (indicatif, updated at most 10 times a second); as each
//! epoch ends, the bar is cleared and the results-table row is printed (the header at train begin).
//!
//! When stdout is not a terminal ([`ProgressMode::Auto`]) only the table is printed, line by line and flushed,
//! so logs and pipes get clean rows. This is console output by design, the CLI's table; diagnostics go through
//! `tracing`. It does not print notifications; the daemon does that.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use herald_callback::{Callback, CallbackResult, State, TrainError};
use herald_event::format::{Table, format_time};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The bar is updated at most this often.
pub const UPDATE_EVERY: Duration = Duration::from_millis(100);

/// What [`Progress`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// The bar when stdout is a terminal, and the table rows.
    #[default]
    Auto,
    /// The bar (when stdout is a terminal) and the rows: same as `Auto`, named for clarity.
    Bar,
    /// Only the table rows.
    RowsOnly,
}

/// The console progress callback. Order 50: after the schedulers and stopping callbacks, before the emitter.
pub struct Progress {
    mode: ProgressMode,
    out: Box<dyn Write + Send>,
    table: Option<Table>,
    bar: Option<ProgressBar>,
    /// Batches done and not yet shown, and when the bar was last updated: like fastprogress, the bar is
    /// updated at most every [`UPDATE_EVERY`], so a fast loop pays one clock read per batch.
    unshown: u64,
    last_update: Instant,
    style: ProgressStyle,
    /// Draw the bar even when stdout is not a terminal (to a hidden target): benchmarks use it to pay the
    /// bar's cost without its output.
    bar_always: bool,
    write_failed: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl Progress {
    /// Progress to stdout.
    pub fn new(mode: ProgressMode) -> Progress {
        Progress::with_writer(mode, Box::new(std::io::stdout()))
    }

    /// The table rows go to `out` (the bar, if any, draws on stdout when it is a terminal).
    pub fn with_writer(mode: ProgressMode, out: Box<dyn Write + Send>) -> Progress {
        Progress {
            mode,
            out,
            table: None,
            bar: None,
            unshown: 0,
            last_update: Instant::now(),
            style: bar_style(),
            bar_always: false,
            write_failed: false,
        }
    }

    /// Keeps a bar up to date even when it cannot be seen (see the field's docs).
    pub fn bar_always(mut self, on: bool) -> Progress {
        self.bar_always = on;
        self
    }

    fn line(&mut self, text: &str) {
        let result = writeln!(self.out, "{text}").and_then(|()| self.out.flush());
        if let Err(e) = result {
            if !self.write_failed {
                tracing::warn!(error = %e, "cannot write the results table; training goes on");
            }
            self.write_failed = true;
        }
    }

    fn new_bar(&self, len: u64) -> Option<ProgressBar> {
        let visible = std::io::stdout().is_terminal();
        let target = match self.mode {
            ProgressMode::RowsOnly => return None,
            ProgressMode::Auto | ProgressMode::Bar if visible => ProgressDrawTarget::stdout_with_hz(10),
            _ if self.bar_always => ProgressDrawTarget::hidden(),
            _ => return None,
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        bar.set_style(self.style.clone());
        Some(bar)
    }
}

impl Callback for Progress {
    fn name(&self) -> &str {
        "progress"
    }

    fn order(&self) -> i32 {
        50
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        let table = Table::for_metrics(&s.metric_names);
        let header = table.header();
        self.table = Some(table);
        self.line(&header);
        Ok(())
    }

    fn on_epoch_begin(&mut self, s: &mut State) -> CallbackResult {
        self.bar = self.new_bar(s.n_batches + s.n_valid_batches);
        self.unshown = 0;
        self.last_update = Instant::now();
        Ok(())
    }

    fn on_batch_end(&mut self, s: &mut State) -> CallbackResult {
        let Some(bar) = &self.bar else { return Ok(()) };
        self.unshown += 1;
        let now = Instant::now();
        if now.duration_since(self.last_update) >= UPDATE_EVERY {
            if let (true, Some(l)) = (s.train, s.smooth_loss) {
                bar.set_message(format!("{l:.4}"));
            }
            bar.inc(std::mem::take(&mut self.unshown));
            self.last_update = now;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(row) = self.table.as_ref().map(|t| t.epoch_row(&s.epoch_row())) {
            self.line(&row);
        }
        Ok(())
    }

    fn on_train_end(&mut self, _: &mut State, _: Option<&TrainError>) -> CallbackResult {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(())
    }
}

/// `NN.NN% [done/total mm:ss<mm:ss smooth_loss]`, as fastprogress writes it.
fn bar_style() -> ProgressStyle {
    let percent = |st: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.2}", f64::from(st.fraction()) * 100.0);
    };
    let elapsed = |st: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&format_time(st.elapsed().as_secs_f64()));
    };
    let remaining = |st: &ProgressState, w: &mut dyn std::fmt::Write| {
        let eta = if st.pos() == 0 { Duration::ZERO } else { st.eta() };
        let _ = w.write_str(&format_time(eta.as_secs_f64()));
    };
    ProgressStyle::with_template("{pct}% [{pos}/{len} {el}<{rem} {msg}]")
        .map(|s| s.with_key("pct", percent).with_key("el", elapsed).with_key("rem", remaining))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A terminal that records what indicatif writes.
    #[derive(Debug, Clone, Default)]
    struct Term(Arc<Mutex<String>>);

    impl indicatif::TermLike for Term {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            let mut text = self.0.lock().expect("not poisoned");
            text.push_str(s);
            text.push('\n');
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bar_text_reads_like_fastprogress() {
        let term = Term::default();
        let bar =
            ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::term_like(Box::new(term.clone())));
        bar.set_style(bar_style());
        bar.set_position(25);
        bar.set_message("0.1234");
        bar.tick();
        let written = term.0.lock().expect("not poisoned").clone();
        let text = written.lines().rev().find(|l| l.contains('%')).unwrap_or_default().to_owned();
        assert!(text.starts_with("25.00% [25/100 00:00<"), "{text}");
        assert!(text.trim_end().ends_with(" 0.1234]"), "{text}");
    }

    #[test]
    fn rows_only_prints_header_and_rows() {
        let buf = Shared::default();
        let mut p = Progress::with_writer(ProgressMode::RowsOnly, Box::new(buf.clone()));
        let mut s = State::new(vec!["accuracy".into()]);
        s.n_epochs = 1;
        p.on_train_begin(&mut s).expect("ok");
        p.on_epoch_begin(&mut s).expect("ok");
        assert!(p.bar.is_none());
        s.smooth_loss = Some(0.100888);
        s.valid_loss = Some(0.058969);
        s.last_metrics = vec![Some(0.978901)];
        s.epoch_time_s = 5.2;
        p.on_epoch_end(&mut s).expect("ok");
        let text = String::from_utf8(buf.0.lock().expect("not poisoned").clone()).expect("utf8");
        // REFERENCE §1's example, trailing spaces included.
        assert_eq!(
            text,
            "epoch     train_loss  valid_loss  accuracy  time    \n\
             0         0.100888    0.058969    0.978901  00:05     \n"
        );
    }
}

//! The [`Recorder`] (fastai v1's history of a fit) and [`SmoothenValue`] (the smoothed training loss).
//!
//! Every [`crate::CallbackHandler`] holds a Recorder at order -10, so it sees each event before the other
//! callbacks. It keeps, per training batch, the lr and momentum the batch used and the smoothed loss; per
//! epoch, the validation loss, the metrics, the batch count and the results-table row (as a
//! [`herald_event::EpochEnded`], formatted by [`herald_event::format`]). It draws no plots and writes no
//! files: `herald-plot` and [`crate::CsvLogger`] do that from what it keeps.

use herald_event::EpochEnded;
use herald_event::format::{self, Table};

use crate::callback::{Callback, CallbackResult};
use crate::state::State;

/// fastai's exponentially weighted moving average with bias correction (beta 0.98 by default):
/// `n += 1; mov_avg = beta * mov_avg + (1 - beta) * v; smooth = mov_avg / (1 - beta^n)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothenValue {
    beta: f64,
    n: u32,
    mov_avg: f64,
    smooth: f64,
}

impl Default for SmoothenValue {
    /// beta = 0.98, fastai's value for the training loss.
    fn default() -> Self {
        SmoothenValue::new(0.98)
    }
}

impl SmoothenValue {
    /// A smoother with this `beta` (0.98 is fastai's); [`SmoothenValue::smooth`] is NaN before the first value.
    pub fn new(beta: f64) -> SmoothenValue {
        SmoothenValue { beta, n: 0, mov_avg: 0.0, smooth: f64::NAN }
    }

    /// Adds one value and updates the smoothed value.
    pub fn add_value(&mut self, v: f64) {
        self.n = self.n.saturating_add(1);
        self.mov_avg = self.beta * self.mov_avg + (1.0 - self.beta) * v;
        self.smooth = self.mov_avg / (1.0 - self.beta.powf(f64::from(self.n)));
    }

    /// The smoothed value; NaN before the first value.
    pub fn smooth(&self) -> f64 {
        self.smooth
    }

    /// Values added so far.
    pub fn count(&self) -> u32 {
        self.n
    }
}

/// The history of a fit, fastai v1's `Recorder`. Order -10.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Learning rate used by each training batch.
    pub lrs: Vec<f64>,
    /// Momentum used by each training batch.
    pub moms: Vec<f64>,
    /// Smoothed training loss after each training batch.
    pub losses: Vec<f64>,
    /// Validation loss of each epoch (`None` when validation was skipped).
    pub valid_losses: Vec<Option<f64>>,
    /// Metric values of each epoch, in `metric_names` order.
    pub metrics: Vec<Vec<Option<f64>>>,
    /// Training batches run in each epoch (fewer than planned when an epoch was cut short).
    pub nb_batches: Vec<u64>,
    /// The results-table rows, one per epoch.
    pub epochs: Vec<EpochEnded>,
    /// The metric names, in column order.
    pub metric_names: Vec<String>,
    batches_this_epoch: u64,
}

impl Recorder {
    /// An empty history for a fit with these metric names.
    pub fn new(metric_names: Vec<String>) -> Recorder {
        Recorder { metric_names, ..Recorder::default() }
    }

    /// The table's column names: `epoch`, `train_loss`, `valid_loss`, the metrics, `time`.
    pub fn names(&self) -> Vec<String> {
        format::column_names(&self.metric_names)
    }

    /// The results table so far, header and one line per epoch, byte-exact to fastprogress.
    pub fn table(&self) -> String {
        format::results_table(&self.metric_names, &self.epochs)
    }

    /// The last epoch's row of the table, without a newline.
    pub fn last_row(&self) -> Option<String> {
        let last = self.epochs.last()?;
        Some(Table::for_metrics(&self.metric_names).epoch_row(last))
    }

    /// The cumulative training batch count at the end of each epoch: where `plot_losses` puts valid losses.
    pub fn cumulative_batches(&self) -> Vec<u64> {
        self.nb_batches
            .iter()
            .scan(0u64, |acc, n| {
                *acc += n;
                Some(*acc)
            })
            .collect()
    }
}

impl Callback for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn order(&self) -> i32 {
        -10
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        *self = Recorder::new(s.metric_names.clone());
        Ok(())
    }

    fn on_epoch_begin(&mut self, _: &mut State) -> CallbackResult {
        self.batches_this_epoch = 0;
        Ok(())
    }

    fn on_batch_begin(&mut self, s: &mut State) -> CallbackResult {
        if s.train {
            self.lrs.push(s.lr);
            self.moms.push(s.mom);
        }
        Ok(())
    }

    fn on_backward_begin(&mut self, s: &mut State) -> CallbackResult {
        self.losses.push(s.smooth_loss.unwrap_or(f64::NAN));
        self.batches_this_epoch += 1;
        Ok(())
    }

    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        self.nb_batches.push(self.batches_this_epoch);
        self.valid_losses.push(s.valid_loss);
        self.metrics.push(s.last_metrics.clone());
        self.epochs.push(s.epoch_row());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_reference_vector() {
        // ../shared/REFERENCE.md §1: losses 2.0, 1.0, 0.5 give smooth 2.0, 1.494949, 1.156577.
        let mut s = SmoothenValue::new(0.98);
        assert!(s.smooth().is_nan());
        let mut got = Vec::new();
        for loss in [2.0, 1.0, 0.5] {
            s.add_value(loss);
            got.push(format!("{:.6}", s.smooth()));
        }
        assert_eq!(got, ["2.000000", "1.494949", "1.156577"]);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn cumulative_batches() {
        let r = Recorder { nb_batches: vec![3, 3, 2], ..Recorder::default() };
        assert_eq!(r.cumulative_batches(), [3, 6, 8]);
    }
}

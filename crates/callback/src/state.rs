//! The training state every callback sees and may change: counters, losses, hyperparameters and the flags.
//!
//! [`State`] is fastai v1's `state_dict` made typed: callbacks get `&mut State` at every event and steer the
//! loop by setting flags, which the driver ([`crate::fit`]) reads and resets by REFERENCE §1's rules. It holds
//! no tensors: inputs, outputs and gradients stay in the framework's [`crate::Step`]; this module deliberately
//! knows nothing about them.

use std::fmt;

use herald_event::{EpochEnded, Metrics};

/// Why training stopped early, when a callback or a person asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Someone asked for a stop through a [`crate::StopHandle`] (the daemon relays it from a phone); the text
    /// is theirs.
    Requested(String),
    /// [`crate::EarlyStopping`] saw no improvement; the text says of what and for how long.
    EarlyStopping(String),
    /// [`crate::TerminateOnNaN`] saw a non-finite loss; the text says where.
    NonFiniteLoss(String),
}

impl StopReason {
    /// The explanation, without the kind.
    pub fn text(&self) -> &str {
        match self {
            StopReason::Requested(t) | StopReason::EarlyStopping(t) | StopReason::NonFiniteLoss(t) => t,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Requested(t) if t.is_empty() => f.write_str("stop requested"),
            StopReason::Requested(t) => write!(f, "stop requested: {t}"),
            StopReason::EarlyStopping(t) => write!(f, "early stopping: {t}"),
            StopReason::NonFiniteLoss(t) => write!(f, "non-finite loss: {t}"),
        }
    }
}

/// What the callbacks see, fastai v1's `state_dict` with types.
///
/// Counters and values are written by the [`crate::CallbackHandler`] before it fires each event; callbacks
/// may change `lr`, `mom` and the flags. Flag reset rules (REFERENCE §1), applied by the handler:
///
/// | flag | effect | reset |
/// |---|---|---|
/// | `stop_epoch` | break the batch loop (train or validation) after this batch | each batch begin |
/// | `stop_training` | stop after this epoch's `on_epoch_end` (`on_train_end` still fires) | each epoch begin |
/// | `skip_validate` | no validation from now on | at train begin only |
/// | `skip_bwd` / `skip_step` / `skip_zero` | skip backward / optimizer step / zero_grad | each batch begin |
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Epochs planned for this `fit`.
    pub n_epochs: u32,
    /// The current epoch, 0-based.
    pub epoch: u32,
    /// Training batches completed since `fit` began: 0 during the first batch, incremented after each
    /// training batch's `on_batch_end` (as fastai v1 does).
    pub iteration: u64,
    /// Index of the current batch within the current loop (training or validation), 0-based.
    pub num_batch: u64,
    /// Training batches per epoch.
    pub n_batches: u64,
    /// Validation batches per epoch.
    pub n_valid_batches: u64,
    /// `false` during validation batches.
    pub train: bool,
    /// Size of the current batch, set after the forward pass (before `on_loss_begin`).
    pub batch_size: usize,
    /// Loss of the current batch: the training loss from `on_backward_begin` on, the validation batch's loss at
    /// a validation `on_batch_end`.
    pub last_loss: Option<f64>,
    /// fastai's smoothed training loss (see [`crate::SmoothenValue`]), after the current training batch.
    pub smooth_loss: Option<f64>,
    /// The epoch's batch-size-weighted validation loss, set before `on_epoch_end`; `None` when validation was
    /// skipped or there is no validation set. Cleared at each epoch begin.
    pub valid_loss: Option<f64>,
    /// Metric values in `metric_names` order, set before `on_epoch_end` (each `None` when validation was
    /// skipped). Cleared at each epoch begin.
    pub last_metrics: Vec<Option<f64>>,
    /// The metric names, in the table's column order.
    pub metric_names: Vec<String>,
    /// The learning rate the trainer applies to the optimizer for the next training step. Kept across
    /// `fit` calls; set it before fitting or let a scheduler callback drive it.
    pub lr: f64,
    /// Momentum (beta1 for Adam-family optimizers), likewise.
    pub mom: f64,
    /// Wall time of the current epoch so far, seconds; exact at `on_epoch_end`.
    pub epoch_time_s: f64,
    /// Break the batch loop after this batch.
    pub stop_epoch: bool,
    /// Stop after this epoch's `on_epoch_end`.
    pub stop_training: bool,
    /// No validation from now on.
    pub skip_validate: bool,
    /// Skip this batch's backward pass.
    pub skip_bwd: bool,
    /// Skip this batch's optimizer step.
    pub skip_step: bool,
    /// Skip this batch's zero_grad.
    pub skip_zero: bool,
    /// Why training stops early, when a callback that stops it says so.
    pub stop_reason: Option<StopReason>,
}

/// fastai v1's default learning rate.
pub const DEFAULT_LR: f64 = 3e-3;
/// fastai v1's default momentum (Adam's beta1).
pub const DEFAULT_MOM: f64 = 0.9;

impl State {
    /// A fresh state for a run with these metrics; `lr` and `mom` start at fastai's defaults.
    pub fn new(metric_names: Vec<String>) -> State {
        State {
            n_epochs: 0,
            epoch: 0,
            iteration: 0,
            num_batch: 0,
            n_batches: 0,
            n_valid_batches: 0,
            train: true,
            batch_size: 0,
            last_loss: None,
            smooth_loss: None,
            valid_loss: None,
            last_metrics: vec![None; metric_names.len()],
            metric_names,
            lr: DEFAULT_LR,
            mom: DEFAULT_MOM,
            epoch_time_s: 0.0,
            stop_epoch: false,
            stop_training: false,
            skip_validate: false,
            skip_bwd: false,
            skip_step: false,
            skip_zero: false,
            stop_reason: None,
        }
    }

    /// The value a callback monitors by name: `train_loss` (the smoothed loss), `valid_loss`, or a metric.
    /// `None` when the name is known but has no value yet.
    pub fn monitor_value(&self, name: &str) -> Option<f64> {
        match name {
            "train_loss" => self.smooth_loss,
            "valid_loss" => self.valid_loss,
            _ => self.metric_index(name).and_then(|i| self.last_metrics.get(i).copied().flatten()),
        }
    }

    /// Whether `name` can be monitored: `train_loss`, `valid_loss` or one of the metric names.
    pub fn is_monitorable(&self, name: &str) -> bool {
        name == "train_loss" || name == "valid_loss" || self.metric_index(name).is_some()
    }

    /// The names [`State::monitor_value`] accepts.
    pub fn monitorable_names(&self) -> Vec<String> {
        let mut names = vec!["train_loss".to_owned(), "valid_loss".to_owned()];
        names.extend(self.metric_names.iter().cloned());
        names
    }

    fn metric_index(&self, name: &str) -> Option<usize> {
        self.metric_names.iter().position(|n| n == name)
    }

    /// This epoch's row of the results table, as the `epoch_ended` event carries it: `train_loss` is the
    /// smoothed loss after the epoch's last training batch (NaN when no training batch ran), metrics without a
    /// value are left out (the table shows `#na#`).
    pub fn epoch_row(&self) -> EpochEnded {
        let metrics = self
            .metric_names
            .iter()
            .zip(&self.last_metrics)
            .filter_map(|(name, value)| value.map(|v| (name.clone(), v)))
            .collect::<Vec<_>>();
        EpochEnded {
            epoch: self.epoch,
            n_epochs: self.n_epochs,
            train_loss: self.smooth_loss.unwrap_or(f64::NAN),
            valid_loss: self.valid_loss,
            metrics: Metrics(metrics),
            elapsed_s: if self.epoch_time_s.is_finite() { self.epoch_time_s.max(0.0) } else { 0.0 },
        }
    }

    /// Sets `stop_epoch`, `stop_training` and `skip_validate` and records why, keeping an earlier reason.
    pub fn stop_now(&mut self, reason: StopReason) {
        self.stop_epoch = true;
        self.stop_training = true;
        self.skip_validate = true;
        self.stop_reason.get_or_insert(reason);
    }
}

/// Whether a monitored quantity improves by going down: names with `loss` or `error` in them (fastai's `auto`
/// mode looks for `loss`; error rates are minimised too), everything else goes up.
pub fn lower_is_better(name: &str) -> bool {
    name.contains("loss") || name.contains("error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_row_leaves_out_missing_metrics() {
        let mut s = State::new(vec!["accuracy".into(), "f1".into()]);
        s.n_epochs = 3;
        s.epoch = 1;
        s.smooth_loss = Some(0.5);
        s.valid_loss = Some(0.25);
        s.last_metrics = vec![Some(0.9), None];
        s.epoch_time_s = 5.5;
        let row = s.epoch_row();
        assert_eq!(row.metrics, Metrics(vec![("accuracy".into(), 0.9)]));
        assert_eq!((row.epoch, row.n_epochs, row.train_loss, row.valid_loss), (1, 3, 0.5, Some(0.25)));
        assert_eq!(row.elapsed_s, 5.5);
        s.smooth_loss = None;
        assert!(s.epoch_row().train_loss.is_nan());
    }

    #[test]
    fn monitor_values() {
        let mut s = State::new(vec!["accuracy".into()]);
        s.smooth_loss = Some(1.0);
        s.valid_loss = Some(2.0);
        s.last_metrics = vec![Some(0.5)];
        assert_eq!(s.monitor_value("train_loss"), Some(1.0));
        assert_eq!(s.monitor_value("valid_loss"), Some(2.0));
        assert_eq!(s.monitor_value("accuracy"), Some(0.5));
        assert_eq!(s.monitor_value("f1"), None);
        assert!(!s.is_monitorable("f1"));
        assert!(s.is_monitorable("accuracy"));
    }

    #[test]
    fn minimised_names() {
        for (name, lower) in [
            ("valid_loss", true),
            ("train_loss", true),
            ("error_rate", true),
            ("accuracy", false),
            ("f1", false),
        ] {
            assert_eq!(lower_is_better(name), lower, "{name}");
        }
    }

    #[test]
    fn stop_keeps_the_first_reason() {
        let mut s = State::new(vec![]);
        s.stop_now(StopReason::NonFiniteLoss("epoch 0".into()));
        s.stop_now(StopReason::Requested("phone".into()));
        assert_eq!(s.stop_reason, Some(StopReason::NonFiniteLoss("epoch 0".into())));
        assert!(s.stop_epoch && s.stop_training && s.skip_validate);
        assert_eq!(StopReason::Requested("phone".into()).to_string(), "stop requested: phone");
    }
}

//! The generic training loop: [`fit`] drives a framework's [`Step`] through fastai v1's exact event order.
//!
//! A framework (herald-tch, or your burn or candle loop) implements [`Step`]: forward, loss, backward,
//! optimizer step, zero_grad and metrics for one batch. [`fit`] owns the order: per training batch
//! `on_batch_begin -> forward -> on_loss_begin -> loss -> (smoothing) -> on_backward_begin -> [backward unless
//! skip_bwd] -> on_backward_end -> [step(lr, mom) unless skip_step] -> on_step_end -> [zero_grad unless
//! skip_zero] -> on_batch_end -> break if stop_epoch`; per validation batch `on_batch_begin -> forward ->
//! on_loss_begin -> loss -> metrics -> on_batch_end -> break if stop_epoch`; the validation loss and metrics
//! are batch-size-weighted means; `on_epoch_end` then stops if `stop_training`; `on_train_end` always fires,
//! with the error if any. It does not run batches in parallel, and it knows nothing of devices or tensors.

use crate::callback::TrainError;
use crate::handler::CallbackHandler;
use crate::metrics::AverageMetric;

/// One batch's worth of work, supplied by a framework. Calls come in the order described in the module docs;
/// `forward(batch, train)` is the only place a batch is chosen, so the implementation owns its data loader.
pub trait Step {
    /// The framework's error; its text ends up in [`TrainError`] and in the `run_failed` event.
    type Error: std::fmt::Display;

    /// Training batches per epoch.
    fn n_train_batches(&self) -> u64;
    /// Validation batches per epoch (0: no validation).
    fn n_valid_batches(&self) -> u64;
    /// Called after `on_epoch_begin`, before the epoch's first batch (reshuffle here).
    fn begin_epoch(&mut self, epoch: u32) -> Result<(), Self::Error>;
    /// Loads batch `batch` of the training (`train`) or validation set and runs the model; returns the batch
    /// size.
    fn forward(&mut self, batch: u64, train: bool) -> Result<usize, Self::Error>;
    /// Computes the loss of the last forward pass and returns its value.
    fn loss(&mut self, train: bool) -> Result<f64, Self::Error>;
    /// Backpropagates the last loss.
    fn backward(&mut self) -> Result<(), Self::Error>;
    /// One optimizer step with this learning rate and momentum (beta1 for Adam-family optimizers).
    fn step(&mut self, lr: f64, mom: f64) -> Result<(), Self::Error>;
    /// Zeroes the gradients.
    fn zero_grad(&mut self) -> Result<(), Self::Error>;
    /// Pushes the current validation batch's metric values onto `out`, in `metric_names` order (batch means;
    /// [`fit`] weights them by batch size).
    fn metrics(&mut self, out: &mut Vec<f64>) -> Result<(), Self::Error>;
}

/// Trains for `n_epochs` epochs, firing the handler's callbacks in fastai v1's order. `on_train_end` always
/// fires, carrying the error if a step or a callback failed; the first error is returned.
pub fn fit<S: Step + ?Sized>(
    handler: &mut CallbackHandler,
    step: &mut S,
    n_epochs: u32,
) -> Result<(), TrainError> {
    let result = train(handler, step, n_epochs);
    let end = handler.on_train_end(result.as_ref().err());
    result.and(end)
}

fn train<S: Step + ?Sized>(
    handler: &mut CallbackHandler,
    step: &mut S,
    n_epochs: u32,
) -> Result<(), TrainError> {
    let n_train = step.n_train_batches();
    let n_valid = step.n_valid_batches();
    handler.on_train_begin(n_epochs, n_train, n_valid)?;
    let mut metric_buf = Vec::with_capacity(handler.state().metric_names.len());
    for epoch in 0..n_epochs {
        handler.on_epoch_begin(epoch)?;
        step.begin_epoch(epoch).map_err(|e| TrainError::step("begin_epoch", e, handler.state()))?;
        for batch in 0..n_train {
            if train_batch(handler, step, batch)? {
                break;
            }
        }
        let (valid_loss, metrics) = if !handler.state().skip_validate && n_valid > 0 {
            validate(handler, step, n_valid, &mut metric_buf)?
        } else {
            (None, Vec::new())
        };
        if handler.on_epoch_end(valid_loss, &metrics)? {
            break;
        }
    }
    Ok(())
}

/// One training batch; returns `stop_epoch`.
fn train_batch<S: Step + ?Sized>(
    h: &mut CallbackHandler,
    step: &mut S,
    batch: u64,
) -> Result<bool, TrainError> {
    h.on_batch_begin(batch, true)?;
    let batch_size = step.forward(batch, true).map_err(|e| TrainError::step("forward", e, h.state()))?;
    h.on_loss_begin(batch_size)?;
    let loss = step.loss(true).map_err(|e| TrainError::step("loss", e, h.state()))?;
    if !h.on_backward_begin(loss)? {
        step.backward().map_err(|e| TrainError::step("backward", e, h.state()))?;
    }
    if !h.on_backward_end()? {
        let (lr, mom) = (h.state().lr, h.state().mom);
        step.step(lr, mom).map_err(|e| TrainError::step("step", e, h.state()))?;
    }
    if !h.on_step_end()? {
        step.zero_grad().map_err(|e| TrainError::step("zero_grad", e, h.state()))?;
    }
    h.on_batch_end(loss)
}

/// The validation loop; returns the weighted validation loss and metrics.
fn validate<S: Step + ?Sized>(
    h: &mut CallbackHandler,
    step: &mut S,
    n_valid: u64,
    buf: &mut Vec<f64>,
) -> Result<(Option<f64>, Vec<Option<f64>>), TrainError> {
    let n_metrics = h.state().metric_names.len();
    let mut loss_avg = AverageMetric::new();
    let mut metric_avgs = vec![AverageMetric::new(); n_metrics];
    for batch in 0..n_valid {
        h.on_batch_begin(batch, false)?;
        let batch_size = step.forward(batch, false).map_err(|e| TrainError::step("forward", e, h.state()))?;
        h.on_loss_begin(batch_size)?;
        let loss = step.loss(false).map_err(|e| TrainError::step("loss", e, h.state()))?;
        buf.clear();
        step.metrics(buf).map_err(|e| TrainError::step("metrics", e, h.state()))?;
        if buf.len() != n_metrics {
            let names = h.state().metric_names.join(", ");
            let message = format!(
                "it returned {} metric values but the handler has {n_metrics} metric names ({names}); \
                 make Step::metrics push one value per name, in order",
                buf.len()
            );
            return Err(TrainError::step("metrics", message, h.state()));
        }
        loss_avg.add(loss, batch_size);
        for (avg, v) in metric_avgs.iter_mut().zip(buf.iter()) {
            avg.add(*v, batch_size);
        }
        if h.on_batch_end(loss)? {
            break;
        }
    }
    Ok((loss_avg.value(), metric_avgs.iter().map(AverageMetric::value).collect()))
}

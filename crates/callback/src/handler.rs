//! The [`CallbackHandler`]: owns the callbacks, the [`State`] and the loss smoother, and fires the ten
//! events at the callbacks.
//!
//! fastai v1's `CallbackHandler`: it keeps the callbacks sorted by [`Callback::order`] (stable), updates the
//! state before each event and applies the flag reset rules. The generic driver ([`crate::fit`]) calls one
//! handler method per event; a hand-written loop can call them itself in the same order. Every handler holds
//! a [`Recorder`]. It never touches tensors and never does I/O; what callbacks do is theirs. The trait and the
//! error types it fires with live in `callback.rs`, which imports nothing of this module.

use std::any::Any;
use std::fmt;
use std::time::Instant;

use crate::callback::{Callback, Hook, TrainError};
use crate::recorder::{Recorder, SmoothenValue};
use crate::state::State;

/// Owns the callbacks (sorted by order, stable), the state and the loss smoother; one method per event.
///
/// A new handler holds a [`Recorder`]. Call the event methods in the order [`crate::fit`] does; each
/// updates the state, fires the callbacks and returns the flag the caller acts on next.
pub struct CallbackHandler {
    callbacks: Vec<Box<dyn Callback>>,
    state: State,
    smoother: SmoothenValue,
    epoch_started: Instant,
}

impl fmt::Debug for CallbackHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.callbacks.iter().map(|c| c.name()).collect();
        f.debug_struct("CallbackHandler").field("callbacks", &names).field("state", &self.state).finish()
    }
}

impl CallbackHandler {
    /// A handler for these metric names (the table's metric columns), holding a [`Recorder`].
    pub fn new(metric_names: Vec<String>) -> CallbackHandler {
        let mut handler = CallbackHandler {
            callbacks: Vec::new(),
            state: State::new(metric_names.clone()),
            smoother: SmoothenValue::default(),
            epoch_started: Instant::now(),
        };
        handler.add(Recorder::new(metric_names));
        handler
    }

    /// Adds a callback, after those of lower or equal order.
    pub fn add(&mut self, cb: impl Callback) -> &mut CallbackHandler {
        self.add_boxed(Box::new(cb))
    }

    /// Adds a boxed callback, after those of lower or equal order.
    pub fn add_boxed(&mut self, cb: Box<dyn Callback>) -> &mut CallbackHandler {
        let order = cb.order();
        let at = self.callbacks.partition_point(|c| c.order() <= order);
        self.callbacks.insert(at, cb);
        self
    }

    /// The first callback of type `T`.
    pub fn get<T: Callback>(&self) -> Option<&T> {
        self.callbacks.iter().find_map(|cb| {
            let any: &dyn Any = cb.as_ref();
            any.downcast_ref::<T>()
        })
    }

    /// The first callback of type `T`, mutably.
    pub fn get_mut<T: Callback>(&mut self) -> Option<&mut T> {
        self.callbacks.iter_mut().find_map(|cb| {
            let any: &mut dyn Any = cb.as_mut();
            any.downcast_mut::<T>()
        })
    }

    /// The names of the callbacks, in firing order.
    pub fn names(&self) -> Vec<&str> {
        self.callbacks.iter().map(|c| c.name()).collect()
    }

    /// The recorder every handler holds.
    pub fn recorder(&self) -> &Recorder {
        self.get::<Recorder>().expect("CallbackHandler::new adds a Recorder and callbacks are never removed")
    }

    /// The training state the callbacks see.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The training state, to set hyperparameters (`lr`, `mom`) or flags between events.
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    fn fire(&mut self, hook: Hook) -> Result<(), TrainError> {
        let state = &mut self.state;
        for cb in &mut self.callbacks {
            let result = match hook {
                Hook::TrainBegin => cb.on_train_begin(state),
                Hook::EpochBegin => cb.on_epoch_begin(state),
                Hook::BatchBegin => cb.on_batch_begin(state),
                Hook::LossBegin => cb.on_loss_begin(state),
                Hook::BackwardBegin => cb.on_backward_begin(state),
                Hook::BackwardEnd => cb.on_backward_end(state),
                Hook::StepEnd => cb.on_step_end(state),
                Hook::BatchEnd => cb.on_batch_end(state),
                Hook::EpochEnd => cb.on_epoch_end(state),
                Hook::TrainEnd => cb.on_train_end(state, None),
            };
            if let Err(e) = result {
                return Err(TrainError::callback(cb.name(), hook, e, state));
            }
        }
        Ok(())
    }

    /// Training begins: resets the state (all flags, counters, losses; `lr` and `mom` are kept) and the
    /// smoother, then fires `on_train_begin`.
    pub fn on_train_begin(
        &mut self,
        n_epochs: u32,
        n_batches: u64,
        n_valid_batches: u64,
    ) -> Result<(), TrainError> {
        let s = &mut self.state;
        let fresh = State { lr: s.lr, mom: s.mom, ..State::new(std::mem::take(&mut s.metric_names)) };
        *s = State { n_epochs, n_batches, n_valid_batches, ..fresh };
        self.smoother = SmoothenValue::default();
        self.epoch_started = Instant::now();
        self.fire(Hook::TrainBegin)
    }

    /// Epoch `epoch` begins: resets `stop_training`, `num_batch`, the validation results and the epoch clock,
    /// then fires `on_epoch_begin`.
    pub fn on_epoch_begin(&mut self, epoch: u32) -> Result<(), TrainError> {
        let s = &mut self.state;
        s.epoch = epoch;
        s.num_batch = 0;
        s.stop_training = false;
        s.valid_loss = None;
        s.last_metrics.iter_mut().for_each(|m| *m = None);
        s.epoch_time_s = 0.0;
        s.train = true;
        self.epoch_started = Instant::now();
        self.fire(Hook::EpochBegin)
    }

    /// Batch `num_batch` of the training (`train`) or validation loop begins: resets `stop_epoch`, `skip_bwd`,
    /// `skip_step`, `skip_zero`, then fires `on_batch_begin`.
    pub fn on_batch_begin(&mut self, num_batch: u64, train: bool) -> Result<(), TrainError> {
        let s = &mut self.state;
        s.num_batch = num_batch;
        s.train = train;
        s.stop_epoch = false;
        s.skip_bwd = false;
        s.skip_step = false;
        s.skip_zero = false;
        self.fire(Hook::BatchBegin)
    }

    /// The forward pass produced a batch of `batch_size`; fires `on_loss_begin`.
    pub fn on_loss_begin(&mut self, batch_size: usize) -> Result<(), TrainError> {
        self.state.batch_size = batch_size;
        self.fire(Hook::LossBegin)
    }

    /// Training: the loss is `loss`. Sets `last_loss`, feeds the smoother, sets `smooth_loss`, fires
    /// `on_backward_begin`; returns `skip_bwd`.
    pub fn on_backward_begin(&mut self, loss: f64) -> Result<bool, TrainError> {
        self.smoother.add_value(loss);
        self.state.last_loss = Some(loss);
        self.state.smooth_loss = Some(self.smoother.smooth());
        self.fire(Hook::BackwardBegin)?;
        Ok(self.state.skip_bwd)
    }

    /// Training: backprop is done; fires `on_backward_end`, returns `skip_step`.
    pub fn on_backward_end(&mut self) -> Result<bool, TrainError> {
        self.fire(Hook::BackwardEnd)?;
        Ok(self.state.skip_step)
    }

    /// Training: the optimizer stepped; fires `on_step_end`, returns `skip_zero`.
    pub fn on_step_end(&mut self) -> Result<bool, TrainError> {
        self.fire(Hook::StepEnd)?;
        Ok(self.state.skip_zero)
    }

    /// The batch ended with `loss` (its training or validation loss, kept in `last_loss`); fires
    /// `on_batch_end`, counts a training batch in `iteration`, returns `stop_epoch`.
    pub fn on_batch_end(&mut self, loss: f64) -> Result<bool, TrainError> {
        self.state.last_loss = Some(loss);
        self.fire(Hook::BatchEnd)?;
        if self.state.train {
            self.state.iteration += 1;
        }
        Ok(self.state.stop_epoch)
    }

    /// The epoch ended with this validation result (`None` when skipped; `metrics` in `metric_names` order,
    /// missing ones `None`). Sets `valid_loss`, `last_metrics`, `epoch_time_s`, fires `on_epoch_end`, returns
    /// `stop_training`.
    pub fn on_epoch_end(
        &mut self,
        valid_loss: Option<f64>,
        metrics: &[Option<f64>],
    ) -> Result<bool, TrainError> {
        let s = &mut self.state;
        s.valid_loss = valid_loss;
        for (i, slot) in s.last_metrics.iter_mut().enumerate() {
            *slot = metrics.get(i).copied().flatten();
        }
        s.epoch_time_s = self.epoch_started.elapsed().as_secs_f64();
        self.fire(Hook::EpochEnd)?;
        Ok(self.state.stop_training)
    }

    /// Training ended, with `error` if it failed. Every callback's `on_train_end` runs even when one fails;
    /// the first failure is returned.
    pub fn on_train_end(&mut self, error: Option<&TrainError>) -> Result<(), TrainError> {
        let mut first = None;
        for cb in &mut self.callbacks {
            if let Err(e) = cb.on_train_end(&mut self.state, error) {
                let e = TrainError::callback(cb.name(), Hook::TrainEnd, e, &self.state);
                tracing::warn!(callback = cb.name(), error = %e, "on_train_end failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Seconds since the current epoch began.
    pub fn epoch_elapsed_s(&self) -> f64 {
        self.epoch_started.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tagged {
        tag: &'static str,
        order: i32,
    }

    impl Callback for Tagged {
        fn name(&self) -> &str {
            self.tag
        }
        fn order(&self) -> i32 {
            self.order
        }
    }

    #[test]
    fn callbacks_sort_by_order_stably() {
        let mut h = CallbackHandler::new(vec![]);
        h.add(Tagged { tag: "a0", order: 0 })
            .add(Tagged { tag: "b5", order: 5 })
            .add(Tagged { tag: "c0", order: 0 })
            .add(Tagged { tag: "d-20", order: -20 })
            .add(Tagged { tag: "e5", order: 5 })
            .add(Tagged { tag: "f-10", order: -10 });
        assert_eq!(h.names(), ["d-20", "recorder", "f-10", "a0", "c0", "b5", "e5"]);
    }

    #[test]
    fn get_finds_by_type() {
        let mut h = CallbackHandler::new(vec!["accuracy".into()]);
        h.add(Tagged { tag: "x", order: 3 });
        assert_eq!(h.get::<Tagged>().map(|t| t.tag), Some("x"));
        h.get_mut::<Tagged>().expect("added above").tag = "y";
        assert_eq!(h.get::<Tagged>().map(|t| t.name()), Some("y"));
        assert_eq!(h.recorder().names(), ["epoch", "train_loss", "valid_loss", "accuracy", "time"]);
        assert!(h.get::<crate::TerminateOnNaN>().is_none());
    }

    #[test]
    fn train_begin_resets_everything_but_hypers() {
        let mut h = CallbackHandler::new(vec!["accuracy".into()]);
        {
            let s = h.state_mut();
            s.lr = 0.1;
            s.mom = 0.8;
            s.skip_validate = true;
            s.iteration = 7;
            s.smooth_loss = Some(1.0);
            s.last_metrics = vec![Some(1.0)];
        }
        h.on_train_begin(2, 3, 1).expect("no callback fails");
        let s = h.state();
        assert_eq!((s.lr, s.mom, s.n_epochs, s.n_batches, s.n_valid_batches), (0.1, 0.8, 2, 3, 1));
        assert!(!s.skip_validate);
        assert_eq!((s.iteration, s.smooth_loss, s.last_metrics.clone()), (0, None, vec![None]));
        assert_eq!(s.metric_names, ["accuracy"]);
    }
}

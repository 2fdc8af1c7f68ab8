//! The [`Callback`] trait, the ten [`Hook`]s, and the errors training ends with ([`CallbackError`],
//! [`TrainError`]).
//!
//! This is the `Callback` half of fastai v1's `Callback`/`CallbackHandler` pair; the
//! [`CallbackHandler`](crate::CallbackHandler) that owns the callbacks and fires them is in `handler.rs`.
//! This module imports only the [`State`] so that the handler, the [`Recorder`](crate::Recorder) and every
//! callback can depend on it without a cycle. It never touches tensors and never does I/O.

use std::any::Any;
use std::fmt;

use crate::state::State;

/// What a callback event returns.
pub type CallbackResult = Result<(), CallbackError>;

/// A callback's failure: a message that says what went wrong and what the user can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallbackError {
    message: String,
}

impl CallbackError {
    /// An error with this message (lowercase, no trailing period, saying what the user can do).
    pub fn new(message: impl Into<String>) -> CallbackError {
        CallbackError { message: message.into() }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for CallbackError {
    fn from(message: String) -> Self {
        CallbackError { message }
    }
}

impl From<&str> for CallbackError {
    fn from(message: &str) -> Self {
        CallbackError { message: message.to_owned() }
    }
}

/// The ten events, in firing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// [`Callback::on_train_begin`].
    TrainBegin,
    /// [`Callback::on_epoch_begin`].
    EpochBegin,
    /// [`Callback::on_batch_begin`].
    BatchBegin,
    /// [`Callback::on_loss_begin`].
    LossBegin,
    /// [`Callback::on_backward_begin`].
    BackwardBegin,
    /// [`Callback::on_backward_end`].
    BackwardEnd,
    /// [`Callback::on_step_end`].
    StepEnd,
    /// [`Callback::on_batch_end`].
    BatchEnd,
    /// [`Callback::on_epoch_end`].
    EpochEnd,
    /// [`Callback::on_train_end`].
    TrainEnd,
}

impl Hook {
    /// The method name, as fastai spells it (`on_batch_end`).
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TrainBegin => "on_train_begin",
            Hook::EpochBegin => "on_epoch_begin",
            Hook::BatchBegin => "on_batch_begin",
            Hook::LossBegin => "on_loss_begin",
            Hook::BackwardBegin => "on_backward_begin",
            Hook::BackwardEnd => "on_backward_end",
            Hook::StepEnd => "on_step_end",
            Hook::BatchEnd => "on_batch_end",
            Hook::EpochEnd => "on_epoch_end",
            Hook::TrainEnd => "on_train_end",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why training failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainErrorKind {
    /// The framework's [`crate::Step`] failed in `during` (`forward`, `loss`, `backward`, ...).
    Step {
        /// The [`crate::Step`] method that failed.
        during: &'static str,
        /// What it returned, as text.
        message: String,
    },
    /// A callback returned an error from `hook`.
    Callback {
        /// The callback's [`Callback::name`].
        name: String,
        /// The event it failed in.
        hook: Hook,
        /// Its [`CallbackError`]'s message.
        message: String,
    },
}

/// Training failed: a step or a callback returned an error. `Display` gives the whole story in one line,
/// with where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct TrainError {
    kind: TrainErrorKind,
    text: String,
}

impl TrainError {
    /// A [`crate::Step`] failure during `during`, at `state`'s position.
    pub fn step(during: &'static str, message: impl fmt::Display, state: &State) -> TrainError {
        let message = message.to_string();
        let text = format!("training step `{during}` failed {}: {message}", position(state, Some(during)));
        TrainError { kind: TrainErrorKind::Step { during, message }, text }
    }

    /// Callback `name` failed in `hook`, at `state`'s position.
    pub fn callback(name: &str, hook: Hook, error: CallbackError, state: &State) -> TrainError {
        let message = error.message;
        let text =
            format!("callback `{name}` failed in {hook} {}: {message}", position(state, hook_batch(hook)));
        TrainError { kind: TrainErrorKind::Callback { name: name.to_owned(), hook, message }, text }
    }

    /// What failed: a step or a callback, and where.
    pub fn kind(&self) -> &TrainErrorKind {
        &self.kind
    }

    /// The underlying message, without the position.
    pub fn message(&self) -> &str {
        match &self.kind {
            TrainErrorKind::Step { message, .. } | TrainErrorKind::Callback { message, .. } => message,
        }
    }
}

fn hook_batch(hook: Hook) -> Option<&'static str> {
    match hook {
        Hook::TrainBegin | Hook::EpochBegin | Hook::EpochEnd | Hook::TrainEnd => None,
        _ => Some("batch"),
    }
}

fn position(state: &State, in_batch: Option<&str>) -> String {
    match in_batch {
        Some("begin_epoch") | None => format!("at epoch {}", state.epoch),
        Some(_) => {
            let phase = if state.train { "training" } else { "validation" };
            format!("at epoch {}, {phase} batch {}", state.epoch, state.num_batch)
        }
    }
}

/// A fastai v1 callback: override the events you need. Every method gets the state mutably; set a flag to
/// steer the loop, return an error to fail training (the handler stops firing that event and training ends
/// with `on_train_end` carrying the error).
///
/// `Any` is a supertrait so the handler can hand a callback back by type ([`CallbackHandler::get`](crate::CallbackHandler::get)).
#[allow(unused_variables)]
pub trait Callback: Any + Send {
    /// A short name for errors and logs (`recorder`, `early_stopping`).
    fn name(&self) -> &str;

    /// Callbacks run in ascending order, ties in the order they were added. The [`Recorder`](crate::Recorder) is -10.
    fn order(&self) -> i32 {
        0
    }

    /// Training begins; `n_epochs`, `n_batches` and `n_valid_batches` are set.
    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// An epoch begins; `stop_training` was reset.
    fn on_epoch_begin(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// A batch (training or validation) begins; the per-batch flags were reset.
    fn on_batch_begin(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// After the forward pass, before the loss; `batch_size` is set.
    fn on_loss_begin(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// Training only: the loss is known (`last_loss`, `smooth_loss`), before backprop. Set `skip_bwd` to skip it.
    fn on_backward_begin(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// Training only: after backprop, before the optimizer step. Set `skip_step` to skip it.
    fn on_backward_end(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// Training only: after the step, before zero_grad. Set `skip_zero` to skip it.
    fn on_step_end(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// A batch ended. Set `stop_epoch` to break the batch loop.
    fn on_batch_end(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// An epoch ended; `valid_loss` and `last_metrics` are set. Set `stop_training` to stop after it.
    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        Ok(())
    }
    /// Training ended, always (a `finally`), with the error if it failed.
    fn on_train_end(&mut self, s: &mut State, error: Option<&TrainError>) -> CallbackResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_says_where() {
        let mut s = State::new(vec![]);
        s.epoch = 2;
        s.num_batch = 5;
        s.train = false;
        let e = TrainError::step("forward", "out of memory", &s);
        assert_eq!(
            e.to_string(),
            "training step `forward` failed at epoch 2, validation batch 5: out of memory"
        );
        assert_eq!(e.message(), "out of memory");
        let e = TrainError::callback("csv_logger", Hook::EpochEnd, "disk full".into(), &s);
        assert_eq!(e.to_string(), "callback `csv_logger` failed in on_epoch_end at epoch 2: disk full");
        assert!(matches!(e.kind(), TrainErrorKind::Callback { hook: Hook::EpochEnd, .. }));
    }
}

//! A fastai v1 callback system for any Rust training loop, and the emitter that reports training to Herald.
//!
//! # The system
//! A [`CallbackHandler`] owns a typed [`State`] and a list of [`Callback`]s sorted by [`Callback::order`]
//! (stable; the [`Recorder`] every handler holds is -10). The generic driver [`fit`] fires the ten events in
//! fastai v1's exact order and applies the flag rules (`stop_epoch`, `stop_training`, `skip_validate`,
//! `skip_bwd`, `skip_step`, `skip_zero`, see [`State`]); `on_train_end` always fires, carrying the error when
//! a step or a callback failed. The handler smooths the training loss ([`SmoothenValue`], beta 0.98), the
//! driver averages validation loss and metrics by batch size ([`AverageMetric`]), and the Recorder keeps the
//! history and the fastai results table ([`Recorder::table`]).
//!
//! Around it: schedules ([`OneCycleScheduler`], [`ConstantLr`], the annealing functions), the usual
//! callbacks ([`EarlyStopping`], [`TerminateOnNaN`], [`CsvLogger`], [`SaveModel`]), metrics on plain slices
//! ([`accuracy`], [`error_rate`]), and the [`EventEmitter`], which turns the callback stream into
//! [`herald_event::Event`]s on a [`channel`] **without ever blocking or awaiting on the training thread**
//! (lifecycle events are never dropped; `batch_ended` events past a bound of unread ones are dropped and
//! counted; see [`emitter`]). A [`StopHandle`] lets any thread or task (the daemon, relaying a phone) stop
//! the run at the next batch end, which then ends with `run_finished {status: stopped}`.
//!
//! # Using it from a training loop (tch, burn, candle, ...)
//! Implement [`Step`] for your model, optimizer and data: forward one batch and return its size, compute the
//! loss, backward, step the optimizer with the `lr` and `mom` the state carries, zero the gradients, and
//! report the validation metrics. Then call [`fit`]. herald-tch does this for libtorch; a loop that cannot
//! hand over control can call the handler's `on_*` methods itself in the order [`fit`] does.
//!
//! This crate has no tensors, no async runtime and no I/O beyond what [`CsvLogger`] writes: the receiver of
//! the channel decides where events go (herald's dispatcher, or the daemon).
//!
//! ```
//! use herald_callback::{
//!     CallbackHandler, EventEmitter, OneCycleScheduler, RunInfo, Step, StopHandle, channel, fit,
//! };
//! use herald_event::EventKind;
//!
//! /// A toy "model": one weight pulled towards 3 by gradient descent on (w - 3)^2.
//! struct Toy { w: f64, grad: f64 }
//!
//! impl Step for Toy {
//!     type Error = String;
//!     fn n_train_batches(&self) -> u64 { 4 }
//!     fn n_valid_batches(&self) -> u64 { 1 }
//!     fn begin_epoch(&mut self, _epoch: u32) -> Result<(), String> { Ok(()) }
//!     fn forward(&mut self, _batch: u64, _train: bool) -> Result<usize, String> { Ok(32) }
//!     fn loss(&mut self, _train: bool) -> Result<f64, String> { Ok((self.w - 3.0).powi(2)) }
//!     fn backward(&mut self) -> Result<(), String> { self.grad += 2.0 * (self.w - 3.0); Ok(()) }
//!     fn step(&mut self, lr: f64, _mom: f64) -> Result<(), String> { self.w -= lr * self.grad; Ok(()) }
//!     fn zero_grad(&mut self) -> Result<(), String> { self.grad = 0.0; Ok(()) }
//!     fn metrics(&mut self, out: &mut Vec<f64>) -> Result<(), String> {
//!         out.push((self.w - 3.0).abs());
//!         Ok(())
//!     }
//! }
//!
//! let (sender, mut receiver) = channel(1024);
//! let mut handler = CallbackHandler::new(vec!["abs_error".into()]);
//! handler.add(OneCycleScheduler::new(0.5));
//! handler.add(EventEmitter::new(sender, RunInfo::new("toy").hyper("max_lr", 0.5), StopHandle::new()));
//!
//! let mut toy = Toy { w: 0.0, grad: 0.0 };
//! fit(&mut handler, &mut toy, 3).expect("the toy never fails");
//!
//! assert!((toy.w - 3.0).abs() < 0.5);
//! let table = handler.recorder().table();
//! assert!(table.starts_with("epoch     train_loss  valid_loss  abs_error  time"));
//! assert_eq!(table.lines().count(), 4);
//!
//! // Usually a tokio task reads the receiver; here the run is over, so drain it.
//! let mut kinds = Vec::new();
//! while let Ok(event) = receiver.try_recv() {
//!     kinds.push(event.kind());
//! }
//! assert_eq!(kinds.first(), Some(&EventKind::RunStarted));
//! assert_eq!(kinds.last(), Some(&EventKind::RunFinished));
//! assert_eq!(kinds.iter().filter(|k| **k == EventKind::BatchEnded).count(), 12);
//! ```

mod callback;
pub mod callbacks;
mod driver;
pub mod emitter;
mod handler;
pub mod metrics;
mod recorder;
pub mod schedule;
mod state;
pub mod stop;

pub use callback::{Callback, CallbackError, CallbackResult, Hook, TrainError, TrainErrorKind};
pub use callbacks::{CsvLogger, EarlyStopping, Mode, SaveEvery, SaveModel, SaveWhy, TerminateOnNaN};
pub use driver::{Step, fit};
pub use emitter::{
    EMITTER_ORDER, EventEmitter, EventReceiver, EventSender, RunInfo, SendError, TryRecvError, channel,
    new_run_id,
};
pub use handler::CallbackHandler;
pub use metrics::{AverageMetric, accuracy, error_rate};
pub use recorder::{Recorder, SmoothenValue};
pub use schedule::{
    Anneal, ConstantLr, OneCycle, OneCycleScheduler, Scheduler, annealing_const, annealing_cos,
    annealing_exp, annealing_linear,
};
pub use state::{DEFAULT_LR, DEFAULT_MOM, State, StopReason, lower_is_better};
pub use stop::StopHandle;

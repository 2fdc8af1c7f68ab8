//! [`EventEmitter`]: the callback that turns a fit into herald-event [`Event`]s, and the channel that carries
//! them off the training thread without ever blocking it.
//!
//! # What it emits
//! - `run_started` at `on_train_begin`: name, host, pid, rank, job, world_size, n_epochs, batches_per_epoch,
//!   metric_names, hyper (from [`RunInfo`] and the state);
//! - `epoch_started` at `on_epoch_begin`;
//! - `batch_ended` at each training `on_batch_end`: loss, smoothed loss, and the lr the batch used;
//! - `epoch_ended` at `on_epoch_end`: the results-table row ([`State::epoch_row`]: train_loss is the smoothed
//!   loss, metrics in `metric_names` order, elapsed_s);
//! - at `on_train_end`, `run_finished {status: completed | stopped, reason, duration_s, best}` or
//!   `run_failed {error}` when training failed or [`crate::TerminateOnNaN`] stopped it. `best` follows the
//!   first metric, or `valid_loss` when there is none; names with `loss` or `error` in them are minimised,
//!   others maximised.
//!
//! Each `fit` is a run with its own id (`<UTC timestamp>-<pid>-<counter>-<random>`, unique per process and,
//! with the millisecond timestamp and the random part, across processes and machines) and `seq` from 0
//! without gaps: a dropped event takes no number.
//! The emitter runs at order 100, after the built-in callbacks, so it reports the flags and values they set.
//!
//! # Distributed jobs
//! A rank other than 0 of a job ([`RunInfo::job`]) sends `run_started`, `epoch_ended` and its end, and keeps
//! `epoch_started`, `batch_ended`, messages and alerts to itself (rank 0 speaks for the job; the daemon groups
//! the ranks by job). Without a job every event goes out, as before.
//!
//! # Never blocking the training thread
//! [`channel`] is a tokio unbounded mpsc plus a shared atomic count of unread `batch_ended` events. Sending
//! is a lock-free push; nothing waits or awaits. Memory stays bounded all the same:
//! - `batch_ended`: before building one the emitter bumps the unread count; if that would make more than
//!   `max_pending_batches` unread, the event is dropped and counted ([`EventEmitter::dropped`],
//!   [`EventReceiver::dropped`]). The [`EventReceiver`] decrements the count as it receives each one.
//! - lifecycle events (`run_*`, `epoch_*`) are never dropped. Their number is bounded by the run's structure:
//!   two per epoch plus at most three, so a consumer that stalls for a whole run holds at most
//!   `max_pending_batches + 2 * n_epochs + 3` events (plus any `message` the training code sends itself
//!   through [`EventEmitter::message`]).
//!
//! If the receiver is gone (the consumer crashed or shut down), emission is a no-op that is counted
//! ([`EventEmitter::undelivered`]); training goes on. If the training loop unwinds without `on_train_end`
//! (a panic), the emitter's `Drop` sends `run_failed`.
//!
//! The emitter also polls a [`StopHandle`] at each training batch end and at each epoch end (so a request
//! that arrives during validation takes effect when the epoch ends); see [`crate::stop`].

mod queue;
mod run;

use std::time::Instant;

use herald_event::{
    Alert, BatchEnded, Best, EpochStarted, Event, Level, Message, Payload, RunFailed, RunFinished,
    RunStarted, RunStatus,
};

pub use self::queue::{EventReceiver, EventSender, SendError, TryRecvError, channel};
pub use self::run::{RunInfo, hostname, new_run_id};
use crate::callback::{Callback, CallbackResult, TrainError};
use crate::state::{State, StopReason, lower_is_better};
use crate::stop::StopHandle;

/// The emitter's order: after the Recorder (-10), schedulers (0) and the stopping callbacks.
pub const EMITTER_ORDER: i32 = 100;

/// The callback that reports a fit as events on a [`channel`], and applies [`StopHandle`] requests.
/// See the module docs for what it emits and why it never blocks.
#[derive(Debug)]
pub struct EventEmitter {
    sender: EventSender,
    info: RunInfo,
    stop: StopHandle,
    run_id: String,
    seq: u64,
    /// `run_started` went out and no end yet.
    in_run: bool,
    /// A run began with the current id (the next `on_train_begin` takes a new one).
    used: bool,
    run_clock: Instant,
    batch_lr: f64,
    epochs_done: u32,
    n_epochs: u32,
    /// The epoch begun last in the current run (alerts name it).
    epoch: Option<u32>,
    best: Option<Best>,
    dropped: u64,
    undelivered: u64,
}

impl EventEmitter {
    /// An emitter that sends to `sender` the events of the run `info` describes, and ends the run when `stop`
    /// is requested.
    pub fn new(sender: EventSender, info: RunInfo, stop: StopHandle) -> EventEmitter {
        EventEmitter {
            sender,
            info,
            stop,
            run_id: new_run_id(),
            seq: 0,
            in_run: false,
            used: false,
            run_clock: Instant::now(),
            batch_lr: f64::NAN,
            epochs_done: 0,
            n_epochs: 0,
            epoch: None,
            best: None,
            dropped: 0,
            undelivered: 0,
        }
    }

    /// The current run's id (a new one is taken at each `fit` after the first).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// `batch_ended` events this emitter dropped because the receiver was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events this emitter could not deliver because the receiver was gone.
    pub fn undelivered(&self) -> u64 {
        self.undelivered
    }

    /// The next `seq` to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The handle that stops this run; clone it for the daemon or another thread.
    pub fn stop_handle(&self) -> &StopHandle {
        &self.stop
    }

    /// Sends a `message` event in the current run (a note to the phone from the training code).
    /// On a rank other than 0 of a job, nothing is sent (rank 0 speaks for the job).
    pub fn message(&mut self, title: impl Into<String>, text: impl Into<String>, level: Level) {
        if !self.info.leads() {
            return;
        }
        self.emit(Message { title: title.into(), text: text.into(), level }.into());
    }

    /// Sends an `alert` in the current run (like `wandb.alert`): something needs attention now. Notifiers show
    /// it prominently; it names the current epoch once one has started.
    /// Like [`EventEmitter::message`], nothing is sent on a rank other than 0 of a job.
    pub fn alert(&mut self, title: impl Into<String>, text: impl Into<String>, level: Level) {
        if !self.info.leads() {
            return;
        }
        let alert = Alert { rule: None, title: title.into(), text: text.into(), level, epoch: self.epoch };
        self.emit(alert.into());
    }

    /// Sends a lifecycle event: never dropped while the receiver lives.
    fn emit(&mut self, payload: Payload) {
        let event = Event::now(self.run_id.clone(), self.seq, payload);
        self.deliver(event, false);
    }

    fn deliver(&mut self, event: Event, batch: bool) {
        match self.sender.push(event, batch) {
            Ok(()) => self.seq += 1,
            Err(_) => {
                if self.undelivered == 0 {
                    tracing::warn!(run = %self.run_id, "event receiver is gone; events of this run are not delivered");
                }
                self.undelivered += 1;
            }
        }
    }

    fn start_run(&mut self, s: &State) {
        if self.used {
            self.run_id = new_run_id();
            self.seq = 0;
        }
        self.used = true;
        self.in_run = true;
        self.run_clock = Instant::now();
        self.epochs_done = 0;
        self.epoch = None;
        self.n_epochs = s.n_epochs;
        self.best = None;
        let info = &self.info;
        let started = RunStarted {
            name: info.name.clone(),
            host: info.host.clone(),
            pid: info.pid,
            rank: info.rank,
            job: info.job.clone(),
            world_size: info.world_size,
            n_epochs: s.n_epochs,
            batches_per_epoch: s.n_batches,
            metric_names: s.metric_names.clone(),
            hyper: info.hyper.clone(),
        };
        self.emit(started.into());
    }

    /// Stops the epoch and the training and skips validation once a stop was requested.
    fn apply_stop(&self, s: &mut State) {
        if self.stop.is_requested() {
            let reason = self.stop.reason().unwrap_or_default();
            s.stop_now(StopReason::Requested(reason));
        }
    }

    fn track_best(&mut self, s: &State) {
        let name = s.metric_names.first().map_or("valid_loss", String::as_str);
        let Some(value) = s.monitor_value(name).filter(|v| v.is_finite()) else { return };
        let lower = lower_is_better(name);
        let better = self.best.as_ref().is_none_or(|b| if lower { value < b.value } else { value > b.value });
        if better {
            self.best = Some(Best { name: name.to_owned(), value, epoch: s.epoch });
        }
    }

    fn end_payload(&self, s: &State, error: Option<&TrainError>) -> Payload {
        if let Some(e) = error {
            return RunFailed { error: e.to_string(), traceback: None }.into();
        }
        let (done, planned) = (self.epochs_done, self.n_epochs);
        let (status, reason) = match &s.stop_reason {
            Some(r @ StopReason::NonFiniteLoss(_)) => {
                let error = format!("training terminated after {done} of {planned} epochs: {r}");
                return RunFailed { error, traceback: None }.into();
            }
            Some(r) => (RunStatus::Stopped, format!("{r} (after {done} of {planned} epochs)")),
            None if done < planned => {
                (RunStatus::Stopped, format!("a callback stopped training after {done} of {planned} epochs"))
            }
            None => (RunStatus::Completed, format!("completed {done} of {planned} epochs")),
        };
        let duration_s = self.run_clock.elapsed().as_secs_f64();
        RunFinished { status, reason, duration_s, best: self.best.clone() }.into()
    }
}

impl Callback for EventEmitter {
    fn name(&self) -> &str {
        "event_emitter"
    }

    fn order(&self) -> i32 {
        EMITTER_ORDER
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        self.start_run(s);
        Ok(())
    }

    fn on_epoch_begin(&mut self, s: &mut State) -> CallbackResult {
        self.epoch = Some(s.epoch);
        if self.info.leads() {
            self.emit(EpochStarted { epoch: s.epoch }.into());
        }
        Ok(())
    }

    fn on_batch_begin(&mut self, s: &mut State) -> CallbackResult {
        if s.train {
            self.batch_lr = s.lr;
        }
        Ok(())
    }

    fn on_batch_end(&mut self, s: &mut State) -> CallbackResult {
        if !s.train {
            return Ok(());
        }
        self.apply_stop(s);
        if !self.info.leads() {
            return Ok(());
        }
        if !self.sender.reserve_batch() {
            self.dropped += 1;
            return Ok(());
        }
        let batch = BatchEnded {
            epoch: s.epoch,
            batch: s.num_batch,
            n_batches: s.n_batches,
            loss: s.last_loss.unwrap_or(f64::NAN),
            smooth_loss: s.smooth_loss.unwrap_or(f64::NAN),
            lr: self.batch_lr,
        };
        let event = Event::now(self.run_id.clone(), self.seq, batch);
        self.deliver(event, true);
        Ok(())
    }

    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        // a request that came during validation stops here rather than after another training batch
        self.apply_stop(s);
        self.epochs_done = s.epoch + 1;
        self.track_best(s);
        self.emit(s.epoch_row().into());
        Ok(())
    }

    fn on_train_end(&mut self, s: &mut State, error: Option<&TrainError>) -> CallbackResult {
        if !self.in_run {
            // a callback ordered before this one failed in on_train_begin: announce the run so the failure
            // has one to belong to
            self.start_run(s);
        }
        let payload = self.end_payload(s, error);
        self.emit(payload);
        self.in_run = false;
        Ok(())
    }
}

impl Drop for EventEmitter {
    fn drop(&mut self) {
        if self.in_run {
            let error = if std::thread::panicking() {
                "the training loop panicked".to_owned()
            } else {
                "the training loop ended without on_train_end".to_owned()
            };
            self.emit(RunFailed { error, traceback: None }.into());
        }
    }
}

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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use herald_event::{
    Alert, BatchEnded, Best, EpochStarted, Event, EventKind, Level, Message, Payload, RunFailed, RunFinished,
    RunStarted, RunStatus,
};
use tokio::sync::mpsc;

use crate::callback::{Callback, CallbackResult, TrainError};
use crate::state::{State, StopReason, lower_is_better};
use crate::stop::StopHandle;

/// The emitter's order: after the Recorder (-10), schedulers (0) and the stopping callbacks.
pub const EMITTER_ORDER: i32 = 100;

#[derive(Debug)]
struct Shared {
    max_pending: usize,
    pending: AtomicUsize,
    dropped: AtomicU64,
}

/// A channel for one or more runs' events: `batch_ended` events beyond `max_pending_batches` unread are
/// dropped and counted; lifecycle events always go through. See the module docs.
pub fn channel(max_pending_batches: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        max_pending: max_pending_batches,
        pending: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
    });
    (EventSender { tx, shared: shared.clone() }, EventReceiver { rx, shared })
}

/// Why [`EventSender::send`] did not deliver an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A `batch_ended` was dropped: too many are unread.
    #[error("batch_ended dropped: the receiver is behind by the maximum number of unread batch events")]
    Full,
    /// The receiver is gone.
    #[error("the event receiver is gone; nothing will read this event")]
    Closed,
}

/// The sending side of [`channel`]. Cloneable; never blocks.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
}

impl EventSender {
    /// Sends one event without blocking. A `batch_ended` is dropped (and counted) when more than
    /// `max_pending_batches` would be unread; any other event goes through while the receiver lives.
    pub fn send(&self, event: Event) -> Result<(), SendError> {
        let batch = event.kind() == EventKind::BatchEnded;
        if batch && !self.reserve_batch() {
            return Err(SendError::Full);
        }
        self.push(event, batch)
    }

    /// Takes one of the `max_pending_batches` slots, or counts a drop.
    fn reserve_batch(&self) -> bool {
        let s = &self.shared;
        if s.pending.fetch_add(1, Ordering::AcqRel) >= s.max_pending {
            s.pending.fetch_sub(1, Ordering::AcqRel);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Pushes an event whose slot (if a batch) is reserved.
    fn push(&self, event: Event, batch: bool) -> Result<(), SendError> {
        if self.tx.send(event).is_err() {
            if batch {
                self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(SendError::Closed);
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// `batch_ended` events dropped so far by every sender of this channel.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// `batch_ended` events sent and not yet received.
    pub fn pending_batches(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }
}

/// Why [`EventReceiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is waiting; senders remain.
    #[error("no event is waiting")]
    Empty,
    /// No event is waiting and none will come.
    #[error("every sender is gone and no event is waiting")]
    Disconnected,
}

/// The receiving side of [`channel`], usually on a tokio task (the dispatcher or the daemon client).
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
}

impl EventReceiver {
    /// The next event; `None` once every sender is gone and the channel is empty.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        self.received(event.as_ref());
        event
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        match self.rx.try_recv() {
            Ok(event) => {
                self.received(Some(&event));
                Ok(event)
            }
            Err(mpsc::error::TryRecvError::Empty) => Err(TryRecvError::Empty),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(TryRecvError::Disconnected),
        }
    }

    /// The next event, blocking this thread (never call it inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        let event = self.rx.blocking_recv();
        self.received(event.as_ref());
        event
    }

    fn received(&self, event: Option<&Event>) {
        if event.is_some_and(|e| e.kind() == EventKind::BatchEnded) {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `batch_ended` events dropped so far because this receiver was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// `batch_ended` events sent and not yet received.
    pub fn pending_batches(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }
}

/// Who is training: the fields of `run_started` that the state does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Human name of the run.
    pub name: String,
    /// Host the run trains on.
    pub host: String,
    /// Process id of the training process.
    pub pid: u32,
    /// Distributed rank; 0 for single-process runs.
    pub rank: u32,
    /// The job this run is one rank of (shared by every rank; None: a single process).
    pub job: Option<String>,
    /// Ranks in the job, when known.
    pub world_size: Option<u32>,
    /// Hyperparameters to report (lr, bs, model, ...).
    pub hyper: BTreeMap<String, serde_json::Value>,
}

impl RunInfo {
    /// A run named `name` on this host and process, no hyperparameters; rank, job and world size from the
    /// environment as [`RunInfo::from_env`] reads it.
    pub fn new(name: impl Into<String>) -> RunInfo {
        RunInfo::from_env(name, |var| std::env::var(var).ok())
    }

    /// A run named `name` with rank, job and world size from the variables `var` looks up: the rank is `RANK`
    /// (torchrun's), else `SLURM_PROCID`, else 0; the world size `WORLD_SIZE`, else `SLURM_NTASKS`; the job id,
    /// in the order the Python client documents, `HERALD_JOB`, else `SLURM_JOB_ID` with `SLURM_STEP_ID`
    /// (`4242.0`), else `TORCHELASTIC_RUN_ID` unless it is `none` (torchrun's default), else none (a Rust trainer
    /// has no process group to share one through: set `HERALD_JOB`).
    pub fn from_env(name: impl Into<String>, var: impl Fn(&str) -> Option<String>) -> RunInfo {
        let get = |k: &str| var(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let number = |keys: &[&str]| keys.iter().find_map(|k| get(k)).and_then(|v| v.parse::<u32>().ok());
        let job = get("HERALD_JOB")
            .or_else(|| {
                get("SLURM_JOB_ID").map(|j| match get("SLURM_STEP_ID") {
                    Some(step) => format!("{j}.{step}"),
                    None => j,
                })
            })
            .or_else(|| get("TORCHELASTIC_RUN_ID").filter(|id| id != "none"));
        RunInfo {
            name: name.into(),
            host: hostname(),
            pid: std::process::id(),
            rank: number(&["RANK", "SLURM_PROCID"]).unwrap_or(0),
            job,
            world_size: number(&["WORLD_SIZE", "SLURM_NTASKS"]),
            hyper: BTreeMap::new(),
        }
    }

    /// Sets the job this run is one rank of.
    pub fn job(mut self, job: impl Into<String>) -> RunInfo {
        self.job = Some(job.into());
        self
    }

    /// Sets the number of ranks in the job.
    pub fn world_size(mut self, world_size: u32) -> RunInfo {
        self.world_size = Some(world_size);
        self
    }

    /// Whether this process speaks for its job: rank 0, or any rank of a run that is no job (every event goes
    /// out; the daemon keeps a non-zero rank's progress off the phone).
    pub fn leads(&self) -> bool {
        self.rank == 0 || self.job.is_none()
    }

    /// Adds a hyperparameter.
    pub fn hyper(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> RunInfo {
        self.hyper.insert(key.into(), value.into());
        self
    }

    /// Sets the distributed rank.
    pub fn rank(mut self, rank: u32) -> RunInfo {
        self.rank = rank;
        self
    }
}

/// This machine's host name, from the kernel or the environment; `unknown` when none says.
pub fn hostname() -> String {
    let from_file = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A new run id: `<UTC yyyymmddThhmmss.mmmZ>-<pid>-<counter>-<8 random hex digits>`, unique per process by
/// the counter, across processes by pid and time, and across machines (where pids and clocks can meet, as in
/// cluster mode) by the random part, without asking the host anything. Older ids without the random part
/// are still valid: a run id is any string.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // std's RandomState is seeded from the operating system's random source: no dependency needed.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    let random = hasher.finish() as u32;
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{}-{n}-{random:08x}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since.subsec_millis(),
        std::process::id()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn run_ids_are_unique() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
        assert!(a.len() > 20 && a.is_ascii(), "{a}");
        // The random part that keeps ids apart across machines.
        let random = a.rsplit('-').next().unwrap_or_default();
        assert!(random.len() == 8 && random.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn send_drops_only_batches_past_the_limit() {
        let (tx, mut rx) = channel(1);
        let batch = || {
            Event::now(
                "r",
                0,
                BatchEnded { epoch: 0, batch: 0, n_batches: 1, loss: 1.0, smooth_loss: 1.0, lr: 0.1 },
            )
        };
        assert_eq!(tx.send(batch()), Ok(()));
        assert_eq!(tx.send(batch()), Err(SendError::Full));
        assert_eq!(tx.send(Event::now("r", 1, EpochStarted { epoch: 0 })), Ok(()));
        assert_eq!((tx.dropped(), rx.dropped(), rx.pending_batches()), (1, 1, 1));
        assert_eq!(rx.try_recv().map(|e| e.kind()), Ok(EventKind::BatchEnded));
        assert_eq!(rx.pending_batches(), 0);
        drop(rx);
        assert_eq!(tx.send(batch()), Err(SendError::Closed));
        assert_eq!(tx.pending_batches(), 0, "a batch that could not be delivered frees its slot");
        assert_eq!(tx.send(Event::now("r", 2, EpochStarted { epoch: 1 })), Err(SendError::Closed));
        assert!(tx.is_closed());
    }
}

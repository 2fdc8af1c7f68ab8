//! The dispatcher: the part of the daemon that turns accepted events into deliveries.
//!
//! It owns the outbox ([`Store`]), the run table, one supervised worker per notifier (`worker.rs`), the run
//! watch (stall and lost-process detection) and the writer thread, the only code that writes the outbox.
//! Every write (ingested events, delivery outcomes, stop requests, daemon-made events) goes to the writer
//! over a bounded channel; the writer groups what is waiting into one transaction and commits it durably
//! before anyone hears back (group commit), so an ingest is answered only once its events and jobs are on
//! disk, and many clients share one fsync.
//!
//! `herald serve` wraps it in HTTP (`server.rs`); `herald train` embeds it when no daemon answers
//! (`embedded.rs`). It does not parse configuration files or speak HTTP.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_event::{EpochEnded, Event, EventKind, Payload, RunLost, RunStalled};
use herald_plugin::{Health, Notifier, Receipt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::Routing;
use crate::error::DaemonError;
use crate::limits;
use crate::runs::{self, MADE_SEQ_BASE, RunState};
use crate::store::{GiveUp, JobRecord, Store, StoreError};
use crate::worker;

/// Operations grouped per transaction at most.
const MAX_GROUP: usize = 512;
/// Depth of the writer's channel.
const WRITER_QUEUE: usize = 1024;
/// How often notifiers that failed since their last health check are checked again.
const HEALTH_RECHECK: Duration = Duration::from_secs(15);
/// Give-ups shown per notifier in status.
const RECENT_GIVE_UPS: usize = 10;
/// Runs that ended this long ago are forgotten (their history and events removed).
const RUN_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One notifier to dispatch to.
pub struct NotifierSpec {
    pub name: String,
    pub kind: String,
    pub notifier: Box<dyn Notifier>,
    pub routing: Routing,
}

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A run with no event for this long is stalled (at least three times its longest epoch).
    pub stall_after: Duration,
    /// The host name runs on this machine report; runs from here are checked for a vanished process.
    pub hostname: String,
}

impl Options {
    pub fn new(stall_after: Duration) -> Options {
        Options { stall_after, hostname: local_hostname() }
    }
}

/// This machine's host name, as the kernel reports it (empty when unknown).
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Whether process `pid` on this machine is alive (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold anything.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The dispatcher's phase, watched by the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Deliver what is ready, then stop.
    Draining,
    /// Stop now; what is left stays in the outbox.
    Stopped,
}

/// What an ingest answers: how many events were accepted and each run's control state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestReply {
    pub accepted: usize,
    pub control: BTreeMap<String, RunControl>,
}

/// Instructions for a run, returned to its sender.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunControl {
    /// Someone asked the run to stop.
    pub stop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a delivery attempt ended, as the worker reports it to the writer.
#[derive(Debug)]
pub(crate) enum Outcome {
    Delivered(Receipt),
    /// A newer state of the run made this one pointless (`min_interval`).
    Superseded,
    Retry(Box<JobRecord>),
    GaveUp {
        error: String,
        attempts: u32,
    },
}

pub(crate) enum WriteOp {
    Ingest { events: Vec<Event>, made: bool, reply: Option<oneshot::Sender<Result<IngestReply, String>>> },
    Finish { notifier: usize, job: u64, run: String, seq: u64, kind: EventKind, outcome: Outcome },
    Stop { run: String, reason: String, reply: Option<oneshot::Sender<Result<bool, String>>> },
    Forget { runs: Vec<String> },
    Exit,
}

/// Counters and recent facts about one notifier, for status.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub gave_up: AtomicU64,
    pub superseded: AtomicU64,
    pub facts: Mutex<Facts>,
}

#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub health: Option<Health>,
    pub last_error: Option<String>,
    pub last_delivery_ms: Option<u64>,
    pub give_ups: VecDeque<GiveUp>,
}

/// A notifier as the workers see it.
pub(crate) struct Slot {
    pub name: String,
    pub kind: String,
    pub notifier: Arc<dyn Notifier>,
    pub routing: Routing,
    pub rate: Option<(f64, u32)>,
    pub wake: Notify,
    pub stats: Stats,
}

/// What the writer, the workers and the request handlers share.
pub(crate) struct Shared {
    pub store: Store,
    pub runs: Mutex<HashMap<String, RunState>>,
    pub slots: Vec<Arc<Slot>>,
    pub options: Options,
    pub started: Instant,
    pub started_ms: u64,
}

impl Shared {
    pub fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunState>> {
        // A panic while the lock was held leaves the map usable: every update is a whole-value insert.
        self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn facts(stats: &Stats) -> std::sync::MutexGuard<'_, Facts> {
    stats.facts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cheap handle for submitting events and reading status; clone it freely.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteOp>,
}

/// The running dispatcher.
pub struct Dispatcher {
    handle: Handle,
    phase: watch::Sender<Phase>,
    /// One supervised worker per notifier.
    workers: JoinSet<()>,
    /// The run watch and housekeeping.
    tasks: JoinSet<()>,
    /// Command listeners of notifiers that take commands (`host.rs`); aborted at shutdown.
    listeners: JoinSet<()>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Dispatcher {
    /// Start the writer thread, one worker per notifier and the run watch. Call inside a tokio runtime.
    pub fn start(
        store: Store,
        notifiers: Vec<NotifierSpec>,
        options: Options,
    ) -> Result<Dispatcher, DaemonError> {
        let runs = store.load_runs()?;
        let counts = store.job_counts()?;
        let slots: Vec<Arc<Slot>> = notifiers
            .into_iter()
            .map(|spec| {
                let rate = match (spec.routing.rate_per_s, spec.routing.burst) {
                    (Some(r), b) => Some((r, b.unwrap_or(1))),
                    (None, Some(b)) => limits::default_rate(&spec.kind).map(|(r, _)| (r, b)),
                    (None, None) => limits::default_rate(&spec.kind),
                };
                let stats = Stats::default();
                stats.queued.store(counts.get(&spec.name).copied().unwrap_or(0), Ordering::Relaxed);
                Arc::new(Slot {
                    name: spec.name,
                    kind: spec.kind,
                    notifier: Arc::from(spec.notifier),
                    routing: spec.routing,
                    rate,
                    wake: Notify::new(),
                    stats,
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            store,
            runs: Mutex::new(runs),
            slots,
            options,
            started: Instant::now(),
            started_ms: now_ms(),
        });
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer_shared = shared.clone();
        let writer_thread = std::thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || writer_loop(&writer_shared, rx))
            .map_err(|e| DaemonError::io("cannot start the outbox writer thread", e))?;
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let handle = Handle { shared: shared.clone(), writer: tx };
        let mut workers = JoinSet::new();
        for index in 0..shared.slots.len() {
            workers.spawn(worker::supervise(
                index,
                handle.shared.clone(),
                handle.writer.clone(),
                phase_rx.clone(),
            ));
        }
        let mut tasks = JoinSet::new();
        tasks.spawn(run_watch(handle.clone(), phase_rx.clone()));
        tasks.spawn(health_checks(shared.clone(), phase_rx.clone()));
        tasks.spawn(forget_old_runs(handle.clone(), phase_rx));
        let mut listeners = JoinSet::new();
        let host: Arc<dyn herald_plugin::Host> = Arc::new(crate::host::DaemonHost::new(handle.clone()));
        for slot in shared.slots.iter().filter(|s| s.notifier.capabilities().commands) {
            listeners.spawn(crate::host::listen(slot.name.clone(), slot.notifier.clone(), host.clone()));
        }
        Ok(Dispatcher { handle, phase, workers, tasks, listeners, writer_thread: Some(writer_thread) })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stop: deliver what is ready for up to `drain`, then leave the rest in the outbox for the next start.
    /// Returns the deliveries left in the outbox.
    pub async fn shutdown(mut self, drain: Duration) -> u64 {
        // No more commands once shutting down.
        self.listeners.abort_all();
        while self.listeners.join_next().await.is_some() {}
        let _ = self.phase.send(Phase::Draining);
        let deadline = tokio::time::Instant::now() + drain;
        let queued =
            |h: &Handle| h.shared.slots.iter().map(|s| s.stats.queued.load(Ordering::Relaxed)).sum::<u64>();
        tracing::info!(queued = queued(&self.handle), drain_s = drain.as_secs_f64(), "draining deliveries");
        // The workers end on their own once nothing is ready; the watch and housekeeping tasks end at Stopped.
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.workers.join_next()).await {}
        let _ = self.phase.send(Phase::Stopped);
        while self.workers.join_next().await.is_some() {}
        while self.tasks.join_next().await.is_some() {}
        let _ = self.handle.writer.send(WriteOp::Exit).await;
        if let Some(thread) = self.writer_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let left = queued(&self.handle);
        tracing::info!(left, "dispatcher stopped");
        left
    }
}

impl Handle {
    /// Store events durably and queue their deliveries; the answer comes after the commit.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestReply, DaemonError> {
        self.submit(events, false).await
    }

    async fn submit(&self, events: Vec<Event>, made: bool) -> Result<IngestReply, DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.ask(WriteOp::Ingest { events, made, reply: Some(reply) }, rx, "cannot store the events").await
    }

    /// Hand `op` to the writer thread and wait for its answer on `rx`.
    async fn ask<T>(
        &self,
        op: WriteOp,
        rx: oneshot::Receiver<Result<T, String>>,
        context: &str,
    ) -> Result<T, DaemonError> {
        self.writer.send(op).await.map_err(|_| DaemonError::ShuttingDown)?;
        match rx.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(message)) => {
                Err(DaemonError::Io { context: context.into(), source: std::io::Error::other(message) })
            }
            Err(_) => Err(DaemonError::ShuttingDown),
        }
    }

    /// Ask a run to stop; `false` when the run is unknown.
    pub async fn request_stop(&self, run: &str, reason: &str) -> Result<bool, DaemonError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp::Stop { run: run.to_owned(), reason: reason.to_owned(), reply: Some(reply) };
        self.ask(op, rx, "cannot store the stop request").await
    }

    /// The control state of one run (its stop request).
    pub fn control(&self, run: &str) -> RunControl {
        let runs = self.shared.runs();
        let stop = runs.get(run).and_then(|st| st.stop.clone());
        RunControl { stop: stop.is_some(), reason: stop }
    }

    /// Jobs waiting in the outbox, all notifiers together.
    pub fn queued(&self) -> u64 {
        self.shared.slots.iter().map(|s| s.stats.queued.load(Ordering::Relaxed)).sum()
    }

    /// Every run the daemon knows, with its state (for phone commands, `host.rs`).
    pub fn run_states(&self) -> Vec<(String, RunState)> {
        self.shared.runs().iter().map(|(id, st)| (id.clone(), st.clone())).collect()
    }

    /// A run's smoothed-loss history.
    pub fn loss_history(&self, run: &str) -> Result<Vec<crate::store::LossPoint>, DaemonError> {
        Ok(self.shared.store.loss_history(run)?)
    }

    /// What `GET /v1/status` and `herald status` show.
    pub fn status(&self) -> Status {
        let now = now_ms();
        let shared = &self.shared;
        let mut runs: Vec<RunView> = shared
            .runs()
            .iter()
            .map(|(id, st)| RunView {
                run: id.clone(),
                name: st.context.name.clone(),
                host: st.context.host.clone(),
                pid: st.context.pid,
                rank: st.context.rank,
                state: st.state_word().to_owned(),
                n_epochs: st.context.n_epochs,
                epochs_done: st.context.epochs.len(),
                last_epoch: st.context.epochs.last().cloned(),
                smooth_loss: st.last_batch.map(|b| b.3),
                best: st.best.clone(),
                events: st.events,
                silent_s: now.saturating_sub(st.last_event_ms) as f64 / 1000.0,
                last_event_ms: st.last_event_ms,
                stop_requested: st.stop.is_some(),
            })
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.last_event_ms));
        runs.truncate(50);
        let notifiers = shared
            .slots
            .iter()
            .map(|slot| {
                let f = facts(&slot.stats);
                NotifierView {
                    name: slot.name.clone(),
                    kind: slot.kind.clone(),
                    queue: slot.stats.queued.load(Ordering::Relaxed),
                    delivered: slot.stats.delivered.load(Ordering::Relaxed),
                    failed_attempts: slot.stats.failed_attempts.load(Ordering::Relaxed),
                    gave_up: slot.stats.gave_up.load(Ordering::Relaxed),
                    superseded: slot.stats.superseded.load(Ordering::Relaxed),
                    health: f.health.clone(),
                    last_error: f.last_error.clone(),
                    last_delivery_ms: f.last_delivery_ms,
                    recent_give_ups: f.give_ups.iter().cloned().collect(),
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: shared.started.elapsed().as_secs_f64(),
            outbox: OutboxView {
                jobs: self.queued(),
                bytes: shared.store.file_size(),
                path: shared.store.path().map(|p| p.display().to_string()),
            },
            runs,
            notifiers,
        }
    }
}

/// The daemon's state as `GET /v1/status` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_s: f64,
    pub outbox: OutboxView,
    pub runs: Vec<RunView>,
    pub notifiers: Vec<NotifierView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxView {
    /// Deliveries waiting.
    pub jobs: u64,
    /// Size of the outbox file.
    pub bytes: u64,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunView {
    pub run: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub rank: u32,
    /// running, completed, stopped, failed, stalled, lost, or messages (a run id used only for messages).
    pub state: String,
    pub n_epochs: u32,
    pub epochs_done: usize,
    pub last_epoch: Option<EpochEnded>,
    pub smooth_loss: Option<f64>,
    pub best: BTreeMap<String, f64>,
    pub events: u64,
    pub silent_s: f64,
    pub last_event_ms: u64,
    pub stop_requested: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifierView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub queue: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub gave_up: u64,
    pub superseded: u64,
    pub health: Option<Health>,
    pub last_error: Option<String>,
    pub last_delivery_ms: Option<u64>,
    pub recent_give_ups: Vec<GiveUp>,
}

/// Side effects of a committed group, applied only after the commit.
#[derive(Default)]
struct Effects {
    runs: HashMap<String, RunState>,
    added: HashMap<usize, u64>,
    removed: HashMap<usize, u64>,
    delivered: HashMap<usize, (u64, u64)>,
    gave_up: Vec<(usize, GiveUp)>,
    forget: Vec<String>,
    ingest_replies: Vec<(usize, IngestReply)>,
    stop_replies: Vec<(usize, bool)>,
}

fn writer_loop(shared: &Shared, mut rx: mpsc::Receiver<WriteOp>) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let exit = ops.iter().any(|op| matches!(op, WriteOp::Exit));
        match apply_group(shared, &mut ops) {
            Ok(effects) => finish_group(shared, &mut ops, effects),
            // One bad operation must not sink the others grouped with it: apply them one by one.
            Err(_) if ops.len() > 1 => {
                for op in ops.iter_mut() {
                    let mut single = [std::mem::replace(op, WriteOp::Exit)];
                    match apply_group(shared, &mut single) {
                        Ok(effects) => finish_group(shared, &mut single, effects),
                        Err(e) => fail_group(&mut single, &e),
                    }
                }
            }
            Err(e) => fail_group(&mut ops, &e),
        }
        if exit {
            break;
        }
    }
}

fn fail_group(ops: &mut [WriteOp], err: &StoreError) {
    tracing::error!(error = %err, "outbox write failed");
    for op in ops.iter_mut() {
        match op {
            WriteOp::Ingest { reply, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.to_string()));
                }
            }
            WriteOp::Stop { reply, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.to_string()));
                }
            }
            _ => {}
        }
    }
}

fn apply_group(shared: &Shared, ops: &mut [WriteOp]) -> Result<Effects, StoreError> {
    let now = now_ms();
    let mut fx = Effects::default();
    let known = |fx: &mut Effects, run: &str| -> bool {
        fx.runs.contains_key(run) || shared.runs().contains_key(run)
    };
    shared.store.write(|t| {
        let mut next_id = t.next_job_id()?;
        for (index, op) in ops.iter_mut().enumerate() {
            match op {
                WriteOp::Ingest { events, made, .. } => {
                    let mut reply = IngestReply::default();
                    for event in events.iter_mut() {
                        let st = match fx.runs.entry(event.run.clone()) {
                            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => v.insert(
                                shared
                                    .runs()
                                    .get(&event.run)
                                    .cloned()
                                    .unwrap_or_else(|| RunState::new(&event.run)),
                            ),
                        };
                        reply.accepted += 1;
                        if *made {
                            // Once each; the flag may have been set since the watch looked.
                            let already = match event.payload {
                                Payload::RunStalled(_) => st.stalled || st.lost || st.ended.is_some(),
                                Payload::RunLost(_) => st.lost || st.ended.is_some(),
                                _ => false,
                            };
                            if already {
                                continue;
                            }
                            event.seq = MADE_SEQ_BASE + st.made;
                            st.made += 1;
                            t.put_event(event)?;
                        } else {
                            // A batch's history row needs no encoding, but its jobs do: `lr` must be finite.
                            if let Payload::BatchEnded(b) = &event.payload
                                && !b.lr.is_finite()
                            {
                                tracing::warn!(run = %event.run, seq = event.seq, "batch_ended with a non-finite lr; dropped");
                                reply.accepted -= 1;
                                continue;
                            }
                            match t.put_event(event) {
                                Ok(true) => {}
                                // Sent before (a retry or a replayed spool): accepted, not delivered again.
                                Ok(false) => continue,
                                // Only an in-process sender can hand over an event that cannot be encoded
                                // (HTTP input was decoded, so it encodes): drop that one, keep the rest.
                                Err(StoreError::Encode(e)) => {
                                    tracing::warn!(run = %event.run, seq = event.seq, error = %e, "event cannot be stored; dropped");
                                    reply.accepted -= 1;
                                    continue;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        for (i, slot) in shared.slots.iter().enumerate() {
                            if runs::accepts(&slot.routing, st, event) {
                                let job = JobRecord {
                                    event: event.clone(),
                                    attempt: 0,
                                    not_before_ms: 0,
                                    created_ms: now,
                                    last_error: None,
                                };
                                t.put_job(&slot.name, next_id, &job)?;
                                next_id += 1;
                                *fx.added.entry(i).or_default() += 1;
                            }
                        }
                        st.apply(event, *made, now);
                    }
                    for event in events.iter() {
                        if let Some(st) = fx.runs.get(&event.run) {
                            reply.control.entry(event.run.clone()).or_insert_with(|| RunControl {
                                stop: st.stop.is_some(),
                                reason: st.stop.clone(),
                            });
                        }
                    }
                    fx.ingest_replies.push((index, reply));
                }
                WriteOp::Finish { notifier, job, run, seq, kind, outcome } => {
                    let Some(slot) = shared.slots.get(*notifier) else { continue };
                    match outcome {
                        Outcome::Delivered(receipt) => {
                            if t.remove_job(&slot.name, *job)? {
                                *fx.removed.entry(*notifier).or_default() += 1;
                            }
                            t.put_receipt(&slot.name, run, receipt)?;
                            fx.delivered.entry(*notifier).or_default().0 += 1;
                        }
                        Outcome::Superseded => {
                            if t.remove_job(&slot.name, *job)? {
                                *fx.removed.entry(*notifier).or_default() += 1;
                            }
                            fx.delivered.entry(*notifier).or_default().1 += 1;
                        }
                        Outcome::Retry(record) => t.put_job(&slot.name, *job, record)?,
                        Outcome::GaveUp { error, attempts } => {
                            if t.remove_job(&slot.name, *job)? {
                                *fx.removed.entry(*notifier).or_default() += 1;
                            }
                            let g = GiveUp {
                                notifier: slot.name.clone(),
                                run: run.clone(),
                                seq: *seq,
                                kind: kind.as_str().to_owned(),
                                error: error.clone(),
                                attempts: *attempts,
                                at_ms: now,
                            };
                            t.put_give_up(*job, &g)?;
                            fx.gave_up.push((*notifier, g));
                        }
                    }
                }
                WriteOp::Stop { run, reason, .. } => {
                    let exists = known(&mut fx, run);
                    if exists {
                        let st = fx.runs.entry(run.clone()).or_insert_with(|| {
                            shared.runs().get(run.as_str()).cloned().unwrap_or_else(|| RunState::new(run))
                        });
                        st.stop = Some(reason.clone());
                    }
                    fx.stop_replies.push((index, exists));
                }
                WriteOp::Forget { runs } => {
                    for run in runs.iter() {
                        t.remove_run(run)?;
                        fx.forget.push(run.clone());
                    }
                }
                WriteOp::Exit => {}
            }
        }
        for (run, st) in &fx.runs {
            t.put_run(run, st)?;
        }
        t.set_next_job_id(next_id)?;
        Ok(())
    })?;
    Ok(fx)
}

fn finish_group(shared: &Shared, ops: &mut [WriteOp], fx: Effects) {
    {
        let mut runs = shared.runs();
        for run in &fx.forget {
            runs.remove(run);
        }
        runs.extend(fx.runs);
    }
    for (i, n) in fx.added {
        if let Some(slot) = shared.slots.get(i) {
            slot.stats.queued.fetch_add(n, Ordering::Relaxed);
            slot.wake.notify_one();
        }
    }
    for (i, n) in fx.removed {
        if let Some(slot) = shared.slots.get(i) {
            // Saturating: a count taken at start may already include a job finished since.
            let _ = slot
                .stats
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(n)));
        }
    }
    for (i, (delivered, superseded)) in fx.delivered {
        if let Some(slot) = shared.slots.get(i) {
            slot.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
            slot.stats.superseded.fetch_add(superseded, Ordering::Relaxed);
        }
    }
    for (i, g) in fx.gave_up {
        if let Some(slot) = shared.slots.get(i) {
            slot.stats.gave_up.fetch_add(1, Ordering::Relaxed);
            let mut f = facts(&slot.stats);
            f.give_ups.push_back(g);
            while f.give_ups.len() > RECENT_GIVE_UPS {
                f.give_ups.pop_front();
            }
        }
    }
    for (index, reply) in fx.ingest_replies {
        if let Some(WriteOp::Ingest { reply: tx, .. }) = ops.get_mut(index)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(Ok(reply));
        }
    }
    for (index, known) in fx.stop_replies {
        if let Some(WriteOp::Stop { reply: tx, .. }) = ops.get_mut(index)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(Ok(known));
        }
    }
}

/// How long a run may stay silent: `stall_after`, or three times its longest epoch if that is longer.
pub fn stall_threshold(stall_after: Duration, longest_epoch_s: f64) -> Duration {
    let epochs = if longest_epoch_s.is_finite() && longest_epoch_s > 0.0 {
        Duration::from_secs_f64((3.0 * longest_epoch_s).min(1e9))
    } else {
        Duration::ZERO
    };
    stall_after.max(epochs)
}

/// The dead-man's switch: make `run_stalled` for silent runs and `run_lost` for runs whose process is gone.
async fn run_watch(handle: Handle, mut phase: watch::Receiver<Phase>) {
    let options = handle.shared.options.clone();
    let tick = (options.stall_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    return;
                }
            }
        }
        let now = now_ms();
        let mut lost_candidates = Vec::new();
        let mut made = Vec::new();
        {
            let runs = handle.shared.runs();
            for (id, st) in runs.iter() {
                if !st.started || st.ended.is_some() || st.lost {
                    continue;
                }
                // Silence while the daemon was down does not count.
                let since = st.last_event_ms.max(handle.shared.started_ms);
                let silent = Duration::from_millis(now.saturating_sub(since));
                let threshold = stall_threshold(options.stall_after, st.longest_epoch_s);
                if !st.stalled && silent > threshold {
                    made.push(Event::now(
                        id.clone(),
                        0,
                        RunStalled { silent_s: silent.as_secs_f64(), stall_after_s: threshold.as_secs_f64() },
                    ));
                }
                if st.context.pid != 0 && !options.hostname.is_empty() && st.context.host == options.hostname
                {
                    lost_candidates.push((id.clone(), st.context.pid));
                }
            }
        }
        for (id, pid) in lost_candidates {
            if !pid_alive(pid) {
                made.push(Event::now(
                    id,
                    0,
                    RunLost {
                        pid,
                        reason: "the process exited without reporting: killed, out of memory, or the machine went down?"
                            .into(),
                    },
                ));
            }
        }
        if made.is_empty() {
            continue;
        }
        for event in &made {
            tracing::warn!(run = %event.run, kind = %event.kind(), "run watch");
        }
        if let Err(e) = handle.submit(made, true).await {
            tracing::error!(error = %e, "cannot store a run-watch event");
        }
    }
}

/// Ask each notifier whether it can deliver, for status: every one at start, then, every
/// [`HEALTH_RECHECK`], those that failed an attempt since their last check or were not `Ok` (so a healthy
/// notifier's service is not probed again, and a supervised plugin's restarts show up in status).
async fn health_checks(shared: Arc<Shared>, mut phase: watch::Receiver<Phase>) {
    let mut failures_seen: Vec<Option<u64>> = vec![None; shared.slots.len()];
    let mut interval = tokio::time::interval(HEALTH_RECHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    return;
                }
                continue;
            }
        }
        let mut checks = JoinSet::new();
        for (index, slot) in shared.slots.iter().enumerate() {
            let failures = slot.stats.failed_attempts.load(Ordering::Relaxed);
            let healthy = matches!(facts(&slot.stats).health, Some(Health::Ok));
            let seen = failures_seen.get(index).copied().flatten();
            if seen.is_some() && seen == Some(failures) && healthy {
                continue;
            }
            if let Some(s) = failures_seen.get_mut(index) {
                *s = Some(failures);
            }
            let slot = slot.clone();
            checks.spawn(async move {
                let health =
                    match tokio::time::timeout(Duration::from_secs(10), slot.notifier.health_check()).await {
                        Ok(h) => h,
                        Err(_) => Health::Unavailable { message: "health check timed out after 10 s".into() },
                    };
                facts(&slot.stats).health = Some(health);
            });
        }
        while checks.join_next().await.is_some() {}
    }
}

/// Forget runs that ended long ago, hourly.
async fn forget_old_runs(handle: Handle, mut phase: watch::Receiver<Phase>) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    return;
                }
            }
        }
        let cutoff = now_ms().saturating_sub(RUN_RETENTION.as_millis() as u64);
        let old: Vec<String> = {
            let runs = handle.shared.runs();
            runs.iter()
                .filter(|(_, st)| {
                    (st.ended.is_some() || st.lost || !st.started)
                        && st.last_event_ms.max(st.first_ms) < cutoff
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        if !old.is_empty() && handle.writer.send(WriteOp::Forget { runs: old }).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use herald_event::{EpochEnded, Message, Metrics, RunStarted};
    use herald_plugin::{DeliveryError, Notification};

    use super::*;

    #[derive(Clone, Copy)]
    enum Behaviour {
        Ok,
        Panic,
        Hang,
        FailRetryable,
    }

    struct Fake {
        behaviour: Behaviour,
        seen: Arc<Mutex<Vec<(String, u64, EventKind)>>>,
    }

    #[async_trait::async_trait]
    impl Notifier for Fake {
        fn kind(&self) -> &str {
            "fake"
        }

        async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
            match self.behaviour {
                Behaviour::Ok => {}
                Behaviour::Panic => panic!("fake notifier bug"),
                Behaviour::Hang => std::future::pending::<()>().await,
                Behaviour::FailRetryable => {
                    return Err(DeliveryError::retryable("down").with_retry_after(Duration::from_millis(300)));
                }
            }
            self.seen.lock().expect("seen lock").push((n.event.run.clone(), n.event.seq, n.event.kind()));
            Ok(Receipt(serde_json::json!({ "seq": n.event.seq })))
        }
    }

    type Seen = Arc<Mutex<Vec<(String, u64, EventKind)>>>;

    fn spec(name: &str, behaviour: Behaviour, tweak: impl FnOnce(&mut Routing)) -> (NotifierSpec, Seen) {
        let seen: Seen = Arc::default();
        let mut routing = Routing { timeout: Duration::from_millis(200), ..Routing::default() };
        tweak(&mut routing);
        let notifier = Box::new(Fake { behaviour, seen: seen.clone() });
        (NotifierSpec { name: name.into(), kind: "fake".into(), notifier, routing }, seen)
    }

    fn options() -> Options {
        Options { stall_after: Duration::from_secs(3600), hostname: "test-host".into() }
    }

    fn message(run: &str, seq: u64) -> Event {
        Event::now(run, seq, Message { title: "t".into(), text: "x".into(), level: Default::default() })
    }

    fn started(run: &str) -> Event {
        Event::now(
            run,
            0,
            RunStarted {
                name: run.into(),
                host: "elsewhere".into(),
                pid: 1,
                rank: 0,
                n_epochs: 6,
                batches_per_epoch: 1,
                metric_names: vec![],
                hyper: Default::default(),
            },
        )
    }

    fn epoch(run: &str, e: u32) -> Event {
        Event::now(
            run,
            u64::from(e) + 1,
            EpochEnded {
                epoch: e,
                n_epochs: 6,
                train_loss: 1.0,
                valid_loss: None,
                metrics: Metrics::default(),
                elapsed_s: 0.01,
            },
        )
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn seqs(seen: &Seen) -> Vec<u64> {
        seen.lock().expect("seen lock").iter().map(|s| s.1).collect()
    }

    #[test]
    fn the_stall_threshold_is_never_under_three_epochs() {
        let check = |after_s: u64, longest: f64, expected_s: f64| {
            let got = stall_threshold(Duration::from_secs(after_s), longest);
            assert!((got.as_secs_f64() - expected_s).abs() < 1e-6, "{after_s} {longest}: {got:?}");
        };
        check(900, 0.0, 900.0);
        check(900, 100.0, 900.0);
        check(900, 400.0, 1200.0);
        check(60, f64::NAN, 60.0);
        check(60, f64::INFINITY, 60.0);
        check(60, -5.0, 60.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_or_hanging_notifier_never_stalls_the_others() {
        let (ok, seen) = spec("ok", Behaviour::Ok, |_| {});
        let (boom, _) = spec("boom", Behaviour::Panic, |_| {});
        let (hang, _) = spec("hang", Behaviour::Hang, |_| {});
        let d = Dispatcher::start(Store::in_memory().expect("store"), vec![boom, hang, ok], options())
            .expect("start");
        let h = d.handle();
        let reply = h.ingest((0..3).map(|s| message("r", s)).collect()).await.expect("ingest");
        assert_eq!(reply.accepted, 3);
        until("three deliveries to the healthy notifier", || seqs(&seen).len() == 3).await;
        assert_eq!(seqs(&seen), vec![0, 1, 2]);
        until("the panics recorded as give-ups", || h.status().notifiers[0].gave_up == 3).await;
        let status = h.status();
        let boom = &status.notifiers[0];
        assert!(boom.recent_give_ups[0].error.contains("panicked"), "{:?}", boom.recent_give_ups);
        until("the hanging notifier's timeouts", || h.status().notifiers[1].failed_attempts >= 1).await;
        let hang = &h.status().notifiers[1];
        assert!(hang.last_error.as_deref().unwrap_or("").contains("no answer within"), "{hang:?}");
        assert_eq!(hang.queue, 3, "timed-out jobs wait for their retry");
        d.shutdown(Duration::from_millis(100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn min_interval_sends_the_latest_epoch_never_a_backlog() {
        let (ok, seen) = spec("ok", Behaviour::Ok, |r| r.min_interval = Duration::from_millis(300));
        let d = Dispatcher::start(Store::in_memory().expect("store"), vec![ok], options()).expect("start");
        let h = d.handle();
        let mut events = vec![started("r")];
        events.extend((0..5).map(|e| epoch("r", e)));
        h.ingest(events).await.expect("ingest");
        until("run_started and the latest epoch", || seqs(&seen).len() == 2).await;
        assert_eq!(seqs(&seen), vec![0, 5], "epochs 0..3 superseded by epoch 4 (seq 5)");
        assert_eq!(h.status().notifiers[0].superseded, 4);
        // The next epoch waits for min_interval after the last send.
        let sent = Instant::now();
        h.ingest(vec![epoch("r", 5)]).await.expect("ingest");
        until("the next epoch", || seqs(&seen).len() == 3).await;
        assert!(sent.elapsed() >= Duration::from_millis(150), "{:?}", sent.elapsed());
        d.shutdown(Duration::from_millis(100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_jobs_survive_a_restart_and_delivered_ones_are_not_resent() {
        let dir = tempfile::tempdir().expect("temp dir");
        // First life: one delivery succeeds, the notifier of the second job is down.
        {
            let (ok, seen) = spec("hook", Behaviour::Ok, |_| {});
            let d = Dispatcher::start(Store::open(dir.path()).expect("store"), vec![ok], options())
                .expect("start");
            d.handle().ingest(vec![message("r", 0)]).await.expect("ingest");
            until("the first delivery", || seqs(&seen) == vec![0]).await;
            until("its outcome recorded", || d.handle().queued() == 0).await;
            d.shutdown(Duration::from_millis(100)).await;
        }
        {
            let (down, _) = spec("hook", Behaviour::FailRetryable, |_| {});
            let d = Dispatcher::start(Store::open(dir.path()).expect("store"), vec![down], options())
                .expect("start");
            let reply = d.handle().ingest(vec![message("r", 0), message("r", 1)]).await.expect("ingest");
            assert_eq!(reply.accepted, 2, "a duplicate is accepted and not queued again");
            until("a failed attempt", || d.handle().status().notifiers[0].failed_attempts >= 1).await;
            assert_eq!(d.handle().queued(), 1);
            assert_eq!(d.shutdown(Duration::from_millis(100)).await, 1, "the job stays in the outbox");
        }
        // Third life: the job is delivered, once; the first message is not sent again.
        let (ok, seen) = spec("hook", Behaviour::Ok, |_| {});
        let d =
            Dispatcher::start(Store::open(dir.path()).expect("store"), vec![ok], options()).expect("start");
        until("the kept job", || seqs(&seen) == vec![1]).await;
        until("the outbox emptied", || d.handle().queued() == 0).await;
        assert_eq!(seqs(&seen), vec![1]);
        assert_eq!(d.shutdown(Duration::from_millis(100)).await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unencodable_event_is_dropped_alone_not_with_its_batch() {
        let (ok, seen) = spec("ok", Behaviour::Ok, |r| r.events.push(EventKind::BatchEnded));
        let d = Dispatcher::start(Store::in_memory().expect("store"), vec![ok], options()).expect("start");
        let bad = Event::now(
            "r",
            1,
            herald_event::BatchEnded {
                epoch: 0,
                batch: 0,
                n_batches: 1,
                loss: 1.0,
                smooth_loss: 1.0,
                lr: f64::NAN,
            },
        );
        let reply = d.handle().ingest(vec![message("r", 0), bad, message("r", 2)]).await.expect("ingest");
        assert_eq!(reply.accepted, 2);
        until("the two good events", || seqs(&seen).len() == 2).await;
        assert_eq!(seqs(&seen), vec![0, 2]);
        d.shutdown(Duration::from_millis(100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_requests_come_back_in_control_and_unknown_runs_are_refused() {
        let (ok, _) = spec("ok", Behaviour::Ok, |_| {});
        let d = Dispatcher::start(Store::in_memory().expect("store"), vec![ok], options()).expect("start");
        let h = d.handle();
        assert!(!h.request_stop("nope", "x").await.expect("stop"));
        let reply = h.ingest(vec![started("r")]).await.expect("ingest");
        assert!(!reply.control["r"].stop);
        assert!(h.request_stop("r", "from the phone").await.expect("stop"));
        let reply = h.ingest(vec![epoch("r", 0)]).await.expect("ingest");
        assert_eq!(reply.control["r"], RunControl { stop: true, reason: Some("from the phone".into()) });
        d.shutdown(Duration::from_millis(100)).await;
    }
}

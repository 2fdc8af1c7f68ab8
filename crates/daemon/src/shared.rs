//! What the dispatcher's parts share: the state behind every [`Handle`](crate::Handle), the notifier slots the
//! workers serve, the phase they watch, and the operations the writer applies.
//!
//! This is the bottom of the dispatcher: the writer (`writer.rs`), the workers (`worker.rs`), the periodic
//! tasks (`periodic.rs`), the handle (`handle.rs`) and start/shutdown (`dispatcher.rs`) all import it, and
//! it imports none of them: only the leaf modules of data (`api`, `outbox`, `runs`, `config`). It holds no
//! logic beyond small accessors.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_event::{Event, EventKind};
use herald_plugin::{Health, Notifier, Receipt};
use tokio::sync::{Notify, broadcast, oneshot};

use crate::api::{GiveUp, IngestReply, RecentDelivery};
use crate::config::{Routing, RuleConfig};
use crate::outbox::{JobRecord, Outbox};
use crate::quiet::Clock;
use crate::runs::{RunChange, RunState};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// This machine's host name, as the kernel reports it (empty when unknown).
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// One notifier to dispatch to.
pub struct NotifierSpec {
    /// The notifier's name (its `[[notifier]]` table's `name`).
    pub name: String,
    /// Its type.
    pub kind: String,
    /// The notifier.
    pub notifier: Box<dyn Notifier>,
    /// Which events it gets, how often and how fast.
    pub routing: Routing,
}

/// Called by the writer with (run, reason) for every stop request, known run or not, before it is stored;
/// it must not block. Cluster mode hands the request to the other nodes; `true` means it was taken there,
/// so a run this daemon does not know is not an error.
#[derive(Clone)]
pub struct StopHook(pub Arc<StopFn>);

/// What a [`StopHook`] calls: (run, reason) -> taken.
pub type StopFn = dyn Fn(&str, &str) -> bool + Send + Sync;

impl std::fmt::Debug for StopHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopHook")
    }
}

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A run with no event for this long is stalled (at least three times its longest epoch).
    pub stall_after: Duration,
    /// The host name runs on this machine report; runs from here are checked for a vanished process.
    pub hostname: String,
    /// The alert rules (`[[rule]]`) the writer evaluates on each accepted event.
    pub rules: Vec<RuleConfig>,
    /// A rank of a job whose epoch takes more than this times the job's median, two epochs running, gets
    /// `rank_slow` (`[daemon] slow_rank_factor`).
    pub slow_rank_factor: f64,
    /// The clock jobs are stamped and digests timed by: the system's, unless a test moves it.
    pub clock: Clock,
    /// Told of every stop request (cluster mode); `None` on a single machine.
    pub on_stop: Option<StopHook>,
}

impl Options {
    /// Options with this stall window, on this machine, without alert rules.
    pub fn new(stall_after: Duration) -> Options {
        Options {
            stall_after,
            hostname: local_hostname(),
            rules: Vec::new(),
            slow_rank_factor: 1.5,
            clock: Clock::default(),
            on_stop: None,
        }
    }

    /// These options with this stop hook.
    pub fn with_stop_hook(self, on_stop: Option<StopHook>) -> Options {
        Options { on_stop, ..self }
    }

    /// These options with this `slow_rank_factor`.
    pub fn with_slow_rank_factor(self, slow_rank_factor: f64) -> Options {
        Options { slow_rank_factor, ..self }
    }

    /// These options with these alert rules.
    pub fn with_rules(self, rules: Vec<RuleConfig>) -> Options {
        Options { rules, ..self }
    }
}

/// The dispatcher's phase, watched by the workers and the periodic tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Deliver what is ready, then stop.
    Draining,
    /// Stop now; what is left stays in the outbox.
    Stopped,
}

/// How a delivery attempt ended, as the worker reports it to the writer.
#[derive(Debug)]
pub(crate) enum Outcome {
    Delivered(Receipt),
    /// A newer state of the run made this one pointless (`min_interval`).
    Superseded,
    /// Delivered in a digest with other held jobs (quiet hours, `digest`): done, with no receipt of its own.
    Digested,
    Retry(Box<JobRecord>),
    GaveUp {
        error: String,
        attempts: u32,
    },
}

/// A reply channel for an operation the writer answers.
pub(crate) type Reply<T> = Option<oneshot::Sender<Result<T, String>>>;

/// What the writer applies; it groups whatever is waiting into one outbox batch.
pub(crate) enum WriteOp {
    /// Events from a sender (`made: false`) or the run watch (`made: true`).
    Ingest { events: Vec<Event>, made: bool, reply: Reply<IngestReply> },
    /// A worker finished delivery attempts: all of one call (a batch) in one operation, so one commit.
    Finish { notifier: usize, jobs: Vec<Finished> },
    /// Someone asked a run to stop; the answer is whether the run is known.
    Stop { run: String, reason: String, reply: Reply<bool> },
    /// A change from the phone to a run (rules, mute); the answer is how many were added or removed, or
    /// `None` for an unknown run.
    Change { run: String, change: RunChange, reply: Reply<Option<usize>> },
    /// Runs to forget (compaction).
    Forget { runs: Vec<String> },
    /// Stop the writer after this group.
    Exit,
}

/// How one delivery attempt of job `job` (of `run`'s event `seq`) ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub job: u64,
    pub run: String,
    pub seq: u64,
    pub kind: EventKind,
    pub outcome: Outcome,
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

impl Stats {
    /// The facts, even after a panic while they were held (every update is a whole-field store).
    pub fn facts(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub health: Option<Health>,
    pub last_error: Option<String>,
    pub last_delivery_ms: Option<u64>,
    pub give_ups: VecDeque<GiveUp>,
    /// Until when the service asked the notifier to wait (429, `Retry-After`), ms since the Unix epoch.
    pub rate_limited_until_ms: Option<u64>,
    /// The latest delivery of each run, for the latest [`RECENT_DELIVERIES`] runs, oldest first.
    pub deliveries: VecDeque<RecentDelivery>,
}

/// Runs whose latest delivery a notifier's [`Facts`] keep.
pub(crate) const RECENT_DELIVERIES: usize = 256;

impl Facts {
    /// Note a delivery: it replaces the run's earlier one, and the oldest run is forgotten past the bound.
    pub fn delivered(&mut self, d: RecentDelivery) {
        self.last_delivery_ms = Some(d.at_ms);
        self.deliveries.retain(|old| old.run != d.run);
        self.deliveries.push_back(d);
        while self.deliveries.len() > RECENT_DELIVERIES {
            self.deliveries.pop_front();
        }
    }
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

/// Committed events the broadcast to the dashboard holds for a slow reader.
pub(crate) const EVENTS_BROADCAST: usize = 1024;

/// What the writer, the workers and the request handlers share.
pub(crate) struct Shared {
    pub outbox: Arc<dyn Outbox>,
    pub runs: Mutex<HashMap<String, RunState>>,
    pub slots: Vec<Arc<Slot>>,
    pub options: Options,
    pub started: Instant,
    pub started_ms: u64,
    /// Every event once it is committed, for the dashboard's stream (bounded: a slow reader misses some).
    pub events: broadcast::Sender<Event>,
}

impl Shared {
    pub fn runs(&self) -> MutexGuard<'_, HashMap<String, RunState>> {
        // A panic while the lock was held leaves the map usable: every update is a whole-value insert.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Jobs waiting in the outbox, all notifiers together.
    pub fn queued(&self) -> u64 {
        self.slots.iter().map(|s| s.stats.queued.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }
}

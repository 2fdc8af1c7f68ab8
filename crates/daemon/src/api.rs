//! The daemon's answers, as its HTTP API, `herald status` and trainers see them.
//!
//! [`IngestReply`] answers a post of events (with each run's [`RunControl`], the way stop requests reach a
//! trainer), [`Status`] is `GET /v1/status` with its rows ([`RunSnapshot`], [`NotifierView`], [`OutboxView`]),
//! and [`GiveUp`] is a delivery the daemon stopped trying. These are plain serde types: the dispatcher fills
//! them, `server.rs` sends them and `client.rs` reads them back. In cluster mode [`ClusterView`] is filled by
//! the function `herald-cluster` registers with [`set_cluster_view`]. This module imports nothing else of the
//! crate, so every other module may use it.

use std::collections::BTreeMap;

use herald_event::EpochEnded;
use herald_plugin::{Health, Receipt};
use serde::{Deserialize, Serialize};

/// What an ingest answers: how many events were accepted and each run's control state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestReply {
    /// Events accepted (stored, or known from an earlier post).
    pub accepted: usize,
    /// The control state of every run the post named.
    pub control: BTreeMap<String, RunControl>,
}

/// Instructions for a run, returned to its sender.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunControl {
    /// Someone asked the run to stop.
    pub stop: bool,
    /// Who asked and why, when someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A delivery the daemon stopped trying.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GiveUp {
    /// The notifier's name.
    pub notifier: String,
    /// The run of the event.
    pub run: String,
    /// The event's sequence number in its run.
    pub seq: u64,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the daemon gave up (ms since the Unix epoch).
    pub at_ms: u64,
}

/// A delivery a notifier made, as the worker saw it (kept in memory, the latest per run and notifier).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentDelivery {
    /// The notifier's name.
    pub notifier: String,
    /// The run of the event.
    pub run: String,
    /// The event's sequence number in its run.
    pub seq: u64,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was delivered (ms since the Unix epoch).
    pub at_ms: u64,
    /// What the service answered (a message id, for services that give one).
    pub receipt: Receipt,
}

/// The daemon's state as `GET /v1/status` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// Seconds since the dispatcher started.
    pub uptime_s: f64,
    /// The outbox.
    pub outbox: OutboxView,
    /// The 50 runs heard from most recently.
    pub runs: Vec<RunSnapshot>,
    /// The 50 distributed jobs heard from most recently (their ranks are runs in `runs` too).
    #[serde(default)]
    pub jobs: Vec<JobSnapshot>,
    /// Every notifier.
    pub notifiers: Vec<NotifierView>,
    /// In cluster mode: this node's role, the leader and the leader's status ([`ClusterView`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// The `cluster` section of [`Status`] on a node in cluster mode (`docs/cluster.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's role: `edge`, `deliver` or `both`.
    pub role: String,
    /// This node's id, `<host>/<pid>`.
    pub node: String,
    /// The leader's node id; none while no deliverer holds the lease.
    pub leader: Option<String>,
    /// Seconds since the leader last renewed its lease.
    pub lease_renewed_s_ago: Option<f64>,
    /// The leader's status as it last published it: every edge's runs and the notifiers' health.
    pub leader_status: Option<Box<Status>>,
    /// Seconds since the leader published `leader_status`.
    pub leader_status_age_s: Option<f64>,
    /// Why the cluster could not be read just now (NATS unreachable), if so.
    pub error: Option<String>,
}

/// What fills [`Status::cluster`]: set once by cluster mode (`herald-cluster`), read by every status.
type ClusterViewFn = dyn Fn() -> Option<ClusterView> + Send + Sync;

static CLUSTER_VIEW: std::sync::OnceLock<Box<ClusterViewFn>> = std::sync::OnceLock::new();

/// Make every [`Status`] of this process carry `view()` as its `cluster` section; only the first call counts.
pub fn set_cluster_view(view: Box<ClusterViewFn>) {
    let _ = CLUSTER_VIEW.set(view);
}

/// The `cluster` section for a [`Status`] made now: none outside cluster mode.
pub fn cluster_view() -> Option<ClusterView> {
    CLUSTER_VIEW.get().and_then(|view| view())
}

/// The outbox in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxView {
    /// Deliveries waiting.
    pub jobs: u64,
    /// Size of the outbox file.
    pub bytes: u64,
    /// The outbox file, when on disk.
    pub path: Option<String>,
}

/// One run's row in [`Status`]: where it stands now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSnapshot {
    /// The run id.
    pub run: String,
    /// The run's name, as it reported it (the run id when it never did).
    pub name: String,
    /// The host the run trains on.
    pub host: String,
    /// The training process's id on that host.
    pub pid: u32,
    /// The run's distributed rank; 0 for single-process runs.
    pub rank: u32,
    /// running, completed, stopped, failed, stalled, lost, or messages (a run id used only for messages).
    pub state: String,
    /// Epochs planned.
    pub n_epochs: u32,
    /// Epochs done (`epoch_ended` received).
    pub epochs_done: usize,
    /// The latest epoch's results.
    pub last_epoch: Option<EpochEnded>,
    /// The latest smoothed training loss.
    pub smooth_loss: Option<f64>,
    /// The best value of each metric so far.
    pub best: BTreeMap<String, f64>,
    /// Events received from the run.
    pub events: u64,
    /// Seconds since the run's latest event.
    pub silent_s: f64,
    /// The run's latest event (ms since the Unix epoch).
    pub last_event_ms: u64,
    /// Someone asked the run to stop.
    pub stop_requested: bool,
}

/// One distributed job's row in [`Status`]: its ranks seen as one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSnapshot {
    /// The job id its ranks share.
    pub job: String,
    /// The job's name: its anchor's (rank 0's) run name.
    pub name: String,
    /// The anchor's run id: the job's stream for notifiers.
    pub run: String,
    /// running, stalled (a rank named by `rank_stalled` has not reported since), completed, stopped or failed
    /// (the worst of its ranks' ends, once every rank ended).
    pub state: String,
    /// Ranks expected (the world size), when a rank said.
    pub world_size: Option<u32>,
    /// Ranks seen.
    pub ranks_seen: usize,
    /// Ranks done (ended, or their process gone).
    pub ranks_done: usize,
    /// The slowest rank of the latest epoch two ranks or more reported.
    pub slowest: Option<SlowestRank>,
    /// The job's health line, as notifiers show it under the job's table.
    pub health: String,
    /// Epochs planned (the anchor's).
    pub n_epochs: u32,
    /// Epochs the anchor ended.
    pub epochs_done: usize,
    /// The job's latest event (ms since the Unix epoch).
    pub last_event_ms: u64,
    /// Seconds since the job's latest event.
    pub silent_s: f64,
}

/// The slowest rank of a job's epoch, in [`JobSnapshot`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowestRank {
    /// The rank.
    pub rank: u32,
    /// Its host.
    pub host: String,
    /// Its epoch time above the ranks' median, percent.
    pub above_median_pct: f64,
}

/// One notifier's row in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifierView {
    /// The notifier's name in the configuration.
    pub name: String,
    /// Its type (`telegram`, `exec`, ...), `type` in JSON.
    #[serde(rename = "type")]
    pub kind: String,
    /// Deliveries waiting.
    pub queue: u64,
    /// Deliveries made since the start.
    pub delivered: u64,
    /// Attempts that failed since the start.
    pub failed_attempts: u64,
    /// Deliveries given up since the start.
    pub gave_up: u64,
    /// Epoch updates skipped because a newer one was sent instead (`min_interval`).
    pub superseded: u64,
    /// The latest health check.
    pub health: Option<Health>,
    /// The latest failure.
    pub last_error: Option<String>,
    /// The latest delivery (ms since the Unix epoch).
    pub last_delivery_ms: Option<u64>,
    /// The latest give-ups, oldest first.
    pub recent_give_ups: Vec<GiveUp>,
    /// Until when the notifier waits because its service said to slow down (HTTP 429 or `Retry-After`), ms
    /// since the Unix epoch; `None` when it never did since the start. In the past once the wait is over.
    #[serde(default)]
    pub rate_limited_until_ms: Option<u64>,
}

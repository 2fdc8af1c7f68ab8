//! One struct per event `type`: what a trainer reports (`run_started` .. `message`), what the daemon
//! makes of silence (`run_stalled`, `run_lost`), alerts, and the job events about ranks. Each is the flat
//! wire object less the envelope; see `docs/events.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kind::EventKind;
use super::metrics::Metrics;
use crate::number;

/// `run_started`: a run began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    /// Human name of the run.
    pub name: String,
    /// Host the run trains on.
    pub host: String,
    /// Process id of the training process on `host`.
    pub pid: u32,
    /// Distributed rank; 0 for single-process runs.
    #[serde(default)]
    pub rank: u32,
    /// The job this run is one rank of: a string shared by every rank of a distributed job (absent for a
    /// single-process run, which is a job of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Ranks in the job (absent: unknown, or a single process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<u32>,
    /// Epochs planned.
    pub n_epochs: u32,
    /// Training batches per epoch.
    pub batches_per_epoch: u64,
    /// Metric names, in the order of the table's columns.
    pub metric_names: Vec<String>,
    /// Hyperparameters (lr, bs, model, ...), any JSON values.
    #[serde(default)]
    pub hyper: BTreeMap<String, serde_json::Value>,
}

/// `epoch_started`: an epoch began (0-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStarted {
    /// Epoch, 0-based.
    pub epoch: u32,
}

/// `batch_ended`: a training batch ended. High frequency; senders may drop it under back-pressure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEnded {
    /// Epoch, 0-based.
    pub epoch: u32,
    /// Batch within the epoch, 0-based.
    pub batch: u64,
    /// Training batches in the epoch.
    pub n_batches: u64,
    /// The batch's loss; may be non-finite (written `"NaN"`, `"Infinity"`, `"-Infinity"`).
    #[serde(with = "number::loose")]
    pub loss: f64,
    /// fastai's smoothed loss after this batch; may be non-finite.
    #[serde(with = "number::loose")]
    pub smooth_loss: f64,
    /// Learning rate used by the batch.
    #[serde(with = "number::finite")]
    pub lr: f64,
}

/// `epoch_ended`: an epoch ended, with the numbers of its row in the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochEnded {
    /// Epoch, 0-based.
    pub epoch: u32,
    /// Epochs planned.
    pub n_epochs: u32,
    /// Smoothed training loss after the epoch's last batch; may be non-finite.
    #[serde(with = "number::loose")]
    pub train_loss: f64,
    /// Validation loss; absent when validation was skipped.
    #[serde(default, with = "number::loose_opt", skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    /// Metric values in `metric_names` order.
    #[serde(default)]
    pub metrics: Metrics,
    /// Wall time of the epoch, seconds.
    #[serde(with = "number::finite")]
    pub elapsed_s: f64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Training ran to its end.
    Completed,
    /// Something ended it early: a stop request (`/stop` from a phone) or a callback (early stopping).
    Stopped,
    /// It failed, as told by a client that has no error text (with one it sends `run_failed`).
    Failed,
}

impl RunStatus {
    /// The wire name: `completed`, `stopped` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed => "failed",
        }
    }
}

/// The best value a run reached for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// The metric's name (`accuracy`), or `valid_loss`.
    pub name: String,
    /// Its best value over the run.
    #[serde(with = "number::finite")]
    pub value: f64,
    /// The epoch (0-based) that reached it.
    pub epoch: u32,
}

/// `run_finished`: the run ended without an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    /// How it ended.
    pub status: RunStatus,
    /// Why it ended, in words.
    pub reason: String,
    /// Wall time of the whole run, seconds.
    #[serde(with = "number::finite")]
    pub duration_s: f64,
    /// The best value of the first metric (or `valid_loss`), when the client tracks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Best>,
}

/// `run_failed`: the run ended with an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFailed {
    /// The error, one line (`shape mismatch: ...`).
    pub error: String,
    /// The traceback or backtrace, when the client has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// Severity of a [`Message`] or an [`Alert`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// For information (the default of a `message`).
    #[default]
    Info,
    /// Worth a look (the default of an `alert`).
    Warning,
    /// Something broke.
    Error,
}

/// `message`: free text from a run or a script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// A short title (`nightly backup`).
    pub title: String,
    /// The body, plain text.
    pub text: String,
    /// Severity; `info` when absent.
    #[serde(default)]
    pub level: Level,
}

/// `heartbeat`: the run is alive; no payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {}

/// `run_stalled` (made by the daemon): no event from the run for `silent_s` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStalled {
    /// Seconds since the run's latest event.
    #[serde(with = "number::finite")]
    pub silent_s: f64,
    /// The threshold that was crossed, seconds.
    #[serde(with = "number::finite")]
    pub stall_after_s: f64,
}

/// `run_lost` (made by the daemon): the run's process is gone without reporting an end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLost {
    /// The process id that is gone (on the run's host).
    pub pid: u32,
    /// How the daemon knows, and the likely causes, in words.
    pub reason: String,
}

/// `alert`: something needs attention. The daemon makes one when a configured rule fires (then `rule` names
/// it); a client may send its own, like `wandb.alert`. Notifiers render it prominently, never as a silent edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule that fired; absent for an alert a client sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A short title (`loss is NaN`).
    pub title: String,
    /// The body, plain text.
    pub text: String,
    /// `warning` when absent.
    #[serde(default = "warning")]
    pub level: Level,
    /// The epoch (0-based) the alert is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
}

/// Where a rank of a job was last heard from (in [`RankStalled`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankSeen {
    /// The rank, 0-based.
    pub rank: u32,
    /// The host the rank runs on.
    pub host: String,
    /// Seconds since the rank's latest event.
    #[serde(with = "number::finite")]
    pub silent_s: f64,
    /// The type of the rank's latest event.
    pub last: EventKind,
    /// The epoch (0-based) the rank was in, if it had begun one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
}

/// `rank_stalled` (made by the daemon): some ranks of a job fell silent for the stall window while others
/// report, or every rank did (`all`: the job is hung). One event per job, naming every silent rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankStalled {
    /// The job's id.
    pub job: String,
    /// The silent ranks, lowest first, with where and when each was last heard from.
    pub ranks: Vec<RankSeen>,
    /// Every rank of the job is silent: the job is hung.
    #[serde(default)]
    pub all: bool,
    /// The threshold that was crossed, seconds.
    #[serde(with = "number::finite")]
    pub stall_after_s: f64,
}

/// `rank_lost` (made by the daemon): a rank's process is gone without reporting an end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankLost {
    /// The job's id.
    pub job: String,
    /// The lost rank.
    pub rank: u32,
    /// The host it ran on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// How the daemon knows, and the likely causes, in words.
    pub reason: String,
}

/// `rank_failed` (made by the daemon): a rank sent `run_failed`; its error and traceback, and where it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankFailed {
    /// The job's id.
    pub job: String,
    /// The failed rank.
    pub rank: u32,
    /// The host it ran on.
    pub host: String,
    /// The rank's error, one line.
    pub error: String,
    /// The rank's traceback, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// `rank_slow` (made by the daemon): a rank's epoch took more than `factor` times the median of the job's
/// ranks, two epochs running. Once per rank per job, again only after it recovered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankSlow {
    /// The job's id.
    pub job: String,
    /// The slow rank.
    pub rank: u32,
    /// The host it runs on.
    pub host: String,
    /// The epoch (0-based) of the second slow epoch.
    pub epoch: u32,
    /// The rank's time for that epoch, seconds.
    #[serde(with = "number::finite")]
    pub elapsed_s: f64,
    /// The median over the job's ranks for that epoch, seconds.
    #[serde(with = "number::finite")]
    pub median_s: f64,
    /// The threshold (`slow_rank_factor`) that was crossed.
    #[serde(with = "number::finite")]
    pub factor: f64,
}

/// `ranks_missing` (made by the daemon): fewer than `world_size` ranks started within `after_s` of the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RanksMissing {
    /// The job's id.
    pub job: String,
    /// The ranks the job announced.
    pub world_size: u32,
    /// The ranks that started, lowest first.
    pub seen: Vec<u32>,
    /// The ranks that did not, lowest first.
    pub missing: Vec<u32>,
    /// Seconds since the job's first rank started.
    #[serde(with = "number::finite")]
    pub after_s: f64,
}

fn warning() -> Level {
    Level::Warning
}

impl Level {
    /// The wire name: `info`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

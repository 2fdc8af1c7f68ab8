//! What the host (the daemon) offers notifiers that take commands from people.
//!
//! A notifier whose [`crate::Capabilities::commands`] is set gets a [`Host`] through
//! [`crate::Notifier::listen`]: a chat notifier polls its service for messages such as `/runs` or
//! `/stop 2` and answers them with what the host knows. The host decides what a stop request means (it sets
//! the run's stop flag, which reaches the trainer in the answer to its next post). Rules and mutes set from
//! the phone (`/watch`, `/unwatch`, `/rules`, `/mute`, `/unmute`) go through the same interface; a host that
//! does not keep them (an out-of-process plugin's relay) answers them with [`HostError::Other`]. This module
//! defines the interface only; the daemon implements it.

use std::time::Duration;

use herald_event::EpochEnded;
use serde::{Deserialize, Serialize};

use crate::notifier::{Image, RunContext};

/// One run as a list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// A short number for typing on a phone (`/stop 2`), stable while the host runs.
    pub number: u32,
    /// The run id.
    pub run: String,
    /// The run's name.
    pub name: String,
    /// `active`, `stalled`, `lost`, `completed`, `stopped` or `failed`.
    pub state: String,
    /// The last finished epoch, if any.
    pub last_epoch: Option<EpochEnded>,
    /// Whether a stop has been requested and not yet answered by the run.
    pub stop_requested: bool,
}

/// One run in full: its context (the results table so far) and its current loss curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run as the list shows it (number, name, state, last epoch).
    pub summary: RunSummary,
    /// What notifiers know of the run, including the results table so far.
    pub context: RunContext,
    /// The loss curve drawn from the run's history, when there is any history to draw.
    pub plot: Option<Image>,
}

/// Why the host refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing matches the given run id, name or number (the text as given).
    #[error("no run matches `{0}`: send /runs for the list")]
    NoSuchRun(String),
    /// The run (its name) has already ended, so there is nothing left to stop.
    #[error("run `{0}` has already ended")]
    Ended(String),
    /// Anything else, with the message to show the user.
    #[error("{0}")]
    Other(String),
}

/// A threshold rule to add from the phone for one run (`/watch <run> <metric> <op> <value>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// `train_loss`, `valid_loss` or a metric name.
    pub metric: String,
    /// One of [`OPS`].
    pub op: String,
    /// The value the metric is compared with (finite).
    pub value: f64,
}

/// The comparison operators a threshold rule takes, as written.
pub const OPS: [&str; 4] = [">", ">=", "<", "<="];

/// A run a rule has fired for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiredFor {
    /// The run id.
    pub run: String,
    /// The run's name.
    pub name: String,
    /// How many times the rule fired for the run.
    pub times: u32,
}

/// One alert rule as `/rules`, `GET /v1/rules` and `herald rules` list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleEntry {
    /// The rule's name (a phone rule's is `watch <metric> <op> <value>`).
    pub name: String,
    /// `nan`, `threshold`, `plateau`, `diverging`, `slow_epoch` or `all_finished`.
    pub kind: String,
    /// What the rule looks at, such as `accuracy >= 0.98` (empty for kinds without a metric).
    pub condition: String,
    /// The runs it applies to: a glob on run names (`*`: every run), or the run id of a phone rule.
    pub runs: String,
    /// `info`, `warning` or `error`.
    pub level: String,
    /// Added from the phone: by whom (`@user` on Telegram); `None` for a configured rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
    /// Added from the phone: when, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_ms: Option<u64>,
    /// The runs it has fired for.
    pub fired_for: Vec<FiredFor>,
}

/// A run whose routine updates are muted (`/mute`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MuteEntry {
    /// The run id.
    pub run: String,
    /// The run's name.
    pub name: String,
    /// When the mute ends, milliseconds since the Unix epoch (`None`: until `/unmute`).
    pub until_ms: Option<u64>,
    /// Who muted it.
    pub by: String,
}

/// Every rule the host evaluates, and the muted runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleList {
    /// The `[[rule]]`s of the configuration, in its order.
    pub configured: Vec<RuleEntry>,
    /// The rules added from the phone, oldest first.
    pub phone: Vec<RuleEntry>,
    /// The runs muted now.
    pub mutes: Vec<MuteEntry>,
}

/// The answer to a rule change from the phone: the run it concerns and what the host did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleChange {
    /// The run as the list shows it.
    pub summary: RunSummary,
    /// How many rules or mutes were added or removed.
    pub count: usize,
    /// A warning to show with the answer (a metric the run has not reported so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn not_kept(what: &str) -> HostError {
    HostError::Other(format!("this host does not keep {what}"))
}

/// The daemon's side of user commands.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Active runs first, then recently ended ones.
    async fn runs(&self) -> Vec<RunSummary>;

    /// A run by id, name or short number.
    async fn run(&self, key: &str) -> Result<RunDetail, HostError>;

    /// Ask a run (by id, name or short number) to stop; answers the run that will be stopped.
    async fn request_stop(&self, key: &str, reason: &str) -> Result<RunSummary, HostError>;

    /// Add a one-shot threshold rule for a run (by id, name or short number), kept across restarts. `by`
    /// names who asked.
    async fn watch(&self, key: &str, rule: WatchRequest, by: &str) -> Result<RuleChange, HostError> {
        let _ = (key, rule, by);
        Err(not_kept("rules"))
    }

    /// Remove a run's phone rules: all of them, or those on `metric`; `count` says how many went.
    async fn unwatch(&self, key: &str, metric: Option<&str>) -> Result<RuleChange, HostError> {
        let _ = (key, metric);
        Err(not_kept("rules"))
    }

    /// The configured rules, the phone rules and the muted runs.
    async fn rules(&self) -> RuleList {
        RuleList::default()
    }

    /// Mute a run's routine updates (epochs, batches, live edits) for `duration` (`None`: until unmuted);
    /// its end, failures, stalls, losses and alerts still go out.
    async fn mute(&self, key: &str, duration: Option<Duration>, by: &str) -> Result<RuleChange, HostError> {
        let _ = (key, duration, by);
        Err(not_kept("mutes"))
    }

    /// End a run's mute; `count` is 0 when it was not muted.
    async fn unmute(&self, key: &str) -> Result<RuleChange, HostError> {
        let _ = key;
        Err(not_kept("mutes"))
    }
}

//! [`EventKind`]: an event's `type` without its payload, with its wire name, the list of every type, and
//! parsing it back from the name.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::payloads::{
    Alert, BatchEnded, EpochEnded, EpochStarted, Heartbeat, Message, RankFailed, RankLost, RankSlow,
    RankStalled, RanksMissing, RunFailed, RunFinished, RunLost, RunStalled, RunStarted,
};

/// The `type` of an event, without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `run_started` ([`RunStarted`]).
    RunStarted,
    /// `epoch_started` ([`EpochStarted`]).
    EpochStarted,
    /// `batch_ended` ([`BatchEnded`]).
    BatchEnded,
    /// `epoch_ended` ([`EpochEnded`]).
    EpochEnded,
    /// `run_finished` ([`RunFinished`]).
    RunFinished,
    /// `run_failed` ([`RunFailed`]).
    RunFailed,
    /// `message` ([`Message`]).
    Message,
    /// `heartbeat` ([`Heartbeat`]).
    Heartbeat,
    /// `run_stalled` ([`RunStalled`]).
    RunStalled,
    /// `run_lost` ([`RunLost`]).
    RunLost,
    /// `alert` ([`Alert`]).
    Alert,
    /// `rank_stalled` ([`RankStalled`]).
    RankStalled,
    /// `rank_lost` ([`RankLost`]).
    RankLost,
    /// `rank_failed` ([`RankFailed`]).
    RankFailed,
    /// `rank_slow` ([`RankSlow`]).
    RankSlow,
    /// `ranks_missing` ([`RanksMissing`]).
    RanksMissing,
}

impl EventKind {
    /// Every type, in the order of the protocol document.
    pub const ALL: [EventKind; 16] = [
        EventKind::RunStarted,
        EventKind::EpochStarted,
        EventKind::BatchEnded,
        EventKind::EpochEnded,
        EventKind::RunFinished,
        EventKind::RunFailed,
        EventKind::Message,
        EventKind::Heartbeat,
        EventKind::RunStalled,
        EventKind::RunLost,
        EventKind::Alert,
        EventKind::RankStalled,
        EventKind::RankLost,
        EventKind::RankFailed,
        EventKind::RankSlow,
        EventKind::RanksMissing,
    ];

    /// The wire name, as in the `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunStarted => "run_started",
            EventKind::EpochStarted => "epoch_started",
            EventKind::BatchEnded => "batch_ended",
            EventKind::EpochEnded => "epoch_ended",
            EventKind::RunFinished => "run_finished",
            EventKind::RunFailed => "run_failed",
            EventKind::Message => "message",
            EventKind::Heartbeat => "heartbeat",
            EventKind::RunStalled => "run_stalled",
            EventKind::RunLost => "run_lost",
            EventKind::Alert => "alert",
            EventKind::RankStalled => "rank_stalled",
            EventKind::RankLost => "rank_lost",
            EventKind::RankFailed => "rank_failed",
            EventKind::RankSlow => "rank_slow",
            EventKind::RanksMissing => "ranks_missing",
        }
    }

    /// The type named `name` on the wire.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the event marks the run's life (start, epochs, end); these are never dropped by a sender.
    /// `batch_ended` and `heartbeat` are high-frequency and may be dropped under back-pressure.
    pub fn is_lifecycle(self) -> bool {
        !matches!(self, EventKind::BatchEnded | EventKind::Heartbeat)
    }

    /// Whether the event ends the run.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::RunFinished | EventKind::RunFailed)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown event type `{s}`; expected one of {}", names.join(", "))
        })
    }
}

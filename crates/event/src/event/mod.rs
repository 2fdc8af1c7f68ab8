//! The event types: the envelope ([`Event`]) and one payload struct per `type`.
//!
//! This module holds the envelope and the [`Payload`] enum that tags the payload by `type`; the payload
//! structs are in `payloads.rs`, [`EventKind`] (the `type` alone) in `kind.rs`, and [`Metrics`] (an
//! ordered name-to-value map) in `metrics.rs`.

mod kind;
mod metrics;
mod payloads;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::kind::EventKind;
pub use self::metrics::Metrics;
pub use self::payloads::{
    Alert, BatchEnded, Best, EpochEnded, EpochStarted, Heartbeat, Level, Message, RankFailed, RankLost,
    RankSeen, RankSlow, RankStalled, RanksMissing, RunFailed, RunFinished, RunLost, RunStalled, RunStarted,
    RunStatus,
};

/// The protocol version this crate writes, and the newest it reads.
pub const PROTOCOL_VERSION: u32 = 1;

/// One event: the envelope and its payload, flat on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u32,
    /// The run id, unique per run.
    pub run: String,
    /// Per-run sequence number, from 0, without gaps for what a sender sends.
    pub seq: u64,
    /// When the event happened, RFC 3339 in UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The type-specific fields; `type` names the variant.
    #[serde(flatten)]
    pub payload: Payload,
}

impl Event {
    /// An event of the current protocol version stamped with the current time.
    pub fn now(run: impl Into<String>, seq: u64, payload: impl Into<Payload>) -> Event {
        Event {
            v: PROTOCOL_VERSION,
            run: run.into(),
            seq,
            time: OffsetDateTime::now_utc(),
            payload: payload.into(),
        }
    }

    /// The payload's type.
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }
}

/// The payload of an event, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    /// `run_started`: a run began (who, where, what it will train).
    RunStarted(RunStarted),
    /// `epoch_started`: an epoch began.
    EpochStarted(EpochStarted),
    /// `batch_ended`: a training batch ended (high frequency, may be dropped).
    BatchEnded(BatchEnded),
    /// `epoch_ended`: an epoch ended, with its row of the results table.
    EpochEnded(EpochEnded),
    /// `run_finished`: the run ended without an error.
    RunFinished(RunFinished),
    /// `run_failed`: the run ended with an error.
    RunFailed(RunFailed),
    /// `message`: free text from a run or a script.
    Message(Message),
    /// `heartbeat`: the run is alive.
    Heartbeat(Heartbeat),
    /// `run_stalled`: (daemon-made) the run has been silent past the stall threshold.
    RunStalled(RunStalled),
    /// `run_lost`: (daemon-made) the run's process is gone without reporting an end.
    RunLost(RunLost),
    /// `alert`: something needs attention (a rule fired, or a client said so).
    Alert(Alert),
    /// `rank_stalled`: (daemon-made) ranks of a job fell silent.
    RankStalled(RankStalled),
    /// `rank_lost`: (daemon-made) a rank's process is gone without reporting an end.
    RankLost(RankLost),
    /// `rank_failed`: (daemon-made) a rank other than 0 sent `run_failed`.
    RankFailed(RankFailed),
    /// `rank_slow`: (daemon-made) a rank's epochs are much slower than the job's median.
    RankSlow(RankSlow),
    /// `ranks_missing`: (daemon-made) fewer ranks started than the job's world size.
    RanksMissing(RanksMissing),
}

impl Payload {
    /// The payload's type.
    pub fn kind(&self) -> EventKind {
        match self {
            Payload::RunStarted(_) => EventKind::RunStarted,
            Payload::EpochStarted(_) => EventKind::EpochStarted,
            Payload::BatchEnded(_) => EventKind::BatchEnded,
            Payload::EpochEnded(_) => EventKind::EpochEnded,
            Payload::RunFinished(_) => EventKind::RunFinished,
            Payload::RunFailed(_) => EventKind::RunFailed,
            Payload::Message(_) => EventKind::Message,
            Payload::Heartbeat(_) => EventKind::Heartbeat,
            Payload::RunStalled(_) => EventKind::RunStalled,
            Payload::RunLost(_) => EventKind::RunLost,
            Payload::Alert(_) => EventKind::Alert,
            Payload::RankStalled(_) => EventKind::RankStalled,
            Payload::RankLost(_) => EventKind::RankLost,
            Payload::RankFailed(_) => EventKind::RankFailed,
            Payload::RankSlow(_) => EventKind::RankSlow,
            Payload::RanksMissing(_) => EventKind::RanksMissing,
        }
    }
}

macro_rules! payload_from {
    ($($ty:ident),*) => {$(
        impl From<$ty> for Payload {
            fn from(p: $ty) -> Payload {
                Payload::$ty(p)
            }
        }
    )*};
}
payload_from!(
    RunStarted,
    EpochStarted,
    BatchEnded,
    EpochEnded,
    RunFinished,
    RunFailed,
    Message,
    Heartbeat,
    RunStalled,
    RunLost,
    Alert,
    RankStalled,
    RankLost,
    RankFailed,
    RankSlow,
    RanksMissing
);

impl Payload {
    /// The job a daemon-made job event is about (`rank_*`, `ranks_missing`).
    pub fn job(&self) -> Option<&str> {
        match self {
            Payload::RankStalled(p) => Some(&p.job),
            Payload::RankLost(p) => Some(&p.job),
            Payload::RankFailed(p) => Some(&p.job),
            Payload::RankSlow(p) => Some(&p.job),
            Payload::RanksMissing(p) => Some(&p.job),
            _ => None,
        }
    }
}

//! The vocabulary every Herald component speaks.
//!
//! A training process reports what it does as a stream of [`Event`]s: one flat JSON object per event, with
//! the envelope fields `v`, `run`, `seq`, `time`, `type` and the payload fields of that type side by side.
//! The trainer's callback (`herald-callback`), the daemon, the Python clients and every notifier agree on
//! this crate's types, its decoder ([`decode_event`], [`decode_batch`]) and its formatting ([`mod@format`]):
//! the fastai results table and the one-line summary.
//!
//! This crate does no I/O and has no async code: it is plain data, serde and text. `docs/events.md` documents
//! the wire format with an example of each type, and a test parses every example there.

mod decode;
mod event;
pub mod format;
mod number;

pub use decode::{DecodeError, decode_batch, decode_event, encode_event};
pub use event::{
    Alert, BatchEnded, Best, EpochEnded, EpochStarted, Event, EventKind, Heartbeat, Level, Message, Metrics,
    PROTOCOL_VERSION, Payload, RankFailed, RankLost, RankSeen, RankSlow, RankStalled, RanksMissing,
    RunFailed, RunFinished, RunLost, RunStalled, RunStarted, RunStatus,
};

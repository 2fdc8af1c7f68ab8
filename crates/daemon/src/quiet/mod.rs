//! Quiet hours and digests: which deliveries of a notifier wait, until when, and the one notification that
//! carries them when they go.
//!
//! A notifier with `quiet_hours` (in its `timezone`) or `digest` does not get each notification at once:
//! the writer gives a job that may wait a release time ([`hold`], from [`schedule::Quiet::release_ms`]) and
//! marks it `digest` in the outbox, so held deliveries survive a restart like any job. The notifier's
//! worker keeps held jobs out of its run queues, wakes at the earliest release time, and delivers every
//! held job that is due as one digest ([`digest::notification`]): a `message` event the daemon makes,
//! which every notifier renders as it renders any message. What is urgent ([`urgent`]: a failure, a lost
//! run or rank, an `error` alert) is never held.
//!
//! No I/O: the instant is always passed in, read from the dispatcher's [`Clock`] (which tests set); this
//! module imports nothing of the crate.

pub mod clock;
pub mod digest;
pub mod schedule;

use herald_event::{Event, Level, Payload};

pub use clock::Clock;
pub use schedule::{Quiet, Window};

/// Whether an event goes at once even in quiet hours: `run_failed`, `run_lost`, `rank_failed`,
/// `rank_lost`, and an `alert` of level `error`.
pub fn urgent(event: &Event) -> bool {
    match &event.payload {
        Payload::RunFailed(_) | Payload::RunLost(_) | Payload::RankFailed(_) | Payload::RankLost(_) => true,
        Payload::Alert(a) => a.level == Level::Error,
        _ => false,
    }
}

/// When a delivery of `event` made at `now_ms` goes, for a notifier with `quiet`: None for at once (urgent,
/// or neither quiet nor in digest mode), else the release time (ms since the Unix epoch).
pub fn hold(quiet: Option<&Quiet>, event: &Event, now_ms: u64) -> Option<u64> {
    let quiet = quiet?;
    if urgent(event) {
        return None;
    }
    quiet.release_ms(now_ms)
}

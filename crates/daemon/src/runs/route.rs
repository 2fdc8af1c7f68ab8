//! Which of a run's events go to which notifier: [`accepts`] applies a notifier's routing at ingest
//! (event types, ranks, `every_n_epochs`, `only_on_improvement`), [`muted`] holds back a muted run's routine
//! updates from every notifier.

use herald_event::{Event, EventKind, Payload};

use super::{MADE_SEQ_BASE, RunState, epoch_values, improves};
use crate::config::Routing;
use crate::jobs::Member;

/// Whether a notifier with `routing` gets `event`, given what was known of the run before the event.
pub fn accepts(routing: &Routing, run: &RunState, event: &Event) -> bool {
    let kind = event.kind();
    if !routing.events.contains(&kind) {
        return false;
    }
    if routing.all_ranks {
        let job_made = run.job.is_some() && event.seq >= MADE_SEQ_BASE;
        return !job_made || kind == EventKind::RankLost;
    }
    // A rank of a job: the job's stream is rank 0's events and the daemon's job events (stored on rank 0's
    // run); the other ranks speak through job events, and rank 0's own end waits for the job's.
    let job_rank = match &event.payload {
        Payload::RunStarted(s) => Member::from_started(s, 0).map(|m| m.rank),
        _ => run.job.as_ref().map(|m| m.rank),
    };
    if let Some(rank) = job_rank
        && event.seq < MADE_SEQ_BASE
        && (rank != 0 || kind == EventKind::RunFinished)
    {
        return false;
    }
    // Only rank 0 speaks for a distributed run; failures from any rank go out.
    let rank = match &event.payload {
        Payload::RunStarted(s) => s.rank,
        _ => run.context.rank,
    };
    if rank != 0
        && matches!(
            kind,
            EventKind::RunStarted
                | EventKind::EpochStarted
                | EventKind::EpochEnded
                | EventKind::BatchEnded
                | EventKind::RunFinished
                | EventKind::Heartbeat
        )
    {
        return false;
    }
    match &event.payload {
        Payload::EpochEnded(e) => {
            if !nth_epoch(routing.every_n_epochs, e.epoch, e.n_epochs) {
                return false;
            }
            if let Some(metric) = &routing.only_on_improvement {
                let value = epoch_values(e).into_iter().find(|(n, _)| n == metric).map(|(_, v)| v);
                return match value {
                    Some(v) => improves(metric, v, run.best.get(metric).copied()),
                    None => false,
                };
            }
            true
        }
        Payload::EpochStarted(e) => nth_epoch(routing.every_n_epochs, e.epoch, run.context.n_epochs),
        _ => true,
    }
}

/// Whether `event` is held back because its run is muted at `now_ms`: routine updates only (epochs, batches,
/// heartbeats), never a start, an end, a failure, a stall, a loss, a message or an alert.
pub fn muted(run: &RunState, event: &Event, now_ms: u64) -> bool {
    run.mute.as_ref().is_some_and(|m| m.active(now_ms))
        && matches!(
            event.kind(),
            EventKind::EpochStarted | EventKind::EpochEnded | EventKind::BatchEnded | EventKind::Heartbeat
        )
}

/// `every_n_epochs`: epochs n, 2n, ... (1-based) and always the last one.
fn nth_epoch(every: u32, epoch: u32, n_epochs: u32) -> bool {
    let every = every.max(1);
    let last = n_epochs > 0 && epoch.saturating_add(1) >= n_epochs;
    last || epoch.saturating_add(1).is_multiple_of(every)
}

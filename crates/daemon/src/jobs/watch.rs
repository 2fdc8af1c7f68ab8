//! The job watch's decisions: which job events one look at a [`JobView`] calls for. Pure: the caller (the
//! run watch in `periodic.rs`) builds the views, stores what this decides on the anchor's run, and the
//! anchor's [`Said`](super::Said) keeps each event from being made twice.

use std::time::Duration;

use herald_event::{
    EventKind, Payload, RankFailed, RankLost, RankSeen, RankSlow, RankStalled, RanksMissing, RunFinished,
};

use super::view::{JobView, RankFacts};

/// What the watch needs besides the view.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// The stall window (`stall_after`); a job whose epochs are long gets three times its longest epoch.
    pub stall_after: Duration,
    /// `slow_rank_factor`: an epoch slower than this times the median is slow.
    pub slow_rank_factor: f64,
    /// The time of this check, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// When the daemon started: silence while it was down does not count.
    pub started_ms: u64,
}

const LOST_REASON: &str =
    "the process exited without reporting: killed, out of memory, or the machine went down?";

/// The job events `view` calls for now, for its anchor's run.
pub fn decide(view: &JobView<'_>, w: &Watch) -> Vec<Payload> {
    let Some(anchor) = view.anchor() else { return Vec::new() };
    let said = &anchor.member.said;
    let mut out = Vec::new();
    if !said.finished
        && let Some(n) = view.world_size
        && !said.missing
        && view.ranks.len() < n as usize
        && w.now_ms.saturating_sub(view.first_ms) > w.stall_after.as_millis() as u64
    {
        out.push(
            RanksMissing {
                job: view.job.clone(),
                world_size: n,
                seen: view.ranks.keys().copied().collect(),
                missing: (0..n).filter(|r| !view.ranks.contains_key(r)).collect(),
                after_s: w.now_ms.saturating_sub(view.first_ms) as f64 / 1000.0,
            }
            .into(),
        );
    }
    // A rank's failure or loss is said even when the job's end came first.
    out.extend(failures(view));
    if !said.finished {
        out.extend(stalled(view, w).map(Payload::from));
        out.extend(slow(view, w).into_iter().map(Payload::from));
    }
    out.extend(job_end(view, w.now_ms).map(Payload::from));
    out
}

/// `rank_lost` for each rank whose process is gone and `rank_failed` for each rank other than 0 that failed
/// (rank 0's failure is its stream's own `run_failed`), those not said yet. The writer makes these as the
/// events come in, the watch when a process vanished.
pub fn failures(view: &JobView<'_>) -> Vec<Payload> {
    let Some(anchor) = view.anchor() else { return Vec::new() };
    let said = &anchor.member.said;
    let mut out = Vec::new();
    for (rank, f) in &view.ranks {
        // A rank its edge said lost (cluster mode) was said already, by the edge.
        if f.gone && f.ended.is_none() && !said.lost.contains(rank) && !f.member.gone_elsewhere {
            let reason = LOST_REASON.to_owned();
            let job = view.job.clone();
            out.push(RankLost { job, rank: *rank, host: f.host.to_owned(), pid: f.pid, reason }.into());
        }
        if *rank != 0
            && !said.failed.contains(rank)
            && let Some((error, traceback)) = &f.member.failure
        {
            out.push(
                RankFailed {
                    job: view.job.clone(),
                    rank: *rank,
                    host: f.host.to_owned(),
                    error: error.clone(),
                    traceback: traceback.clone(),
                }
                .into(),
            );
        }
    }
    out
}

/// How long a rank may go without progress: `stall_after`, or three times the job's longest epoch.
pub fn stall_threshold(view: &JobView<'_>, stall_after: Duration) -> Duration {
    let longest = view
        .ranks
        .values()
        .flat_map(|r| r.member.epoch_s.iter().map(|(_, s)| *s))
        .filter(|s| s.is_finite())
        .fold(0.0_f64, f64::max);
    stall_after.max(Duration::from_secs_f64((3.0 * longest).min(1e9)))
}

/// One `rank_stalled` naming every silent rank, when a rank fell silent that was not named since it last
/// reported.
fn stalled(view: &JobView<'_>, w: &Watch) -> Option<RankStalled> {
    let threshold = stall_threshold(view, w.stall_after);
    let said = &view.anchor()?.member.said;
    let silent: Vec<(u32, &RankFacts<'_>, u64)> = view
        .ranks
        .iter()
        .filter(|(_, f)| !f.done())
        .map(|(r, f)| (*r, f, w.now_ms.saturating_sub(f.member.progress_ms.max(w.started_ms))))
        .filter(|(_, _, silent)| *silent > threshold.as_millis() as u64)
        .collect();
    let news = silent.iter().any(|(r, f, _)| said.stalled.get(r).is_none_or(|at| f.member.progress_ms > *at));
    if !news {
        return None;
    }
    let all = silent.len() == view.ranks.len();
    let ranks = silent
        .iter()
        .map(|(rank, f, ms)| RankSeen {
            rank: *rank,
            host: f.host.to_owned(),
            silent_s: *ms as f64 / 1000.0,
            last: f.member.last.unwrap_or(EventKind::RunStarted),
            epoch: match f.member.last {
                Some(EventKind::RunStarted) | None => None,
                _ => Some(f.member.epoch.map_or(0, |e| e.saturating_add(1))),
            },
        })
        .collect();
    Some(RankStalled { job: view.job.clone(), ranks, all, stall_after_s: threshold.as_secs_f64() })
}

/// Whether `rank`'s `epoch` was slow: above the factor times the median of at least three ranks... or two.
fn slow_at(view: &JobView<'_>, f: &RankFacts<'_>, epoch: u32, factor: f64) -> Option<(f64, f64)> {
    let time = f.member.epoch_time(epoch)?;
    let (median, n) = view.epoch_median(epoch)?;
    (n >= 2 && median > 0.0 && time > factor * median).then_some((time, median))
}

/// `rank_slow` for each rank slow two epochs running, once until it recovers.
fn slow(view: &JobView<'_>, w: &Watch) -> Vec<RankSlow> {
    let Some(anchor) = view.anchor() else { return Vec::new() };
    let said = &anchor.member.said;
    let mut out = Vec::new();
    for (rank, f) in &view.ranks {
        let Some(epoch) = f.member.epoch.filter(|e| *e >= 1) else { continue };
        let Some((time, median)) = slow_at(view, f, epoch, w.slow_rank_factor) else { continue };
        if slow_at(view, f, epoch - 1, w.slow_rank_factor).is_none() {
            continue;
        }
        // Named before, and slow every epoch since: still the same episode.
        if let Some(named) = said.slow.get(rank)
            && (*named..=epoch).all(|e| slow_at(view, f, e, w.slow_rank_factor).is_some())
        {
            continue;
        }
        out.push(RankSlow {
            job: view.job.clone(),
            rank: *rank,
            host: f.host.to_owned(),
            epoch,
            elapsed_s: time,
            median_s: median,
            factor: w.slow_rank_factor,
        });
    }
    out
}

/// The job's end, once every rank is done and it was not made yet: its status is the worst of theirs. The
/// writer makes it as the last rank's end comes in; the watch, when the last rank vanished instead.
pub fn job_end(view: &JobView<'_>, now_ms: u64) -> Option<RunFinished> {
    if !view.finished() || view.anchor().is_none_or(|a| a.member.said.finished) {
        return None;
    }
    let status = view.status();
    let ended = view.ranks.values().map(|r| r.last_ms).max().unwrap_or(now_ms);
    let count = |s: herald_event::RunStatus| view.ranks.values().filter(|r| r.ended == Some(s)).count();
    let gone = view.ranks.values().filter(|r| r.gone && r.ended.is_none()).count();
    let mut said = vec![];
    for (n, word) in [
        (count(herald_event::RunStatus::Completed), "completed"),
        (count(herald_event::RunStatus::Stopped), "stopped"),
        (count(herald_event::RunStatus::Failed), "failed"),
        (gone, "lost"),
    ] {
        if n > 0 {
            said.push(format!("{n} {word}"));
        }
    }
    Some(RunFinished {
        status,
        reason: format!("all {} ranks of job {} ended: {}", view.ranks.len(), view.job, said.join(", ")),
        duration_s: ended.saturating_sub(view.first_ms) as f64 / 1000.0,
        best: None,
    })
}

//! The dispatcher's periodic tasks, each a function run by one helper, [`every`], until the dispatcher
//! stops running: the run watch ([`watch_runs`]: `run_stalled` for silent runs, `run_lost` for runs whose
//! process is gone), notifier health checks ([`check_health`]) and compaction ([`forget_old_runs`]).
//!
//! They read the shared run table and submit what they decide through the [`Handle`] like any other sender,
//! so the writer stays the only code that writes.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald_event::{Event, RunLost, RunStalled};
use herald_plugin::Health;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handle::Handle;
use crate::jobs;
use crate::shared::{Phase, Shared, now_ms};

/// How often notifiers that failed since their last health check are checked again.
pub(crate) const HEALTH_RECHECK: Duration = Duration::from_secs(15);
/// Runs that ended this long ago are forgotten (their history and events removed).
const RUN_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long one health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `tick` at once and then every `period` until the phase leaves `Running`; a tick that returns `false`
/// ends the task (its channel is gone).
pub(crate) async fn every<F, Fut>(period: Duration, mut phase: watch::Receiver<Phase>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *phase.borrow() != Phase::Running {
            return;
        }
        tokio::select! {
            _ = interval.tick() => {
                if !tick().await {
                    return;
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// How long a run may stay silent: `stall_after`, or three times its longest epoch if that is longer.
pub fn stall_threshold(stall_after: Duration, longest_epoch_s: f64) -> Duration {
    let epochs = if longest_epoch_s.is_finite() && longest_epoch_s > 0.0 {
        Duration::from_secs_f64((3.0 * longest_epoch_s).min(1e9))
    } else {
        Duration::ZERO
    };
    stall_after.max(epochs)
}

/// How often the run watch looks: a quarter of the stall window, within 50 ms..5 s.
pub(crate) fn watch_period(stall_after: Duration) -> Duration {
    (stall_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Whether process `pid` on this machine is alive (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold anything.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The dead-man's switch, one look: make `run_stalled` for silent runs and `run_lost` for runs whose process
/// on this machine is gone. Returns `false` once the writer is gone.
pub(crate) async fn watch_runs(handle: &Handle) -> bool {
    let shared = handle.shared();
    let options = &shared.options;
    let now = now_ms();
    let mut lost_candidates = Vec::new();
    let mut made = Vec::new();
    {
        let runs = shared.runs();
        for (id, st) in runs.iter() {
            // A rank of a job is watched with its job (`job_events`).
            if !st.started || st.ended.is_some() || st.lost || st.job.is_some() {
                continue;
            }
            // Silence while the daemon was down does not count.
            let since = st.last_event_ms.max(shared.started_ms);
            let silent = Duration::from_millis(now.saturating_sub(since));
            let threshold = stall_threshold(options.stall_after, st.longest_epoch_s);
            if !st.stalled && silent > threshold {
                made.push(Event::now(
                    id.clone(),
                    0,
                    RunStalled { silent_s: silent.as_secs_f64(), stall_after_s: threshold.as_secs_f64() },
                ));
            }
            if st.context.pid != 0 && !options.hostname.is_empty() && st.context.host == options.hostname {
                lost_candidates.push((id.clone(), st.context.pid));
            }
        }
    }
    for (id, pid) in lost_candidates {
        if !pid_alive(pid) {
            let reason =
                "the process exited without reporting: killed, out of memory, or the machine went down?";
            made.push(Event::now(id, 0, RunLost { pid, reason: reason.into() }));
        }
    }
    made.extend(job_events(shared, now));
    if made.is_empty() {
        return true;
    }
    for event in &made {
        tracing::warn!(run = %event.run, kind = %event.kind(), "run watch");
    }
    match handle.submit_made(made).await {
        Ok(_) => true,
        Err(crate::DaemonError::ShuttingDown) => false,
        Err(e) => {
            tracing::error!(error = %e, "cannot store a run-watch event");
            true
        }
    }
}

/// The job watch, one look: the job events (`rank_stalled`, `rank_lost`, `rank_failed`, `rank_slow`,
/// `ranks_missing`, the job's end) each distributed job calls for, on its anchor's run (see `jobs`).
fn job_events(shared: &Shared, now: u64) -> Vec<Event> {
    let options = &shared.options;
    // The pid check reads /proc: not under the lock.
    let candidates: Vec<(String, u32)> = shared
        .runs()
        .iter()
        .filter(|(_, st)| st.job.is_some() && st.ended.is_none() && st.context.pid != 0)
        .filter(|(_, st)| !options.hostname.is_empty() && st.context.host == options.hostname)
        .map(|(id, st)| (id.clone(), st.context.pid))
        .collect();
    let gone: HashSet<String> =
        candidates.into_iter().filter(|(_, pid)| !pid_alive(*pid)).map(|(id, _)| id).collect();
    let watch = jobs::Watch {
        stall_after: options.stall_after,
        slow_rank_factor: options.slow_rank_factor,
        now_ms: now,
        started_ms: shared.started_ms,
    };
    let runs = shared.runs();
    let facts = runs.iter().filter_map(|(id, st)| st.rank_facts(id, gone.contains(id)));
    let mut made = Vec::new();
    for view in jobs::group(facts) {
        let Some(anchor) = view.anchor() else { continue };
        made.extend(jobs::decide(&view, &watch).into_iter().map(|p| Event::now(anchor.run.to_owned(), 0, p)));
    }
    made
}

/// Which notifiers' health to ask about: every one the first time, then those that failed an attempt since
/// their last check or were not `Ok` (so a healthy notifier's service is not probed again, and a supervised
/// plugin's restarts show up in status). `failures_seen` is each notifier's failure count at its last check.
pub(crate) async fn check_health(shared: &Arc<Shared>, failures_seen: &mut [Option<u64>]) {
    let mut checks = JoinSet::new();
    for (index, slot) in shared.slots.iter().enumerate() {
        let failures = slot.stats.failed_attempts.load(Ordering::Relaxed);
        let healthy = matches!(slot.stats.facts().health, Some(Health::Ok));
        let seen = failures_seen.get(index).copied().flatten();
        if seen.is_some() && seen == Some(failures) && healthy {
            continue;
        }
        if let Some(s) = failures_seen.get_mut(index) {
            *s = Some(failures);
        }
        let slot = slot.clone();
        checks.spawn(async move {
            let health = match tokio::time::timeout(HEALTH_TIMEOUT, slot.notifier.health_check()).await {
                Ok(h) => h,
                Err(_) => Health::Unavailable { message: "health check timed out after 10 s".into() },
            };
            slot.stats.facts().health = Some(health);
        });
    }
    while checks.join_next().await.is_some() {}
}

/// Compaction, one look: forget runs that ended more than the retention ago. Returns `false` once the writer
/// is gone.
pub(crate) async fn forget_old_runs(handle: &Handle) -> bool {
    let cutoff = now_ms().saturating_sub(RUN_RETENTION.as_millis() as u64);
    let old: Vec<String> = {
        let runs = handle.shared().runs();
        runs.iter()
            .filter(|(_, st)| {
                (st.ended.is_some() || st.lost || !st.started) && st.last_event_ms.max(st.first_ms) < cutoff
            })
            .map(|(id, _)| id.clone())
            .collect()
    };
    old.is_empty() || handle.forget(old).await
}

//! One worker per notifier: takes that notifier's jobs from the outbox in order and delivers them.
//!
//! The worker keeps a bounded window of its jobs in memory (the rest wait in the outbox), keeps each run's
//! jobs in order (a run whose head job waits for a retry holds back only its own later jobs), coalesces
//! epoch updates under `min_interval` (the latest state is sent, never a backlog), draws from the notifier's
//! token bucket, bounds each attempt by the notifier's timeout, catches a notifier's panic, and reports every
//! outcome to the writer thread. [`supervise`] restarts a worker that panics itself. Workers never write the
//! outbox themselves and never block each other: a stuck notifier only stalls its own queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_event::{EventKind, Payload};
use herald_plugin::{DeliveryError, Notification, Receipt, RunContext, render};
use tokio::sync::{mpsc, watch};

use crate::api::RecentDelivery;
use crate::limits::{self, TokenBucket};
use crate::outbox::JobRecord;
use crate::shared::{Outcome, Phase, Shared, Slot, WriteOp, now_ms};

/// Jobs held in memory per worker.
const WINDOW: usize = 1024;
/// Least time between two updates of a live message (notifiers that edit in place).
const LIVE_EDIT_INTERVAL: Duration = Duration::from_secs(1);

/// Run the worker for notifier `index`, restarting it if it panics, until the dispatcher stops.
pub(crate) async fn supervise(
    index: usize,
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteOp>,
    phase: watch::Receiver<Phase>,
) {
    loop {
        let task = tokio::spawn(run(index, shared.clone(), writer.clone(), phase.clone()));
        match task.await {
            Ok(()) => return,
            Err(e) => {
                let name = shared.slots.get(index).map_or("?", |s| s.name.as_str());
                tracing::error!(notifier = name, error = %e, "notifier worker crashed; restarting it");
                if *phase.borrow() != Phase::Running {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

enum Pick {
    Deliver(u64),
    Supersede(u64),
    Wait(Option<u64>),
}

struct Worker {
    index: usize,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteOp>,
    window: BTreeMap<u64, JobRecord>,
    cursor: u64,
    more: bool,
    last_sent_ms: HashMap<String, u64>,
    previous: HashMap<String, Option<Receipt>>,
    bucket: Option<TokenBucket>,
}

async fn run(
    index: usize,
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteOp>,
    mut phase: watch::Receiver<Phase>,
) {
    let Some(slot) = shared.slots.get(index).cloned() else { return };
    let bucket = slot.rate.map(|(rate, burst)| TokenBucket::new(rate, burst, Instant::now()));
    let mut w = Worker {
        index,
        slot,
        shared,
        writer,
        window: BTreeMap::new(),
        cursor: 0,
        more: true,
        last_sent_ms: HashMap::new(),
        previous: HashMap::new(),
        bucket,
    };
    let mut drain_looked = false;
    loop {
        let current = *phase.borrow();
        if current == Phase::Stopped {
            return;
        }
        if w.more && w.window.len() < WINDOW / 2 {
            w.refill().await;
        }
        let now = now_ms();
        match w.pick(now) {
            Pick::Supersede(id) => {
                drain_looked = false;
                if let Some(job) = w.window.remove(&id) {
                    w.report(id, &job, Outcome::Superseded).await;
                }
            }
            Pick::Deliver(id) => {
                if let Some(bucket) = w.bucket.as_mut()
                    && let Err(wait) = bucket.take(Instant::now())
                {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = phase.changed() => {}
                    }
                    continue;
                }
                drain_looked = false;
                tokio::select! {
                    _ = w.deliver(id) => {}
                    _ = wait_for(&mut phase, Phase::Stopped) => return,
                }
            }
            Pick::Wait(until) => {
                if current == Phase::Draining {
                    // Jobs committed just before the drain may not be in the window yet: look once more.
                    if !drain_looked {
                        drain_looked = true;
                        w.refill().await;
                        continue;
                    }
                    // Nothing is ready now: what waits for a retry stays in the outbox for the next start.
                    return;
                }
                let sleep =
                    until.map_or(Duration::from_secs(3600), |t| Duration::from_millis(t.saturating_sub(now)));
                tokio::select! {
                    _ = w.slot.wake.notified() => w.more = true,
                    _ = tokio::time::sleep(sleep) => {}
                    _ = phase.changed() => {}
                }
            }
        }
    }
}

async fn wait_for(phase: &mut watch::Receiver<Phase>, target: Phase) {
    loop {
        if *phase.borrow() == target {
            return;
        }
        if phase.changed().await.is_err() {
            // The dispatcher is gone: nothing will ever change again.
            std::future::pending::<()>().await;
        }
    }
}

impl Worker {
    async fn refill(&mut self) {
        let limit = WINDOW - self.window.len();
        match self.shared.outbox.jobs(&self.slot.name, self.cursor, limit).await {
            Ok(jobs) => {
                self.more = jobs.len() >= limit;
                for (id, job) in jobs {
                    self.cursor = self.cursor.max(id);
                    self.window.insert(id, job);
                }
            }
            Err(e) => {
                tracing::error!(notifier = %self.slot.name, error = %e, "cannot read jobs from the outbox");
                self.slot.stats.facts().last_error = Some(e.to_string());
            }
        }
    }

    /// The next thing to do: the first run head (in job order) that is ready, or when the earliest is.
    fn pick(&self, now: u64) -> Pick {
        // A notifier that edits one live message gets at most about one edit per second: epoch updates
        // that end faster are coalesced to the latest state.
        let min_interval = if self.slot.notifier.capabilities().edit {
            self.slot.routing.min_interval.max(LIVE_EDIT_INTERVAL)
        } else {
            self.slot.routing.min_interval
        };
        let min_interval = min_interval.as_millis() as u64;
        // With min_interval, an epoch update followed by a newer one (or the run's end) is superseded.
        let mut latest_state: HashMap<&str, u64> = HashMap::new();
        if min_interval > 0 {
            for (id, job) in &self.window {
                if is_state(job.event.kind()) || job.event.kind().is_terminal() {
                    latest_state.insert(job.event.run.as_str(), *id);
                }
            }
        }
        let mut heads: HashSet<&str> = HashSet::new();
        let mut earliest: Option<u64> = None;
        for (id, job) in &self.window {
            let run = job.event.run.as_str();
            if !heads.insert(run) {
                continue;
            }
            let mut ready_at = job.not_before_ms;
            if min_interval > 0 && is_state(job.event.kind()) {
                if latest_state.get(run).is_some_and(|latest| latest > id) {
                    return Pick::Supersede(*id);
                }
                if let Some(last) = self.last_sent_ms.get(run) {
                    ready_at = ready_at.max(last + min_interval);
                }
            }
            if ready_at <= now {
                return Pick::Deliver(*id);
            }
            earliest = Some(earliest.map_or(ready_at, |e: u64| e.min(ready_at)));
        }
        Pick::Wait(earliest)
    }

    async fn report(&self, id: u64, job: &JobRecord, outcome: Outcome) {
        let op = WriteOp::Finish {
            notifier: self.index,
            job: id,
            run: job.event.run.clone(),
            seq: job.event.seq,
            kind: job.event.kind(),
            outcome,
        };
        if self.writer.send(op).await.is_err() {
            tracing::warn!(notifier = %self.slot.name, job = id, "outbox writer gone; the job will be retried at the next start");
        }
    }

    async fn previous(&mut self, run: &str) -> Option<Receipt> {
        if let Some(p) = self.previous.get(run) {
            return p.clone();
        }
        let found = match self.shared.outbox.latest_receipt(&self.slot.name, run).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(notifier = %self.slot.name, run, error = %e, "cannot read the run's latest receipt");
                None
            }
        };
        self.previous.insert(run.to_owned(), found.clone());
        found
    }

    async fn deliver(&mut self, id: u64) {
        let Some(mut job) = self.window.get(&id).cloned() else { return };
        let run = job.event.run.clone();
        let context = {
            let runs = self.shared.runs();
            let mut ctx = runs.get(&run).map_or_else(|| RunContext::new(&run), |st| st.context.clone());
            // The table as it was when this epoch ended (render adds the epoch itself).
            if let Payload::EpochEnded(e) = &job.event.payload {
                ctx.epochs.retain(|row| row.epoch < e.epoch);
            }
            ctx
        };
        let previous = self.previous(&run).await;
        // The loss curve goes with a run's end to notifiers that show images, drawn from the stored history.
        let image = if matches!(job.event.kind(), EventKind::RunFinished | EventKind::RunFailed)
            && self.slot.notifier.capabilities().images
        {
            let points = self.shared.outbox.loss_history(&run).await.unwrap_or_default();
            let ctx = context.clone();
            tokio::task::spawn_blocking(move || crate::plot::loss_plot(&points, &ctx)).await.unwrap_or(None)
        } else {
            None
        };
        let notification = render::notification(&context, &job.event, previous, image, job.attempt + 1);
        let result = attempt(&self.slot, notification).await;
        let now = now_ms();
        let stats = &self.slot.stats;
        match result {
            Ok(receipt) => {
                self.window.remove(&id);
                self.last_sent_ms.insert(run.clone(), now);
                self.previous.insert(run, Some(receipt.clone()));
                stats.facts().delivered(RecentDelivery {
                    notifier: self.slot.name.clone(),
                    run: job.event.run.clone(),
                    seq: job.event.seq,
                    kind: job.event.kind().as_str().to_owned(),
                    at_ms: now,
                    receipt: receipt.clone(),
                });
                tracing::debug!(notifier = %self.slot.name, run = %job.event.run, seq = job.event.seq, "delivered");
                self.report(id, &job, Outcome::Delivered(receipt)).await;
            }
            Err(err) => {
                stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                stats.facts().last_error = Some(err.message.clone());
                if (err.retry_after.is_some() || err.code.as_deref() == Some("http_429"))
                    && let Some(bucket) = self.bucket.as_mut()
                {
                    bucket.drain(Instant::now());
                }
                let failures = job.attempt + 1;
                let delay = err.retry_after.unwrap_or_else(|| limits::backoff(failures, limits::jitter()));
                if err.retry_after.is_some() || err.code.as_deref() == Some("http_429") {
                    stats.facts().rate_limited_until_ms = Some(now + delay.as_millis() as u64);
                }
                let max_age = self.slot.routing.max_age.as_millis() as u64;
                let too_old = now + delay.as_millis() as u64 > job.created_ms.saturating_add(max_age);
                if !err.retryable || too_old {
                    let why = if err.retryable { "too old to retry (max_age)" } else { "permanent error" };
                    tracing::warn!(
                        notifier = %self.slot.name, run = %job.event.run, seq = job.event.seq, attempt = failures,
                        error = %err, "giving up on a delivery: {why}"
                    );
                    self.window.remove(&id);
                    self.report(id, &job, Outcome::GaveUp { error: err.message, attempts: failures }).await;
                } else {
                    tracing::info!(
                        notifier = %self.slot.name, run = %job.event.run, seq = job.event.seq, attempt = failures,
                        retry_in_ms = delay.as_millis() as u64, error = %err, "delivery failed; will retry"
                    );
                    job.attempt = failures;
                    job.not_before_ms = now + delay.as_millis() as u64;
                    job.last_error = Some(err.message);
                    self.window.insert(id, job.clone());
                    self.report(id, &job, Outcome::Retry(Box::new(job.clone()))).await;
                }
            }
        }
    }
}

/// Epoch-state events that `min_interval` coalesces.
fn is_state(kind: EventKind) -> bool {
    matches!(kind, EventKind::EpochEnded | EventKind::EpochStarted | EventKind::BatchEnded)
}

/// One delivery attempt, bounded by the notifier's timeout; a panic in the notifier becomes a permanent error.
pub(crate) async fn attempt(slot: &Slot, notification: Notification) -> Result<Receipt, DeliveryError> {
    deliver_with_timeout(slot.notifier.clone(), notification, slot.routing.timeout).await
}

/// Deliver through `notifier` in its own task: bounded by `timeout`, panics caught.
pub async fn deliver_with_timeout(
    notifier: Arc<dyn herald_plugin::Notifier>,
    notification: Notification,
    timeout: Duration,
) -> Result<Receipt, DeliveryError> {
    let task = tokio::spawn(async move { notifier.deliver(&notification).await });
    let abort = task.abort_handle();
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => {
            let message = panic_message(join.into_panic());
            Err(DeliveryError::permanent(format!("the notifier panicked: {message}: report this bug"))
                .with_code("panic"))
        }
        Ok(Err(_)) => Err(DeliveryError::retryable("the delivery was cancelled").with_code("cancelled")),
        Err(_) => {
            abort.abort();
            Err(DeliveryError::retryable(format!(
                "no answer within {:.0} s (the notifier's timeout)",
                timeout.as_secs_f64()
            ))
            .with_code("timeout"))
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

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
use herald_plugin::{DeliveryError, Notification, Receipt, Renderings, RunContext, render};
use tokio::sync::{mpsc, watch};

use crate::api::RecentDelivery;
use crate::limits::{self, TokenBucket};
use crate::outbox::JobRecord;
use crate::quiet::digest;
use crate::shared::{Finished, Outcome, Phase, Shared, Slot, WriteOp, now_ms};

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
    /// Held jobs are due: one digest for them.
    Digest,
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
    /// Jobs held for a digest (quiet hours, `digest`), outside the window: they block no run.
    held: BTreeMap<u64, JobRecord>,
    /// Failed digest attempts in a row, and when to try again.
    digest_retry: (u32, u64),
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
        held: BTreeMap::new(),
        digest_retry: (0, 0),
    };
    let mut drain_looked = false;
    // Tests move the dispatcher's clock; a move wakes a waiting worker.
    let mut clock_moves = w.shared.options.clock.moves();
    loop {
        let current = *phase.borrow();
        if current == Phase::Stopped {
            return;
        }
        if w.more && w.window.len() < WINDOW / 2 {
            w.refill().await;
        }
        clock_moves.borrow_and_update();
        let now = w.shared.options.clock.now_ms();
        match w.pick(now) {
            Pick::Digest => {
                drain_looked = false;
                tokio::select! {
                    _ = w.digest(now) => {}
                    _ = wait_for(&mut phase, Phase::Stopped) => return,
                }
            }
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
                let batch = w.batch(id, now);
                tokio::select! {
                    _ = w.deliver(batch) => {}
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
                    _ = clock_moves.changed() => {}
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
                    if job.digest {
                        self.held.insert(id, job);
                    } else {
                        self.window.insert(id, job);
                    }
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
        // The digest goes on its timer, before the runs' heads.
        let mut earliest: Option<u64> = self.digest_due();
        if earliest.is_some_and(|due| due <= now) {
            return Pick::Digest;
        }
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
        self.report_all(vec![finished(id, job, outcome)]).await;
    }

    /// Hand the outcomes of one delivery call to the writer as one operation (one commit).
    async fn report_all(&self, jobs: Vec<Finished>) {
        if jobs.is_empty() {
            return;
        }
        let n = jobs.len();
        if self.writer.send(WriteOp::Finish { notifier: self.index, jobs }).await.is_err() {
            tracing::warn!(notifier = %self.slot.name, jobs = n, "outbox writer gone; the jobs will be retried at the next start");
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

    /// The jobs to deliver with `id`: `id` alone, or for a notifier that takes batches (and neither
    /// coalesces nor draws from a token bucket) every ready job after it up to its `max_batch`, each run's
    /// a prefix of its jobs in order.
    fn batch(&self, id: u64, now: u64) -> Vec<u64> {
        let max = self.slot.notifier.max_batch();
        if max <= 1 || self.bucket.is_some() || !self.slot.routing.min_interval.is_zero() {
            return vec![id];
        }
        // From the window's start: a run whose earlier job waits (for a retry) is blocked for the rest.
        let mut batch = Vec::new();
        let mut blocked: HashSet<&str> = HashSet::new();
        for (other, job) in &self.window {
            if batch.len() >= max {
                break;
            }
            let run = job.event.run.as_str();
            if blocked.contains(run) {
                continue;
            }
            if job.not_before_ms <= now {
                batch.push(*other);
            } else {
                blocked.insert(run);
            }
        }
        match batch.first() {
            Some(first) if *first == id => batch,
            _ => vec![id],
        }
    }

    /// The notification for job `id`, if it is still in the window.
    async fn prepare(&mut self, id: u64) -> Option<(JobRecord, Notification)> {
        let job = self.window.get(&id).cloned()?;
        let renderings = self.slot.notifier.renderings();
        if renderings == Renderings::None {
            let notification = render::bare(&job.event, job.attempt + 1);
            return Some((job, notification));
        }
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
        let notification =
            render::notification_with(renderings, &context, &job.event, previous, image, job.attempt + 1);
        Some((job, notification))
    }

    /// Deliver the jobs `ids` (one, or a batch: one call for all), then settle each outcome.
    async fn deliver(&mut self, ids: Vec<u64>) {
        let mut jobs = Vec::with_capacity(ids.len());
        let mut notifications = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((job, notification)) = self.prepare(id).await {
                jobs.push((id, job));
                notifications.push(notification);
            }
        }
        let results = match notifications.len() {
            0 => return,
            1 => match notifications.pop() {
                Some(n) => vec![attempt(&self.slot, n).await],
                None => return,
            },
            _ => attempt_batch(&self.slot, notifications).await,
        };
        let mut results = results.into_iter();
        let mut finished = Vec::with_capacity(jobs.len());
        for (id, job) in jobs {
            let result = results.next().unwrap_or_else(|| {
                Err(DeliveryError::retryable("the notifier answered fewer results than asked"))
            });
            finished.push(self.settle(id, job, result));
        }
        self.report_all(finished).await;
    }

    /// Settle one attempt in the worker's own state, and say how it ended, for the writer.
    fn settle(&mut self, id: u64, mut job: JobRecord, result: Result<Receipt, DeliveryError>) -> Finished {
        let run = job.event.run.clone();
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
                finished(id, &job, Outcome::Delivered(receipt))
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
                    finished(id, &job, Outcome::GaveUp { error: err.message, attempts: failures })
                } else {
                    tracing::info!(
                        notifier = %self.slot.name, run = %job.event.run, seq = job.event.seq, attempt = failures,
                        retry_in_ms = delay.as_millis() as u64, error = %err, "delivery failed; will retry"
                    );
                    job.attempt = failures;
                    job.not_before_ms = now + delay.as_millis() as u64;
                    job.last_error = Some(err.message);
                    self.window.insert(id, job.clone());
                    finished(id, &job, Outcome::Retry(Box::new(job.clone())))
                }
            }
        }
    }
}

impl Worker {
    /// When the next digest is due: the earliest release of a held job (not before a retry's time).
    fn digest_due(&self) -> Option<u64> {
        let release = self.held.values().map(|job| job.not_before_ms).min()?;
        Some(release.max(self.digest_retry.1))
    }

    /// Deliver every held job that is due as one digest, then settle each (delivered in the digest, or given
    /// up with it). A failed digest is tried again with backoff; its jobs stay in the outbox meanwhile.
    async fn digest(&mut self, now: u64) {
        let due: Vec<u64> =
            self.held.iter().filter(|(_, j)| j.not_before_ms <= now).map(|(id, _)| *id).collect();
        let Some(&seq) = due.last() else { return };
        let (failures, _) = self.digest_retry;
        let notification = {
            let jobs: Vec<&JobRecord> = due.iter().filter_map(|id| self.held.get(id)).collect();
            let events: Vec<&herald_event::Event> = jobs.iter().map(|j| &j.event).collect();
            let due_ms = jobs.iter().map(|j| j.not_before_ms).min().unwrap_or(now);
            let runs = self.shared.runs();
            let context = |run: &str| runs.get(run).map(|st| st.context.clone());
            let quiet = self.slot.routing.quiet.as_ref();
            digest::notification(quiet, &events, &context, due_ms, now, seq, failures + 1)
        };
        let result = attempt(&self.slot, notification).await;
        let now = self.shared.options.clock.now_ms();
        match result {
            Ok(_) => {
                tracing::info!(notifier = %self.slot.name, jobs = due.len(), "digest delivered");
                self.slot.stats.facts().last_delivery_ms = Some(now);
                self.digest_retry = (0, 0);
                let done = due
                    .iter()
                    .filter_map(|id| Some(finished(*id, &self.held.remove(id)?, Outcome::Digested)));
                let done: Vec<Finished> = done.collect();
                self.report_all(done).await;
            }
            Err(err) => {
                self.slot.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                self.slot.stats.facts().last_error = Some(err.message.clone());
                let failures = failures + 1;
                let delay = err.retry_after.unwrap_or_else(|| limits::backoff(failures, limits::jitter()));
                // `max_age` counts from the release, not from when the jobs were made.
                let released = self.held.values().map(|j| j.not_before_ms).min().unwrap_or(now);
                let too_old = Duration::from_millis(now.saturating_sub(released)) > self.slot.routing.max_age;
                if err.retryable && !too_old {
                    tracing::info!(
                        notifier = %self.slot.name, attempt = failures, retry_in_ms = delay.as_millis() as u64,
                        error = %err, "digest failed; will retry"
                    );
                    self.digest_retry = (failures, now + delay.as_millis() as u64);
                    return;
                }
                tracing::warn!(notifier = %self.slot.name, attempt = failures, error = %err, "giving up on a digest");
                self.digest_retry = (0, 0);
                let (message, attempts) = (err.message.clone(), failures);
                let gave_up = || Outcome::GaveUp { error: message.clone(), attempts };
                let done = due.iter().filter_map(|id| Some(finished(*id, &self.held.remove(id)?, gave_up())));
                let done: Vec<Finished> = done.collect();
                self.report_all(done).await;
            }
        }
    }
}

/// How the attempt at job `id` ended, for the writer.
fn finished(id: u64, job: &JobRecord, outcome: Outcome) -> Finished {
    Finished { job: id, run: job.event.run.clone(), seq: job.event.seq, kind: job.event.kind(), outcome }
}

/// Epoch-state events that `min_interval` coalesces.
fn is_state(kind: EventKind) -> bool {
    matches!(kind, EventKind::EpochEnded | EventKind::EpochStarted | EventKind::BatchEnded)
}

/// One delivery attempt, bounded by the notifier's timeout; a panic in the notifier becomes a permanent error.
pub(crate) async fn attempt(slot: &Slot, notification: Notification) -> Result<Receipt, DeliveryError> {
    deliver_with_timeout(slot.notifier.clone(), notification, slot.routing.timeout).await
}

/// One attempt at a batch, bounded by the notifier's timeout; a panic fails the whole batch.
async fn attempt_batch(slot: &Slot, notifications: Vec<Notification>) -> Vec<Result<Receipt, DeliveryError>> {
    let n = notifications.len();
    let notifier = slot.notifier.clone();
    let task = tokio::spawn(async move { notifier.deliver_batch(&notifications).await });
    let abort = task.abort_handle();
    let failed = |e: DeliveryError| (0..n).map(|_| Err(e.clone())).collect();
    match tokio::time::timeout(slot.routing.timeout, task).await {
        Ok(Ok(results)) => results,
        Ok(Err(join)) if join.is_panic() => failed(
            DeliveryError::permanent(format!(
                "the notifier panicked: {}: report this bug",
                panic_message(join.into_panic())
            ))
            .with_code("panic"),
        ),
        Ok(Err(_)) => failed(DeliveryError::retryable("the delivery was cancelled").with_code("cancelled")),
        Err(_) => {
            abort.abort();
            failed(
                DeliveryError::retryable(format!(
                    "no answer within {:.0} s (the notifier's timeout)",
                    slot.routing.timeout.as_secs_f64()
                ))
                .with_code("timeout"),
            )
        }
    }
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

//! [`Handle`]: how everything outside the dispatcher talks to it. Cheap to clone; the HTTP API
//! (`server.rs`), the in-process link (`embedded.rs`), phone commands (`host.rs`) and the periodic tasks hold
//! one.
//!
//! Writes (ingest, stop requests, daemon-made events, compaction) go to the writer and are answered after
//! their commit; reads (control, status, run history) look at the shared run table and the outbox directly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use herald_event::Event;
use herald_plugin::RuleList;
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    IngestReply, JobSnapshot, NotifierView, OutboxView, RunControl, RunSnapshot, SlowestRank, Status,
};
use crate::error::DaemonError;
use crate::jobs;
use crate::outbox::LossPoint;
use crate::runs::{RunChange, RunState};
use crate::shared::{Shared, WriteOp, now_ms};

/// A cheap handle for submitting events and reading status; clone it freely.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteOp>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>, writer: mpsc::Sender<WriteOp>) -> Handle {
        Handle { shared, writer }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn writer(&self) -> &mpsc::Sender<WriteOp> {
        &self.writer
    }

    /// Store events durably and queue their deliveries; the answer comes after the commit.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestReply, DaemonError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp::Ingest { events, made: false, reply: Some(reply) };
        self.ask(op, rx, "cannot store the events").await
    }

    /// Store daemon-made events (`run_stalled`, `run_lost`): the writer numbers them and makes each once.
    pub(crate) async fn submit_made(&self, events: Vec<Event>) -> Result<IngestReply, DaemonError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp::Ingest { events, made: true, reply: Some(reply) };
        self.ask(op, rx, "cannot store the events").await
    }

    /// Forget runs (compaction); `false` when the writer is gone.
    pub(crate) async fn forget(&self, runs: Vec<String>) -> bool {
        self.writer.send(WriteOp::Forget { runs }).await.is_ok()
    }

    /// Hand `op` to the writer and wait for its answer on `rx`.
    async fn ask<T>(
        &self,
        op: WriteOp,
        rx: oneshot::Receiver<Result<T, String>>,
        context: &str,
    ) -> Result<T, DaemonError> {
        self.writer.send(op).await.map_err(|_| DaemonError::ShuttingDown)?;
        match rx.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(message)) => {
                Err(DaemonError::Io { context: context.into(), source: std::io::Error::other(message) })
            }
            Err(_) => Err(DaemonError::ShuttingDown),
        }
    }

    /// Ask a run to stop; `false` when the run is unknown.
    pub async fn request_stop(&self, run: &str, reason: &str) -> Result<bool, DaemonError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp::Stop { run: run.to_owned(), reason: reason.to_owned(), reply: Some(reply) };
        self.ask(op, rx, "cannot store the stop request").await
    }

    /// Apply a change from the phone (a rule, a mute) to a run, stored with the run; `None` when the run is
    /// unknown, else how many rules or mutes were added or removed.
    pub async fn change_run(&self, run: &str, change: RunChange) -> Result<Option<usize>, DaemonError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp::Change { run: run.to_owned(), change, reply: Some(reply) };
        self.ask(op, rx, "cannot store the change").await
    }

    /// What `GET /v1/rules` and `herald rules` show: the configured and phone rules, each with the runs it
    /// fired for, and the muted runs.
    pub fn rules(&self) -> RuleList {
        crate::rules::list::list(&self.shared.options.rules, &self.shared.runs(), now_ms())
    }

    /// The control state of one run (its stop request).
    pub fn control(&self, run: &str) -> RunControl {
        let runs = self.shared.runs();
        let stop = runs.get(run).and_then(|st| st.stop.clone());
        RunControl { stop: stop.is_some(), reason: stop }
    }

    /// Jobs waiting in the outbox, all notifiers together.
    pub fn queued(&self) -> u64 {
        self.shared.queued()
    }

    /// Every run the daemon knows, with its state (for phone commands, `host.rs`).
    pub fn run_states(&self) -> Vec<(String, RunState)> {
        self.shared.runs().iter().map(|(id, st)| (id.clone(), st.clone())).collect()
    }

    /// A run's smoothed-loss history.
    pub async fn loss_history(&self, run: &str) -> Result<Vec<LossPoint>, DaemonError> {
        Ok(self.shared.outbox.loss_history(run).await?)
    }

    /// What `GET /v1/status` and `herald status` show.
    pub fn status(&self) -> Status {
        let now = now_ms();
        let shared = &self.shared;
        let (mut runs, jobs) = {
            let table = shared.runs();
            let runs: Vec<RunSnapshot> = table.iter().map(|(id, st)| snapshot(id, st, now)).collect();
            (runs, job_snapshots(&table, now))
        };
        runs.sort_by_key(|r| std::cmp::Reverse(r.last_event_ms));
        runs.truncate(50);
        let notifiers = shared
            .slots
            .iter()
            .map(|slot| {
                let f = slot.stats.facts();
                NotifierView {
                    name: slot.name.clone(),
                    kind: slot.kind.clone(),
                    queue: slot.stats.queued.load(Ordering::Relaxed),
                    delivered: slot.stats.delivered.load(Ordering::Relaxed),
                    failed_attempts: slot.stats.failed_attempts.load(Ordering::Relaxed),
                    gave_up: slot.stats.gave_up.load(Ordering::Relaxed),
                    superseded: slot.stats.superseded.load(Ordering::Relaxed),
                    health: f.health.clone(),
                    last_error: f.last_error.clone(),
                    last_delivery_ms: f.last_delivery_ms,
                    recent_give_ups: f.give_ups.iter().cloned().collect(),
                    rate_limited_until_ms: f.rate_limited_until_ms,
                }
            })
            .collect();
        let info = shared.outbox.info();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: shared.started.elapsed().as_secs_f64(),
            outbox: OutboxView {
                jobs: self.queued(),
                bytes: info.bytes,
                path: info.path.map(|p| p.display().to_string()),
            },
            runs,
            jobs,
            notifiers,
            cluster: crate::api::cluster_view(),
        }
    }
}

/// The distributed jobs' rows in status, latest first, 50 at most.
fn job_snapshots(table: &HashMap<String, RunState>, now: u64) -> Vec<JobSnapshot> {
    // A rank the job watch named lost is gone (its pid check is not repeated here).
    let lost: HashSet<(&str, u32)> = table
        .values()
        .filter_map(|st| st.job.as_ref())
        .flat_map(|m| m.said.lost.iter().map(move |r| (m.job.as_str(), *r)))
        .collect();
    let facts = table.iter().filter_map(|(id, st)| {
        let m = st.job.as_ref()?;
        st.rank_facts(id, lost.contains(&(m.job.as_str(), m.rank)))
    });
    let mut out: Vec<JobSnapshot> = jobs::group(facts)
        .iter()
        .filter_map(|view| {
            let anchor = view.anchor()?;
            let st = table.get(anchor.run)?;
            let stalled = anchor.member.said.stalled.iter().any(|(rank, at)| {
                view.ranks.get(rank).is_some_and(|f| !f.done() && f.member.progress_ms <= *at)
            });
            let state = match (view.finished(), stalled) {
                (true, _) => view.status().as_str(),
                (false, true) => "stalled",
                (false, false) => "running",
            };
            let last_event_ms = view.ranks.values().map(|f| f.last_ms).max().unwrap_or(0);
            Some(JobSnapshot {
                job: view.job.clone(),
                name: st.context.name.clone(),
                run: anchor.run.to_owned(),
                state: state.to_owned(),
                world_size: view.world_size,
                ranks_seen: view.ranks.len(),
                ranks_done: view.ranks.values().filter(|f| f.done()).count(),
                slowest: view.slowest().map(|(rank, host, pct)| SlowestRank {
                    rank,
                    host: host.to_owned(),
                    above_median_pct: pct,
                }),
                health: view.health(),
                n_epochs: st.context.n_epochs,
                epochs_done: st.context.epochs.len(),
                last_event_ms,
                silent_s: now.saturating_sub(last_event_ms) as f64 / 1000.0,
            })
        })
        .collect();
    out.sort_by_key(|j| std::cmp::Reverse(j.last_event_ms));
    out.truncate(50);
    out
}

/// A run's row in status.
fn snapshot(id: &str, st: &RunState, now: u64) -> RunSnapshot {
    RunSnapshot {
        run: id.to_owned(),
        name: st.context.name.clone(),
        host: st.context.host.clone(),
        pid: st.context.pid,
        rank: st.context.rank,
        state: st.state_word().to_owned(),
        n_epochs: st.context.n_epochs,
        epochs_done: st.context.epochs.len(),
        last_epoch: st.context.epochs.last().cloned(),
        smooth_loss: st.last_batch.map(|b| b.3),
        best: st.best.clone(),
        events: st.events,
        silent_s: now.saturating_sub(st.last_event_ms) as f64 / 1000.0,
        last_event_ms: st.last_event_ms,
        stop_requested: st.stop.is_some(),
    }
}

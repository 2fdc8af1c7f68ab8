//! [`JetStreamOutbox`]: the leader's outbox, kept in JetStream key-value buckets so that the next leader
//! continues where this one stopped.
//!
//! The leader is the only writer, so the outbox serves every read from memory (a [`MemoryOutbox`]) and
//! writes each batch through to the buckets first: `<prefix>-runs` (each run's state and the highest
//! sequence number applied from its sender), `<prefix>-history` (lifecycle events), `<prefix>-jobs`,
//! `<prefix>-receipts` (the latest receipt per notifier and run: a live message's id), `<prefix>-giveups`
//! and `<prefix>-meta` (the next job id). A batch's puts go out pipelined and are awaited together, then its
//! deletes (finished jobs, forgotten runs), so a crash in between leaves a finished job beside its receipt:
//! [`JetStreamOutbox::open`] drops such a job, and only deliveries in flight at a crash are repeated.
//!
//! Jobs are written in chunks, one entry per commit, not one per job, and a job whose event came from the
//! stream names the stream message holding it rather than copying it (`jobs.rs`). So a delivery costs about
//! one receipt write per run and commit, not a put and a delete of its own, and an event is stored once.
//! `kv.rs` reads and writes the buckets.
//!
//! `known(run, seq)` of a sender's event is `seq <=` the run's high-water mark: a run's events reach the
//! leader in order (one edge, per-run order kept by its worker), so that is what was applied. Loss points
//! (`batch_ended`) are not written to the buckets: the stream already holds them, and the first time a
//! leader needs a run's history it reads them back from there (`loss.rs`), so the curve survives a failover.

mod jobs;
mod kv;

use std::collections::{HashMap, HashSet};

use async_nats::jetstream::{self, kv as nats_kv};
use futures_util::future::try_join_all;
use herald_daemon::api::GiveUp;
use herald_daemon::outbox::{
    Committed, JobRecord, LossPoint, OutboxInfo, ReceiptRecord, StoreError, WriteBatch,
};
use herald_daemon::runs::{MADE_SEQ_BASE, RunState};
use herald_daemon::{MemoryOutbox, Outbox};
use herald_event::{Event, Payload};
use herald_plugin::Receipt;
use serde::{Deserialize, Serialize};

use self::jobs::{Chunks, Receipts};
use self::kv::{Put, decode, delete, json, load, put, store_err};
use crate::connect::open_bucket;
use crate::error::ClusterError;
use crate::names::{Names, token, untoken};

/// A run as the `runs` bucket keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    state: RunState,
    /// The highest sequence number applied from the run's sender (not daemon-made).
    high_water: Option<u64>,
}

/// A receipt as the `receipts` bucket keeps it (the key holds the notifier and the run).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReceiptValue {
    notifier: String,
    run: String,
    seq: u64,
    receipt: Receipt,
}

struct Buckets {
    runs: nats_kv::Store,
    history: nats_kv::Store,
    jobs: nats_kv::Store,
    receipts: nats_kv::Store,
    giveups: nats_kv::Store,
    meta: nats_kv::Store,
}

/// What the outbox knows beyond the [`MemoryOutbox`]: run records, where the receipts are, which chunks
/// of the `jobs` bucket hold which unfinished jobs, and where the events being applied are in the stream.
#[derive(Default)]
struct Index {
    runs: HashMap<String, RunRecord>,
    receipts: Receipts,
    chunks: Chunks,
    /// (run, seq) -> the stream message holding the event, for the batch being applied
    /// ([`JetStreamOutbox::note_positions`]).
    positions: HashMap<(String, u64), u64>,
}

fn event_key(run: &str, seq: u64) -> String {
    format!("{}.{seq:020}", token(run))
}

fn receipt_key(notifier: &str, run: &str) -> String {
    format!("{}.{}", token(notifier), token(run))
}

/// The leader's outbox in JetStream key-value buckets.
pub struct JetStreamOutbox {
    js: jetstream::Context,
    names: Names,
    /// Runs whose loss history was read back from the stream.
    read_back: tokio::sync::Mutex<HashSet<String>>,
    /// Writes are refused outside it (a deposed leader's late writes).
    fence: Option<crate::lease::Fence>,
    buckets: Buckets,
    memory: MemoryOutbox,
    index: std::sync::Mutex<Index>,
}

impl JetStreamOutbox {
    /// Open the buckets of `names` (made with `replicas` when missing) and read them into memory.
    pub async fn open(
        js: &jetstream::Context,
        names: &Names,
        replicas: usize,
    ) -> Result<JetStreamOutbox, ClusterError> {
        let buckets = Buckets {
            runs: open_bucket(js, names.bucket("runs"), replicas, None).await?,
            history: open_bucket(js, names.bucket("history"), replicas, None).await?,
            jobs: open_bucket(js, names.bucket("jobs"), replicas, None).await?,
            receipts: open_bucket(js, names.bucket("receipts"), replicas, None).await?,
            giveups: open_bucket(js, names.bucket("giveups"), replicas, None).await?,
            meta: open_bucket(js, names.bucket("meta"), replicas, None).await?,
        };
        let mut batch = WriteBatch::default();
        let mut index = Index::default();
        for (key, bytes) in load(&buckets.runs).await? {
            let (Some(run), Some(record)) = (untoken(&key), decode::<RunRecord>("runs", &key, &bytes)) else {
                continue;
            };
            batch.runs.push((run.clone(), record.state.clone()));
            index.runs.insert(run, record);
        }
        for (key, bytes) in load(&buckets.history).await? {
            if let Some(event) = decode::<Event>("history", &key, &bytes) {
                batch.events.push(event);
            }
        }
        batch.events.sort_by(|a, b| (&a.run, a.seq).cmp(&(&b.run, b.seq)));
        for (key, bytes) in load(&buckets.receipts).await? {
            if let Some(r) = decode::<ReceiptValue>("receipts", &key, &bytes) {
                index.receipts.insert((r.notifier.clone(), r.run.clone()), r.seq);
                batch.receipts.push(ReceiptRecord {
                    notifier: r.notifier,
                    run: r.run,
                    seq: r.seq,
                    receipt: r.receipt,
                });
            }
        }
        let events = js
            .get_stream(names.stream())
            .await
            .map_err(|e| ClusterError::nats("cannot open the stream to read jobs' events", &e))?;
        let (chunks, jobs, stale) = Chunks::load(&buckets.jobs, &events, &index.receipts).await?;
        index.chunks = chunks;
        batch.jobs = jobs;
        if !stale.is_empty() {
            tracing::info!(entries = stale.len(), "dropping job entries whose jobs are finished");
            try_join_all(stale).await.map_err(|e| ClusterError::nats("cannot drop finished jobs", &e))?;
        }
        for (key, bytes) in load(&buckets.giveups).await? {
            if let (Ok(id), Some(g)) = (key.parse::<u64>(), decode::<GiveUp>("giveups", &key, &bytes)) {
                batch.give_ups.push((id, g));
            }
        }
        batch.give_ups.sort_by_key(|(id, _)| *id);
        if let Some(bytes) = buckets
            .meta
            .get("next_job_id")
            .await
            .map_err(|e| ClusterError::nats("cannot read the meta bucket", &e))?
        {
            batch.next_job_id = std::str::from_utf8(&bytes).ok().and_then(|s| s.parse().ok());
        }
        let memory = MemoryOutbox::new();
        memory.commit(batch).await.map_err(|e| ClusterError::nats("cannot load the outbox", &e))?;
        Ok(JetStreamOutbox {
            js: js.clone(),
            names: names.clone(),
            read_back: Default::default(),
            fence: None,
            buckets,
            memory,
            index: std::sync::Mutex::new(index),
        })
    }

    /// This outbox, writing only while `fence` holds.
    pub fn with_fence(self, fence: crate::lease::Fence) -> JetStreamOutbox {
        JetStreamOutbox { fence: Some(fence), ..self }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the events about to be applied are in the stream: (run, seq, stream sequence number of the
    /// message holding it). Their jobs then name the message instead of copying the event. Replaces what
    /// was noted for the previous batch.
    pub fn note_positions(&self, positions: impl IntoIterator<Item = (String, u64, u64)>) {
        let mut index = self.index();
        index.positions.clear();
        index.positions.extend(positions.into_iter().map(|(run, seq, message)| ((run, seq), message)));
    }

    /// The bucket writes of one batch: puts first, then deletes.
    async fn write_through(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let b = &self.buckets;
        let mut puts: Vec<Put> = Vec::new();
        let mut deletes: Vec<Put> = Vec::new();
        {
            let mut index = self.index();
            let mut touched: Vec<String> = Vec::new();
            for event in &batch.events {
                if event.seq < MADE_SEQ_BASE {
                    let record = index
                        .runs
                        .entry(event.run.clone())
                        .or_insert_with(|| RunRecord { state: RunState::default(), high_water: None });
                    record.high_water = Some(record.high_water.map_or(event.seq, |hw| hw.max(event.seq)));
                    touched.push(event.run.clone());
                }
                if !matches!(event.payload, Payload::BatchEnded(_)) {
                    puts.push(put(&b.history, event_key(&event.run, event.seq), json(event)?));
                }
            }
            for (run, state) in &batch.runs {
                let record = index
                    .runs
                    .entry(run.clone())
                    .or_insert_with(|| RunRecord { state: state.clone(), high_water: None });
                record.state = state.clone();
                touched.push(run.clone());
            }
            touched.sort();
            touched.dedup();
            for run in touched {
                if let Some(record) = index.runs.get(&run) {
                    puts.push(put(&b.runs, token(&run), json(record)?));
                }
            }
            // New and rescheduled jobs go out as chunks (`jobs.rs`).
            let Index { chunks, positions, .. } = &mut *index;
            chunks.put(&b.jobs, &batch.jobs, positions, &mut puts)?;
            // Only the latest receipt of each (notifier, run) is kept: one put per key and batch.
            for r in batch.latest_receipts() {
                let key = (r.notifier.clone(), r.run.clone());
                if index.receipts.get(&key).is_some_and(|seq| *seq > r.seq) {
                    continue;
                }
                index.receipts.insert(key, r.seq);
                let value = ReceiptValue {
                    notifier: r.notifier.clone(),
                    run: r.run.clone(),
                    seq: r.seq,
                    receipt: r.receipt.clone(),
                };
                puts.push(put(&b.receipts, receipt_key(&r.notifier, &r.run), json(&value)?));
            }
            for (id, g) in &batch.give_ups {
                puts.push(put(&b.giveups, id.to_string(), json(g)?));
            }
            if let Some(id) = batch.next_job_id {
                puts.push(put(&b.meta, "next_job_id".to_owned(), id.to_string().into_bytes()));
            }
            let Index { chunks, receipts, .. } = &mut *index;
            chunks.finish(&b.jobs, &batch.done, receipts, &mut puts, &mut deletes);
            for run in &batch.forget {
                index.runs.remove(run);
                deletes.push(delete(&b.runs, token(run)));
                let keys: Vec<(String, String)> =
                    index.receipts.keys().filter(|(_, r)| r == run).cloned().collect();
                for key in keys {
                    index.receipts.remove(&key);
                    deletes.push(delete(&b.receipts, receipt_key(&key.0, &key.1)));
                }
            }
        }
        for run in &batch.forget {
            for event in self.memory.events(run).await? {
                deletes.push(delete(&b.history, event_key(&event.run, event.seq)));
            }
        }
        try_join_all(puts).await.map_err(|e| store_err("cannot write to the JetStream buckets", e))?;
        try_join_all(deletes).await.map_err(|e| store_err("cannot delete from the JetStream buckets", e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Outbox for JetStreamOutbox {
    fn info(&self) -> OutboxInfo {
        OutboxInfo::default()
    }

    async fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        if self.fence.as_ref().is_some_and(|f| !f.holds()) {
            return Err(StoreError::Task("no longer sure to hold the leader's lease: not writing".into()));
        }
        self.write_through(&batch).await?;
        self.memory.commit(batch).await
    }

    async fn known(&self, keys: Vec<(String, u64)>) -> Result<Vec<bool>, StoreError> {
        let made: Vec<(String, u64)> = keys.iter().filter(|(_, s)| *s >= MADE_SEQ_BASE).cloned().collect();
        let mut made_known = self.memory.known(made).await?.into_iter();
        let index = self.index();
        Ok(keys
            .iter()
            .map(|(run, seq)| match *seq >= MADE_SEQ_BASE {
                true => made_known.next().unwrap_or(false),
                false => index.runs.get(run).and_then(|r| r.high_water).is_some_and(|hw| *seq <= hw),
            })
            .collect())
    }

    async fn runs(&self) -> Result<HashMap<String, RunState>, StoreError> {
        self.memory.runs().await
    }

    async fn next_job_id(&self) -> Result<u64, StoreError> {
        self.memory.next_job_id().await
    }

    async fn job_counts(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.memory.job_counts().await
    }

    async fn jobs(
        &self,
        notifier: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, JobRecord)>, StoreError> {
        self.memory.jobs(notifier, after, limit).await
    }

    async fn latest_receipt(&self, notifier: &str, run: &str) -> Result<Option<Receipt>, StoreError> {
        self.memory.latest_receipt(notifier, run).await
    }

    async fn loss_history(&self, run: &str) -> Result<Vec<LossPoint>, StoreError> {
        let mut read_back = self.read_back.lock().await;
        if !read_back.contains(run) {
            match crate::loss::batch_ended_events(&self.js, &self.names, run).await {
                Ok(events) => {
                    if !events.is_empty() {
                        self.memory.commit(WriteBatch { events, ..WriteBatch::default() }).await?;
                    }
                    read_back.insert(run.to_owned());
                }
                Err(e) => {
                    tracing::warn!(run, error = %e, "cannot read the run's loss history back from the stream; showing the points read since taking the lead")
                }
            }
        }
        drop(read_back);
        self.memory.loss_history(run).await
    }

    async fn events(&self, run: &str) -> Result<Vec<Event>, StoreError> {
        self.memory.events(run).await
    }

    async fn give_ups(&self) -> Result<Vec<GiveUp>, StoreError> {
        self.memory.give_ups().await
    }
}

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
//! Jobs are written in chunks, one entry per commit (up to [`CHUNK`] jobs), not one per job: a chunk is
//! deleted once all its jobs are finished, and a job finished without a receipt (superseded, given up)
//! while its chunk lives on gets a tombstone. So a delivery costs about one receipt write per run and
//! commit, not a put and a delete of its own.
//!
//! `known(run, seq)` of a sender's event is `seq <=` the run's high-water mark: a run's events reach the
//! leader in order (one edge, per-run order kept by its worker), so that is what was applied. Loss points
//! (`batch_ended`) are not written to the buckets: the stream already holds them, and the first time a
//! leader needs a run's history it reads them back from there (`loss.rs`), so the curve survives a failover.

use std::collections::{HashMap, HashSet};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::future::{BoxFuture, try_join_all};
use futures_util::{FutureExt, StreamExt};
use herald_daemon::api::GiveUp;
use herald_daemon::outbox::{
    Committed, JobRecord, LossPoint, OutboxInfo, PutJob, ReceiptRecord, StoreError, WriteBatch,
};
use herald_daemon::runs::{MADE_SEQ_BASE, RunState};
use herald_daemon::{MemoryOutbox, Outbox};
use herald_event::{Event, Payload};
use herald_plugin::Receipt;
use serde::{Deserialize, Serialize};

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

/// A job as the `jobs` bucket keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobValue {
    notifier: String,
    id: u64,
    job: JobRecord,
}

struct Buckets {
    runs: kv::Store,
    history: kv::Store,
    jobs: kv::Store,
    receipts: kv::Store,
    giveups: kv::Store,
    meta: kv::Store,
}

/// What the outbox knows beyond the [`MemoryOutbox`]: run records, where the receipts are, and which
/// chunks of the `jobs` bucket hold which unfinished jobs.
#[derive(Default)]
struct Index {
    runs: HashMap<String, RunRecord>,
    /// (notifier, run) -> the latest receipt's sequence number.
    receipts: HashMap<(String, String), u64>,
    /// Chunk number -> the unfinished jobs it holds a copy of.
    chunks: HashMap<u64, HashSet<u64>>,
    /// Unfinished job -> (notifier, run, seq) and the chunks holding a copy of it.
    jobs: HashMap<u64, (JobOf, Vec<u64>)>,
    /// Chunk number -> the tombstones (`d.<id>`) that stand for finished jobs it still holds.
    tombs: HashMap<u64, Vec<u64>>,
    /// Tombstone -> how many live chunks still hold its job.
    tomb_refs: HashMap<u64, usize>,
    next_chunk: u64,
}

/// A job's (notifier, run, seq).
type JobOf = (String, String, u64);

/// Jobs per chunk: a chunk is one key-value entry (under NATS's 1 MB message limit).
const CHUNK: usize = 256;

fn chunk_key(n: u64) -> String {
    format!("c.{n:020}")
}

fn tomb_key(id: u64) -> String {
    format!("d.{id:020}")
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

type Put = BoxFuture<'static, Result<(), String>>;

fn put(store: &kv::Store, key: String, value: Vec<u8>) -> Put {
    let store = store.clone();
    async move { store.put(key, Bytes::from(value)).await.map(|_| ()).map_err(|e| e.to_string()) }.boxed()
}

fn delete(store: &kv::Store, key: String) -> Put {
    let store = store.clone();
    async move { store.delete(key).await.map_err(|e| e.to_string()) }.boxed()
}

fn job_key(notifier: &str, id: u64) -> String {
    format!("{}.{id:020}", token(notifier))
}

fn event_key(run: &str, seq: u64) -> String {
    format!("{}.{seq:020}", token(run))
}

fn receipt_key(notifier: &str, run: &str) -> String {
    format!("{}.{}", token(notifier), token(run))
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(v)?)
}

fn store_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Task(format!("{what}: {e}: is NATS reachable?"))
}

/// Every live (key, value) of a bucket.
async fn load(store: &kv::Store) -> Result<Vec<(String, Bytes)>, ClusterError> {
    let fail = |e: &dyn std::fmt::Display| ClusterError::nats("cannot read a bucket", e);
    let status = store.status().await.map_err(|e| fail(&e))?;
    if status.values() == 0 {
        return Ok(Vec::new());
    }
    let mut values: HashMap<String, Bytes> = HashMap::new();
    let mut watch = store.watch_with_history(">").await.map_err(|e| fail(&e))?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| fail(&e))?;
        match entry.operation {
            kv::Operation::Put => {
                values.insert(entry.key, entry.value);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                values.remove(&entry.key);
            }
        }
        if entry.delta == 0 {
            break;
        }
    }
    Ok(values.into_iter().collect())
}

fn decode<T: for<'de> Deserialize<'de>>(bucket: &str, key: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(bucket, key, error = %e, "skipping an unreadable record (written by another version?)");
            None
        }
    }
}

/// Read the `jobs` bucket: chunks (`c.<n>`, the latest copy of a job wins), tombstones of finished jobs
/// (`d.<id>`) and single jobs of an earlier version. A job whose receipt is recorded, or tombstoned, is
/// finished. Unfinished jobs go into `batch` and the chunk index; the entries no longer needed are
/// returned, to be deleted.
async fn load_jobs(
    store: &kv::Store,
    index: &mut Index,
    batch: &mut WriteBatch,
) -> Result<Vec<Put>, ClusterError> {
    let mut chunks: Vec<(u64, Vec<JobValue>)> = Vec::new();
    let mut tombstones: HashSet<u64> = HashSet::new();
    let mut single: Vec<(String, JobValue)> = Vec::new();
    for (key, bytes) in load(store).await? {
        if let Some(n) = key.strip_prefix("c.").and_then(|n| n.parse::<u64>().ok()) {
            if let Some(values) = decode::<Vec<JobValue>>("jobs", &key, &bytes) {
                chunks.push((n, values));
            }
        } else if let Some(id) = key.strip_prefix("d.").and_then(|n| n.parse::<u64>().ok()) {
            tombstones.insert(id);
        } else if let Some(j) = decode::<JobValue>("jobs", &key, &bytes) {
            single.push((key, j));
        }
    }
    chunks.sort_by_key(|(n, _)| *n);
    index.next_chunk = chunks.last().map_or(0, |(n, _)| n + 1);
    let delivered = |index: &Index, j: &JobValue| {
        index
            .receipts
            .get(&(j.notifier.clone(), j.job.event.run.clone()))
            .is_some_and(|seq| *seq >= j.job.event.seq)
    };
    let mut stale = Vec::new();
    let mut latest: HashMap<u64, (JobValue, Vec<u64>)> = HashMap::new();
    for (n, values) in chunks {
        for j in values {
            let id = j.id;
            let slot = latest.entry(id).or_insert_with(|| (j.clone(), Vec::new()));
            slot.0 = j;
            slot.1.push(n);
        }
        index.chunks.insert(n, HashSet::new());
    }
    for (id, (j, held)) in latest {
        if tombstones.contains(&id) {
            for n in &held {
                index.tombs.entry(*n).or_default().push(id);
            }
            index.tomb_refs.insert(id, held.len());
            continue;
        }
        if delivered(index, &j) {
            continue;
        }
        for n in &held {
            index.chunks.entry(*n).or_default().insert(id);
        }
        let what = (j.notifier.clone(), j.job.event.run.clone(), j.job.event.seq);
        index.jobs.insert(id, (what, held));
        batch.jobs.push(PutJob { notifier: j.notifier, id, job: j.job });
    }
    // Chunks of finished jobs only, and the tombstones no live chunk needs.
    let empty: Vec<u64> = index.chunks.iter().filter(|(_, set)| set.is_empty()).map(|(n, _)| *n).collect();
    for n in empty {
        index.chunks.remove(&n);
        stale.push(delete(store, chunk_key(n)));
        for id in index.tombs.remove(&n).unwrap_or_default() {
            if let Some(left) = index.tomb_refs.get_mut(&id) {
                *left = left.saturating_sub(1);
            }
        }
    }
    for id in tombstones {
        if index.tomb_refs.get(&id).is_none_or(|left| *left == 0) {
            index.tomb_refs.remove(&id);
            stale.push(delete(store, tomb_key(id)));
        }
    }
    for (key, j) in single {
        if delivered(index, &j) {
            stale.push(delete(store, key));
        } else {
            batch.jobs.push(PutJob { notifier: j.notifier, id: j.id, job: j.job });
        }
    }
    batch.jobs.sort_by_key(|j| j.id);
    Ok(stale)
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
        let stale = load_jobs(&buckets.jobs, &mut index, &mut batch).await?;
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
            // New and rescheduled jobs go out as chunks, one entry per [`CHUNK`] jobs.
            for group in batch.jobs.chunks(CHUNK) {
                let n = index.next_chunk;
                index.next_chunk += 1;
                let mut values = Vec::with_capacity(group.len());
                for job in group {
                    values.push(JobValue {
                        notifier: job.notifier.clone(),
                        id: job.id,
                        job: job.job.clone(),
                    });
                    let what = (job.notifier.clone(), job.job.event.run.clone(), job.job.event.seq);
                    index.jobs.entry(job.id).or_insert_with(|| (what, Vec::new())).1.push(n);
                    index.chunks.entry(n).or_default().insert(job.id);
                }
                puts.push(put(&b.jobs, chunk_key(n), json(&values)?));
            }
            // Only the latest receipt of each (notifier, run) is kept: one put per key and batch.
            let mut latest: HashMap<(&str, &str), &ReceiptRecord> = HashMap::new();
            for r in &batch.receipts {
                let slot = latest.entry((r.notifier.as_str(), r.run.as_str())).or_insert(r);
                if r.seq >= slot.seq {
                    *slot = r;
                }
            }
            for r in latest.into_values() {
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
            // A finished job leaves its chunks; a chunk left empty is deleted. One finished without a
            // receipt saying so (superseded, given up) while a chunk still holds it gets a tombstone.
            let mut emptied = Vec::new();
            for done in &batch.done {
                let Some(((notifier, run, seq), held)) = index.jobs.remove(&done.id) else {
                    // Stored one per key by an earlier version.
                    deletes.push(delete(&b.jobs, job_key(&done.notifier, done.id)));
                    continue;
                };
                let mut alive = Vec::new();
                for n in held {
                    if let Some(set) = index.chunks.get_mut(&n) {
                        set.remove(&done.id);
                        if set.is_empty() {
                            emptied.push(n);
                        } else {
                            alive.push(n);
                        }
                    }
                }
                let delivered = index.receipts.get(&(notifier, run)).is_some_and(|r| *r >= seq);
                if !alive.is_empty() && !delivered {
                    index.tomb_refs.insert(done.id, alive.len());
                    for n in alive {
                        index.tombs.entry(n).or_default().push(done.id);
                    }
                    puts.push(put(&b.jobs, tomb_key(done.id), Vec::new()));
                }
            }
            emptied.sort_unstable();
            emptied.dedup();
            for n in emptied {
                index.chunks.remove(&n);
                deletes.push(delete(&b.jobs, chunk_key(n)));
                for id in index.tombs.remove(&n).unwrap_or_default() {
                    let left = index.tomb_refs.get(&id).copied().unwrap_or(1).saturating_sub(1);
                    if left == 0 {
                        index.tomb_refs.remove(&id);
                        deletes.push(delete(&b.jobs, tomb_key(id)));
                    } else {
                        index.tomb_refs.insert(id, left);
                    }
                }
            }
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

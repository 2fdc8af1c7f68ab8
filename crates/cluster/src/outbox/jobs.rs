//! The `jobs` bucket: unfinished delivery jobs in chunks, and which chunk holds which job.
//!
//! Jobs are written in chunks, one entry per commit (up to [`CHUNK`] jobs), not one per job: a chunk is
//! deleted once all its jobs are finished, and a job finished without a receipt (superseded, given up)
//! while its chunk lives on gets a tombstone (`d.<id>`). A job whose event came from the stream does not
//! copy the event: it names the stream message that holds it (`at`), and a new leader reads the event back
//! from there when it loads the job ([`Chunks::load`]). Only daemon-made events (alerts, `run_stalled`),
//! which are in no stream message, are written whole. So a job costs the buckets a few dozen bytes, and
//! JetStream stores each event once, in the stream.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use async_nats::jetstream::{kv, stream};
use herald_daemon::outbox::{DoneJob, JobRecord, PutJob, StoreError};
use herald_event::{Event, decode_batch};
use serde::{Deserialize, Serialize};

use super::kv::{Put, decode, delete, json, load, put};
use crate::error::ClusterError;
use crate::names::token;

/// Jobs per chunk: a chunk is one key-value entry (under NATS's 1 MB message limit).
const CHUNK: usize = 256;

fn chunk_key(n: u64) -> String {
    format!("c.{n:020}")
}

fn tomb_key(id: u64) -> String {
    format!("d.{id:020}")
}

/// A job stored one per key by an earlier version.
fn job_key(notifier: &str, id: u64) -> String {
    format!("{}.{id:020}", token(notifier))
}

/// A job as a chunk holds it: with its event (`job`), or with where its event is in the stream (`at`).
#[derive(Debug, Deserialize)]
struct JobValue {
    notifier: String,
    id: u64,
    #[serde(default)]
    job: Option<JobRecord>,
    #[serde(default)]
    at: Option<JobAt>,
}

/// A job whose event is in the stream: the message holding it, which event, and the job's own fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobAt {
    /// The stream sequence number of the message (one event or a pack) holding the event.
    message: u64,
    run: String,
    seq: u64,
    attempt: u32,
    not_before_ms: u64,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    digest: bool,
}

impl JobValue {
    fn run_seq(&self) -> Option<(&str, u64)> {
        match (&self.job, &self.at) {
            (Some(job), _) => Some((&job.event.run, job.event.seq)),
            (None, Some(at)) => Some((&at.run, at.seq)),
            (None, None) => None,
        }
    }
}

/// A job as it is written: borrowed, the event left out when the stream holds it.
#[derive(Serialize)]
struct JobOut<'a> {
    notifier: &'a str,
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a JobRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<JobAt>,
}

/// A job's (notifier, run, seq).
type JobOf = (String, String, u64);

/// Which chunks of the `jobs` bucket hold which unfinished jobs, and where their events are.
#[derive(Default)]
pub(super) struct Chunks {
    /// Chunk number -> the unfinished jobs it holds a copy of.
    chunks: HashMap<u64, HashSet<u64>>,
    /// Unfinished job -> (notifier, run, seq) and the chunks holding a copy of it.
    jobs: HashMap<u64, (JobOf, Vec<u64>)>,
    /// Unfinished job -> the stream message holding its event.
    at: HashMap<u64, u64>,
    /// Chunk number -> the tombstones (`d.<id>`) that stand for finished jobs it still holds.
    tombs: HashMap<u64, Vec<u64>>,
    /// Tombstone -> how many live chunks still hold its job.
    tomb_refs: HashMap<u64, usize>,
    next_chunk: u64,
}

/// The receipts recorded: (notifier, run) -> the latest receipt's sequence number.
pub(super) type Receipts = HashMap<(String, String), u64>;

impl Chunks {
    /// Write new and rescheduled jobs as chunks; `positions` says which stream message holds an event
    /// (run, seq) just read from the stream.
    pub(super) fn put(
        &mut self,
        store: &kv::Store,
        jobs: &[PutJob],
        positions: &HashMap<(String, u64), u64>,
        puts: &mut Vec<Put>,
    ) -> Result<(), StoreError> {
        for group in jobs.chunks(CHUNK) {
            let n = self.next_chunk;
            self.next_chunk += 1;
            let mut values = Vec::with_capacity(group.len());
            for job in group {
                let (run, seq) = (&job.job.event.run, job.job.event.seq);
                let message = match self.at.get(&job.id) {
                    Some(m) => Some(*m),
                    None => positions.get(&(run.clone(), seq)).copied(),
                };
                let at = message.map(|message| JobAt {
                    message,
                    run: run.clone(),
                    seq,
                    attempt: job.job.attempt,
                    not_before_ms: job.job.not_before_ms,
                    created_ms: job.job.created_ms,
                    last_error: job.job.last_error.clone(),
                    digest: job.job.digest,
                });
                if let Some(m) = message {
                    self.at.insert(job.id, m);
                }
                let job_ref = at.is_none().then_some(&job.job);
                values.push(JobOut { notifier: &job.notifier, id: job.id, job: job_ref, at });
                let what = (job.notifier.clone(), run.clone(), seq);
                self.jobs.entry(job.id).or_insert_with(|| (what, Vec::new())).1.push(n);
                self.chunks.entry(n).or_default().insert(job.id);
            }
            puts.push(put(store, chunk_key(n), json(&values)?));
        }
        Ok(())
    }

    /// Finished jobs leave their chunks; a chunk left empty is deleted. One finished without a receipt
    /// saying so (superseded, given up) while a chunk still holds it gets a tombstone.
    pub(super) fn finish(
        &mut self,
        store: &kv::Store,
        done: &[DoneJob],
        receipts: &Receipts,
        puts: &mut Vec<Put>,
        deletes: &mut Vec<Put>,
    ) {
        let mut emptied = Vec::new();
        for done in done {
            self.at.remove(&done.id);
            let Some(((notifier, run, seq), held)) = self.jobs.remove(&done.id) else {
                // Stored one per key by an earlier version.
                deletes.push(delete(store, job_key(&done.notifier, done.id)));
                continue;
            };
            let mut alive = Vec::new();
            for n in held {
                if let Some(set) = self.chunks.get_mut(&n) {
                    set.remove(&done.id);
                    if set.is_empty() {
                        emptied.push(n);
                    } else {
                        alive.push(n);
                    }
                }
            }
            let delivered = receipts.get(&(notifier, run)).is_some_and(|r| *r >= seq);
            if !alive.is_empty() && !delivered {
                self.tomb_refs.insert(done.id, alive.len());
                for n in alive {
                    self.tombs.entry(n).or_default().push(done.id);
                }
                puts.push(put(store, tomb_key(done.id), Vec::new()));
            }
        }
        emptied.sort_unstable();
        emptied.dedup();
        for n in emptied {
            self.chunks.remove(&n);
            deletes.push(delete(store, chunk_key(n)));
            for id in self.tombs.remove(&n).unwrap_or_default() {
                let left = self.tomb_refs.get(&id).copied().unwrap_or(1).saturating_sub(1);
                if left == 0 {
                    self.tomb_refs.remove(&id);
                    deletes.push(delete(store, tomb_key(id)));
                } else {
                    self.tomb_refs.insert(id, left);
                }
            }
        }
    }

    /// Read the `jobs` bucket: chunks (`c.<n>`, the latest copy of a job wins), tombstones of finished jobs
    /// (`d.<id>`) and single jobs of an earlier version, with the events of jobs that name a stream message
    /// read back from `events`. A job whose receipt is recorded, or tombstoned, is finished; so is one whose
    /// message the stream no longer holds (older than the stream's `max_age`: said in a warning).
    /// Returns the chunks, the unfinished jobs in id order, and the writes that drop the entries no longer
    /// needed.
    pub(super) async fn load(
        store: &kv::Store,
        events: &stream::Stream,
        receipts: &Receipts,
    ) -> Result<(Chunks, Vec<PutJob>, Vec<Put>), ClusterError> {
        let mut me = Chunks::default();
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
        me.next_chunk = chunks.last().map_or(0, |(n, _)| n + 1);
        let delivered = |j: &JobValue| match j.run_seq() {
            Some((run, seq)) => {
                receipts.get(&(j.notifier.clone(), run.to_owned())).is_some_and(|latest| *latest >= seq)
            }
            None => true,
        };
        let mut stale = Vec::new();
        let mut latest: HashMap<u64, (JobValue, Vec<u64>)> = HashMap::new();
        for (n, values) in chunks {
            // Chunks in order: a later copy of a job replaces the earlier one.
            for j in values {
                match latest.entry(j.id) {
                    Entry::Occupied(mut slot) => {
                        let (job, held) = slot.get_mut();
                        *job = j;
                        held.push(n);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert((j, vec![n]));
                    }
                }
            }
            me.chunks.insert(n, HashSet::new());
        }
        let mut messages = Messages::new(events);
        let mut restored = Vec::new();
        for (id, (j, held)) in latest {
            if tombstones.contains(&id) {
                for n in &held {
                    me.tombs.entry(*n).or_default().push(id);
                }
                me.tomb_refs.insert(id, held.len());
                continue;
            }
            if delivered(&j) {
                continue;
            }
            let message = j.at.as_ref().map(|at| at.message);
            let Some(job) = messages.job(j.job, j.at).await else { continue };
            for n in &held {
                me.chunks.entry(*n).or_default().insert(id);
            }
            if let Some(m) = message {
                me.at.insert(id, m);
            }
            let what = (j.notifier.clone(), job.event.run.clone(), job.event.seq);
            me.jobs.insert(id, (what, held));
            restored.push(PutJob { notifier: j.notifier, id, job });
        }
        // Chunks of finished jobs only, and the tombstones no live chunk needs.
        let empty: Vec<u64> = me.chunks.iter().filter(|(_, set)| set.is_empty()).map(|(n, _)| *n).collect();
        for n in empty {
            me.chunks.remove(&n);
            stale.push(delete(store, chunk_key(n)));
            for id in me.tombs.remove(&n).unwrap_or_default() {
                if let Some(left) = me.tomb_refs.get_mut(&id) {
                    *left = left.saturating_sub(1);
                }
            }
        }
        for id in tombstones {
            if me.tomb_refs.get(&id).is_none_or(|left| *left == 0) {
                me.tomb_refs.remove(&id);
                stale.push(delete(store, tomb_key(id)));
            }
        }
        for (key, j) in single {
            if delivered(&j) {
                stale.push(delete(store, key));
            } else if let Some(job) = messages.job(j.job, j.at).await {
                restored.push(PutJob { notifier: j.notifier, id: j.id, job });
            }
        }
        restored.sort_by_key(|j| j.id);
        Ok((me, restored, stale))
    }
}

/// The stream's messages read back while loading jobs, each read once.
struct Messages<'a> {
    stream: &'a stream::Stream,
    read: HashMap<u64, Vec<Event>>,
}

impl<'a> Messages<'a> {
    fn new(stream: &'a stream::Stream) -> Messages<'a> {
        Messages { stream, read: HashMap::new() }
    }

    /// The job, with its event read back from the stream when the chunk names a message; `None` when
    /// that message or event is not there (with a warning).
    async fn job(&mut self, job: Option<JobRecord>, at: Option<JobAt>) -> Option<JobRecord> {
        if let Some(job) = job {
            return Some(job);
        }
        let at = at?;
        if !self.read.contains_key(&at.message) {
            let events = match self.stream.get_raw_message(at.message).await {
                Ok(m) => decode_batch(&m.payload).unwrap_or_default(),
                Err(e) => {
                    tracing::debug!(message = at.message, error = %e, "cannot read a job's event from the stream");
                    Vec::new()
                }
            };
            self.read.insert(at.message, events);
        }
        let event = self.read.get(&at.message)?.iter().find(|e| e.run == at.run && e.seq == at.seq).cloned();
        let Some(event) = event else {
            tracing::warn!(
                run = %at.run, seq = at.seq, message = at.message,
                "a job's event is no longer in the stream (older than its max_age?); the job is dropped"
            );
            return None;
        };
        Some(JobRecord {
            event,
            attempt: at.attempt,
            not_before_ms: at.not_before_ms,
            created_ms: at.created_ms,
            last_error: at.last_error,
            digest: at.digest,
        })
    }
}

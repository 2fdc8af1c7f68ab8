//! The storage seam: what the dispatcher keeps so that nothing accepted is lost, behind the [`Outbox`] trait.
//!
//! The dispatcher's writer is the only code that writes. It reads which events are already stored
//! ([`Outbox::known`]: a retry or a replayed spool is accepted but not delivered again), decides everything in
//! memory, and hands the outbox one [`WriteBatch`] per group of requests: events appended with the delivery
//! jobs they made, outcomes of deliveries (jobs done or rescheduled, receipts keyed by notifier, run and
//! sequence number, give-ups), the runs' states, and compaction (runs forgotten after their retention). A
//! batch is applied atomically and durably before anyone hears back. Workers read their jobs in id order
//! ([`Outbox::jobs`]) and the latest receipt of a run ([`Outbox::latest_receipt`], which carries a live
//! message's id); status, plots and phone commands read run history.
//!
//! Two implementations: [`RedbOutbox`] (`disk.rs`, one crash-safe file, the default of `herald serve`) and
//! [`MemoryOutbox`] (`memory.rs`, the in-process dispatcher of a trainer with no daemon). The trait is
//! asynchronous and batch-shaped so that a replicated store (a message stream with deduplication and key-value
//! buckets) fits behind it too. This module knows nothing of HTTP, notifiers or routing.

use std::collections::HashMap;
use std::path::PathBuf;

use herald_event::Event;
use herald_plugin::Receipt;
use serde::{Deserialize, Serialize};

use crate::api::GiveUp;
use crate::runs::RunState;

mod disk;
mod memory;

pub use disk::{RedbOutbox, create_private_dir};
pub use memory::MemoryOutbox;

/// Give-ups kept for status.
pub const GIVE_UPS_KEPT: usize = 200;

/// The outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the outbox file.
    #[error(
        "the outbox {path} is in use by another herald process (a running `herald serve`?): stop it or set another [daemon] state_dir"
    )]
    InUse {
        /// The outbox file.
        path: PathBuf,
    },
    /// The state folder cannot be made.
    #[error(
        "cannot create the state folder {path}: {source}: check its permissions or set [daemon] state_dir"
    )]
    StateDir {
        /// The state folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error("outbox error: {0}: check disk space and permissions of the state folder")]
    Db(#[from] ::redb::Error),
    /// A record cannot be encoded (only an in-process sender can hand over such an event).
    #[error("cannot encode a record for the outbox: {0}")]
    Encode(#[from] serde_json::Error),
    /// The blocking task that talks to the store was lost (the runtime is shutting down).
    #[error("the outbox task ended unexpectedly: {0}")]
    Task(String),
}

/// One delivery still to make: the event, for one notifier (the job's key holds the notifier and the job id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The event to deliver.
    pub event: Event,
    /// Failed attempts so far.
    pub attempt: u32,
    /// Do not try before this time (ms since the Unix epoch); 0 for at once.
    pub not_before_ms: u64,
    /// When the job was made (ms since the Unix epoch); `max_age` counts from here.
    pub created_ms: u64,
    /// The latest failure, for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Held for the notifier's next digest (quiet hours, `digest`): delivered with the other held jobs as
    /// one notification, from `not_before_ms` on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub digest: bool,
}

/// A job to store: new, or rescheduled after a failed attempt.
#[derive(Debug, Clone)]
pub struct PutJob {
    /// The notifier's name.
    pub notifier: String,
    /// The job id, unique across notifiers and increasing in the order jobs were made.
    pub id: u64,
    /// The job.
    pub job: JobRecord,
}

/// A job that is finished (delivered, superseded or given up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneJob {
    /// The notifier's name.
    pub notifier: String,
    /// The job id.
    pub id: u64,
}

/// What a notifier answered for one delivery: the key is (notifier, run, seq).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptRecord {
    /// The notifier's name.
    pub notifier: String,
    /// The run.
    pub run: String,
    /// The delivered event's sequence number.
    pub seq: u64,
    /// The notifier's receipt (a live message's id, say).
    pub receipt: Receipt,
}

/// One point of a run's loss history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    /// The `batch_ended` event's sequence number.
    pub seq: u64,
    /// Its epoch, 0-based.
    pub epoch: u32,
    /// Its batch within the epoch, 0-based.
    pub batch: u64,
    /// The smoothed training loss.
    pub smooth_loss: f64,
    /// The batch's learning rate; NaN for points stored before the outbox kept it.
    pub lr: f64,
    /// When the batch ended (the event's time, ms since the Unix epoch); 0 for points stored before the
    /// outbox kept it.
    pub wall_ms: u64,
}

impl LossPoint {
    /// The point a `batch_ended` event leaves in the history; None for any other event.
    pub fn of(event: &Event) -> Option<LossPoint> {
        let herald_event::Payload::BatchEnded(b) = &event.payload else { return None };
        let wall_ms = u64::try_from(event.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        Some(LossPoint {
            seq: event.seq,
            epoch: b.epoch,
            batch: b.batch,
            smooth_loss: b.smooth_loss,
            lr: b.lr,
            wall_ms,
        })
    }
}

/// One group of writes, applied atomically: all of it is kept, or none.
///
/// Applied in this order: runs forgotten, events, jobs put, jobs done, receipts, give-ups, run states, the
/// next job id.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Runs to forget entirely (state, events, history, receipts): compaction of runs that ended long ago.
    pub forget: Vec<String>,
    /// New events for the run history (not already [`Outbox::known`]); `batch_ended` keeps only its loss point.
    pub events: Vec<Event>,
    /// Jobs to store, new or rescheduled.
    pub jobs: Vec<PutJob>,
    /// Jobs to remove.
    pub done: Vec<DoneJob>,
    /// Receipts of deliveries made.
    pub receipts: Vec<ReceiptRecord>,
    /// Give-ups, with their job ids (the outbox keeps the latest [`GIVE_UPS_KEPT`]).
    pub give_ups: Vec<(u64, GiveUp)>,
    /// Run states to store.
    pub runs: Vec<(String, RunState)>,
    /// The next free job id, when jobs were made.
    pub next_job_id: Option<u64>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.forget.is_empty()
            && self.events.is_empty()
            && self.jobs.is_empty()
            && self.done.is_empty()
            && self.receipts.is_empty()
            && self.give_ups.is_empty()
            && self.runs.is_empty()
            && self.next_job_id.is_none()
    }

    /// The batch's latest receipt (the highest sequence number; of equals, the later) per notifier and run:
    /// only a run's latest receipt per notifier is ever read, so a store needs to keep no other.
    pub fn latest_receipts(&self) -> Vec<&ReceiptRecord> {
        let mut latest: HashMap<(&str, &str), &ReceiptRecord> = HashMap::new();
        for r in &self.receipts {
            let slot = latest.entry((r.notifier.as_str(), r.run.as_str())).or_insert(r);
            if r.seq >= slot.seq {
                *slot = r;
            }
        }
        latest.into_values().collect()
    }
}

/// What a committed batch changed that the writer cannot know beforehand.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// For each of the batch's `done` jobs, whether it was still there (a job finished twice counts once).
    pub removed: Vec<bool>,
}

/// Where an outbox keeps its data, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxInfo {
    /// The file, when on disk.
    pub path: Option<PathBuf>,
    /// Its size in bytes (0 in memory).
    pub bytes: u64,
}

/// The dispatcher's durable store. Implementations must apply a [`WriteBatch`] atomically and durably, and
/// may be called from several tasks at once (one writer, many readers).
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Where the data is, for status.
    fn info(&self) -> OutboxInfo;

    /// Apply one batch atomically and durably.
    async fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError>;

    /// For each (run, seq), whether that event is stored already.
    async fn known(&self, keys: Vec<(String, u64)>) -> Result<Vec<bool>, StoreError>;

    /// Every run's state (read once at start).
    async fn runs(&self) -> Result<HashMap<String, RunState>, StoreError>;

    /// The next free job id.
    async fn next_job_id(&self) -> Result<u64, StoreError>;

    /// Jobs waiting, per notifier.
    async fn job_counts(&self) -> Result<HashMap<String, u64>, StoreError>;

    /// Up to `limit` jobs of `notifier` with ids above `after`, in id order.
    async fn jobs(
        &self,
        notifier: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, JobRecord)>, StoreError>;

    /// The receipt of `notifier`'s latest delivery for `run` (the highest sequence number delivered).
    async fn latest_receipt(&self, notifier: &str, run: &str) -> Result<Option<Receipt>, StoreError>;

    /// A number that changes whenever `run`'s loss history changes, for caching what is made of that history:
    /// taken before [`Outbox::loss_history`], the history read is at least as new as the number says, so an
    /// answer kept under it is current as long as the number stays the same. `None`: this outbox keeps no such
    /// number (reading it is cheap), and nothing read may be kept.
    fn loss_version(&self, run: &str) -> Option<u64> {
        let _ = run;
        None
    }

    /// A run's loss history (smoothed loss, learning rate and wall time per batch), in sequence order.
    async fn loss_history(&self, run: &str) -> Result<Vec<LossPoint>, StoreError>;

    /// A run's stored lifecycle events (everything but `batch_ended`), in sequence order.
    async fn events(&self, run: &str) -> Result<Vec<Event>, StoreError>;

    /// The latest give-ups, oldest first.
    async fn give_ups(&self) -> Result<Vec<GiveUp>, StoreError>;
}

#[cfg(test)]
mod tests;

//! [`RedbOutbox`]: the outbox in one redb file (`<state_dir>/outbox.redb`), what must survive `kill -9`.
//!
//! Tables: `runs` (run id -> [`RunState`] as JSON), `events` ((run, seq) -> lifecycle event as JSON, also the
//! duplicate check), `loss_lr` ((run, seq) -> (epoch, batch, smoothed loss, lr, wall time) per `batch_ended`, the
//! history behind plots, status and the dashboard's curves; outboxes written before it have a `loss` table
//! without lr and time, still read), `jobs` ((notifier, job id) -> [`JobRecord`]: one delivery still to make),
//! `receipt_log` ((notifier, run, seq) -> [`Receipt`]; of a batch's receipts only the latest per notifier and
//! run), `give_ups` (the latest give-ups, for status) and
//! `meta` (the next job id). Outboxes written before receipts were keyed by sequence number have a
//! `receipts` table ((notifier, run) -> the latest receipt), still read as a fallback. A job is removed in the
//! same transaction that records its receipt, so a delivery recorded as done is never made again; finished
//! jobs leave nothing behind.
//!
//! Each [`Outbox`] call runs on tokio's blocking pool; redb's MVCC lets reads run beside the one writer. The
//! synchronous methods ([`RedbOutbox::load_jobs`] and friends) are for tools that open an outbox outside a
//! runtime, such as tests that look into the file after `kill -9`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use herald_event::Event;
use herald_plugin::Receipt;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Committed, GIVE_UPS_KEPT, JobRecord, LossPoint, Outbox, OutboxInfo, StoreError, WriteBatch};
use crate::api::GiveUp;
use crate::runs::RunState;

const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// The loss history of outboxes written before `loss_lr`: read, cleared with its runs, never written.
const LEGACY_LOSS: TableDefinition<(&str, u64), (u32, u64, f64)> = TableDefinition::new("loss");
/// A stored loss point: (epoch, batch, smoothed loss, lr, wall time in ms).
type LossRow = (u32, u64, f64, f64, u64);
/// (run, seq) -> [`LossRow`] per `batch_ended`.
const LOSS: TableDefinition<(&str, u64), LossRow> = TableDefinition::new("loss_lr");
const JOBS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("jobs");
const RECEIPT_LOG: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("receipt_log");
/// The receipts table of outboxes written before `receipt_log`: read, cleared with its runs, never written.
const LEGACY_RECEIPTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("receipts");
const GIVE_UPS: TableDefinition<u64, &[u8]> = TableDefinition::new("give_ups");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const NEXT_JOB_ID: &str = "next_job_id";
/// redb's page cache (its default is 1 GiB): enough for the hot end of the tables, small enough that a
/// large backlog does not become resident memory.
const CACHE_BYTES: usize = 16 << 20;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The outbox in a redb file. Cloning shares the open database.
#[derive(Clone)]
pub struct RedbOutbox {
    db: Arc<Database>,
    path: PathBuf,
    /// Per run, a number changed after each commit that changes its loss history ([`Outbox::loss_version`]).
    loss_versions: Arc<Mutex<LossVersions>>,
}

/// The loss versions of the runs whose loss history changed since the outbox was opened (others are at 0).
#[derive(Debug, Default)]
struct LossVersions {
    /// The last version given.
    last: u64,
    /// Each run's version; a forgotten run keeps a new one, so that nothing read before is taken as current.
    runs: HashMap<String, u64>,
}

impl std::fmt::Debug for RedbOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbOutbox").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbOutbox {
    /// Open (or create) the outbox in `state_dir`, creating the folder (mode 0700) when missing.
    pub fn open(state_dir: &Path) -> Result<RedbOutbox, StoreError> {
        create_private_dir(state_dir)
            .map_err(|source| StoreError::StateDir { path: state_dir.to_owned(), source })?;
        let path = state_dir.join("outbox.redb");
        let db = match Database::builder().set_cache_size(CACHE_BYTES).create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse { path }),
            Err(e) => return Err(e.into()),
        };
        let outbox = RedbOutbox { db: Arc::new(db), path, loss_versions: Arc::default() };
        outbox.apply(WriteBatch::default())?;
        Ok(outbox)
    }

    /// Apply a batch in one write transaction and commit it durably; nothing is kept if any part fails.
    pub fn apply(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        let txn = self.db.begin_write()?;
        let mut committed = Committed::default();
        {
            let mut runs = txn.open_table(RUNS)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut loss = txn.open_table(LOSS)?;
            let mut legacy_loss = txn.open_table(LEGACY_LOSS)?;
            let mut jobs = txn.open_table(JOBS)?;
            let mut receipts = txn.open_table(RECEIPT_LOG)?;
            let mut legacy = txn.open_table(LEGACY_RECEIPTS)?;
            let mut give_ups = txn.open_table(GIVE_UPS)?;
            let mut meta = txn.open_table(META)?;
            for run in &batch.forget {
                let run = run.as_str();
                runs.remove(run)?;
                events.retain_in((run, 0)..=(run, u64::MAX), |_, _| false)?;
                loss.retain_in((run, 0)..=(run, u64::MAX), |_, _| false)?;
                legacy_loss.retain_in((run, 0)..=(run, u64::MAX), |_, _| false)?;
                receipts.retain(|k, _| k.1 != run)?;
                legacy.retain(|k, _| k.1 != run)?;
            }
            for event in &batch.events {
                let key = (event.run.as_str(), event.seq);
                if let Some(p) = LossPoint::of(event) {
                    loss.insert(key, (p.epoch, p.batch, p.smooth_loss, p.lr, p.wall_ms))?;
                } else {
                    events.insert(key, serde_json::to_vec(event)?.as_slice())?;
                }
            }
            for put in &batch.jobs {
                jobs.insert((put.notifier.as_str(), put.id), serde_json::to_vec(&put.job)?.as_slice())?;
            }
            for done in &batch.done {
                committed.removed.push(jobs.remove((done.notifier.as_str(), done.id))?.is_some());
            }
            for r in batch.latest_receipts() {
                let key = (r.notifier.as_str(), r.run.as_str(), r.seq);
                receipts.insert(key, serde_json::to_vec(&r.receipt)?.as_slice())?;
            }
            for (id, give_up) in &batch.give_ups {
                give_ups.insert(*id, serde_json::to_vec(give_up)?.as_slice())?;
            }
            while give_ups.len()? > GIVE_UPS_KEPT as u64 {
                if give_ups.pop_first()?.is_none() {
                    break;
                }
            }
            for (run, state) in &batch.runs {
                runs.insert(run.as_str(), serde_json::to_vec(state)?.as_slice())?;
            }
            if let Some(id) = batch.next_job_id {
                meta.insert(NEXT_JOB_ID, id)?;
            }
        }
        // Runs whose loss history the batch changes: their versions move once the commit is over (whatever its
        // outcome), so that a reader that took a version before a read never keeps an older history under a
        // newer version.
        let mut touched: Vec<&str> = batch.forget.iter().map(String::as_str).collect();
        touched.extend(batch.events.iter().filter(|e| LossPoint::of(e).is_some()).map(|e| e.run.as_str()));
        let result = txn.commit();
        if !touched.is_empty() {
            let mut v = self.loss_versions.lock().unwrap_or_else(PoisonError::into_inner);
            v.last += 1;
            let last = v.last;
            for run in touched {
                match v.runs.get_mut(run) {
                    Some(n) => *n = last,
                    None => {
                        v.runs.insert(run.to_owned(), last);
                    }
                }
            }
        }
        result?;
        Ok(committed)
    }

    /// For each (run, seq), whether the event is stored.
    pub fn load_known(&self, keys: &[(String, u64)]) -> Result<Vec<bool>, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let loss = txn.open_table(LOSS)?;
        let legacy_loss = txn.open_table(LEGACY_LOSS)?;
        let mut out = Vec::with_capacity(keys.len());
        for (run, seq) in keys {
            let key = (run.as_str(), *seq);
            out.push(
                loss.get(key)?.is_some() || events.get(key)?.is_some() || legacy_loss.get(key)?.is_some(),
            );
        }
        Ok(out)
    }

    /// Every run's state; an unreadable record is skipped with a warning.
    pub fn load_runs(&self) -> Result<HashMap<String, RunState>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RUNS)?;
        let mut out = HashMap::new();
        for row in table.iter()? {
            let (k, v) = row?;
            match serde_json::from_slice::<RunState>(v.value()) {
                Ok(st) => {
                    out.insert(k.value().to_owned(), st);
                }
                Err(e) => tracing::warn!(run = k.value(), error = %e, "unreadable run record skipped"),
            }
        }
        Ok(out)
    }

    /// The next free job id.
    pub fn load_next_job_id(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(NEXT_JOB_ID)?.map_or(1, |v| v.value()))
    }

    /// Jobs waiting, per notifier.
    pub fn load_job_counts(&self) -> Result<HashMap<String, u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let mut out: HashMap<String, u64> = HashMap::new();
        for row in table.iter()? {
            let (k, _) = row?;
            *out.entry(k.value().0.to_owned()).or_default() += 1;
        }
        Ok(out)
    }

    /// Up to `limit` jobs of `notifier` with ids above `after`, in id order.
    pub fn load_jobs(
        &self,
        notifier: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, JobRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        let Some(start) = after.checked_add(1) else {
            return Ok(out);
        };
        for row in table.range((notifier, start)..=(notifier, u64::MAX))? {
            let (k, v) = row?;
            let id = k.value().1;
            match serde_json::from_slice::<JobRecord>(v.value()) {
                Ok(job) => out.push((id, job)),
                Err(e) => tracing::warn!(notifier, job = id, error = %e, "unreadable job skipped"),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The receipt of `notifier`'s latest delivery for `run`.
    pub fn load_latest_receipt(&self, notifier: &str, run: &str) -> Result<Option<Receipt>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECEIPT_LOG)?;
        if let Some(row) = table.range((notifier, run, 0)..=(notifier, run, u64::MAX))?.next_back() {
            let (_, v) = row?;
            return Ok(serde_json::from_slice(v.value()).ok());
        }
        match txn.open_table(LEGACY_RECEIPTS) {
            Ok(legacy) => {
                Ok(legacy.get((notifier, run))?.and_then(|v| serde_json::from_slice(v.value()).ok()))
            }
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A run's loss history, in order: `loss_lr`, with the points of the legacy `loss` table (no lr, no wall
    /// time) of an outbox written before it merged in.
    pub fn load_loss_history(&self, run: &str) -> Result<Vec<LossPoint>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOSS)?;
        let mut out = Vec::new();
        for row in table.range((run, 0)..=(run, u64::MAX))? {
            let (k, v) = row?;
            let (epoch, batch, smooth_loss, lr, wall_ms) = v.value();
            out.push(LossPoint { seq: k.value().1, epoch, batch, smooth_loss, lr, wall_ms });
        }
        let legacy = match txn.open_table(LEGACY_LOSS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        let before = out.len();
        for row in legacy.range((run, 0)..=(run, u64::MAX))? {
            let (k, v) = row?;
            let (epoch, batch, smooth_loss) = v.value();
            out.push(LossPoint { seq: k.value().1, epoch, batch, smooth_loss, lr: f64::NAN, wall_ms: 0 });
        }
        if out.len() > before && before > 0 {
            out.sort_by_key(|p| p.seq);
        }
        Ok(out)
    }

    /// A run's stored lifecycle events, in sequence order.
    pub fn load_events(&self, run: &str) -> Result<Vec<Event>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in table.range((run, 0)..=(run, u64::MAX))? {
            let (_, v) = row?;
            if let Ok(e) = serde_json::from_slice(v.value()) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The latest give-ups, newest last.
    pub fn load_give_ups(&self) -> Result<Vec<GiveUp>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(GIVE_UPS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            if let Ok(g) = serde_json::from_slice(v.value()) {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Run `f` on a clone of this outbox on tokio's blocking pool.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&RedbOutbox) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me)).await.map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl Outbox for RedbOutbox {
    fn info(&self) -> OutboxInfo {
        let bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        OutboxInfo { path: Some(self.path.clone()), bytes }
    }

    async fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        self.blocking(move |o| o.apply(batch)).await
    }

    async fn known(&self, keys: Vec<(String, u64)>) -> Result<Vec<bool>, StoreError> {
        self.blocking(move |o| o.load_known(&keys)).await
    }

    async fn runs(&self) -> Result<HashMap<String, RunState>, StoreError> {
        self.blocking(RedbOutbox::load_runs).await
    }

    async fn next_job_id(&self) -> Result<u64, StoreError> {
        self.blocking(RedbOutbox::load_next_job_id).await
    }

    async fn job_counts(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.blocking(RedbOutbox::load_job_counts).await
    }

    async fn jobs(
        &self,
        notifier: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, JobRecord)>, StoreError> {
        let notifier = notifier.to_owned();
        self.blocking(move |o| o.load_jobs(&notifier, after, limit)).await
    }

    async fn latest_receipt(&self, notifier: &str, run: &str) -> Result<Option<Receipt>, StoreError> {
        let (notifier, run) = (notifier.to_owned(), run.to_owned());
        self.blocking(move |o| o.load_latest_receipt(&notifier, &run)).await
    }

    fn loss_version(&self, run: &str) -> Option<u64> {
        Some(
            self.loss_versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .runs
                .get(run)
                .copied()
                .unwrap_or(0),
        )
    }

    async fn loss_history(&self, run: &str) -> Result<Vec<LossPoint>, StoreError> {
        let run = run.to_owned();
        self.blocking(move |o| o.load_loss_history(&run)).await
    }

    async fn events(&self, run: &str) -> Result<Vec<Event>, StoreError> {
        let run = run.to_owned();
        self.blocking(move |o| o.load_events(&run)).await
    }

    async fn give_ups(&self) -> Result<Vec<GiveUp>, StoreError> {
        self.blocking(RedbOutbox::load_give_ups).await
    }
}

/// Create a folder readable by its owner only (its parents with default permissions).
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

//! The durable outbox: one redb file (`<state_dir>/outbox.redb`) holding what must survive `kill -9`.
//!
//! Tables: `runs` (run id -> [`RunState`] as JSON), `events` ((run, seq) -> lifecycle event as JSON, also the
//! duplicate check), `loss` ((run, seq) -> (epoch, batch, smoothed loss) per `batch_ended`, the history behind
//! plots and status), `jobs` ((notifier, job id) -> [`JobRecord`]: one delivery still to make), `receipts`
//! ((notifier, run) -> the latest [`Receipt`]), `give_ups` (the latest give-ups, for status) and `meta`
//! (the next job id). A job is removed in the same transaction that records its receipt, so a delivery
//! recorded as done is never made again; finished jobs leave nothing behind (compaction is the removal).
//!
//! Only the writer thread (`dispatcher.rs`) writes, through [`Store::write`]; workers and status read with
//! their own read transactions (redb's MVCC lets them run beside the writer). The in-process dispatcher uses
//! the same tables in memory ([`Store::in_memory`]). This module knows nothing of HTTP or notifiers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use herald_event::Event;
use herald_plugin::Receipt;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::runs::RunState;

const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const LOSS: TableDefinition<(&str, u64), (u32, u64, f64)> = TableDefinition::new("loss");
const JOBS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("jobs");
const RECEIPTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("receipts");
const GIVE_UPS: TableDefinition<u64, &[u8]> = TableDefinition::new("give_ups");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const NEXT_JOB_ID: &str = "next_job_id";
/// redb's page cache (its default is 1 GiB): enough for the hot end of the tables, small enough that a
/// large backlog does not become resident memory.
const CACHE_BYTES: usize = 16 << 20;
/// Give-ups kept for status.
const GIVE_UPS_KEPT: u64 = 200;

/// The outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the outbox {path} is in use by another herald process (a running `herald serve`?): stop it or set another [daemon] state_dir"
    )]
    InUse { path: PathBuf },
    #[error(
        "cannot create the state folder {path}: {source}: check its permissions or set [daemon] state_dir"
    )]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox error: {0}: check disk space and permissions of the state folder")]
    Db(#[from] redb::Error),
    #[error("cannot encode a record for the outbox: {0}")]
    Encode(#[from] serde_json::Error),
}

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

/// One delivery still to make: the event, for one notifier (the key holds the notifier and the job id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
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
}

/// A delivery the daemon stopped trying.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GiveUp {
    pub notifier: String,
    pub run: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub error: String,
    pub attempts: u32,
    pub at_ms: u64,
}

/// One point of a run's loss history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    pub seq: u64,
    pub epoch: u32,
    pub batch: u64,
    pub smooth_loss: f64,
}

/// The open outbox.
pub struct Store {
    db: Database,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The tables of one write transaction.
pub struct Tables<'t> {
    runs: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, (&'static str, u64), &'static [u8]>,
    loss: Table<'t, (&'static str, u64), (u32, u64, f64)>,
    jobs: Table<'t, (&'static str, u64), &'static [u8]>,
    receipts: Table<'t, (&'static str, &'static str), &'static [u8]>,
    give_ups: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
}

impl Store {
    /// Open (or create) the outbox in `state_dir`, creating the folder (mode 0700) when missing.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(state_dir)
            .map_err(|source| StoreError::StateDir { path: state_dir.to_owned(), source })?;
        let path = state_dir.join("outbox.redb");
        let db = match Database::builder().set_cache_size(CACHE_BYTES).create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse { path }),
            Err(e) => return Err(e.into()),
        };
        let store = Store { db, path: Some(path) };
        store.init()?;
        Ok(store)
    }

    /// An outbox in memory, for the in-process dispatcher (gone when the process ends).
    pub fn in_memory() -> Result<Store, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        let store = Store { db, path: None };
        store.init()?;
        Ok(store)
    }

    fn init(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(()))
    }

    /// The outbox file, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The outbox file's size in bytes (0 in memory).
    pub fn file_size(&self) -> u64 {
        self.path.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
    }

    /// Run `f` in one write transaction and commit it durably; nothing is kept if `f` fails.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut tables = Tables {
                runs: txn.open_table(RUNS)?,
                events: txn.open_table(EVENTS)?,
                loss: txn.open_table(LOSS)?,
                jobs: txn.open_table(JOBS)?,
                receipts: txn.open_table(RECEIPTS)?,
                give_ups: txn.open_table(GIVE_UPS)?,
                meta: txn.open_table(META)?,
            };
            f(&mut tables)?
        };
        txn.commit()?;
        Ok(out)
    }

    /// Every run's state.
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
    pub fn next_job_id(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(NEXT_JOB_ID)?.map_or(1, |v| v.value()))
    }

    /// Jobs waiting, per notifier.
    pub fn job_counts(&self) -> Result<HashMap<String, u64>, StoreError> {
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
    pub fn receipt(&self, notifier: &str, run: &str) -> Result<Option<Receipt>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECEIPTS)?;
        Ok(table.get((notifier, run))?.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// A run's smoothed-loss history, in order.
    pub fn loss_history(&self, run: &str) -> Result<Vec<LossPoint>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOSS)?;
        let mut out = Vec::new();
        for row in table.range((run, 0)..=(run, u64::MAX))? {
            let (k, v) = row?;
            let (epoch, batch, smooth_loss) = v.value();
            out.push(LossPoint { seq: k.value().1, epoch, batch, smooth_loss });
        }
        Ok(out)
    }

    /// A run's stored lifecycle events, in sequence order.
    pub fn events(&self, run: &str) -> Result<Vec<Event>, StoreError> {
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
    pub fn give_ups(&self) -> Result<Vec<GiveUp>, StoreError> {
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
}

impl Tables<'_> {
    /// Store an event; `false` when it was stored before (a duplicate: same run and sequence number).
    pub fn put_event(&mut self, event: &Event) -> Result<bool, StoreError> {
        let key = (event.run.as_str(), event.seq);
        if let herald_event::Payload::BatchEnded(b) = &event.payload {
            return Ok(self.loss.insert(key, (b.epoch, b.batch, b.smooth_loss))?.is_none());
        }
        if self.events.get(key)?.is_some() {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(event)?;
        self.events.insert(key, bytes.as_slice())?;
        Ok(true)
    }

    pub fn put_run(&mut self, run: &str, state: &RunState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state)?;
        self.runs.insert(run, bytes.as_slice())?;
        Ok(())
    }

    pub fn next_job_id(&mut self) -> Result<u64, StoreError> {
        Ok(self.meta.get(NEXT_JOB_ID)?.map_or(1, |v| v.value()))
    }

    pub fn set_next_job_id(&mut self, id: u64) -> Result<(), StoreError> {
        self.meta.insert(NEXT_JOB_ID, id)?;
        Ok(())
    }

    pub fn put_job(&mut self, notifier: &str, id: u64, job: &JobRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(job)?;
        self.jobs.insert((notifier, id), bytes.as_slice())?;
        Ok(())
    }

    /// Remove a job; `false` when it was gone already.
    pub fn remove_job(&mut self, notifier: &str, id: u64) -> Result<bool, StoreError> {
        Ok(self.jobs.remove((notifier, id))?.is_some())
    }

    pub fn put_receipt(&mut self, notifier: &str, run: &str, receipt: &Receipt) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(receipt)?;
        self.receipts.insert((notifier, run), bytes.as_slice())?;
        Ok(())
    }

    pub fn put_give_up(&mut self, id: u64, give_up: &GiveUp) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(give_up)?;
        self.give_ups.insert(id, bytes.as_slice())?;
        while self.give_ups.len()? > GIVE_UPS_KEPT {
            if self.give_ups.pop_first()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Forget a run entirely (its events, history and receipts); used for runs that ended long ago.
    pub fn remove_run(&mut self, run: &str) -> Result<(), StoreError> {
        self.runs.remove(run)?;
        self.events.retain_in((run, 0)..=(run, u64::MAX), |_, _| false)?;
        self.loss.retain_in((run, 0)..=(run, u64::MAX), |_, _| false)?;
        self.receipts.retain(|k, _| k.1 != run)?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use herald_event::{BatchEnded, Message};

    use super::*;

    fn message(run: &str, seq: u64) -> Event {
        Event::now(run, seq, Message { title: "t".into(), text: "x".into(), level: Default::default() })
    }

    fn job(e: &Event) -> JobRecord {
        JobRecord { event: e.clone(), attempt: 0, not_before_ms: 0, created_ms: 1, last_error: None }
    }

    #[test]
    fn events_are_deduplicated_by_run_and_seq() {
        let store = Store::in_memory().expect("in-memory store");
        let batch = Event::now(
            "r",
            2,
            BatchEnded { epoch: 0, batch: 1, n_batches: 3, loss: 1.0, smooth_loss: 0.5, lr: 0.1 },
        );
        let firsts = store
            .write(|t| {
                Ok((t.put_event(&message("r", 1))?, t.put_event(&batch)?, t.put_event(&message("q", 1))?))
            })
            .expect("write");
        assert_eq!(firsts, (true, true, true));
        let again =
            store.write(|t| Ok((t.put_event(&message("r", 1))?, t.put_event(&batch)?))).expect("write");
        assert_eq!(again, (false, false));
        assert_eq!(store.events("r").expect("read").len(), 1);
        assert_eq!(
            store.loss_history("r").expect("read"),
            vec![LossPoint { seq: 2, epoch: 0, batch: 1, smooth_loss: 0.5 }]
        );
    }

    #[test]
    fn jobs_load_in_id_order_per_notifier_and_vanish_when_done() {
        let store = Store::in_memory().expect("in-memory store");
        store
            .write(|t| {
                for id in 1..=5 {
                    t.put_job("hook", id, &job(&message("r", id)))?;
                }
                t.put_job("other", 3, &job(&message("r", 3)))?;
                t.set_next_job_id(6)
            })
            .expect("write");
        let ids = |after, limit| -> Vec<u64> {
            store.load_jobs("hook", after, limit).expect("read").into_iter().map(|(id, _)| id).collect()
        };
        assert_eq!(ids(0, 100), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids(2, 2), vec![3, 4]);
        assert_eq!(ids(u64::MAX, 2), Vec::<u64>::new());
        assert_eq!(store.next_job_id().expect("read"), 6);
        let removed = store
            .write(|t| {
                let first = t.remove_job("hook", 2)?;
                t.put_receipt("hook", "r", &Receipt(serde_json::json!({"id": 7})))?;
                Ok((first, t.remove_job("hook", 2)?))
            })
            .expect("write");
        assert_eq!(removed, (true, false));
        assert_eq!(ids(0, 100), vec![1, 3, 4, 5]);
        assert_eq!(store.job_counts().expect("read").get("hook"), Some(&4));
        assert_eq!(store.receipt("hook", "r").expect("read"), Some(Receipt(serde_json::json!({"id": 7}))));
        assert_eq!(store.receipt("other", "r").expect("read"), None);
    }

    #[test]
    fn a_failed_write_keeps_nothing() {
        let store = Store::in_memory().expect("in-memory store");
        let out: Result<(), StoreError> = store.write(|t| {
            t.put_job("hook", 1, &job(&message("r", 1)))?;
            Err(StoreError::Encode(serde_json::from_str::<u8>("x").expect_err("not a number")))
        });
        assert!(out.is_err());
        assert!(store.load_jobs("hook", 0, 10).expect("read").is_empty());
    }

    #[test]
    fn the_outbox_survives_reopening_and_refuses_a_second_opener() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        {
            let store = Store::open(&state).expect("open");
            store.write(|t| t.put_job("hook", 1, &job(&message("r", 1)))).expect("write");
            assert!(matches!(Store::open(&state), Err(StoreError::InUse { .. })));
        }
        let store = Store::open(&state).expect("reopen");
        assert_eq!(store.load_jobs("hook", 0, 10).expect("read").len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn give_ups_keep_the_latest() {
        let store = Store::in_memory().expect("in-memory store");
        store
            .write(|t| {
                for id in 0..GIVE_UPS_KEPT + 5 {
                    let g = GiveUp {
                        notifier: "hook".into(),
                        run: "r".into(),
                        seq: id,
                        kind: "message".into(),
                        error: "no".into(),
                        attempts: 1,
                        at_ms: id,
                    };
                    t.put_give_up(id, &g)?;
                }
                Ok(())
            })
            .expect("write");
        let kept = store.give_ups().expect("read");
        assert_eq!(kept.len() as u64, GIVE_UPS_KEPT);
        assert_eq!(kept.first().map(|g| g.seq), Some(5));
    }
}

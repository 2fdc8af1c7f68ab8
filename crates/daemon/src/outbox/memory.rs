//! [`MemoryOutbox`]: the outbox in memory, for the dispatcher a trainer runs in its own process when no
//! daemon answers. Same contract as the file outbox (batches all or nothing, receipts by notifier, run and
//! sequence number, the latest give-ups), gone when the process ends. One lock guards the tables; every call
//! holds it briefly and never across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use herald_event::Event;
use herald_plugin::Receipt;

use super::{Committed, GIVE_UPS_KEPT, JobRecord, LossPoint, Outbox, OutboxInfo, StoreError, WriteBatch};
use crate::api::GiveUp;
use crate::runs::RunState;

/// The tables, as ordered maps keyed like the file outbox's.
#[derive(Default)]
struct Tables {
    runs: HashMap<String, RunState>,
    events: BTreeMap<(String, u64), Event>,
    loss: BTreeMap<(String, u64), LossPoint>,
    jobs: BTreeMap<(String, u64), JobRecord>,
    receipts: BTreeMap<(String, String, u64), Receipt>,
    give_ups: BTreeMap<u64, GiveUp>,
    next_job_id: Option<u64>,
}

/// An outbox in memory (gone when the process ends).
#[derive(Default)]
pub struct MemoryOutbox {
    tables: Mutex<Tables>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> MemoryOutbox {
        MemoryOutbox::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // Every write is applied whole under the lock after its checks, so a poisoned lock holds whole data.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The keys of one run's rows in a map keyed by (run, seq).
fn run_range(run: &str) -> std::ops::RangeInclusive<(String, u64)> {
    (run.to_owned(), 0)..=(run.to_owned(), u64::MAX)
}

#[async_trait::async_trait]
impl Outbox for MemoryOutbox {
    fn info(&self) -> OutboxInfo {
        OutboxInfo::default()
    }

    async fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        let mut t = self.tables();
        let mut committed = Committed::default();
        for run in &batch.forget {
            t.runs.remove(run);
            t.events.retain(|k, _| &k.0 != run);
            t.loss.retain(|k, _| &k.0 != run);
            t.receipts.retain(|k, _| &k.1 != run);
        }
        for event in batch.events {
            let key = (event.run.clone(), event.seq);
            if let Some(point) = LossPoint::of(&event) {
                t.loss.insert(key, point);
            } else {
                t.events.insert(key, event);
            }
        }
        for put in batch.jobs {
            t.jobs.insert((put.notifier, put.id), put.job);
        }
        for done in batch.done {
            committed.removed.push(t.jobs.remove(&(done.notifier, done.id)).is_some());
        }
        for r in batch.receipts {
            t.receipts.insert((r.notifier, r.run, r.seq), r.receipt);
        }
        t.give_ups.extend(batch.give_ups);
        while t.give_ups.len() > GIVE_UPS_KEPT {
            t.give_ups.pop_first();
        }
        t.runs.extend(batch.runs);
        if let Some(id) = batch.next_job_id {
            t.next_job_id = Some(id);
        }
        Ok(committed)
    }

    async fn known(&self, keys: Vec<(String, u64)>) -> Result<Vec<bool>, StoreError> {
        let t = self.tables();
        Ok(keys.into_iter().map(|k| t.events.contains_key(&k) || t.loss.contains_key(&k)).collect())
    }

    async fn runs(&self) -> Result<HashMap<String, RunState>, StoreError> {
        Ok(self.tables().runs.clone())
    }

    async fn next_job_id(&self) -> Result<u64, StoreError> {
        Ok(self.tables().next_job_id.unwrap_or(1))
    }

    async fn job_counts(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for (notifier, _) in self.tables().jobs.keys() {
            *out.entry(notifier.clone()).or_default() += 1;
        }
        Ok(out)
    }

    async fn jobs(
        &self,
        notifier: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, JobRecord)>, StoreError> {
        let Some(start) = after.checked_add(1) else { return Ok(Vec::new()) };
        let t = self.tables();
        let range = (notifier.to_owned(), start)..=(notifier.to_owned(), u64::MAX);
        Ok(t.jobs.range(range).take(limit).map(|((_, id), job)| (*id, job.clone())).collect())
    }

    async fn latest_receipt(&self, notifier: &str, run: &str) -> Result<Option<Receipt>, StoreError> {
        let t = self.tables();
        let range =
            (notifier.to_owned(), run.to_owned(), 0)..=(notifier.to_owned(), run.to_owned(), u64::MAX);
        Ok(t.receipts.range(range).next_back().map(|(_, r)| r.clone()))
    }

    async fn loss_history(&self, run: &str) -> Result<Vec<LossPoint>, StoreError> {
        Ok(self.tables().loss.range(run_range(run)).map(|(_, p)| *p).collect())
    }

    async fn events(&self, run: &str) -> Result<Vec<Event>, StoreError> {
        Ok(self.tables().events.range(run_range(run)).map(|(_, e)| e.clone()).collect())
    }

    async fn give_ups(&self) -> Result<Vec<GiveUp>, StoreError> {
        Ok(self.tables().give_ups.values().cloned().collect())
    }
}

//! The writer: the only code that writes the outbox, with group commit.
//!
//! Every write (ingested events, delivery outcomes, stop requests, daemon-made events, compaction) reaches
//! the writer as a [`WriteOp`] over a bounded channel. The writer takes whatever is waiting (up to
//! [`MAX_GROUP`]), decides each operation in memory (one function per kind: [`Group::ingest`],
//! [`Group::finish`], [`Group::stop`], [`Group::change`], [`Group::forget`]), commits the group as one
//! outbox batch, and only then updates the shared run table and counters and answers the senders. So an
//! ingest is answered once its events and jobs are durable, and many clients share one commit. When a batch
//! fails, its operations are tried one by one so that one bad operation does not sink the others.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use herald_event::{Event, EventKind, Payload};
use tokio::sync::mpsc;

use crate::api::{GiveUp, IngestReply, RunControl};
use crate::jobs;
use crate::outbox::{Committed, DoneJob, JobRecord, PutJob, ReceiptRecord, StoreError, WriteBatch};
use crate::quiet;
use crate::rules::{Fired, Rules};
use crate::runs::{self, MADE_SEQ_BASE, RunChange, RunState};
use crate::shared::{Outcome, Shared, Slot, WriteOp};

/// Operations grouped per batch at most.
pub(crate) const MAX_GROUP: usize = 512;
/// Give-ups shown per notifier in status.
const RECENT_GIVE_UPS: usize = 10;

/// Apply operations until [`WriteOp::Exit`] or until every sender is gone.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<WriteOp>, mut next_id: u64) {
    let rules = Rules::new(shared.options.rules.clone());
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let exit = ops.iter().any(|op| matches!(op, WriteOp::Exit));
        match commit(&shared, &rules, &mut ops, next_id).await {
            Ok(next) => next_id = next,
            // One bad operation must not sink the others grouped with it: apply them one by one.
            Err(_) if ops.len() > 1 => {
                for op in ops.iter_mut() {
                    let mut single = [std::mem::replace(op, WriteOp::Exit)];
                    match commit(&shared, &rules, &mut single, next_id).await {
                        Ok(next) => next_id = next,
                        Err(e) => fail(&mut single, &e),
                    }
                }
            }
            Err(e) => fail(&mut ops, &e),
        }
        if exit {
            break;
        }
    }
}

/// Decide, commit and publish one group; returns the next free job id.
async fn commit(
    shared: &Shared,
    rules: &Rules,
    ops: &mut [WriteOp],
    next_id: u64,
) -> Result<u64, StoreError> {
    let stored = stored_already(shared, ops).await?;
    let mut group = Group::new(shared, rules, stored, next_id);
    for (index, op) in ops.iter_mut().enumerate() {
        match op {
            WriteOp::Ingest { events, made, .. } => group.ingest(index, events, *made),
            WriteOp::Finish { notifier, jobs } => {
                for f in jobs.iter() {
                    group.finish(*notifier, f.job, &f.run, f.seq, f.kind.as_str(), &f.outcome);
                }
            }
            WriteOp::Stop { run, reason, .. } => group.stop(index, run, reason),
            WriteOp::Change { run, change, .. } => group.change(index, run, change),
            WriteOp::Forget { runs } => group.forget(runs),
            WriteOp::Exit => {}
        }
    }
    let (batch, effects, next) = group.into_batch();
    // Only the dashboard listens; without it, nothing is copied.
    let events = if shared.events.receiver_count() > 0 { batch.events.clone() } else { Vec::new() };
    let committed = if batch.is_empty() { Committed::default() } else { shared.outbox.commit(batch).await? };
    publish(shared, ops, effects, &committed, events);
    Ok(next)
}

/// The group's senders' events that the outbox holds already (a retry, or a replayed spool).
async fn stored_already(shared: &Shared, ops: &[WriteOp]) -> Result<HashSet<(String, u64)>, StoreError> {
    let keys: Vec<(String, u64)> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Ingest { events, made: false, .. } => Some(events),
            _ => None,
        })
        .flatten()
        .map(|e| (e.run.clone(), e.seq))
        .collect();
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let known = shared.outbox.known(keys.clone()).await?;
    Ok(keys.into_iter().zip(known).filter_map(|(k, known)| known.then_some(k)).collect())
}

/// Side effects of a committed group, applied only after the commit.
#[derive(Default)]
struct Effects {
    runs: HashMap<String, RunState>,
    added: HashMap<usize, u64>,
    /// The slot of each of the batch's `done` jobs, in order.
    done_slots: Vec<usize>,
    delivered: HashMap<usize, (u64, u64)>,
    gave_up: Vec<(usize, GiveUp)>,
    forget: Vec<String>,
    ingest_replies: Vec<(usize, IngestReply)>,
    stop_replies: Vec<(usize, bool)>,
    change_replies: Vec<(usize, Option<usize>)>,
}

/// One group being decided: the batch to commit and what to do once it is committed.
struct Group<'a> {
    shared: &'a Shared,
    rules: &'a Rules,
    now: u64,
    next_id: u64,
    /// Events stored before this group, and events this group appends.
    stored: HashSet<(String, u64)>,
    batch: WriteBatch,
    fx: Effects,
}

impl<'a> Group<'a> {
    fn new(shared: &'a Shared, rules: &'a Rules, stored: HashSet<(String, u64)>, next_id: u64) -> Group<'a> {
        let (batch, fx) = (WriteBatch::default(), Effects::default());
        Group { shared, rules, now: shared.options.clock.now_ms(), next_id, stored, batch, fx }
    }

    /// The run's state as this group leaves it (taken from the shared table the first time).
    fn state<'s>(shared: &Shared, runs: &'s mut HashMap<String, RunState>, run: &str) -> &'s mut RunState {
        runs.entry(run.to_owned())
            .or_insert_with(|| shared.runs().get(run).cloned().unwrap_or_else(|| RunState::new(run)))
    }

    /// Store events with one job per notifier that wants each; daemon-made events get their sequence numbers.
    fn ingest(&mut self, index: usize, events: &mut [Event], made: bool) {
        let mut reply = IngestReply::default();
        let mut touched = BTreeSet::new();
        for event in events.iter_mut() {
            let st = Group::state(self.shared, &mut self.fx.runs, &event.run);
            reply.accepted += 1;
            if made {
                // Once each; the flag may have been set since the watch looked.
                let already = match event.payload {
                    Payload::RunStalled(_) => st.stalled || st.lost || st.ended.is_some(),
                    Payload::RunLost(_) => st.lost || st.ended.is_some(),
                    _ => st.job.as_ref().is_some_and(|m| m.said_already(&event.payload)),
                };
                if already {
                    continue;
                }
                event.seq = MADE_SEQ_BASE + st.made;
                st.made += 1;
            } else {
                // A batch's history row needs no encoding, but its jobs do: `lr` must be finite.
                if let Payload::BatchEnded(b) = &event.payload
                    && !b.lr.is_finite()
                {
                    tracing::warn!(run = %event.run, seq = event.seq, "batch_ended with a non-finite lr; dropped");
                    reply.accepted -= 1;
                    continue;
                }
                // Sent before (a retry or a replayed spool): accepted, not delivered again.
                if self.stored.contains(&(event.run.clone(), event.seq)) {
                    continue;
                }
                // Only an in-process sender can hand over an event that cannot be encoded (HTTP input was
                // decoded, so it encodes): drop that one, keep the rest.
                if !matches!(event.payload, Payload::BatchEnded(_))
                    && let Err(e) = serde_json::to_vec(&*event)
                {
                    tracing::warn!(run = %event.run, seq = event.seq, error = %e, "event cannot be stored; dropped");
                    reply.accepted -= 1;
                    continue;
                }
                self.stored.insert((event.run.clone(), event.seq));
            }
            Jobs {
                now: self.now,
                next_id: &mut self.next_id,
                jobs: &mut self.batch.jobs,
                added: &mut self.fx.added,
            }
            .queue(&self.shared.slots, st, event, |_| true);
            st.apply(event, made, self.now);
            let phone_rules = Rules::watches_run(st, event.kind());
            if let Some(m) = &st.job
                && matches!(
                    event.kind(),
                    EventKind::RunStarted
                        | EventKind::EpochEnded
                        | EventKind::RunFinished
                        | EventKind::RunFailed
                )
            {
                touched.insert(m.job.clone());
            }
            self.batch.events.push(event.clone());
            if phone_rules || self.rules.watches(event.kind()) {
                self.alert(event);
            }
        }
        for event in events.iter() {
            if let Some(st) = self.fx.runs.get(&event.run) {
                reply
                    .control
                    .entry(event.run.clone())
                    .or_insert_with(|| RunControl { stop: st.stop.is_some(), reason: st.stop.clone() });
            }
        }
        self.fx.ingest_replies.push((index, reply));
        if !touched.is_empty() {
            self.refresh_jobs(&touched);
        }
    }

    /// Keep the health line of each job an event touched in its anchor's context, where notifiers read it
    /// under the job's table (`4/4 ranks · slowest: rank 3 on gpu-b, +38%`).
    /// A rank's failure and the end of a job whose last rank just ended are made here, at once (the run watch
    /// would take a look).
    fn refresh_jobs(&mut self, touched: &BTreeSet<String>) {
        let mut ends = Vec::new();
        let updates: Vec<(String, String)> = {
            let shared = self.shared.runs();
            let group = &self.fx.runs;
            let in_touched = |st: &&RunState| st.job.as_ref().is_some_and(|m| touched.contains(&m.job));
            let facts = group
                .iter()
                .chain(shared.iter().filter(|(run, _)| !group.contains_key(*run)))
                .filter(|(_, st)| in_touched(st))
                .filter_map(|(run, st)| st.rank_facts(run, false));
            let mut latest: BTreeMap<String, (String, String)> = BTreeMap::new();
            for view in jobs::group(facts) {
                if let Some(anchor) = view.anchor() {
                    latest.insert(view.job.clone(), (anchor.run.to_owned(), view.health()));
                    let run = anchor.run.to_owned();
                    ends.extend(jobs::failures(&view).into_iter().map(|p| (run.clone(), p)));
                    if let Some(end) = jobs::job_end(&view, self.now) {
                        ends.push((run, end.into()));
                    }
                }
            }
            latest.into_values().collect()
        };
        for (anchor, health) in updates {
            Group::state(self.shared, &mut self.fx.runs, &anchor).context.health = Some(health);
        }
        for (anchor, payload) in ends {
            let st = Group::state(self.shared, &mut self.fx.runs, &anchor);
            let made = Event::now(anchor, MADE_SEQ_BASE + st.made, payload);
            st.made += 1;
            Jobs {
                now: self.now,
                next_id: &mut self.next_id,
                jobs: &mut self.batch.jobs,
                added: &mut self.fx.added,
            }
            .queue(&self.shared.slots, st, &made, |_| true);
            st.apply(&made, true, self.now);
            self.batch.events.push(made);
        }
    }

    /// Evaluate the alert rules on an event just taken in, and make the alerts they fire as daemon events:
    /// stored, with a job for each notifier that routes `alert` (and that the rule names, if it names any).
    fn alert(&mut self, event: &Event) {
        // A batch concerns its own run only (no rule looks across runs at one): evaluated in place, and the run
        // is taken out of the group's table only when a rule fires.
        let batch = matches!(event.payload, Payload::BatchEnded(_));
        let mut fired = Vec::new();
        if batch {
            let Some(st) = self.fx.runs.get_mut(&event.run) else { return };
            fired = self.rules.evaluate(st, event, &|_: &mut dyn FnMut(&RunState)| {});
            if fired.is_empty() {
                return;
            }
        }
        let Some(mut st) = self.fx.runs.remove(&event.run) else { return };
        if !batch {
            let (group, shared) = (&self.fx.runs, self.shared);
            let others = |f: &mut dyn FnMut(&RunState)| {
                group.values().for_each(&mut *f);
                shared.runs().iter().filter(|(run, _)| !group.contains_key(*run)).for_each(|(_, st)| f(st));
            };
            fired = self.rules.evaluate(&mut st, event, &others);
        }
        for Fired { alert, notifiers } in fired {
            tracing::info!(run = %event.run, rule = alert.rule.as_deref().unwrap_or_default(), "alert rule fired");
            let made = Event::now(event.run.clone(), MADE_SEQ_BASE + st.made, alert);
            st.made += 1;
            let named = |slot: &Slot| notifiers.as_ref().is_none_or(|names| names.contains(&slot.name));
            Jobs {
                now: self.now,
                next_id: &mut self.next_id,
                jobs: &mut self.batch.jobs,
                added: &mut self.fx.added,
            }
            .queue(&self.shared.slots, &st, &made, named);
            st.apply(&made, true, self.now);
            self.batch.events.push(made);
        }
        self.fx.runs.insert(event.run.clone(), st);
    }

    /// Record how a delivery attempt ended: a receipt and the job gone, a retry rescheduled, or a give-up.
    fn finish(&mut self, notifier: usize, job: u64, run: &str, seq: u64, kind: &str, outcome: &Outcome) {
        let Some(slot) = self.shared.slots.get(notifier) else { return };
        let done = DoneJob { notifier: slot.name.clone(), id: job };
        match outcome {
            Outcome::Delivered(receipt) => {
                self.batch.done.push(done);
                self.fx.done_slots.push(notifier);
                let receipt = receipt.clone();
                let record = ReceiptRecord { notifier: slot.name.clone(), run: run.to_owned(), seq, receipt };
                self.batch.receipts.push(record);
                self.fx.delivered.entry(notifier).or_default().0 += 1;
            }
            Outcome::Superseded => {
                self.batch.done.push(done);
                self.fx.done_slots.push(notifier);
                self.fx.delivered.entry(notifier).or_default().1 += 1;
            }
            Outcome::Digested => {
                self.batch.done.push(done);
                self.fx.done_slots.push(notifier);
                self.fx.delivered.entry(notifier).or_default().0 += 1;
            }
            Outcome::Retry(record) => {
                self.batch.jobs.push(PutJob {
                    notifier: slot.name.clone(),
                    id: job,
                    job: (**record).clone(),
                });
            }
            Outcome::GaveUp { error, attempts } => {
                self.batch.done.push(done);
                self.fx.done_slots.push(notifier);
                let g = GiveUp {
                    notifier: slot.name.clone(),
                    run: run.to_owned(),
                    seq,
                    kind: kind.to_owned(),
                    error: error.clone(),
                    attempts: *attempts,
                    at_ms: self.now,
                };
                self.batch.give_ups.push((job, g.clone()));
                self.fx.gave_up.push((notifier, g));
            }
        }
    }

    /// Set a known run's stop request.
    /// A request naming a rank of a job, or the job itself, reaches every rank of the job still running.
    fn stop(&mut self, index: usize, run: &str, reason: &str) {
        let mut targets = Vec::new();
        if self.fx.runs.contains_key(run) || self.shared.runs().contains_key(run) {
            targets.push(run.to_owned());
        }
        let job = match Group::state_if_known(self.shared, &self.fx.runs, run, |st| st.job.clone()) {
            Some(Some(m)) => Some(m.job),
            Some(None) => None,
            None => Some(run.to_owned()),
        };
        if let Some(job) = job {
            let shared = self.shared.runs();
            let group = &self.fx.runs;
            targets.extend(
                group
                    .iter()
                    .chain(shared.iter().filter(|(id, _)| !group.contains_key(*id)))
                    .filter(|(id, st)| {
                        id.as_str() != run
                            && st.ended.is_none()
                            && st.job.as_ref().is_some_and(|m| m.job == job)
                    })
                    .map(|(id, _)| id.clone()),
            );
        }
        for target in &targets {
            Group::state(self.shared, &mut self.fx.runs, target).stop = Some(reason.to_owned());
        }
        let taken = self.shared.options.on_stop.as_ref().is_some_and(|hook| (hook.0)(run, reason));
        self.fx.stop_replies.push((index, taken || !targets.is_empty()));
    }

    /// Apply a change from the phone (rules, mute) to a known run.
    fn change(&mut self, index: usize, run: &str, change: &RunChange) {
        let known = self.fx.runs.contains_key(run) || self.shared.runs().contains_key(run);
        let answer = known.then(|| Group::state(self.shared, &mut self.fx.runs, run).change(change.clone()));
        self.fx.change_replies.push((index, answer));
    }

    /// `f` of the run's state as this group sees it, or None for a run nobody knows.
    fn state_if_known<T>(
        shared: &Shared,
        runs: &HashMap<String, RunState>,
        run: &str,
        f: impl FnOnce(&RunState) -> T,
    ) -> Option<T> {
        match runs.get(run) {
            Some(st) => Some(f(st)),
            None => shared.runs().get(run).map(f),
        }
    }

    /// Forget runs entirely (compaction).
    fn forget(&mut self, runs: &[String]) {
        self.batch.forget.extend(runs.iter().cloned());
        self.fx.forget.extend(runs.iter().cloned());
    }

    fn into_batch(mut self) -> (WriteBatch, Effects, u64) {
        self.batch.runs = self.fx.runs.iter().map(|(run, st)| (run.clone(), st.clone())).collect();
        if !self.batch.jobs.is_empty() {
            self.batch.next_job_id = Some(self.next_id);
        }
        (self.batch, self.fx, self.next_id)
    }
}

/// Where a group puts the delivery jobs it makes: numbered from `next_id`, counted per notifier slot.
struct Jobs<'g> {
    now: u64,
    next_id: &'g mut u64,
    jobs: &'g mut Vec<PutJob>,
    added: &'g mut HashMap<usize, u64>,
}

impl Jobs<'_> {
    /// One job for `event` per notifier whose routing takes it (and that `named` lets through).
    fn queue(&mut self, slots: &[Arc<Slot>], st: &RunState, event: &Event, named: impl Fn(&Slot) -> bool) {
        for (i, slot) in slots.iter().enumerate() {
            if named(slot) && runs::accepts(&slot.routing, st, event) && !runs::muted(st, event, self.now) {
                // Quiet hours or a digest period: the job waits, to go out with the others in one digest.
                let held = quiet::hold(slot.routing.quiet.as_ref(), event, self.now);
                let job = JobRecord {
                    event: event.clone(),
                    attempt: 0,
                    not_before_ms: held.unwrap_or(0),
                    created_ms: self.now,
                    last_error: None,
                    digest: held.is_some(),
                };
                self.jobs.push(PutJob { notifier: slot.name.clone(), id: *self.next_id, job });
                *self.next_id += 1;
                *self.added.entry(i).or_default() += 1;
            }
        }
    }
}

/// After the commit: update the shared run table and counters, wake workers, answer senders, and hand the
/// committed events to the dashboard.
fn publish(shared: &Shared, ops: &mut [WriteOp], fx: Effects, committed: &Committed, events: Vec<Event>) {
    {
        let mut runs = shared.runs();
        for run in &fx.forget {
            runs.remove(run);
        }
        runs.extend(fx.runs);
    }
    for (i, n) in fx.added {
        if let Some(slot) = shared.slots.get(i) {
            slot.stats.queued.fetch_add(n, Ordering::Relaxed);
            slot.wake.notify_one();
        }
    }
    for (i, removed) in fx.done_slots.iter().zip(&committed.removed) {
        if *removed && let Some(slot) = shared.slots.get(*i) {
            // Saturating: a count taken at start may already include a job finished since.
            let _ = slot
                .stats
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(1)));
        }
    }
    for (i, (delivered, superseded)) in fx.delivered {
        if let Some(slot) = shared.slots.get(i) {
            slot.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
            slot.stats.superseded.fetch_add(superseded, Ordering::Relaxed);
        }
    }
    for (i, g) in fx.gave_up {
        if let Some(slot) = shared.slots.get(i) {
            slot.stats.gave_up.fetch_add(1, Ordering::Relaxed);
            let mut f = slot.stats.facts();
            f.give_ups.push_back(g);
            while f.give_ups.len() > RECENT_GIVE_UPS {
                f.give_ups.pop_front();
            }
        }
    }
    for (index, reply) in fx.ingest_replies {
        if let Some(WriteOp::Ingest { reply: tx, .. }) = ops.get_mut(index)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(Ok(reply));
        }
    }
    for (index, known) in fx.stop_replies {
        if let Some(WriteOp::Stop { reply: tx, .. }) = ops.get_mut(index)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(Ok(known));
        }
    }
    for (index, answer) in fx.change_replies {
        if let Some(WriteOp::Change { reply: tx, .. }) = ops.get_mut(index)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(Ok(answer));
        }
    }
    for event in events {
        // No subscriber left is fine.
        let _ = shared.events.send(event);
    }
}

/// Tell the senders of a failed group why.
fn fail(ops: &mut [WriteOp], err: &StoreError) {
    tracing::error!(error = %err, "outbox write failed");
    for op in ops.iter_mut() {
        match op {
            WriteOp::Ingest { reply, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.to_string()));
                }
            }
            WriteOp::Stop { reply, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.to_string()));
                }
            }
            WriteOp::Change { reply, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.to_string()));
                }
            }
            _ => {}
        }
    }
}

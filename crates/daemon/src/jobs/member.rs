//! What the daemon keeps of one rank of a distributed job, stored with its run ([`crate::runs::RunState::job`]):
//! the job it belongs to, its progress (latest event, epoch, epoch times, failure) and, on the job's anchor
//! (rank 0, else its lowest rank), what the job watch has already said about the job ([`Said`]).
//!
//! Plain data updated by [`Member::observe`] for a rank's own events and [`Member::remember`] for the
//! daemon's job events; no I/O.

use std::collections::{BTreeMap, BTreeSet};

use herald_event::{Event, EventKind, Payload, RunStarted};
use serde::{Deserialize, Serialize};

/// Epoch times kept per rank (the latest ones).
pub const EPOCHS_KEPT: usize = 64;

/// One rank of a job, as its run reported it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    /// The job id the run's `run_started` named.
    pub job: String,
    /// The run's rank in the job, 0-based.
    pub rank: u32,
    /// The world size the run reported, if it did.
    pub world_size: Option<u32>,
    /// Milliseconds since the Unix epoch of the rank's latest event other than a heartbeat (a hung rank's
    /// client thread keeps sending heartbeats: they show the process lives, not that it trains).
    pub progress_ms: u64,
    /// The type of that event.
    pub last: Option<EventKind>,
    /// The latest epoch (0-based) the rank ended.
    pub epoch: Option<u32>,
    /// The rank's latest epoch times, seconds, oldest first, by epoch.
    pub epoch_s: Vec<(u32, f64)>,
    /// The rank's `run_failed`: error and traceback.
    pub failure: Option<(String, Option<String>)>,
    /// Another daemon found the rank's process gone and said so with a `rank_lost` naming it, on the rank's
    /// own run: in cluster mode, the rank's edge (only it can check the process); the leader then counts the
    /// rank gone, and does not say it again.
    pub gone_elsewhere: bool,
    /// What the job watch said about the job (kept on the anchor's record only).
    pub said: Said,
}

/// The job events already made for one job, so that each is made once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Said {
    /// Ranks named by a `rank_stalled`, with the time it was made (a rank that reported since recovered).
    pub stalled: BTreeMap<u32, u64>,
    /// Ranks named by a `rank_lost`.
    pub lost: BTreeSet<u32>,
    /// Ranks named by a `rank_failed`.
    pub failed: BTreeSet<u32>,
    /// Ranks named by a `rank_slow`, with the epoch it named (a fast epoch after it clears it).
    pub slow: BTreeMap<u32, u32>,
    /// `ranks_missing` was made.
    pub missing: bool,
    /// The job's end (`run_finished` for the whole job) was made.
    pub finished: bool,
}

impl Member {
    /// The member a `run_started` makes its run: one with a `job` and a world size other than 1 (a job of one
    /// process is a plain run).
    pub fn from_started(started: &RunStarted, now_ms: u64) -> Option<Member> {
        let job = started.job.as_deref().map(str::trim).filter(|j| !j.is_empty())?;
        if started.world_size == Some(1) {
            return None;
        }
        Some(Member {
            job: job.to_owned(),
            rank: started.rank,
            world_size: started.world_size,
            progress_ms: now_ms,
            last: Some(EventKind::RunStarted),
            ..Member::default()
        })
    }

    /// Take one of the rank's own events into account.
    pub fn observe(&mut self, event: &Event, now_ms: u64) {
        let kind = event.kind();
        if let Payload::RankLost(l) = &event.payload {
            // Not progress: the rank's edge telling that its process is gone.
            if l.rank == self.rank && l.job == self.job {
                self.gone_elsewhere = true;
            }
            return;
        }
        if kind != EventKind::Heartbeat {
            self.progress_ms = self.progress_ms.max(now_ms);
            self.last = Some(kind);
        }
        match &event.payload {
            Payload::EpochEnded(e) => {
                self.epoch = Some(self.epoch.map_or(e.epoch, |x| x.max(e.epoch)));
                if e.elapsed_s.is_finite() && e.elapsed_s >= 0.0 {
                    self.epoch_s.retain(|(n, _)| *n != e.epoch);
                    self.epoch_s.push((e.epoch, e.elapsed_s));
                    self.epoch_s.sort_by_key(|(n, _)| *n);
                    let extra = self.epoch_s.len().saturating_sub(EPOCHS_KEPT);
                    self.epoch_s.drain(..extra);
                }
            }
            Payload::RunFailed(f) => self.failure = Some((f.error.clone(), f.traceback.clone())),
            _ => {}
        }
    }

    /// The rank's time for `epoch`, if it reported it.
    pub fn epoch_time(&self, epoch: u32) -> Option<f64> {
        self.epoch_s.iter().find(|(n, _)| *n == epoch).map(|(_, s)| *s)
    }

    /// Record a job event the daemon made (on the anchor's record); `at_ms` is when.
    pub fn remember(&mut self, payload: &Payload, at_ms: u64) {
        let said = &mut self.said;
        match payload {
            Payload::RankStalled(s) => {
                for r in &s.ranks {
                    said.stalled.insert(r.rank, at_ms);
                }
            }
            Payload::RankLost(l) => {
                said.lost.insert(l.rank);
            }
            Payload::RankFailed(f) => {
                said.failed.insert(f.rank);
            }
            Payload::RankSlow(s) => {
                said.slow.insert(s.rank, s.epoch);
            }
            Payload::RanksMissing(_) => said.missing = true,
            Payload::RunFinished(_) | Payload::RunFailed(_) => said.finished = true,
            _ => {}
        }
    }

    /// Whether a job event was made already (the writer's last check before storing one the watch decided).
    pub fn said_already(&self, payload: &Payload) -> bool {
        let said = &self.said;
        match payload {
            Payload::RankLost(l) => said.lost.contains(&l.rank),
            Payload::RankFailed(f) => said.failed.contains(&f.rank),
            Payload::RankSlow(s) => said.slow.get(&s.rank) == Some(&s.epoch),
            Payload::RanksMissing(_) => said.missing,
            Payload::RunFinished(_) => said.finished,
            _ => false,
        }
    }
}

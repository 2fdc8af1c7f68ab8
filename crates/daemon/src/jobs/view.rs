//! The job view: the runs that share a `job`, grouped into job instances, one entry per rank.
//!
//! [`group`] takes what is known of each run ([`RankFacts`]) and builds one [`JobView`] per instance of a job.
//! Its rules, each a choice made plainly:
//! - **ranks arriving late** join their job whenever they start; `ranks_missing` is the watch's business;
//! - **a job id reused after the job finished**: a run that starts after every rank of the job's latest
//!   instance ended (or vanished) begins a new instance, with its own anchor and memory;
//! - **duplicated ranks**: a run claiming a rank whose run ended or vanished replaces it (a restarted rank);
//!   one claiming a rank whose run still lives is kept aside in [`JobView::duplicates`] and named in the
//!   health line, and plays no part in the job's health;
//! - **world sizes that disagree**: rank 0's counts, else the largest; the others are kept in
//!   [`JobView::world_sizes`] and the health line says so.

use std::collections::BTreeMap;

use herald_event::RunStatus;

use super::member::Member;

/// What the job view needs of one run of a job.
#[derive(Debug, Clone, Copy)]
pub struct RankFacts<'a> {
    /// The run id.
    pub run: &'a str,
    /// The host the run trains on.
    pub host: &'a str,
    /// The training process's id on that host.
    pub pid: u32,
    /// When the run's first event arrived, milliseconds since the Unix epoch.
    pub first_ms: u64,
    /// When its latest event arrived, milliseconds since the Unix epoch.
    pub last_ms: u64,
    /// How the run ended, if it did.
    pub ended: Option<RunStatus>,
    /// The run's process is known to be gone (the caller's pid check) without an end.
    pub gone: bool,
    /// What the run said of its job: id, rank, world size.
    pub member: &'a Member,
}

impl RankFacts<'_> {
    /// Whether the rank is done: ended, or its process gone.
    pub fn done(&self) -> bool {
        self.ended.is_some() || self.gone
    }
}

/// One instance of a job.
#[derive(Debug, Clone)]
pub struct JobView<'a> {
    /// The job id.
    pub job: String,
    /// The world size: rank 0's, else the largest reported; None when no rank said.
    pub world_size: Option<u32>,
    /// Every world size reported, by rank, when they disagree (empty when they agree).
    pub world_sizes: BTreeMap<u32, u32>,
    /// The run of each rank.
    pub ranks: BTreeMap<u32, RankFacts<'a>>,
    /// Runs that claimed a rank another live run holds: (rank, run id).
    pub duplicates: Vec<(u32, &'a str)>,
    /// When the instance's first rank started.
    pub first_ms: u64,
}

impl<'a> JobView<'a> {
    /// The anchor: rank 0's run, else the lowest rank's. Job events are stored on its run and it keeps the
    /// job's memory.
    pub fn anchor(&self) -> Option<&RankFacts<'a>> {
        self.ranks.values().next()
    }

    /// Whether every rank expected is there and done.
    pub fn finished(&self) -> bool {
        let all_there = self.world_size.is_none_or(|n| self.ranks.len() >= n as usize)
            || self.anchor().is_some_and(|a| a.member.said.missing);
        !self.ranks.is_empty() && all_there && self.ranks.values().all(RankFacts::done)
    }

    /// The job's status: the worst of its ranks' (failed, then stopped, then completed; a vanished rank
    /// failed).
    pub fn status(&self) -> RunStatus {
        let rank_of = |r: &RankFacts<'_>| match (r.ended, r.gone) {
            (Some(RunStatus::Failed), _) | (None, true) => 2,
            (Some(RunStatus::Stopped), _) => 1,
            _ => 0,
        };
        match self.ranks.values().map(rank_of).max().unwrap_or(0) {
            2 => RunStatus::Failed,
            1 => RunStatus::Stopped,
            _ => RunStatus::Completed,
        }
    }

    /// The median over the job's ranks of their time for `epoch`, with the number of ranks that reported it.
    pub fn epoch_median(&self, epoch: u32) -> Option<(f64, usize)> {
        let mut times: Vec<f64> = self.ranks.values().filter_map(|r| r.member.epoch_time(epoch)).collect();
        if times.is_empty() {
            return None;
        }
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
        Some((median, n))
    }

    /// The slowest rank of the latest epoch that at least two ranks reported: (rank, host, percent above the
    /// median).
    pub fn slowest(&self) -> Option<(u32, &'a str, f64)> {
        let latest = self.ranks.values().filter_map(|r| r.member.epoch).max()?;
        (0..=latest).rev().take(4).find_map(|epoch| {
            let (median, n) = self.epoch_median(epoch)?;
            if n < 2 || median <= 0.0 {
                return None;
            }
            let (rank, facts, time) = self
                .ranks
                .iter()
                .filter_map(|(rank, f)| f.member.epoch_time(epoch).map(|t| (*rank, f, t)))
                .max_by(|a, b| a.2.total_cmp(&b.2))?;
            Some((rank, facts.host, (time / median - 1.0) * 100.0))
        })
    }

    /// The health line notifiers show under the job's table: `4/4 ranks · slowest: rank 3 on gpu-b, +38%`,
    /// with what is wrong (ranks missing, vanished, failed, duplicated; world sizes that disagree).
    pub fn health(&self) -> String {
        let expected = self.world_size.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let mut parts = vec![format!("{}/{expected} ranks", self.ranks.len())];
        let list = |ranks: Vec<u32>| ranks.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let failed: Vec<u32> =
            self.ranks.iter().filter(|(_, f)| f.ended == Some(RunStatus::Failed)).map(|(r, _)| *r).collect();
        if !failed.is_empty() {
            parts.push(format!("failed: {}", list(failed)));
        }
        let gone: Vec<u32> =
            self.ranks.iter().filter(|(_, f)| f.gone && f.ended.is_none()).map(|(r, _)| *r).collect();
        if !gone.is_empty() {
            parts.push(format!("lost: {}", list(gone)));
        }
        if let Some(n) = self.world_size {
            let missing: Vec<u32> = (0..n).filter(|r| !self.ranks.contains_key(r)).collect();
            if !missing.is_empty() && missing.len() <= 8 {
                parts.push(format!("missing: {}", list(missing)));
            }
        }
        if !self.duplicates.is_empty() {
            parts.push(format!("duplicated: {}", list(self.duplicates.iter().map(|(r, _)| *r).collect())));
        }
        if !self.world_sizes.is_empty() {
            let sizes: Vec<String> = self.world_sizes.iter().map(|(r, n)| format!("rank {r}: {n}")).collect();
            parts.push(format!("world sizes disagree ({})", sizes.join(", ")));
        }
        if let Some((rank, host, pct)) = self.slowest() {
            if pct >= 5.0 {
                parts.push(format!("slowest: rank {rank} on {host}, +{pct:.0}%"));
            } else {
                parts.push("ranks even".to_owned());
            }
        }
        parts.join(" · ")
    }
}

/// Group runs into job instances (see the module docs for the rules). Runs of one job are taken in the order
/// they started; the result is in job id order, instances oldest first.
pub fn group<'a>(facts: impl IntoIterator<Item = RankFacts<'a>>) -> Vec<JobView<'a>> {
    let mut by_job: BTreeMap<&'a str, Vec<RankFacts<'a>>> = BTreeMap::new();
    for f in facts {
        by_job.entry(f.member.job.as_str()).or_default().push(f);
    }
    let mut out = Vec::new();
    for (job, mut runs) in by_job {
        runs.sort_by(|a, b| (a.first_ms, a.run).cmp(&(b.first_ms, b.run)));
        let mut current: Option<JobView<'a>> = None;
        for f in runs {
            if let Some(view) = current.take() {
                let ended_by = view.ranks.values().map(|r| r.last_ms).max().unwrap_or(0);
                let over = !view.ranks.is_empty() && view.ranks.values().all(RankFacts::done);
                if over && f.first_ms >= ended_by {
                    out.push(view);
                } else {
                    current = Some(view);
                }
            }
            let view = current.get_or_insert_with(|| JobView {
                job: job.to_owned(),
                world_size: None,
                world_sizes: BTreeMap::new(),
                ranks: BTreeMap::new(),
                duplicates: Vec::new(),
                first_ms: f.first_ms,
            });
            let rank = f.member.rank;
            match view.ranks.get(&rank) {
                Some(held) if !held.done() => view.duplicates.push((rank, f.run)),
                _ => {
                    view.ranks.insert(rank, f);
                }
            }
        }
        out.extend(current);
    }
    for view in &mut out {
        settle_world_size(view);
    }
    out
}

fn settle_world_size(view: &mut JobView<'_>) {
    let sizes: BTreeMap<u32, u32> =
        view.ranks.iter().filter_map(|(r, f)| f.member.world_size.map(|n| (*r, n))).collect();
    view.world_size = sizes.get(&0).copied().or_else(|| sizes.values().copied().max());
    let first = sizes.values().next().copied();
    if sizes.values().any(|n| Some(*n) != first) {
        view.world_sizes = sizes;
    }
}

//! What the daemon knows of each run, and which of its events go to which notifier.
//!
//! [`RunState`] is kept per run (in memory and in the outbox's `runs` table): the notifier context (name, host,
//! hyperparameters, the results table), liveness (last event, longest epoch, the stalled and lost flags),
//! the best value of each metric, the stop request, and what was set from the phone: threshold rules
//! ([`Watch`]) and a [`Mute`], changed by a [`RunChange`]. [`accepts`] is the per-notifier routing rule applied
//! at ingest: event types, ranks, `every_n_epochs` and `only_on_improvement`; [`muted`] holds back a muted
//! run's routine updates from every notifier. `min_interval` is applied later by the worker, which alone knows
//! when it last sent. Nothing here does I/O.

use std::collections::BTreeMap;

use herald_event::{EpochEnded, Event, Payload, RunStatus};
use herald_plugin::RunContext;
use serde::{Deserialize, Serialize};

use crate::jobs::{Member, RankFacts};

mod phone;
mod route;
#[cfg(test)]
mod tests;

pub use phone::{MAX_WATCHES, Mute, RunChange, Watch};
pub use route::{accepts, muted};

/// Sequence numbers of daemon-made events (`run_stalled`, `run_lost`) start here, far above anything a
/// sender numbers, so they never collide with the run's own events.
pub const MADE_SEQ_BASE: u64 = 1 << 48;

/// How a run ended, as far as the daemon knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// `run_finished` with `completed`.
    Completed,
    /// `run_finished` with `stopped`.
    Stopped,
    /// `run_failed`, or `run_finished` with `failed`.
    Failed,
}

/// The daemon's record of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    /// What notifiers are told about the run.
    pub context: RunContext,
    /// Whether a `run_started` arrived (only started runs are watched for stalls and lost processes).
    pub started: bool,
    /// When the first event from the run itself arrived, milliseconds since the Unix epoch.
    pub first_ms: u64,
    /// When the latest event from the run itself arrived, milliseconds since the Unix epoch.
    pub last_event_ms: u64,
    /// Events received from the run (duplicates not counted).
    pub events: u64,
    /// The highest sequence number the run sent.
    pub last_seq: Option<u64>,
    /// Set by `run_finished` or `run_failed`.
    pub ended: Option<Ending>,
    /// The stop request, with its reason, once someone asked.
    pub stop: Option<String>,
    /// A `run_stalled` was made and no event came since.
    pub stalled: bool,
    /// A `run_lost` was made and no event came since.
    pub lost: bool,
    /// The longest epoch so far, seconds (the stall threshold is at least three times this).
    pub longest_epoch_s: f64,
    /// The best value so far of each metric (`train_loss`, `valid_loss` and the named metrics).
    pub best: BTreeMap<String, f64>,
    /// Daemon-made events so far (their sequence numbers count up from [`MADE_SEQ_BASE`]).
    pub made: u64,
    /// The latest `batch_ended`: epoch, batch, batches in the epoch, smoothed loss (a NaN or infinite loss is
    /// stored as `null` and read back as NaN, so that the record stays readable).
    #[serde(default, with = "loose_batch")]
    pub last_batch: Option<(u32, u64, u64, f64)>,
    /// What each alert rule remembers of the run, by rule name (kept by `rules`; stored with the run so that
    /// a rule does not fire again after a restart).
    #[serde(default)]
    pub rules: BTreeMap<String, RuleMemory>,
    /// The run's latest epoch durations, seconds, oldest first (at most 64): what every `slow_epoch` rule of
    /// the run judges against, kept once however many rules read it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epoch_times_s: Vec<f64>,
    /// The run is a rank of a distributed job (its `run_started` named a `job`): what the job view keeps of
    /// it (see `jobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Member>,
    /// Threshold rules added from the phone for this run (`/watch`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<Watch>,
    /// The run's routine updates are muted (`/mute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute: Option<Mute>,
    /// How many alerts each rule (by name) has made for this run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alerted: BTreeMap<String, u32>,
}

/// What one alert rule remembers of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleMemory {
    /// The rule fired and its condition has not cleared since (it fires once, and again only after that).
    pub fired: bool,
    /// The rule told that the run has no value of its metric (said once).
    pub missing_said: bool,
    /// The best value of the rule's metric so far and its epoch (plateau, diverging).
    pub best: Option<(f64, u32)>,
    /// Epochs since the metric last improved (plateau).
    pub since_best: u32,
}

impl RunState {
    /// A record of run `run` before any of its events (its name is its id until it says one).
    pub fn new(run: &str) -> RunState {
        RunState { context: RunContext::new(run), ..RunState::default() }
    }

    /// Take one accepted event into account. `made` marks the daemon's own events, which do not count as a
    /// sign of life.
    pub fn apply(&mut self, event: &Event, made: bool, now_ms: u64) {
        self.context.apply(event);
        if made
            && let Payload::Alert(a) = &event.payload
            && let Some(rule) = &a.rule
        {
            let times = self.alerted.entry(rule.clone()).or_default();
            *times = times.saturating_add(1);
        }
        match &event.payload {
            Payload::RunStalled(_) => self.stalled = true,
            Payload::RunLost(_) => self.lost = true,
            _ => {}
        }
        if made {
            if let Some(member) = &mut self.job {
                member.remember(&event.payload, now_ms);
            }
            return;
        }
        match (&event.payload, &mut self.job) {
            (Payload::RunStarted(s), _) => self.job = Member::from_started(s, now_ms),
            (_, Some(member)) => member.observe(event, now_ms),
            _ => {}
        }
        if self.first_ms == 0 {
            self.first_ms = now_ms;
        }
        self.last_event_ms = now_ms;
        self.events += 1;
        self.last_seq = Some(self.last_seq.map_or(event.seq, |s| s.max(event.seq)));
        self.stalled = false;
        self.lost = false;
        match &event.payload {
            Payload::RunStarted(_) => {
                self.started = true;
                self.ended = None;
            }
            Payload::EpochEnded(e) => {
                if e.elapsed_s.is_finite() && e.elapsed_s > self.longest_epoch_s {
                    self.longest_epoch_s = e.elapsed_s;
                }
                for (name, value) in epoch_values(e) {
                    if value.is_finite() && improves(&name, value, self.best.get(&name).copied()) {
                        self.best.insert(name, value);
                    }
                }
            }
            Payload::BatchEnded(b) => {
                self.last_batch = Some((b.epoch, b.batch, b.n_batches, b.smooth_loss));
            }
            Payload::RunFinished(f) => {
                self.ended = Some(match f.status {
                    RunStatus::Completed => Ending::Completed,
                    RunStatus::Stopped => Ending::Stopped,
                    RunStatus::Failed => Ending::Failed,
                });
            }
            Payload::RunFailed(_) => self.ended = Some(Ending::Failed),
            _ => {}
        }
    }

    /// What the job view needs of this run, when it is a rank of a job; `gone`: its process is known to be
    /// gone.
    pub fn rank_facts<'a>(&'a self, run: &'a str, gone: bool) -> Option<RankFacts<'a>> {
        let member = self.job.as_ref()?;
        Some(RankFacts {
            run,
            host: &self.context.host,
            pid: self.context.pid,
            first_ms: self.first_ms,
            last_ms: self.last_event_ms,
            ended: self.ended.map(|e| match e {
                Ending::Completed => RunStatus::Completed,
                Ending::Stopped => RunStatus::Stopped,
                Ending::Failed => RunStatus::Failed,
            }),
            gone: gone || member.gone_elsewhere,
            member,
        })
    }

    /// The state word `herald status` shows.
    pub fn state_word(&self) -> &'static str {
        match self.ended {
            Some(Ending::Completed) => "completed",
            Some(Ending::Stopped) => "stopped",
            Some(Ending::Failed) => "failed",
            None if self.lost => "lost",
            None if self.stalled => "stalled",
            None if self.started => "running",
            None => "messages",
        }
    }
}

/// `RunState::last_batch` with a loss JSON cannot hold (NaN, infinite) as `null`.
mod loose_batch {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Batch = (u32, u64, u64, f64);

    pub fn serialize<S: Serializer>(b: &Option<Batch>, s: S) -> Result<S::Ok, S::Error> {
        b.map(|(e, i, n, loss)| (e, i, n, loss.is_finite().then_some(loss))).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Batch>, D::Error> {
        let b = Option::<(u32, u64, u64, Option<f64>)>::deserialize(d)?;
        Ok(b.map(|(e, i, n, loss)| (e, i, n, loss.unwrap_or(f64::NAN))))
    }
}

/// The values of an epoch by name: `train_loss`, `valid_loss` (when present) and each metric.
pub fn epoch_values(e: &EpochEnded) -> Vec<(String, f64)> {
    let mut out = vec![("train_loss".to_owned(), e.train_loss)];
    if let Some(v) = e.valid_loss {
        out.push(("valid_loss".to_owned(), v));
    }
    out.extend(e.metrics.iter().map(|(n, v)| (n.to_owned(), v)));
    out
}

/// Whether lower values of a metric are better: losses and error rates.
pub fn lower_is_better(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    m.contains("loss")
        || m.contains("error")
        || m.contains("perplexity")
        || m == "mae"
        || m == "mse"
        || m == "rmse"
}

/// Whether `value` beats the best so far (`None`: nothing yet, so any finite value does).
pub fn improves(metric: &str, value: f64, best: Option<f64>) -> bool {
    if !value.is_finite() {
        return false;
    }
    match best {
        None => true,
        Some(b) if lower_is_better(metric) => value < b,
        Some(b) => value > b,
    }
}

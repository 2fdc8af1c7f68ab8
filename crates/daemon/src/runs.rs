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

use herald_event::{EpochEnded, Event, EventKind, Payload, RunStatus};
use herald_plugin::RunContext;
use serde::{Deserialize, Serialize};

use crate::config::Routing;
use crate::jobs::{Member, RankFacts};

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

/// Phone rules a run keeps at most (a `/watch` beyond them is refused).
pub const MAX_WATCHES: usize = 32;

/// A threshold rule added from the phone for one run: it fires once, when the metric crosses the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    /// `train_loss`, `valid_loss` or a metric name.
    pub metric: String,
    /// `>`, `>=`, `<` or `<=` (`config::Op`).
    pub op: String,
    /// The value compared with.
    pub value: f64,
    /// Who added it (`@user`).
    pub by: String,
    /// When, milliseconds since the Unix epoch.
    pub added_ms: u64,
    /// The epoch it fired at; it fires no more after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired: Option<u32>,
}

impl Watch {
    /// The rule's name, in its alerts and lists: `watch accuracy >= 0.98`.
    pub fn name(&self) -> String {
        format!("watch {}", self.condition())
    }

    /// `accuracy >= 0.98`.
    pub fn condition(&self) -> String {
        format!("{} {} {}", self.metric, self.op, self.value)
    }
}

/// A run's routine updates held back (`/mute`): epochs, batches, heartbeats, so no live edits either.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mute {
    /// When it ends, milliseconds since the Unix epoch (`None`: until `/unmute`).
    pub until_ms: Option<u64>,
    /// Who muted the run.
    pub by: String,
}

impl Mute {
    /// Whether the mute holds at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// A change to a run made from the phone, applied by the writer with [`RunState::change`].
#[derive(Debug, Clone, PartialEq)]
pub enum RunChange {
    /// Add a threshold rule (one with the same metric, operator and value replaces it).
    Watch(Watch),
    /// Remove the phone rules, all or those on one metric.
    Unwatch {
        /// Only the rules on this metric.
        metric: Option<String>,
    },
    /// Mute the run (replacing an earlier mute).
    Mute(Mute),
    /// End the mute.
    Unmute,
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
    /// The run's epoch durations, seconds, oldest first (slow_epoch; the latest 64).
    pub epoch_s: Vec<f64>,
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

    /// Apply a change from the phone; answers how many rules or mutes were added or removed.
    pub fn change(&mut self, change: RunChange) -> usize {
        match change {
            RunChange::Watch(w) => {
                self.watches.retain(|old| (&old.metric, &old.op, old.value) != (&w.metric, &w.op, w.value));
                if self.watches.len() >= MAX_WATCHES {
                    return 0;
                }
                self.watches.push(w);
                1
            }
            RunChange::Unwatch { metric } => {
                let before = self.watches.len();
                self.watches.retain(|w| metric.as_ref().is_some_and(|m| *m != w.metric));
                before - self.watches.len()
            }
            RunChange::Mute(m) => {
                self.mute = Some(m);
                1
            }
            RunChange::Unmute => usize::from(self.mute.take().is_some()),
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

/// Whether a notifier with `routing` gets `event`, given what was known of the run before the event.
pub fn accepts(routing: &Routing, run: &RunState, event: &Event) -> bool {
    let kind = event.kind();
    if !routing.events.contains(&kind) {
        return false;
    }
    if routing.all_ranks {
        let job_made = run.job.is_some() && event.seq >= MADE_SEQ_BASE;
        return !job_made || kind == EventKind::RankLost;
    }
    // A rank of a job: the job's stream is rank 0's events and the daemon's job events (stored on rank 0's
    // run); the other ranks speak through job events, and rank 0's own end waits for the job's.
    let job_rank = match &event.payload {
        Payload::RunStarted(s) => Member::from_started(s, 0).map(|m| m.rank),
        _ => run.job.as_ref().map(|m| m.rank),
    };
    if let Some(rank) = job_rank
        && event.seq < MADE_SEQ_BASE
        && (rank != 0 || kind == EventKind::RunFinished)
    {
        return false;
    }
    // Only rank 0 speaks for a distributed run; failures from any rank go out.
    let rank = match &event.payload {
        Payload::RunStarted(s) => s.rank,
        _ => run.context.rank,
    };
    if rank != 0
        && matches!(
            kind,
            EventKind::RunStarted
                | EventKind::EpochStarted
                | EventKind::EpochEnded
                | EventKind::BatchEnded
                | EventKind::RunFinished
                | EventKind::Heartbeat
        )
    {
        return false;
    }
    match &event.payload {
        Payload::EpochEnded(e) => {
            if !nth_epoch(routing.every_n_epochs, e.epoch, e.n_epochs) {
                return false;
            }
            if let Some(metric) = &routing.only_on_improvement {
                let value = epoch_values(e).into_iter().find(|(n, _)| n == metric).map(|(_, v)| v);
                return match value {
                    Some(v) => improves(metric, v, run.best.get(metric).copied()),
                    None => false,
                };
            }
            true
        }
        Payload::EpochStarted(e) => nth_epoch(routing.every_n_epochs, e.epoch, run.context.n_epochs),
        _ => true,
    }
}

/// Whether `event` is held back because its run is muted at `now_ms`: routine updates only (epochs, batches,
/// heartbeats), never a start, an end, a failure, a stall, a loss, a message or an alert.
pub fn muted(run: &RunState, event: &Event, now_ms: u64) -> bool {
    run.mute.as_ref().is_some_and(|m| m.active(now_ms))
        && matches!(
            event.kind(),
            EventKind::EpochStarted | EventKind::EpochEnded | EventKind::BatchEnded | EventKind::Heartbeat
        )
}

/// `every_n_epochs`: epochs n, 2n, ... (1-based) and always the last one.
fn nth_epoch(every: u32, epoch: u32, n_epochs: u32) -> bool {
    let every = every.max(1);
    let last = n_epochs > 0 && epoch.saturating_add(1) >= n_epochs;
    last || epoch.saturating_add(1).is_multiple_of(every)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_event::{BatchEnded, EpochStarted, Message, Metrics, RunFailed, RunFinished, RunStarted};

    use super::*;

    fn routing() -> Routing {
        Routing {
            events: vec![
                EventKind::RunStarted,
                EventKind::EpochEnded,
                EventKind::RunFinished,
                EventKind::RunFailed,
                EventKind::RunStalled,
                EventKind::RunLost,
                EventKind::Message,
            ],
            every_n_epochs: 1,
            min_interval: Duration::ZERO,
            only_on_improvement: None,
            rate_per_s: None,
            burst: None,
            timeout: Duration::from_secs(30),
            max_age: Duration::from_secs(86400),
            quiet: None,
            all_ranks: false,
        }
    }

    fn started(rank: u32) -> Event {
        Event::now(
            "r",
            0,
            RunStarted {
                name: "mnist".into(),
                host: "h".into(),
                pid: 1,
                rank,
                job: None,
                world_size: None,
                n_epochs: 4,
                batches_per_epoch: 10,
                metric_names: vec!["accuracy".into()],
                hyper: BTreeMap::new(),
            },
        )
    }

    fn epoch(epoch: u32, valid_loss: f64, accuracy: f64) -> Event {
        Event::now(
            "r",
            u64::from(epoch) + 1,
            EpochEnded {
                epoch,
                n_epochs: 4,
                train_loss: 1.0,
                valid_loss: Some(valid_loss),
                metrics: Metrics(vec![("accuracy".into(), accuracy)]),
                elapsed_s: 2.0,
            },
        )
    }

    fn run_after(events: &[Event]) -> RunState {
        let mut st = RunState::new("r");
        for e in events {
            st.apply(e, false, 1);
        }
        st
    }

    #[test]
    fn default_events_skip_batches_and_epoch_starts() {
        let r = routing();
        let st = run_after(&[started(0)]);
        let batch = Event::now(
            "r",
            1,
            BatchEnded { epoch: 0, batch: 0, n_batches: 10, loss: 1.0, smooth_loss: 1.0, lr: 0.1 },
        );
        assert!(!accepts(&r, &st, &batch));
        assert!(!accepts(&r, &st, &Event::now("r", 1, EpochStarted { epoch: 0 })));
        assert!(accepts(&r, &st, &epoch(0, 1.0, 0.5)));
        let msg =
            Event::now("r", 2, Message { title: "t".into(), text: "x".into(), level: Default::default() });
        assert!(accepts(&r, &st, &msg));
    }

    #[test]
    fn only_rank_zero_starts_epochs_and_finishes_but_any_rank_fails() {
        let r = routing();
        let st = run_after(&[started(1)]);
        assert!(!accepts(&r, &RunState::new("r"), &started(1)));
        assert!(!accepts(&r, &st, &epoch(0, 1.0, 0.5)));
        let finished = Event::now(
            "r",
            9,
            RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None },
        );
        assert!(!accepts(&r, &st, &finished));
        let failed = Event::now("r", 9, RunFailed { error: "oom".into(), traceback: None });
        assert!(accepts(&r, &st, &failed));
        assert!(accepts(&r, &run_after(&[started(0)]), &finished));
    }

    #[test]
    fn every_n_epochs_sends_each_nth_and_the_last() {
        let mut r = routing();
        r.every_n_epochs = 3;
        let st = run_after(&[started(0)]);
        let sent: Vec<u32> = (0..4).filter(|&e| accepts(&r, &st, &epoch(e, 1.0, 0.5))).collect();
        assert_eq!(sent, vec![2, 3]);
    }

    #[test]
    fn only_on_improvement_follows_the_metric_direction() {
        let check = |metric: &str, epochs: &[(f64, f64)], expected: &[bool]| {
            let mut r = routing();
            r.only_on_improvement = Some(metric.to_owned());
            let mut st = run_after(&[started(0)]);
            let mut got = Vec::new();
            for (i, (vl, acc)) in epochs.iter().enumerate() {
                let e = epoch(i as u32, *vl, *acc);
                got.push(accepts(&r, &st, &e));
                st.apply(&e, false, 2);
            }
            assert_eq!(got, expected, "{metric}");
        };
        check("valid_loss", &[(1.0, 0.5), (0.8, 0.4), (0.9, 0.6), (0.7, 0.6)], &[true, true, false, true]);
        check("accuracy", &[(1.0, 0.5), (0.8, 0.4), (0.9, 0.6), (0.7, 0.6)], &[true, false, true, false]);
        check("accuracy", &[(1.0, f64::NAN), (1.0, 0.1)], &[false, true]);
        check("missing", &[(1.0, 0.5)], &[false]);
    }

    #[test]
    fn a_run_state_after_a_nan_batch_survives_a_restart() {
        let mut st = run_after(&[started(0)]);
        let nan =
            BatchEnded { epoch: 0, batch: 3, n_batches: 10, loss: f64::NAN, smooth_loss: f64::NAN, lr: 0.1 };
        st.apply(&Event::now("r", 1, nan), false, 2);
        let stored = serde_json::to_vec(&st).expect("a run state encodes");
        let back: RunState = serde_json::from_slice(&stored).expect("a run state with a NaN loss decodes");
        let (epoch, batch, n, loss) = back.last_batch.expect("the batch is kept");
        assert_eq!((epoch, batch, n), (0, 3, 10));
        assert!(loss.is_nan());
    }

    #[test]
    fn a_later_event_clears_the_stalled_and_lost_flags() {
        let mut st = run_after(&[started(0)]);
        let stalled =
            Event::now("r", MADE_SEQ_BASE, herald_event::RunStalled { silent_s: 10.0, stall_after_s: 5.0 });
        st.apply(&stalled, true, 5);
        assert!(st.stalled);
        assert_eq!(st.last_event_ms, 1, "a made event is no sign of life");
        assert_eq!(st.state_word(), "stalled");
        st.apply(&epoch(0, 1.0, 0.5), false, 6);
        assert!(!st.stalled);
        assert_eq!(st.longest_epoch_s, 2.0);
        assert_eq!(st.state_word(), "running");
    }

    #[test]
    fn a_muted_run_holds_back_routine_updates_only_until_the_mute_ends() {
        let mut r = routing();
        r.events.extend([
            EventKind::BatchEnded,
            EventKind::EpochStarted,
            EventKind::Heartbeat,
            EventKind::Alert,
        ]);
        let mut st = run_after(&[started(0)]);
        st.change(RunChange::Mute(Mute { until_ms: Some(1_000), by: "@me".into() }));
        let batch = Event::now(
            "r",
            1,
            BatchEnded { epoch: 0, batch: 0, n_batches: 10, loss: 1.0, smooth_loss: 1.0, lr: 0.1 },
        );
        let finished = Event::now(
            "r",
            9,
            RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None },
        );
        let failed = Event::now("r", 9, RunFailed { error: "oom".into(), traceback: None });
        let alert = Event::now(
            "r",
            MADE_SEQ_BASE,
            herald_event::Alert {
                rule: Some("t".into()),
                title: "t".into(),
                text: "x".into(),
                level: Default::default(),
                epoch: None,
            },
        );
        let stalled =
            Event::now("r", MADE_SEQ_BASE, herald_event::RunStalled { silent_s: 10.0, stall_after_s: 5.0 });
        let lost = Event::now("r", MADE_SEQ_BASE, herald_event::RunLost { pid: 1, reason: "gone".into() });
        let msg =
            Event::now("r", 2, Message { title: "t".into(), text: "x".into(), level: Default::default() });
        let heartbeat = Event::now("r", 3, herald_event::Heartbeat {});
        let sent = |st: &RunState, events: &[&Event], now: u64| -> Vec<bool> {
            events.iter().map(|e| accepts(&r, st, e) && !muted(st, e, now)).collect()
        };
        let routine =
            [&epoch(0, 1.0, 0.5), &batch, &Event::now("r", 1, EpochStarted { epoch: 0 }), &heartbeat];
        assert_eq!(sent(&st, &routine, 999), [false; 4], "muted");
        assert_eq!(sent(&st, &routine, 1_000), [true; 4], "the mute has ended");
        let always = [&finished, &failed, &alert, &stalled, &lost, &msg];
        assert_eq!(sent(&st, &always, 999), [true; 6], "never muted");
        // Until unmuted: no end; /unmute ends it, and a second /unmute changes nothing.
        st.change(RunChange::Mute(Mute { until_ms: None, by: "@me".into() }));
        assert_eq!(sent(&st, &routine, u64::MAX), [false; 4]);
        assert_eq!(st.change(RunChange::Unmute), 1);
        assert_eq!(st.change(RunChange::Unmute), 0);
        assert_eq!(sent(&st, &routine, 0), [true; 4]);
    }

    #[test]
    fn phone_rules_are_added_replaced_and_removed_by_metric_and_survive_a_restart() {
        let mut st = run_after(&[started(0)]);
        let watch = |metric: &str, op: &str, value: f64| Watch {
            metric: metric.into(),
            op: op.into(),
            value,
            by: "@me".into(),
            added_ms: 1,
            fired: None,
        };
        assert_eq!(st.change(RunChange::Watch(watch("accuracy", ">=", 0.9))), 1);
        assert_eq!(st.change(RunChange::Watch(watch("accuracy", ">=", 0.9))), 1, "the same rule replaces");
        assert_eq!(st.change(RunChange::Watch(watch("accuracy", ">=", 0.95))), 1);
        assert_eq!(st.change(RunChange::Watch(watch("valid_loss", "<", 0.1))), 1);
        st.change(RunChange::Mute(Mute { until_ms: None, by: "@me".into() }));
        assert_eq!(st.watches.len(), 3);
        assert_eq!(st.watches[0].name(), "watch accuracy >= 0.9");
        let stored = serde_json::to_vec(&st).expect("encodes");
        let mut back: RunState = serde_json::from_slice(&stored).expect("decodes");
        assert_eq!((back.watches.clone(), back.mute.clone()), (st.watches.clone(), st.mute.clone()));
        assert_eq!(back.change(RunChange::Unwatch { metric: Some("accuracy".into()) }), 2);
        assert_eq!(back.change(RunChange::Unwatch { metric: Some("accuracy".into()) }), 0);
        assert_eq!(back.change(RunChange::Unwatch { metric: None }), 1);
        assert!(back.watches.is_empty());
        for i in 0..MAX_WATCHES + 1 {
            back.change(RunChange::Watch(watch("accuracy", ">", i as f64)));
        }
        assert_eq!(back.watches.len(), MAX_WATCHES, "bounded");
    }

    #[test]
    fn a_run_counts_the_alerts_each_rule_made_for_it() {
        let mut st = run_after(&[started(0)]);
        let alert = |rule: Option<&str>| herald_event::Alert {
            rule: rule.map(str::to_owned),
            title: "t".into(),
            text: "x".into(),
            level: Default::default(),
            epoch: None,
        };
        st.apply(&Event::now("r", MADE_SEQ_BASE, alert(Some("target"))), true, 2);
        st.apply(&Event::now("r", MADE_SEQ_BASE + 1, alert(Some("target"))), true, 2);
        st.apply(&Event::now("r", 5, alert(Some("client's own"))), false, 2);
        st.apply(&Event::now("r", MADE_SEQ_BASE + 2, alert(None)), true, 2);
        assert_eq!(st.alerted, BTreeMap::from([("target".to_owned(), 2)]));
    }

    #[test]
    fn a_job_streams_rank_zero_and_job_events_and_holds_rank_zeros_end_for_the_job() {
        let mut r = routing();
        r.events.extend([EventKind::RankLost, EventKind::RankStalled]);
        let job_start = |rank: u32| {
            let mut e = started(rank);
            if let Payload::RunStarted(s) = &mut e.payload {
                s.job = Some("j".into());
                s.world_size = Some(3);
            }
            e
        };
        let end = Event::now(
            "r",
            9,
            RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None },
        );
        let failed = Event::now("r", 9, RunFailed { error: "oom".into(), traceback: None });
        // Rank 0: start and epochs go out, its own end waits for the job's (a made run_finished).
        let zero = run_after(&[job_start(0)]);
        assert!(zero.job.is_some());
        assert!(accepts(&r, &RunState::new("r"), &job_start(0)));
        assert!(accepts(&r, &zero, &epoch(0, 1.0, 0.5)));
        assert!(!accepts(&r, &zero, &end));
        assert!(accepts(&r, &zero, &Event { seq: MADE_SEQ_BASE, ..end.clone() }));
        assert!(accepts(&r, &zero, &failed), "rank 0's failure is the job stream's");
        let lost = herald_event::RankLost {
            job: "j".into(),
            rank: 1,
            host: "h".into(),
            pid: 2,
            reason: "gone".into(),
        };
        assert!(accepts(&r, &zero, &Event::now("r", MADE_SEQ_BASE + 1, lost)));
        // Rank 1: nothing of its own, not even its failure (that is a rank_failed on rank 0's run).
        let one = run_after(&[job_start(1)]);
        assert!(!accepts(&r, &RunState::new("r"), &job_start(1)));
        assert!(!accepts(&r, &one, &failed));
        // Without a job, rank 1's failure goes out as before.
        assert!(accepts(&r, &run_after(&[started(1)]), &failed));
        // The cluster's edge forwards every rank's own events, and of its job events only rank_lost.
        let edge = Routing { all_ranks: true, ..r.clone() };
        for (st, event) in
            [(&RunState::new("r"), &job_start(1)), (&one, &failed), (&one, &epoch(0, 1.0, 0.5))]
        {
            assert!(accepts(&edge, st, event), "{event:?}");
        }
        assert!(accepts(&edge, &zero, &end), "rank 0's own end goes to the leader");
        assert!(
            !accepts(&edge, &zero, &Event { seq: MADE_SEQ_BASE, ..end.clone() }),
            "the leader ends the job"
        );
        let stalled =
            herald_event::RankStalled { job: "j".into(), ranks: vec![], all: true, stall_after_s: 1.0 };
        assert!(!accepts(&edge, &zero, &Event::now("r", MADE_SEQ_BASE + 2, stalled)));
        let lost = herald_event::RankLost {
            job: "j".into(),
            rank: 1,
            host: "h".into(),
            pid: 2,
            reason: "gone".into(),
        };
        assert!(accepts(&edge, &one, &Event::now("r", MADE_SEQ_BASE, lost)), "its pid check is the edge's");
    }
}

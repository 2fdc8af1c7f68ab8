//! Alert rules: tell people when something needs them (a NaN, a target reached, a plateau, a diverging
//! validation loss, a slow epoch, a sweep done), rather than at every epoch.
//!
//! [`Rules`] holds the configured `[[rule]]`s ([`RuleConfig`]) and [`Rules::evaluate`]s each accepted event
//! against them, returning the `alert` payloads to make ([`Fired`]). A rule fires once per run and re-arms
//! when its condition clears (a threshold crossed back, a plateau ended by an improvement, a finite loss);
//! what a rule remembers of a run is the run's [`RuleMemory`] in [`RunState::rules`], so it survives a
//! restart with the run table. What every rule of a run shares (its latest epoch durations, for `slow_epoch`)
//! is kept once per run, in [`RunState::epoch_times_s`], and updated once per `epoch_ended` however many
//! rules read it. A rule about a metric a run never reports says so once.
//!
//! The per-kind logic is one file per concern: `nan.rs` (batches and epochs), `epoch.rs` (threshold,
//! plateau, diverging, slow_epoch), `sweep.rs` (all_finished, across runs), `phone.rs` (the threshold rules
//! added from the phone, kept on the run: [`RunState::watches`]); what a rule says and its `runs`
//! glob are configuration (`config/rule.rs`, `config/glob.rs`). This module is pure: no I/O, no clock, no locks. The writer is its only
//! user: it makes the alerts as daemon events (`made`, sequence numbers from `MADE_SEQ_BASE`) and routes them.

mod epoch;
pub mod list;
mod nan;
mod phone;
mod sweep;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use herald_event::{Alert, EpochEnded, Event, EventKind, Payload};

pub use crate::config::{Glob, Op, RuleConfig, RuleKind};

use crate::runs::{RuleMemory, RunState, lower_is_better};

/// Calls its argument with the state of each other run the daemon knows (for `all_finished`).
pub type EachRun<'a> = dyn Fn(&mut dyn FnMut(&RunState)) + 'a;

/// An alert a rule made, and the notifiers it goes to (`None`: every notifier that routes `alert`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fired<'a> {
    /// The `alert` to append to the run's stream.
    pub alert: Alert,
    /// The rule's `notifiers`, when it names some.
    pub notifiers: Option<&'a [String]>,
}

/// The configured rules, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<RuleConfig>,
    /// Whether any rule looks at `batch_ended` (only `nan` does), so that batches cost nothing otherwise.
    watches_batches: bool,
    /// Whether any rule is a `slow_epoch` rule (then the run's epoch durations are kept, once per run).
    watches_pace: bool,
    /// The indices of `rules` in the order of their names, the order of a run's memories ([`RunState::rules`]).
    by_name: Vec<usize>,
    /// Per rule: whether its metric improves downwards (`runs::lower_is_better`, a few string searches saved
    /// from every epoch).
    lower: Vec<bool>,
}

impl Rules {
    /// The configured rules, in configuration order.
    pub fn new(rules: Vec<RuleConfig>) -> Rules {
        let watches_batches = rules.iter().any(|r| r.kind == RuleKind::Nan);
        let watches_pace = rules.iter().any(|r| matches!(r.kind, RuleKind::SlowEpoch { .. }));
        let mut by_name: Vec<usize> = (0..rules.len()).collect();
        by_name.sort_by(|&a, &b| rules[a].name.cmp(&rules[b].name));
        let lower = rules.iter().map(|r| r.kind.metric().is_some_and(lower_is_better)).collect();
        Rules { rules, watches_batches, watches_pace, by_name, lower }
    }

    /// Whether no rule is configured (then evaluation costs nothing).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in configuration order.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// Whether an event of this type can make any rule fire or re-arm (a cheap test before
    /// [`Rules::evaluate`]): never an alert, a batch only with a `nan` rule. A run's phone rules are
    /// [`Rules::watches_run`]'s.
    pub fn watches(&self, kind: EventKind) -> bool {
        match kind {
            _ if self.rules.is_empty() => false,
            EventKind::Alert => false,
            EventKind::BatchEnded => self.watches_batches,
            _ => true,
        }
    }

    /// Whether the run's own phone rules look at an event of this type (an epoch's end, while one waits).
    pub fn watches_run(st: &RunState, kind: EventKind) -> bool {
        kind == EventKind::EpochEnded && st.watches.iter().any(|w| w.fired.is_none())
    }

    /// Evaluate `event`, just accepted and applied to its run's state `st`. `others` calls its argument with
    /// the state of every other run the daemon knows (for `all_finished`). Alerts (the rules' own, or a
    /// client's) are never evaluated, so a rule cannot feed on its own output.
    pub fn evaluate<'r>(&'r self, st: &mut RunState, event: &Event, others: &EachRun<'_>) -> Vec<Fired<'r>> {
        let mut fired = Vec::new();
        if let Payload::EpochEnded(e) = &event.payload
            && !st.watches.is_empty()
        {
            fired.extend(phone::evaluate(st, e).into_iter().map(|alert| Fired { alert, notifiers: None }));
        }
        if self.rules.is_empty() {
            return fired;
        }
        match &event.payload {
            Payload::BatchEnded(b) => {
                if !self.watches_batches {
                    return fired;
                }
                for rule in self.rules.iter().filter(|r| r.kind == RuleKind::Nan) {
                    if !rule.runs.matches(&st.context.name) {
                        continue;
                    }
                    // One lookup per batch; the memory is made at the run's first batch.
                    let alert = match st.rules.get_mut(&rule.name) {
                        Some(m) => nan::batch(rule, m, b),
                        None => nan::batch(rule, st.rules.entry(rule.name.clone()).or_default(), b),
                    };
                    if let Some(alert) = alert {
                        fired.push(Fired { alert, notifiers: rule.notifiers.as_deref() });
                    }
                }
                return fired;
            }
            Payload::EpochEnded(e) => self.epoch(st, e, &mut fired),
            Payload::Alert(_) => return fired,
            _ => {}
        }
        // Every event but a batch or an alert: a run's end may complete a set; any other event of a running run
        // re-arms its `all_finished` rules (cheaply: the other runs are looked at only at an end).
        for rule in self.rules.iter().filter(|r| r.kind == RuleKind::AllFinished) {
            if let Some(alert) = sweep::evaluate(rule, st, event, others) {
                fired.push(Fired { alert, notifiers: rule.notifiers.as_deref() });
            }
        }
        fired
    }

    /// Evaluate the rules that look at epochs against `e`, an `epoch_ended` of the run `st`, in one walk of the
    /// run's memories (a sorted map) beside the rules in the same order ([`Rules::by_name`]): one name
    /// comparison per rule rather than a lookup, which is what 100 rules cost per epoch otherwise. A rule without
    /// a memory yet (the run's first epoch) gets one on the way. Alerts come in configuration order.
    fn epoch<'r>(&'r self, st: &mut RunState, e: &EpochEnded, fired: &mut Vec<Fired<'r>>) {
        // The median of the run's earlier epochs, computed once for all its `slow_epoch` rules.
        let pace = self.pace(st, e);
        let judge = |i: usize, name: &str, best: &BTreeMap<String, f64>, m: &mut RuleMemory| {
            let rule = &self.rules[i];
            if !rule.runs.matches(name) {
                return None;
            }
            match rule.kind {
                RuleKind::Nan => nan::epoch(rule, m, e),
                _ => epoch::evaluate(rule, self.lower[i], best, m, e, pace),
            }
        };
        let start = fired.len();
        let mut missing = Vec::new();
        {
            let (name, best) = (st.context.name.as_str(), &st.best);
            let mut memories = st.rules.iter_mut().peekable();
            for &i in &self.by_name {
                let rule = &self.rules[i];
                if rule.kind == RuleKind::AllFinished {
                    continue;
                }
                while memories.next_if(|(k, _)| k.as_str() < rule.name.as_str()).is_some() {}
                let Some((_, m)) = memories.next_if(|(k, _)| **k == rule.name) else {
                    missing.push(i);
                    continue;
                };
                if let Some(alert) = judge(i, name, best, m) {
                    fired.push(Fired { alert, notifiers: rule.notifiers.as_deref() });
                }
            }
        }
        for i in missing {
            let rule = &self.rules[i];
            if !rule.runs.matches(&st.context.name) {
                continue;
            }
            let m = st.rules.entry(rule.name.clone()).or_default();
            if let Some(alert) = judge(i, &st.context.name, &st.best, m) {
                fired.push(Fired { alert, notifiers: rule.notifiers.as_deref() });
            }
        }
        if fired.len() > start + 1 {
            let order =
                |f: &Fired<'_>| self.rules.iter().position(|r| Some(&r.name) == f.alert.rule.as_ref());
            fired[start..].sort_by_key(order);
        }
    }

    /// The median duration of the run's earlier epochs when some `slow_epoch` rule watches the run and it has
    /// enough of them; takes this epoch's duration into the run's list ([`RunState::epoch_times_s`]) either
    /// way.
    fn pace(&self, st: &mut RunState, e: &EpochEnded) -> Option<f64> {
        let watched = self.watches_pace
            && self
                .rules
                .iter()
                .any(|r| matches!(r.kind, RuleKind::SlowEpoch { .. }) && r.runs.matches(&st.context.name));
        if !watched {
            return None;
        }
        epoch::pace(&mut st.epoch_times_s, e.elapsed_s)
    }
}

/// The rule's memory of the run, made empty the first time.
fn memory<'s>(rule: &RuleConfig, st: &'s mut RunState) -> &'s mut RuleMemory {
    // `get_mut` first: the common case allocates no key.
    if !st.rules.contains_key(&rule.name) {
        st.rules.insert(rule.name.clone(), RuleMemory::default());
    }
    st.rules.get_mut(&rule.name).expect("inserted just above")
}

/// Fire once: an alert when the condition holds and the rule is armed, re-arming when it no longer holds.
fn once(memory: &mut RuleMemory, holds: bool, alert: impl FnOnce() -> Alert) -> Option<Alert> {
    match (holds, memory.fired) {
        (true, false) => {
            memory.fired = true;
            Some(alert())
        }
        (false, true) => {
            memory.fired = false;
            None
        }
        _ => None,
    }
}

/// The alert of `rule`, with its name and level.
fn alert(rule: &RuleConfig, title: String, text: String, epoch: Option<u32>) -> Alert {
    Alert {
        rule: Some(rule.name.clone()),
        title: format!("{}: {title}", rule.name),
        text,
        level: rule.level,
        epoch,
    }
}

/// A number for an alert's text: six decimals without trailing zeros (exponent form when tiny or huge),
/// `NaN`, `inf`, `-inf`.
fn num(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if v != 0.0 && !(1e-4..1e9).contains(&v.abs()) {
        return format!("{v:.3e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".to_owned() } else { s.to_owned() }
}

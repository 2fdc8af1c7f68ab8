//! The rules evaluated at each `epoch_ended`: `threshold`, `plateau`, `diverging` (on a metric) and
//! `slow_epoch` (on the epoch's duration), and the one-time notice that a run has no value of a rule's
//! metric.
//!
//! A metric is `train_loss`, `valid_loss` or a name in the epoch's `metrics`; losses and error-like names
//! improve downwards (`runs::lower_is_better`). A NaN or infinite value is left to the `nan` rule: it neither
//! fires nor clears these rules.

use herald_event::{Alert, EpochEnded, Level, format::format_time};

use std::collections::BTreeMap;

use super::{alert, num, once};
use crate::rules::{RuleConfig, RuleKind};
use crate::runs::{RuleMemory, epoch_values};

/// Epoch durations kept per run for the `slow_epoch` median (once per run, shared by all its rules): the
/// latest 64, so that the run's stored record stays small and the median tracks a run whose epochs change pace.
const MAX_DURATIONS: usize = 64;
/// Earlier epochs needed before a `slow_epoch` rule judges one (the first is often slow: warm-up, caches).
const MIN_DURATIONS: usize = 2;

/// Evaluate one rule of an epoch kind, watching the run, against an `epoch_ended` of the run: `lower` whether
/// the rule's metric improves downwards (`runs::lower_is_better`, worked out once per rule), `best` the run's
/// best values, `memory` what the rule remembers of the run, `median` the median of the run's earlier epoch
/// durations, when it has enough of them ([`pace`]).
pub(super) fn evaluate(
    rule: &RuleConfig,
    lower: bool,
    best: &BTreeMap<String, f64>,
    memory: &mut RuleMemory,
    e: &EpochEnded,
    median: Option<f64>,
) -> Option<Alert> {
    let Some(metric) = rule.kind.metric() else {
        let RuleKind::SlowEpoch { factor } = rule.kind else { return None };
        return slow_epoch(rule, memory, e, factor, median?);
    };
    // The run's best values hold every metric it reported a finite value of (this epoch included).
    let seen = best.contains_key(metric);
    let value = value_of(e, metric);
    let Some(v) = value else {
        return missing(rule, memory, e, metric, seen);
    };
    if !v.is_finite() {
        return None;
    }
    match &rule.kind {
        RuleKind::Threshold { op, value, .. } => once(memory, op.holds(v, *value), || {
            let text = format!("{metric} {} at epoch {}/{}", num(v), u64::from(e.epoch) + 1, e.n_epochs);
            alert(rule, format!("{metric} {} {}", op.as_str(), num(*value)), text, Some(e.epoch))
        }),
        RuleKind::Plateau { patience, min_delta, .. } => {
            plateau(rule, memory, e, (metric, lower), v, *patience, *min_delta)
        }
        RuleKind::Diverging { factor, .. } => diverging(rule, memory, e, (metric, lower), v, *factor),
        _ => None,
    }
}

/// The value of `metric` in the epoch, if it has one.
fn value_of(e: &EpochEnded, metric: &str) -> Option<f64> {
    match metric {
        "train_loss" => Some(e.train_loss),
        "valid_loss" => e.valid_loss,
        name => e.metrics.get(name),
    }
}

/// Say once that the run has no value of the rule's metric (unless an earlier epoch had one).
fn missing(
    rule: &RuleConfig,
    memory: &mut RuleMemory,
    e: &EpochEnded,
    metric: &str,
    seen: bool,
) -> Option<Alert> {
    if seen || memory.missing_said {
        return None;
    }
    memory.missing_said = true;
    let names: Vec<String> = epoch_values(e).into_iter().map(|(n, _)| n).collect();
    let text = format!(
        "epoch {}/{} has no `{metric}` (it has {}); the rule waits for one: check the rule's `metric`",
        u64::from(e.epoch) + 1,
        e.n_epochs,
        names.join(", ")
    );
    let mut a = alert(rule, format!("no `{metric}` in this run"), text, Some(e.epoch));
    a.level = Level::Info;
    Some(a)
}

/// Whether `v` improves on `best` by more than `min_delta`.
fn improves(lower: bool, v: f64, best: f64, min_delta: f64) -> bool {
    if lower { v < best - min_delta } else { v > best + min_delta }
}

fn plateau(
    rule: &RuleConfig,
    memory: &mut RuleMemory,
    e: &EpochEnded,
    (metric, lower): (&str, bool),
    v: f64,
    patience: u32,
    min_delta: f64,
) -> Option<Alert> {
    match memory.best {
        Some((best, _)) if !improves(lower, v, best, min_delta) => {
            memory.since_best = memory.since_best.saturating_add(1);
        }
        _ => {
            // The first value, or an improvement: the plateau (if any) is over.
            memory.best = Some((v, e.epoch));
            memory.since_best = 0;
        }
    }
    let (best, best_epoch) = memory.best.unwrap_or((v, e.epoch));
    let since = memory.since_best;
    once(memory, since >= patience, || {
        let text = format!(
            "{metric} has not improved on {} (epoch {}) for {since} epochs; now {} at epoch {}/{}",
            num(best),
            u64::from(best_epoch) + 1,
            num(v),
            u64::from(e.epoch) + 1,
            e.n_epochs
        );
        alert(rule, format!("{metric} stopped improving"), text, Some(e.epoch))
    })
}

fn diverging(
    rule: &RuleConfig,
    memory: &mut RuleMemory,
    e: &EpochEnded,
    (metric, lower): (&str, bool),
    v: f64,
    factor: f64,
) -> Option<Alert> {
    let (best, best_epoch) = match memory.best {
        Some((best, epoch)) if !improves(lower, v, best, 0.0) => (best, epoch),
        _ => {
            memory.best = Some((v, e.epoch));
            (v, e.epoch)
        }
    };
    // Worse than the best by `factor`: a loss above 1.5 x its minimum, an accuracy below its best / 1.5. A best
    // at or below zero has no such ratio: then worse by `factor - 1` times its size.
    let holds = if best > 0.0 {
        if lower { v > best * factor } else { v < best / factor }
    } else {
        let worse = if lower { v - best } else { best - v };
        worse > 0.0 && worse > best.abs() * (factor - 1.0)
    };
    once(memory, holds, || {
        let ratio = if best != 0.0 { format!(" ({} times)", num(v / best)) } else { String::new() };
        let text = format!(
            "{metric} {} at epoch {}/{}{ratio}, against its best {} at epoch {}",
            num(v),
            u64::from(e.epoch) + 1,
            e.n_epochs,
            num(best),
            u64::from(best_epoch) + 1
        );
        alert(rule, format!("{metric} diverging"), text, Some(e.epoch))
    })
}

/// Take an epoch's duration (`took`) into a run's list of durations (oldest first, the latest
/// [`MAX_DURATIONS`]); returns the median of the earlier ones, once there are enough to judge by.
pub(super) fn pace(durations: &mut Vec<f64>, took: f64) -> Option<f64> {
    let median = (durations.len() >= MIN_DURATIONS).then(|| median(durations));
    if durations.len() >= MAX_DURATIONS {
        durations.drain(..=durations.len() - MAX_DURATIONS);
    }
    durations.push(took);
    median
}

fn slow_epoch(
    rule: &RuleConfig,
    memory: &mut RuleMemory,
    e: &EpochEnded,
    factor: f64,
    median: f64,
) -> Option<Alert> {
    let took = e.elapsed_s;
    once(memory, took > factor * median, || {
        let ratio = if median > 0.0 {
            format!(", {} times", num((took / median * 10.0).round() / 10.0))
        } else {
            String::new()
        };
        let text = format!(
            "epoch {}/{} took {}{ratio} the run's median epoch of {}",
            u64::from(e.epoch) + 1,
            e.n_epochs,
            seconds(took),
            seconds(median)
        );
        alert(rule, "slow epoch".to_owned(), text, Some(e.epoch))
    })
}

/// The median of a non-empty list (linear time: a slow_epoch rule judges every epoch of every run).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    let mid = v.len() / 2;
    let (below, upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = below.iter().copied().max_by(f64::total_cmp).unwrap_or(upper);
        (lower + upper) / 2.0
    }
}

/// A duration for people: `2.5s` under a minute, else `mm:ss` or `h:mm:ss`.
fn seconds(s: f64) -> String {
    if s < 60.0 { format!("{}s", num((s * 10.0).round() / 10.0)) } else { format_time(s) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_lists() {
        for (values, expected) in [
            (&[3.0][..], 3.0),
            (&[30.0, 10.0, 10.0], 10.0),
            (&[4.0, 1.0, 3.0, 2.0], 2.5),
            (&[10.0, 10.0, 30.0, 25.0], 17.5),
        ] {
            assert_eq!(super::median(values), expected, "{values:?}");
        }
    }
}

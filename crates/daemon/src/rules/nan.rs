//! `kind = "nan"`: a NaN or infinite loss in a batch, or a NaN or infinite loss or metric at an epoch's end.
//!
//! A run of NaN batches is one alert: the rule fires at the first and re-arms only when a batch (or an
//! epoch) is all finite again. Batches are the hot path, so a finite batch of an armed rule costs two float
//! checks and nothing else.

use herald_event::{Alert, BatchEnded, EpochEnded};

use super::{alert, num, once};
use crate::rules::RuleConfig;
use crate::runs::{RuleMemory, epoch_values};

/// A `batch_ended` of a watched run.
pub(super) fn batch(rule: &RuleConfig, memory: &mut RuleMemory, b: &BatchEnded) -> Option<Alert> {
    let finite = b.loss.is_finite() && b.smooth_loss.is_finite();
    once(memory, !finite, || {
        let what = if b.loss.is_nan() || (b.loss.is_finite() && b.smooth_loss.is_nan()) {
            "NaN"
        } else {
            "infinite"
        };
        let text = format!(
            "batch {}/{} of epoch {}: loss {}, smooth_loss {}",
            b.batch.saturating_add(1),
            b.n_batches,
            u64::from(b.epoch) + 1,
            num(b.loss),
            num(b.smooth_loss)
        );
        alert(rule, format!("{what} loss"), text, Some(b.epoch))
    })
}

/// An `epoch_ended` of a watched run.
pub(super) fn epoch(rule: &RuleConfig, memory: &mut RuleMemory, e: &EpochEnded) -> Option<Alert> {
    let finite = e.train_loss.is_finite()
        && e.valid_loss.is_none_or(f64::is_finite)
        && e.metrics.iter().all(|(_, v)| v.is_finite());
    if finite {
        memory.fired = false;
        return None;
    }
    let bad: Vec<(String, f64)> = epoch_values(e).into_iter().filter(|(_, v)| !v.is_finite()).collect();
    once(memory, !bad.is_empty(), || {
        let what = if bad.iter().any(|(_, v)| v.is_nan()) { "NaN" } else { "infinite" };
        let names: Vec<String> = bad.iter().map(|(n, v)| format!("{n} {}", num(*v))).collect();
        let text = format!("epoch {}/{}: {}", u64::from(e.epoch) + 1, e.n_epochs, names.join(", "));
        let subject = if bad.iter().all(|(n, _)| n.contains("loss")) { "loss" } else { "value" };
        alert(rule, format!("{what} {subject}"), text, Some(e.epoch))
    })
}

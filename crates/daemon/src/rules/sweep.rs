//! `kind = "all_finished"`: every started run whose name matches the rule's `runs` has ended: completed,
//! stopped, failed or lost. "Tell me when the last job of my sweep finished."
//!
//! Judged at each end of a run (its `run_finished`, `run_failed`, or the daemon's `run_lost`): the alert
//! belongs to the run whose end completed the set. Each end event is an end after the run was running (a run
//! ends once; it ends again only after it started again, or sent something after it was declared lost), so
//! each re-arms the rule for that run before judging: a lost run that comes back, even with batches only,
//! and then ends fires the rule again; a new matching run that starts and ends fires it again (the next sweep
//! under the same pattern). Batches are never looked at (the hot path); other events of an ended run (a late
//! message) never fire it, and the other runs are walked only at an end.

use herald_event::{Alert, Event, Payload};

use super::{alert, memory, once};
use crate::rules::{EachRun, RuleConfig};
use crate::runs::{Ending, RunState};

/// How a run stands for `all_finished`: `None` while it runs, else the word for its end.
fn ended(st: &RunState) -> Option<&'static str> {
    match st.ended {
        Some(Ending::Completed) => Some("completed"),
        Some(Ending::Stopped) => Some("stopped"),
        Some(Ending::Failed) => Some("failed"),
        None if st.lost => Some("lost"),
        None => None,
    }
}

/// Judge `rule` at `event` (neither a batch nor an alert), just applied to its run `st`.
pub(super) fn evaluate(
    rule: &RuleConfig,
    st: &mut RunState,
    event: &Event,
    others: &EachRun<'_>,
) -> Option<Alert> {
    if !st.started || !rule.runs.matches(&st.context.name) {
        return None;
    }
    let end = matches!(event.payload, Payload::RunFinished(_) | Payload::RunFailed(_) | Payload::RunLost(_));
    let word = ended(st);
    if end || word.is_none() {
        // An end re-arms before it is judged; a running run is re-armed for its next end.
        if let Some(m) = st.rules.get_mut(&rule.name) {
            m.fired = false;
        }
    }
    let word = word.filter(|_| end)?;
    let mut counts: Vec<(&'static str, usize)> = vec![(word, 1)];
    let mut running = 0usize;
    others(&mut |other: &RunState| {
        if other.context.run == st.context.run || !other.started || !rule.runs.matches(&other.context.name) {
            return;
        }
        match ended(other) {
            Some(w) => match counts.iter_mut().find(|(c, _)| *c == w) {
                Some((_, n)) => *n += 1,
                None => counts.push((w, 1)),
            },
            None => running += 1,
        }
    });
    if running > 0 {
        return None;
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let name = st.context.name.clone();
    once(memory(rule, st), true, || {
        counts.sort_by_key(|(w, _)| ["completed", "stopped", "failed", "lost"].iter().position(|x| x == w));
        let how: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
        let runs = if total == 1 { "the 1 run".to_owned() } else { format!("all {total} runs") };
        let text = format!("{runs} matching `{}` ended: {}; the last was {name}", rule.runs, how.join(", "));
        alert(rule, "all runs finished".to_owned(), text, None)
    })
}

//! `kind = "all_finished"`: every started run whose name matches the rule's `runs` has ended: completed,
//! stopped, failed or lost. "Tell me when the last job of my sweep finished."
//!
//! Evaluated when a run ends (or is declared lost): the alert belongs to the run whose end completed the set.
//! A run that starts again, or sends anything after it was declared lost, re-arms the rule for itself; a new
//! matching run that starts and ends fires it again (the next sweep under the same pattern).

use herald_event::Alert;

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

pub(super) fn evaluate(rule: &RuleConfig, st: &mut RunState, others: &EachRun<'_>) -> Option<Alert> {
    if !st.started || !rule.runs.matches(&st.context.name) {
        return None;
    }
    let Some(word) = ended(st) else {
        // Running (again): re-armed for its next end.
        if let Some(m) = st.rules.get_mut(&rule.name) {
            m.fired = false;
        }
        return None;
    };
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

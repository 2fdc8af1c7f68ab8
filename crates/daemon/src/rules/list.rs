//! The rules as people read them (`/rules`, `GET /v1/rules`, `herald rules`): the configured `[[rule]]`s and
//! the phone rules of every run, each with the runs it has fired for ([`RunState::alerted`]), and the runs
//! muted now. Pure: the caller hands over the run table and the clock.

use std::collections::HashMap;

use herald_plugin::{FiredFor, MuteEntry, RuleEntry, RuleList};

use crate::config::{RuleConfig, RuleKind};
use crate::runs::RunState;

/// What a configured rule looks at, in words.
fn condition(kind: &RuleKind) -> String {
    match kind {
        RuleKind::Nan => "a NaN or infinite loss or metric".to_owned(),
        RuleKind::Threshold { metric, op, value } => format!("{metric} {} {value}", op.as_str()),
        RuleKind::Plateau { metric, patience, min_delta } => {
            format!("{metric} not improved by more than {min_delta} for {patience} epochs")
        }
        RuleKind::Diverging { metric, factor } => format!("{metric} worse than its best by {factor}x"),
        RuleKind::SlowEpoch { factor } => format!("an epoch over {factor}x the run's median"),
        RuleKind::AllFinished => "every matching run ended".to_owned(),
    }
}

/// The runs a rule (by name) has fired for, by run name then id.
fn fired_for(name: &str, runs: &[(&String, &RunState)]) -> Vec<FiredFor> {
    runs.iter()
        .filter_map(|(id, st)| {
            let times = *st.alerted.get(name)?;
            Some(FiredFor { run: (*id).clone(), name: st.context.name.clone(), times })
        })
        .collect()
}

/// Every rule with the runs it fired for, and the runs muted at `now_ms`.
pub fn list(rules: &[RuleConfig], runs: &HashMap<String, RunState>, now_ms: u64) -> RuleList {
    let mut runs: Vec<(&String, &RunState)> = runs.iter().collect();
    runs.sort_by(|a, b| a.1.context.name.cmp(&b.1.context.name).then_with(|| a.0.cmp(b.0)));
    let configured = rules
        .iter()
        .map(|r| RuleEntry {
            name: r.name.clone(),
            kind: r.kind.name().to_owned(),
            condition: condition(&r.kind),
            runs: r.runs.as_str().to_owned(),
            level: r.level.as_str().to_owned(),
            added_by: None,
            added_ms: None,
            fired_for: fired_for(&r.name, &runs),
        })
        .collect();
    let mut phone: Vec<RuleEntry> = runs
        .iter()
        .flat_map(|(id, st)| {
            st.watches.iter().map(move |w| RuleEntry {
                name: w.name(),
                kind: "threshold".to_owned(),
                condition: w.condition(),
                runs: (*id).clone(),
                level: "info".to_owned(),
                added_by: Some(w.by.clone()),
                added_ms: Some(w.added_ms),
                fired_for: match (w.fired, st.alerted.get(&w.name())) {
                    (Some(_), times) => vec![FiredFor {
                        run: (*id).clone(),
                        name: st.context.name.clone(),
                        times: times.copied().unwrap_or(1),
                    }],
                    (None, _) => Vec::new(),
                },
            })
        })
        .collect();
    phone.sort_by_key(|r| r.added_ms);
    let mutes = runs
        .iter()
        .filter_map(|(id, st)| {
            let m = st.mute.as_ref().filter(|m| m.active(now_ms))?;
            Some(MuteEntry {
                run: (*id).clone(),
                name: st.context.name.clone(),
                until_ms: m.until_ms,
                by: m.by.clone(),
            })
        })
        .collect();
    RuleList { configured, phone, mutes }
}

//! `GET /v1/deliveries`: what the Deliveries page (`/notifiers`) shows. Each notifier's figures as
//! `GET /v1/status` has them (health, queue, sent, retries, give-ups, last error, rate-limited until), the
//! outbox with the age of its oldest waiting delivery, and the latest delivery of each recent run per notifier.
//!
//! A run's latest delivery comes from the worker's memory (when, which event, the receipt) for deliveries made
//! since the daemon started; for a recent run without one, from the outbox's receipt log (the receipt alone:
//! the log does not keep the time).

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::State;
use herald_plugin::Receipt;
use serde::Serialize;

use super::Dash;
use crate::api::{NotifierView, OutboxView};
use crate::server::ApiError;
use crate::shared::now_ms;

/// Runs the page lists at most.
const RUNS_SHOWN: usize = 50;
/// Runs heard from most recently whose receipts are read from the outbox when the workers have none in memory.
const RUNS_FROM_OUTBOX: usize = 20;

/// The outbox, with its oldest waiting delivery.
#[derive(Debug, Serialize)]
pub struct OutboxAge {
    /// Deliveries waiting, size and file, as in `GET /v1/status`.
    #[serde(flatten)]
    pub view: OutboxView,
    /// When the oldest waiting delivery was made (ms since the Unix epoch); `None` when none waits.
    pub oldest_waiting_ms: Option<u64>,
}

/// One notifier's latest delivery of a run.
#[derive(Debug, Serialize)]
pub struct RunDelivery {
    /// The notifier's name.
    pub notifier: String,
    /// The delivered event's sequence number and type, when the workers saw the delivery.
    pub seq: Option<u64>,
    /// The delivered event's type.
    pub event: Option<String>,
    /// When it was delivered (ms since the Unix epoch), when the workers saw the delivery.
    pub at_ms: Option<u64>,
    /// What the service answered: its message id, for services that give one.
    pub receipt: Receipt,
}

/// A run's latest deliveries, one per notifier that delivered something of it.
#[derive(Debug, Serialize)]
pub struct RunDeliveries {
    /// The run id.
    pub run: String,
    /// Its name.
    pub name: String,
    /// The latest delivery time among them, for ordering.
    pub latest_ms: Option<u64>,
    /// One per notifier.
    pub deliveries: Vec<RunDelivery>,
}

/// `GET /v1/deliveries`: the answer.
#[derive(Debug, Serialize)]
pub struct Deliveries {
    /// The outbox.
    pub outbox: OutboxAge,
    /// Every notifier, as in `GET /v1/status`.
    pub notifiers: Vec<NotifierView>,
    /// Runs with their latest deliveries, latest first.
    pub runs: Vec<RunDeliveries>,
    /// The daemon's clock (ms since the Unix epoch).
    pub now_ms: u64,
}

/// `GET /v1/deliveries`.
pub async fn get_deliveries(State(dash): State<Dash>) -> Result<Json<Deliveries>, ApiError> {
    let status = dash.handle.status();
    let shared = dash.handle.shared();
    let outbox = shared.outbox.clone();

    let mut oldest_waiting_ms: Option<u64> = None;
    for slot in &shared.slots {
        if let Some((_, job)) = outbox.jobs(&slot.name, 0, 1).await?.into_iter().next() {
            oldest_waiting_ms = Some(oldest_waiting_ms.map_or(job.created_ms, |t| t.min(job.created_ms)));
        }
    }

    // The workers' memory: (run, notifier) -> delivery.
    let mut by_run: BTreeMap<String, BTreeMap<String, RunDelivery>> = BTreeMap::new();
    for slot in &shared.slots {
        for d in slot.stats.facts().deliveries.iter() {
            by_run.entry(d.run.clone()).or_default().insert(
                d.notifier.clone(),
                RunDelivery {
                    notifier: d.notifier.clone(),
                    seq: Some(d.seq),
                    event: Some(d.kind.clone()),
                    at_ms: Some(d.at_ms),
                    receipt: d.receipt.clone(),
                },
            );
        }
    }
    // The runs heard from most recently, with their names; the outbox's receipts fill what memory lacks.
    let (names, recent): (BTreeMap<String, String>, Vec<String>) = {
        let runs = shared.runs();
        let mut recent: Vec<(&String, u64)> = runs.iter().map(|(id, st)| (id, st.last_event_ms)).collect();
        recent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let recent = recent.into_iter().take(RUNS_FROM_OUTBOX).map(|(id, _)| id.clone()).collect();
        (runs.iter().map(|(id, st)| (id.clone(), st.context.name.clone())).collect(), recent)
    };
    for run in &recent {
        for slot in &shared.slots {
            if by_run.get(run).is_some_and(|m| m.contains_key(&slot.name)) {
                continue;
            }
            if let Some(receipt) = outbox.latest_receipt(&slot.name, run).await? {
                by_run.entry(run.clone()).or_default().insert(
                    slot.name.clone(),
                    RunDelivery { notifier: slot.name.clone(), seq: None, event: None, at_ms: None, receipt },
                );
            }
        }
    }
    let recent: HashSet<&String> = recent.iter().collect();
    let mut runs: Vec<RunDeliveries> = by_run
        .into_iter()
        .map(|(run, per)| RunDeliveries {
            name: names.get(&run).filter(|n| !n.is_empty()).cloned().unwrap_or_else(|| run.clone()),
            latest_ms: per.values().filter_map(|d| d.at_ms).max(),
            deliveries: per.into_values().collect(),
            run,
        })
        .collect();
    // Latest delivery first; runs known only from the outbox after them.
    runs.sort_by(|a, b| {
        b.latest_ms.cmp(&a.latest_ms).then_with(|| recent.contains(&b.run).cmp(&recent.contains(&a.run)))
    });
    runs.truncate(RUNS_SHOWN);
    Ok(Json(Deliveries {
        outbox: OutboxAge { view: status.outbox, oldest_waiting_ms },
        notifiers: status.notifiers,
        runs,
        now_ms: now_ms(),
    }))
}

#[cfg(test)]
mod tests {
    use crate::api::RecentDelivery;
    use crate::shared::{Facts, RECENT_DELIVERIES};

    fn delivery(run: &str, seq: u64, at_ms: u64) -> RecentDelivery {
        RecentDelivery {
            notifier: "n".into(),
            run: run.into(),
            seq,
            kind: "epoch_ended".into(),
            at_ms,
            receipt: herald_plugin::Receipt(serde_json::json!({ "message_id": seq })),
        }
    }

    #[test]
    fn a_notifier_keeps_the_latest_delivery_of_each_run_for_the_latest_runs() {
        let mut f = Facts::default();
        f.delivered(delivery("a", 1, 10));
        f.delivered(delivery("b", 1, 20));
        f.delivered(delivery("a", 2, 30));
        let kept: Vec<(&str, u64)> = f.deliveries.iter().map(|d| (d.run.as_str(), d.seq)).collect();
        assert_eq!(kept, [("b", 1), ("a", 2)], "a's later delivery replaces its first, and goes last");
        assert_eq!(f.last_delivery_ms, Some(30));
        for i in 0..RECENT_DELIVERIES as u64 + 10 {
            f.delivered(delivery(&format!("r{i}"), 0, 100 + i));
        }
        assert_eq!(f.deliveries.len(), RECENT_DELIVERIES);
        assert_eq!(
            f.deliveries.front().map(|d| d.run.as_str()),
            Some("r10"),
            "the oldest runs are forgotten"
        );
    }
}

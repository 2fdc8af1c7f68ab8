//! The dashboard's read API: the runs list, one run in full, its loss series (downsampled on the server) and
//! its loss plot, plus the dashboard's Stop (`Handle::request_stop`, the path `herald stop` takes).
//!
//! Handlers return `Result<_, ApiError>` (the API's one error type, `crate::server::ApiError`): errors have the
//! shape `{"error": {"code", "message"}}`.
//! Everything here reads the dispatcher's shared run table and the outbox; nothing is written but a stop
//! request.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_event::{EpochEnded, Event};
use herald_plugin::{Receipt, RunContext};
use serde::Serialize;
use serde_json::json;

use super::Dash;
use crate::api::GiveUp;
use crate::runs::RunState;
use crate::server::ApiError;
use crate::shared::now_ms;

/// Lifecycle events a run's page shows at most (the latest).
const EVENTS_SHOWN: usize = 1000;

/// One run in the list: where it stands now.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub rank: u32,
    /// running, completed, stopped, failed, stalled, lost, stopping, or messages.
    pub state: String,
    pub n_epochs: u32,
    pub epochs_done: usize,
    pub batches_per_epoch: u64,
    /// The latest batch: epoch, batch, batches in the epoch, smoothed loss.
    pub last_batch: Option<(u32, u64, u64, f64)>,
    pub last_epoch: Option<EpochEnded>,
    pub metric_names: Vec<String>,
    pub best: BTreeMap<String, f64>,
    /// First and latest event from the run (ms since the Unix epoch).
    pub first_ms: u64,
    pub last_event_ms: u64,
    /// Seconds until the last epoch ends at the pace so far, for a running run.
    pub eta_s: Option<f64>,
    pub stop_requested: bool,
    pub stop_reason: Option<String>,
}

/// A run's row from its state.
pub fn row(run: &str, st: &RunState) -> RunRow {
    let ctx = &st.context;
    let mut state = st.state_word().to_owned();
    if state == "running" && st.stop.is_some() {
        state = "stopping".into();
    }
    let eta_s = (st.ended.is_none() && !ctx.epochs.is_empty() && ctx.n_epochs as usize > ctx.epochs.len())
        .then(|| {
            let spent: f64 = ctx.epochs.iter().map(|e| e.elapsed_s).sum();
            spent / ctx.epochs.len() as f64 * (ctx.n_epochs as usize - ctx.epochs.len()) as f64
        })
        .filter(|s| s.is_finite());
    RunRow {
        run: run.to_owned(),
        name: ctx.name.clone(),
        host: ctx.host.clone(),
        pid: ctx.pid,
        rank: ctx.rank,
        state,
        n_epochs: ctx.n_epochs,
        epochs_done: ctx.epochs.len(),
        batches_per_epoch: ctx.batches_per_epoch,
        last_batch: st.last_batch,
        last_epoch: ctx.epochs.last().cloned(),
        metric_names: ctx.metric_names.clone(),
        best: st.best.clone(),
        first_ms: st.first_ms,
        last_event_ms: st.last_event_ms,
        eta_s,
        stop_requested: st.stop.is_some(),
        stop_reason: st.stop.clone(),
    }
}

/// One notifier's deliveries of a run.
#[derive(Debug, Serialize)]
pub struct DeliveryRow {
    pub notifier: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The receipt of the latest delivery of the run (a message id, for services that give one).
    pub latest_receipt: Option<Receipt>,
    /// The run's deliveries this notifier gave up on (of the latest the outbox keeps).
    pub give_ups: Vec<GiveUp>,
}

/// `GET /v1/runs/{run}`: the answer.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    pub run: RunRow,
    /// Name, host, hyperparameters and the results table.
    pub context: RunContext,
    /// The run's lifecycle events (everything but `batch_ended`), oldest first.
    pub events: Vec<Event>,
    pub deliveries: Vec<DeliveryRow>,
    pub now_ms: u64,
}

pub(super) fn state_of(dash: &Dash, run: &str) -> Result<RunState, ApiError> {
    dash.handle.shared().runs().get(run).cloned().ok_or_else(|| ApiError::unknown_run(run))
}

/// `GET /v1/runs/{run}`.
pub async fn get_run(State(dash): State<Dash>, Path(run): Path<String>) -> Result<Json<RunDetail>, ApiError> {
    let st = state_of(&dash, &run)?;
    let outbox = dash.handle.shared().outbox.clone();
    let mut events = outbox.events(&run).await?;
    if events.len() > EVENTS_SHOWN {
        events.drain(..events.len() - EVENTS_SHOWN);
    }
    let give_ups = outbox.give_ups().await?;
    let mut deliveries = Vec::new();
    for slot in &dash.handle.shared().slots {
        deliveries.push(DeliveryRow {
            notifier: slot.name.clone(),
            kind: slot.kind.clone(),
            latest_receipt: outbox.latest_receipt(&slot.name, &run).await?,
            give_ups: give_ups.iter().filter(|g| g.run == run && g.notifier == slot.name).cloned().collect(),
        });
    }
    Ok(Json(RunDetail { run: row(&run, &st), context: st.context, events, deliveries, now_ms: now_ms() }))
}

/// `GET /v1/runs/{run}/plot.png`: the loss curve the phone gets at the run's end; 404 `no_plot` before there
/// is anything to draw.
pub async fn get_plot(State(dash): State<Dash>, Path(run): Path<String>) -> Result<Response, ApiError> {
    let st = state_of(&dash, &run)?;
    let points = dash.handle.loss_history(&run).await?;
    let image = tokio::task::spawn_blocking(move || crate::plot::loss_plot(&points, &st.context))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "plot_failed", e.to_string()))?;
    match image {
        Some(image) => Ok((
            [(header::CONTENT_TYPE, image.mime), (header::CACHE_CONTROL, "no-store".to_owned())],
            image.bytes,
        )
            .into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no_plot", "the run has no loss to draw yet")),
    }
}

/// `POST /v1/runs/{run}/stop` from the dashboard (the CSRF token is checked by the guard).
/// The reason the trainer and the timeline get says where the request came from (the client's address).
pub async fn post_stop(
    State(dash): State<Dash>,
    Path(run): Path<String>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut reason = crate::server::stop_reason(&body, "stop requested from the dashboard")?;
    if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
        reason = format!("{reason} (from {})", peer.ip());
    }
    if !dash.handle.request_stop(&run, &reason).await? {
        return Err(ApiError::unknown_run(&run));
    }
    Ok(Json(json!({ "run": run, "stop": true, "reason": reason })))
}

/// `GET /v1/status` on the dashboard's listener (the Deliveries page).
pub async fn get_status(State(dash): State<Dash>) -> impl IntoResponse {
    Json(dash.handle.status())
}

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "ok": true }))
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such page: the dashboard has /, /runs/{run}, /notifiers",
    )
}

#[cfg(test)]
mod tests {
    use herald_event::Metrics;

    use super::*;

    fn epoch(epoch: u32, valid: f64) -> EpochEnded {
        EpochEnded {
            epoch,
            n_epochs: 3,
            train_loss: 1.0,
            valid_loss: Some(valid),
            metrics: Metrics(vec![]),
            elapsed_s: 2.0,
        }
    }

    #[test]
    fn eta_and_stopping_come_from_the_state() {
        let mut st = RunState::new("r");
        st.context.n_epochs = 3;
        st.context.epochs = vec![epoch(0, 0.5)];
        st.started = true;
        let r = row("r", &st);
        assert_eq!((r.state.as_str(), r.eta_s), ("running", Some(4.0)));
        st.stop = Some("asked".into());
        assert_eq!(row("r", &st).state, "stopping");
        st.ended = Some(crate::runs::Ending::Stopped);
        assert_eq!((row("r", &st).state.as_str(), row("r", &st).eta_s), ("stopped", None));
    }
}

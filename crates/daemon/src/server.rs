//! The daemon's HTTP API (axum), served on TCP (`[daemon] listen`) and on a Unix socket (`[daemon] socket`).
//!
//! - `POST /v1/events`: one event, a JSON array or NDJSON (at most [`BODY_LIMIT`] bytes). Answers
//!   `202 {"accepted": N, "control": {"<run>": {"stop": bool}}}` once the events are committed to the
//!   outbox; a bad request gets a 4xx with `{"error": {"code", "message", "index"?}}` and stores nothing.
//! - `GET /v1/status`: runs, notifiers, outbox ([`crate::Status`]). `GET /healthz`: liveness, no auth.
//! - `GET /v1/rules`: the configured alert rules and those added from the phone, each with the runs it fired
//!   for, and the muted runs (`herald_plugin::RuleList`).
//! - `POST /v1/runs/{run}/stop`: set the run's stop request (optional body `{"reason": "..."}`).
//!
//! With a token configured, TCP requests to the API routes need `Authorization: Bearer <token>`, compared in
//! constant time by one middleware layer ([`authorize`]); `/healthz`, unknown paths (404) and wrong methods
//! (405) need none. The Unix socket is protected by its file mode (0600) and needs no token. Handlers return
//! `Result<_, ApiError>`; [`ApiError`] is the one place an error becomes a status and a JSON body (the
//! dashboard's handlers use it too). This module only translates HTTP; storing and routing are the
//! dispatcher's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_event::DecodeError;
use serde_json::json;

use crate::{DaemonError, Handle};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;

#[derive(Clone)]
struct AppState {
    handle: Handle,
    token: Option<Arc<str>>,
}

/// The API router. `token`: the Bearer token TCP clients must present (`None` for the Unix socket or a
/// loopback listener without a token).
pub fn router(handle: Handle, token: Option<&str>) -> Router {
    let state = AppState { handle, token: token.map(Arc::from) };
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/status", get(get_status))
        .route("/v1/rules", get(get_rules))
        .route("/v1/runs/{run}/stop", post(post_stop))
        // Only the routes above: `/healthz`, the 404 fallback and 405 answers need no token.
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

/// An error answer: an HTTP status and `{"error": {"code", "message", "index"?}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The index of the bad element of a batch.
    index: Option<usize>,
}

impl ApiError {
    /// An error with this status, code and message (the dashboard's handlers and the cluster's deliver-only
    /// API make theirs too).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), index: None }
    }

    /// A 400 `bad_request`: a parameter the endpoint does not take, or a value it cannot read.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A 404 `unknown_run`.
    pub(crate) fn unknown_run(run: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!(
                "no run `{run}` is known to this daemon: `herald status` or `GET /v1/runs` lists the runs"
            ),
        )
    }

    fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn body_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body over {BODY_LIMIT} bytes: send smaller batches"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(i) = self.index {
            body["index"] = json!(i);
        }
        (self.status, Json(json!({ "error": body }))).into_response()
    }
}

/// A decode error is a 400 with its own code and the bad element's index.
impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> ApiError {
        let inner = match &e {
            DecodeError::AtIndex { source, .. } => source.as_ref(),
            other => other,
        };
        let code = match inner {
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::Empty => "empty",
            DecodeError::Syntax { .. } => "malformed_json",
            DecodeError::NotAnObject { .. } => "not_an_object",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::UnknownType { .. } => "unknown_type",
            DecodeError::Invalid { .. } => "invalid_event",
            DecodeError::AtIndex { .. } => "invalid_event",
        };
        ApiError { index: e.index(), ..ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string()) }
    }
}

/// The dispatcher's errors are a 503: the daemon is stopping, or its outbox failed.
impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        let code = match &e {
            DaemonError::ShuttingDown => "shutting_down",
            _ => "outbox_error",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    }
}

/// An outbox read that failed is a 503 `outbox_error`.
impl From<crate::outbox::StoreError> for ApiError {
    fn from(e: crate::outbox::StoreError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "outbox_error", e.to_string())
    }
}

/// Compare two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

/// The middleware in front of the API routes: with a token configured, the request must carry it.
async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.token {
        check_bearer(request.headers(), token)?;
    }
    Ok(next.run(request).await)
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time; the error says what to
/// send.
pub fn check_bearer(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("wrong token: use the [daemon] token")),
        None => Err(ApiError::unauthorized(
            "this daemon needs `Authorization: Bearer <token>` (the [daemon] token)",
        )),
    }
}

/// The reason of a stop request: the body's `reason` (`{"reason": "..."}`, every key optional, an empty body
/// allowed), else `default`.
pub fn stop_reason(body: &[u8], default: &str) -> Result<String, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StopBody {
        reason: Option<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(default.to_owned());
    }
    let stop = serde_json::from_slice::<StopBody>(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("stop body: {e}")))?;
    Ok(stop.reason.unwrap_or_else(|| default.to_owned()))
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(ApiError::body_too_large());
    }
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| ApiError::body_too_large())
}

async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = read_body(&headers, body).await?;
    let events = herald_event::decode_batch(&bytes)
        .inspect_err(|e| tracing::info!(error = %e, "rejected a bad request"))?;
    let reply = state.handle.ingest(events).await?;
    Ok((StatusCode::ACCEPTED, Json(reply)))
}

async fn get_status(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.handle.status())
}

async fn get_rules(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.handle.rules())
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "ok": true }))
}

async fn post_stop(
    State(state): State<AppState>,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = read_body(&headers, body).await?;
    let reason = stop_reason(&bytes, "stop requested through the daemon")?;
    if !state.handle.request_stop(&run, &reason).await? {
        return Err(ApiError::unknown_run(&run));
    }
    Ok(Json(json!({ "run": run, "stop": true, "reason": reason })))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: the API has POST /v1/events, GET /v1/status, POST /v1/runs/{run}/stop, GET /healthz",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        let check = |a: &str, b: &str, expected: bool| {
            assert_eq!(constant_time_eq(a.as_bytes(), b.as_bytes()), expected, "{a} {b}")
        };
        check("secret", "secret", true);
        check("secret", "secreT", false);
        check("secret", "secret2", false);
        check("", "", true);
        check("", "x", false);
    }
}

//! The daemon's HTTP API (axum), served on TCP (`[daemon] listen`) and on a Unix socket (`[daemon] socket`).
//!
//! - `POST /v1/events`: one event, a JSON array or NDJSON (at most [`BODY_LIMIT`] bytes). Answers
//!   `202 {"accepted": N, "control": {"<run>": {"stop": bool}}}` once the events are committed to the
//!   outbox; a bad request gets a 4xx with `{"error": {"code", "message", "index"?}}` and stores nothing.
//! - `GET /v1/status`: runs, notifiers, outbox ([`crate::Status`]). `GET /healthz`: liveness, no auth.
//! - `POST /v1/runs/{run}/stop`: set the run's stop request (optional body `{"reason": "..."}`).
//!
//! With a token configured, TCP requests (except `/healthz`) need `Authorization: Bearer <token>`, compared
//! in constant time. The Unix socket is protected by its file mode (0600) and needs no token. This module
//! only translates HTTP; storing and routing are the dispatcher's.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_event::DecodeError;
use serde_json::json;

use crate::Handle;
use crate::error::DaemonError;

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
        .route("/v1/runs/{run}/stop", post(post_stop))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

/// A JSON error response.
fn error(status: StatusCode, code: &str, message: impl Into<String>, index: Option<usize>) -> Response {
    let mut body = json!({ "code": code, "message": message.into() });
    if let Some(i) = index {
        body["index"] = json!(i);
    }
    (status, axum::Json(json!({ "error": body }))).into_response()
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

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &state.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong token: use the [daemon] token",
            None,
        ))),
        None => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this daemon needs `Authorization: Bearer <token>` (the [daemon] token)",
            None,
        ))),
    }
}

/// The code and HTTP status of a decode error, with the bad element's index.
fn decode_error(e: &DecodeError) -> Response {
    let index = e.index();
    let inner = match e {
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
    error(StatusCode::BAD_REQUEST, code, e.to_string(), index)
}

fn dispatcher_error(e: &DaemonError) -> Response {
    match e {
        DaemonError::ShuttingDown => {
            error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string(), None)
        }
        other => error(StatusCode::SERVICE_UNAVAILABLE, "outbox_error", other.to_string(), None),
    }
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Box<Response>> {
    let too_large = || {
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body over {} bytes: send smaller batches", BODY_LIMIT),
            None,
        ))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| too_large())
}

async fn post_events(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let events = match herald_event::decode_batch(&bytes) {
        Ok(events) => events,
        Err(e) => {
            tracing::info!(error = %e, "rejected a bad request");
            return decode_error(&e);
        }
    };
    match state.handle.ingest(events).await {
        Ok(reply) => (StatusCode::ACCEPTED, axum::Json(reply)).into_response(),
        Err(e) => dispatcher_error(&e),
    }
}

async fn get_status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    axum::Json(state.handle.status()).into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({ "ok": true })).into_response()
}

async fn post_stop(
    State(state): State<AppState>,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mut reason = "stop requested through the daemon".to_owned();
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct StopBody {
            reason: Option<String>,
        }
        match serde_json::from_slice::<StopBody>(&bytes) {
            Ok(StopBody { reason: Some(r) }) => reason = r,
            Ok(StopBody { reason: None }) => {}
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, "malformed_json", format!("stop body: {e}"), None);
            }
        }
    }
    match state.handle.request_stop(&run, &reason).await {
        Ok(true) => axum::Json(json!({ "run": run, "stop": true, "reason": reason })).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!("no run `{run}` is known to this daemon: `herald status` lists the runs"),
            None,
        ),
        Err(e) => dispatcher_error(&e),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: the API has POST /v1/events, GET /v1/status, POST /v1/runs/{run}/stop, GET /healthz",
        None,
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

//! The small API of a deliver-only node (`role = "deliver"`), on `[daemon] listen`, so that `herald status`
//! and `herald stop` work there as at an edge:
//!
//! - `GET /v1/status`: the daemon's [`Status`] shape with no local runs, jobs or notifiers, and the
//!   `cluster` section (the leader, its lease's age, the leader's status: every edge's runs) kept by
//!   `status.rs`'s watcher.
//! - `POST /v1/runs/{run}/stop` (optional body `{"reason": "..."}`): the request goes to the stops bucket
//!   through the same hook an edge's daemon uses (`stops.rs`); the edge the run reports to hands it over.
//! - `GET /healthz`: liveness, no auth.
//! - Anything else, ingest included: 404 (405 for a wrong method) `deliver_only`, saying where events go.
//!
//! With a token configured, the two API routes need `Authorization: Bearer <token>`, checked as the daemon
//! checks it (`herald_daemon::server::check_bearer`); errors are the daemon's `ApiError`, in the same JSON
//! shape. No Unix socket: the CLI reaches the daemon over TCP.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_daemon::api::OutboxView;
use herald_daemon::server::{ApiError, check_bearer, stop_reason};
use herald_daemon::{Status, StopHook};
use serde_json::json;

use crate::status::Shared;

/// Largest stop request body accepted.
const BODY_LIMIT: usize = 64 * 1024;

/// What every deliver-only error says about where events go.
pub const DELIVER_ONLY: &str =
    "this node is deliver-only: send events to an edge (role = \"edge\" or \"both\")";

#[derive(Clone)]
struct AppState {
    view: Shared,
    stop: StopHook,
    token: Option<Arc<str>>,
    started: Instant,
}

/// The deliver-only node's router: `view` fills the status's `cluster` section, `stop` takes stop requests
/// (`stops::hook`), `token` is the Bearer token TCP clients must present (`None`: none needed).
pub fn router(view: Shared, stop: StopHook, token: Option<&str>) -> Router {
    let state = AppState { view, stop, token: token.map(Arc::from), started: Instant::now() };
    Router::new()
        .route("/v1/status", get(get_status))
        .route("/v1/runs/{run}/stop", post(post_stop))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token
        && let Err(e) = check_bearer(request.headers(), token)
    {
        return e.into_response();
    }
    next.run(request).await
}

async fn get_status(State(state): State<AppState>) -> Json<Status> {
    let cluster = state.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: state.started.elapsed().as_secs_f64(),
        outbox: OutboxView { jobs: 0, bytes: 0, path: None },
        runs: Vec::new(),
        jobs: Vec::new(),
        notifiers: Vec::new(),
        cluster: Some(cluster),
    })
}

async fn post_stop(State(state): State<AppState>, Path(run): Path<String>, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("request body over {BODY_LIMIT} bytes"),
        );
    };
    let reason = match stop_reason(&bytes, "stop requested through the daemon") {
        Ok(reason) => reason,
        Err(e) => return e.into_response(),
    };
    if !(state.stop.0)(&run, &reason) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "this node is stopping");
    }
    tracing::info!(run = %run, "stop request asked at this deliverer; sending it to the edges");
    Json(json!({ "run": run, "stop": true, "reason": reason, "via": "cluster" })).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "ok": true, "role": "deliver" }))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "deliver_only",
        &format!(
            "{DELIVER_ONLY}; this node answers GET /v1/status, POST /v1/runs/{{run}}/stop, GET /healthz"
        ),
    )
}

async fn wrong_method() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "deliver_only",
        &format!(
            "{DELIVER_ONLY}; this node answers GET /v1/status, POST /v1/runs/{{run}}/stop, GET /healthz"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Mutex;

    use super::*;

    /// Serve `router` on a loopback port from a thread of its own; returns the port.
    fn serve(router: Router) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let _ = axum::serve(listener, router).await;
            });
        });
        port
    }

    /// One HTTP/1.1 request: (status, body).
    fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let auth = token.map_or_else(String::new, |t| format!("authorization: Bearer {t}\r\n"));
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (code, body)
    }

    #[test]
    fn the_deliver_only_api_needs_the_token_sends_stops_and_refuses_events() {
        let view: Shared = Arc::new(Mutex::new(herald_daemon::ClusterView {
            role: "deliver".into(),
            node: "h/1".into(),
            leader: Some("h/2".into()),
            ..Default::default()
        }));
        let asked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen = asked.clone();
        let hook = StopHook(Arc::new(move |run: &str, reason: &str| {
            seen.lock().expect("lock").push((run.to_owned(), reason.to_owned()));
            true
        }));
        let port = serve(router(view, hook, Some("s3cret")));

        assert_eq!(request(port, "GET", "/healthz", None, "").0, 200);
        assert_eq!(request(port, "GET", "/v1/status", None, "").0, 401);
        assert_eq!(request(port, "GET", "/v1/status", Some("wrong"), "").0, 401);
        let (code, body) = request(port, "GET", "/v1/status", Some("s3cret"), "");
        assert_eq!(code, 200, "{body}");
        let status: Status = serde_json::from_str(&body).expect("the daemon's Status shape");
        assert!(status.runs.is_empty());
        let cluster = status.cluster.expect("the cluster section");
        assert_eq!((cluster.role.as_str(), cluster.leader.as_deref()), ("deliver", Some("h/2")));

        assert_eq!(request(port, "POST", "/v1/runs/r1/stop", None, "").0, 401);
        let (code, body) = request(port, "POST", "/v1/runs/r1/stop", Some("s3cret"), r#"{"reason": "why"}"#);
        assert_eq!(code, 200, "{body}");
        let (code, _) = request(port, "POST", "/v1/runs/r1/stop", Some("s3cret"), r#"{"other": 1}"#);
        assert_eq!(code, 400);
        assert_eq!(*asked.lock().expect("lock"), vec![("r1".to_owned(), "why".to_owned())]);

        for (method, path) in [("POST", "/v1/events"), ("GET", "/v1/rules"), ("POST", "/v1/status")] {
            let (code, body) = request(port, method, path, Some("s3cret"), "{}");
            assert!(code == 404 || code == 405, "{method} {path}: {code}");
            assert!(
                body.contains("this node is deliver-only: send events to an edge"),
                "{method} {path}: {body}"
            );
        }
    }
}

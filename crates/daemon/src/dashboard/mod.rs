//! The web dashboard of `herald serve`: three pages (runs, one run, deliveries) and the read API and event
//! stream they use, on a listener of its own (`[daemon] dashboard`).
//!
//! - `api.rs`: `GET /v1/runs/{run}`, `GET /v1/runs/{run}/plot.png` and the dashboard's
//!   `POST /v1/runs/{run}/stop` (the same [`Handle::request_stop`] as `herald stop`);
//! - `list.rs`: `GET /v1/runs`, one page of runs, filtered, a distributed job's ranks as one row;
//! - `loss.rs`: `GET /v1/runs/{run}/loss`, the loss and lr series by batch and wall time, downsampled;
//! - `deliveries.rs`: `GET /v1/deliveries`, the Deliveries page's figures (notifiers, outbox, per run);
//! - `sse.rs`: `GET /v1/stream`, Server-Sent Events fed by the writer's committed events, with resume;
//! - `downsample.rs`: min-max downsampling of long series (pure);
//! - `auth.rs`: no login on loopback, a login form and a session cookie elsewhere, the CSRF token;
//! - `assets.rs`: the pages, the script, the styles and the vendored uPlot, embedded in the binary.
//!
//! Only the daemon's start (`daemon.rs`) imports this module; it reads the dispatcher through [`Handle`] and
//! never writes anything but stop requests.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::Handle;

mod api;
mod assets;
mod auth;
mod deliveries;
mod downsample;
mod list;
mod loss;
mod sse;

pub(crate) use sse::Hub;

/// What every dashboard handler shares.
#[derive(Clone)]
pub(crate) struct Dash {
    handle: Handle,
    hub: Arc<Hub>,
    auth: Arc<auth::Auth>,
    /// The latest `GET /v1/runs/{run}/loss` answers.
    loss_cache: Arc<loss::LossCache>,
}

/// The dashboard's router for a listener on `addr`: pages, assets, the read API, the stream and Stop.
/// `token`: the `[daemon] token`; a dashboard on a loopback address asks for none, elsewhere it must be set
/// (checked at start by `check_listen`).
pub(crate) fn router(
    handle: Handle,
    hub: Arc<Hub>,
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<Router, crate::DaemonError> {
    let auth = auth::Auth::new(addr, token)?;
    let dash = Dash { handle, hub, auth: Arc::new(auth), loss_cache: Arc::default() };
    Ok(Router::new()
        .route("/", get(assets::runs_page))
        .route("/runs/{run}", get(assets::run_page))
        .route("/notifiers", get(assets::notifiers_page))
        .route("/v1/runs", get(list::list_runs))
        .route("/v1/runs/{run}", get(api::get_run))
        .route("/v1/runs/{run}/loss", get(loss::get_loss))
        .route("/v1/runs/{run}/plot.png", get(api::get_plot))
        .route("/v1/runs/{run}/stop", post(api::post_stop))
        .route("/v1/status", get(api::get_status))
        .route("/v1/deliveries", get(deliveries::get_deliveries))
        .route("/v1/stream", get(sse::stream))
        .route_layer(middleware::from_fn_with_state(dash.clone(), auth::guard))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/assets/{file}", get(assets::asset))
        .route("/healthz", get(api::healthz))
        .fallback(api::not_found)
        .with_state(dash))
}

/// The read routes for the main API listener (`GET /v1/runs`, `/v1/runs/{run}`, `/loss`, `/plot.png`,
/// `/v1/stream`), behind its Bearer token when one is set.
pub(crate) fn api_routes(handle: Handle, hub: Arc<Hub>, token: Option<&str>) -> Router {
    let dash =
        Dash { handle, hub, auth: Arc::new(auth::Auth::bearer_only(token)), loss_cache: Arc::default() };
    Router::new()
        .route("/v1/runs", get(list::list_runs))
        .route("/v1/runs/{run}", get(api::get_run))
        .route("/v1/runs/{run}/loss", get(loss::get_loss))
        .route("/v1/runs/{run}/plot.png", get(api::get_plot))
        .route("/v1/stream", get(sse::stream))
        .route_layer(middleware::from_fn_with_state(dash.clone(), auth::guard))
        .with_state(dash)
}

/// The `key=value` pairs of a query string or a form body, percent-decoded (`+` is a space); pairs that do
/// not decode to UTF-8 are skipped.
pub(crate) fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_percent_and_plus() {
        let check = |q: &str, expected: &[(&str, &str)]| {
            let got = form_pairs(q);
            let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(got, expected, "{q}");
        };
        check("", &[]);
        check("points=200", &[("points", "200")]);
        check("name=a+b%2Fc&state=running", &[("name", "a b/c"), ("state", "running")]);
        check("token=%3Cimg%3E&flag", &[("token", "<img>"), ("flag", "")]);
        check("bad=%zz&ok=1&cut=%4", &[("ok", "1")]);
        check("utf=%C3%A9&bad=%C3", &[("utf", "é")]);
    }
}

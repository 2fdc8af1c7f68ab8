//! The dashboard's files, embedded in the binary: three pages, the login form, one script, one style sheet,
//! and uPlot (vendored from npm `uplot` 1.6.32 with its MIT licence, `assets/vendor/`).
//!
//! Pages are static HTML; the script fills them from the API and builds every value from a run with text
//! nodes, never markup. The only thing put into a page on the server is the CSRF token (hex), and every
//! answer carries a Content-Security-Policy that allows scripts from this origin only.

use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Dash;

const RUNS: &str = include_str!("../../assets/runs.html");
const RUN: &str = include_str!("../../assets/run.html");
const NOTIFIERS: &str = include_str!("../../assets/notifiers.html");
/// The login form.
pub const LOGIN: &str = include_str!("../../assets/login.html");
/// The login form, after a wrong token.
pub const LOGIN_FAILED: &str = include_str!("../../assets/login-failed.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const UPLOT_JS: &str = include_str!("../../assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/vendor/uPlot.min.css");

/// Scripts and styles from this origin only; images from here or `data:`; no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; \
                   base-uri 'none'";

/// Headers every page gets.
fn secured(content_type: &'static str, body: String) -> Response {
    let headers: [(HeaderName, &str); 5] = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (headers, body).into_response()
}

fn page(dash: &Dash, html: &str) -> Response {
    secured("text/html; charset=utf-8", html.replace("{{csrf}}", &dash.auth.csrf))
}

/// `GET /`: the runs.
pub async fn runs_page(State(dash): State<Dash>) -> Response {
    page(&dash, RUNS)
}

/// `GET /runs/{run}`: one run (the script reads the run id from the address).
pub async fn run_page(State(dash): State<Dash>) -> Response {
    page(&dash, RUN)
}

/// `GET /notifiers`: deliveries.
pub async fn notifiers_page(State(dash): State<Dash>) -> Response {
    page(&dash, NOTIFIERS)
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        "uPlot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
        "uPlot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_weigh_under_200_kb_without_data() {
        for (name, html, extra) in
            [("runs", RUNS, 0), ("run", RUN, UPLOT_JS.len() + UPLOT_CSS.len()), ("notifiers", NOTIFIERS, 0)]
        {
            let total = html.len() + APP_JS.len() + APP_CSS.len() + extra;
            assert!(total < 200_000, "{name}: {total} bytes");
            assert!(
                html.contains("{{csrf}}") && html.contains("/assets/app.js"),
                "{name} is a dashboard page"
            );
        }
    }

    #[test]
    fn the_script_builds_no_markup_from_data() {
        for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!APP_JS.contains(banned), "app.js uses {banned}");
        }
    }
}

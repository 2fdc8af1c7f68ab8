//! The dashboard's files, embedded in the binary: three pages, the login form, one script, one style sheet,
//! and uPlot (vendored from npm `uplot` 1.6.32 with its MIT licence, `assets/vendor/`).
//!
//! Each page's file holds only its `<main>`; [`layout`] puts around it what every page shares (the head, the
//! top bar with the links and the stream's state, the script), at serve time. Pages are otherwise static: the
//! script fills them from the API and builds every value from a run with text nodes, never markup. The only
//! thing put into a page on the server is the CSRF token (hex), and every answer carries a
//! Content-Security-Policy that allows scripts from this origin only.

use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Dash;

const RUNS: &str = include_str!("../../assets/runs.html");
const RUN: &str = include_str!("../../assets/run.html");
const NOTIFIERS: &str = include_str!("../../assets/notifiers.html");
const LOGIN: &str = include_str!("../../assets/login.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const UPLOT_JS: &str = include_str!("../../assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/vendor/uPlot.min.css");

/// Scripts and styles from this origin only; images from here or `data:`; no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; \
                   base-uri 'none'";

/// Headers every page gets.
fn secured(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let headers: [(HeaderName, &str); 5] = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (status, headers, body).into_response()
}

/// A dashboard page: what every page shares, around its own `<main>` (a file of `assets/`).
struct Page {
    /// `data-page` on `<body>`: which part of `app.js` fills the page.
    key: &'static str,
    /// The title before "· Herald" (the run page's script puts the run's name in).
    title: &'static str,
    /// Extra `<head>` lines.
    head: &'static str,
    /// The page's `<main>`.
    main: &'static str,
}

/// The links of the top bar: address, text, and the page key that marks it current.
const NAV: [(&str, &str, &str); 2] = [("/", "Runs", "runs"), ("/notifiers", "Deliveries", "notifiers")];

/// The whole HTML of `page`: head, top bar with the links and the stream's state, the page's main part,
/// the script. Only `csrf` (hex, made by the daemon) is put in besides the embedded files.
fn layout(page: &Page, csrf: &str) -> String {
    let mut nav = String::new();
    for (href, text, key) in NAV {
        let current = if key == page.key { " aria-current=\"page\"" } else { "" };
        nav.push_str(&format!("    <a href=\"{href}\"{current}>{text}</a>\n"));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"csrf-token\" content=\"{csrf}\">\n<title>{title} · Herald</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n<link rel=\"stylesheet\" href=\"/assets/app.css\">\n{head}\
         </head>\n<body data-page=\"{key}\">\n<header class=\"top\">\n  <nav aria-label=\"Main\">\n\
         \x20   <a class=\"brand\" href=\"/\">Herald</a>\n{nav}  </nav>\n\
         \x20 <span id=\"live\" class=\"live\" role=\"status\" aria-live=\"polite\">connecting…</span>\n\
         </header>\n{main}<script src=\"/assets/app.js\" defer></script>\n</body>\n</html>\n",
        title = page.title,
        head = page.head,
        key = page.key,
        main = page.main,
    )
}

const RUNS_PAGE: Page = Page { key: "runs", title: "Runs", head: "", main: RUNS };
const RUN_PAGE: Page = Page {
    key: "run",
    title: "Run",
    head: "<link rel=\"stylesheet\" href=\"/assets/uPlot.min.css\">\n\
           <script src=\"/assets/uPlot.iife.min.js\" defer></script>\n",
    main: RUN,
};
const NOTIFIERS_PAGE: Page = Page { key: "notifiers", title: "Deliveries", head: "", main: NOTIFIERS };

fn page(dash: &Dash, page: &Page) -> Response {
    secured(StatusCode::OK, "text/html; charset=utf-8", layout(page, &dash.auth.csrf))
}

/// The login form (`failed`: after a wrong token, with the error said and a 401).
pub fn login(failed: bool) -> Response {
    let error = if failed { "<p class=\"error\" role=\"alert\">Wrong token: try again.</p>" } else { "" };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Log in · Herald</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"/assets/app.css\">\n</head>\n<body>\n{}</body>\n</html>\n",
        LOGIN.replace("{{error}}", error)
    );
    let status = if failed { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    secured(status, "text/html; charset=utf-8", html)
}

/// `GET /`: the runs.
pub async fn runs_page(State(dash): State<Dash>) -> Response {
    page(&dash, &RUNS_PAGE)
}

/// `GET /runs/{run}`: one run (the script reads the run id from the address).
pub async fn run_page(State(dash): State<Dash>) -> Response {
    page(&dash, &RUN_PAGE)
}

/// `GET /notifiers`: deliveries.
pub async fn notifiers_page(State(dash): State<Dash>) -> Response {
    page(&dash, &NOTIFIERS_PAGE)
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
        for (p, extra) in
            [(&RUNS_PAGE, 0), (&RUN_PAGE, UPLOT_JS.len() + UPLOT_CSS.len()), (&NOTIFIERS_PAGE, 0)]
        {
            let html = layout(p, "c0ffee");
            let total = html.len() + APP_JS.len() + APP_CSS.len() + extra;
            assert!(total < 200_000, "{}: {total} bytes", p.key);
            assert!(
                html.contains("content=\"c0ffee\"") && html.contains("/assets/app.js"),
                "{} is a dashboard page",
                p.key
            );
        }
    }

    #[test]
    fn every_page_shares_the_head_and_marks_its_own_link() {
        let runs = layout(&RUNS_PAGE, "x");
        assert!(runs.contains("<a href=\"/\" aria-current=\"page\">Runs</a>"), "{runs}");
        assert!(runs.contains("<a href=\"/notifiers\">Deliveries</a>"));
        let run = layout(&RUN_PAGE, "x");
        assert!(!run.contains("aria-current"), "a run is none of the top links");
        assert!(run.contains("uPlot.iife.min.js") && !runs.contains("uPlot"));
        let notifiers = layout(&NOTIFIERS_PAGE, "x");
        assert!(notifiers.contains("<a href=\"/notifiers\" aria-current=\"page\">Deliveries</a>"));
        for html in [&runs, &run, &notifiers] {
            assert_eq!(html.matches("<main").count(), 1);
            assert!(html.contains("<header class=\"top\">") && html.contains("id=\"live\""));
            assert!(!html.contains("{{"), "no placeholder left");
        }
    }

    #[test]
    fn the_script_builds_no_markup_from_data() {
        for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!APP_JS.contains(banned), "app.js uses {banned}");
        }
    }
}

//! Who may use the dashboard, and the CSRF token on its one write (Stop).
//!
//! On a loopback address nobody logs in (as the API needs no token there), but the `Host` header must name a
//! loopback host, so that a web page cannot reach the dashboard through DNS rebinding. On any other address
//! the `[daemon] token` is asked once by a login form, which sets an HttpOnly, SameSite=Strict session cookie;
//! scripts may send `Authorization: Bearer <token>` instead. Every POST but the login carries the page's
//! CSRF token in `X-CSRF-Token` (a header no other site's page can set without the daemon's consent).

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::{Dash, assets, form_pairs};
use crate::server::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "herald_session";
/// Sessions kept at most; the oldest is forgotten first.
const SESSIONS: usize = 256;

/// The dashboard's access rules for one listener.
pub struct Auth {
    /// The token to log in with; `None` on loopback (nobody logs in).
    token: Option<String>,
    /// On loopback: the `Host` header must name a loopback host.
    check_host: bool,
    /// Pages carry it; POSTs must send it back.
    pub csrf: String,
    sessions: Mutex<VecDeque<String>>,
}

impl Auth {
    /// The rules for a dashboard on `addr`.
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Result<Auth, crate::DaemonError> {
        let loopback = addr.ip().is_loopback();
        let token = if loopback { None } else { token.filter(|t| !t.is_empty()).map(str::to_owned) };
        if !loopback && token.is_none() {
            return Err(crate::DaemonError::TokenRequired { addr });
        }
        let csrf = random_hex().map_err(|e| crate::DaemonError::io("cannot read /dev/urandom", e))?;
        Ok(Auth { token, check_host: loopback, csrf, sessions: Mutex::new(VecDeque::new()) })
    }

    /// Bearer token only (the read routes on the main API listener).
    pub fn bearer_only(token: Option<&str>) -> Auth {
        let token = token.filter(|t| !t.is_empty()).map(str::to_owned);
        Auth { token, check_host: false, csrf: String::new(), sessions: Mutex::new(VecDeque::new()) }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers, COOKIE) else { return false };
        self.sessions().iter().any(|s| constant_time_eq(s.as_bytes(), id.as_bytes()))
    }

    fn has_bearer(&self, headers: &HeaderMap, token: &str) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes()))
    }
}

/// Compare two byte strings in time that depends only on their lengths (as the API's token check does).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// 32 random bytes from the kernel, as hex.
fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The value of cookie `name`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// Whether a `Host` header names a loopback host (any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The middleware in front of the pages, the API and the stream.
pub async fn guard(State(dash): State<Dash>, request: Request, next: Next) -> Result<Response, Response> {
    let auth = &dash.auth;
    let headers = request.headers();
    let api = request.uri().path().starts_with("/v1/");
    if auth.check_host {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !loopback_host(host) {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "bad_host",
                "use the dashboard at 127.0.0.1 or localhost",
            );
            return Err(e.into_response());
        }
    }
    let mut by_cookie = false;
    if let Some(token) = &auth.token {
        by_cookie = auth.has_session(headers);
        if !by_cookie && !auth.has_bearer(headers, token) {
            return Err(if api {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "log in at /login or send the [daemon] token",
                )
                .into_response()
            } else {
                Redirect::to("/login").into_response()
            });
        }
    }
    // A browser's POST (cookie or no login at all) must carry the page's CSRF token.
    if request.method() == Method::POST && (by_cookie || auth.token.is_none()) && !auth.csrf.is_empty() {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), auth.csrf.as_bytes()) {
            let e =
                ApiError::new(StatusCode::FORBIDDEN, "csrf", "missing or wrong CSRF token: reload the page");
            return Err(e.into_response());
        }
    }
    Ok(next.run(request).await)
}

/// `GET /login`.
pub async fn login_page() -> Response {
    assets::login(false)
}

/// `POST /login` with the form's `token`: a session cookie and back to the runs, or the form again.
pub async fn login(State(dash): State<Dash>, body: Bytes) -> Response {
    let given = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| form_pairs(b).into_iter().find(|(k, _)| k == "token"))
        .map(|(_, v)| v)
        .unwrap_or_default();
    let Some(token) = &dash.auth.token else { return Redirect::to("/").into_response() };
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return assets::login(true);
    }
    let id = match random_hex() {
        Ok(id) => id,
        Err(e) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no_randomness", e.to_string())
                .into_response();
        }
    };
    {
        let mut sessions = dash.auth.sessions();
        if sessions.len() == SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(id.clone());
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/")) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        let check = |h: &str, expected: bool| assert_eq!(loopback_host(h), expected, "{h}");
        check("127.0.0.1:7879", true);
        check("localhost:7879", true);
        check("LOCALHOST", true);
        check("[::1]:7879", true);
        check("127.8.9.1", true);
        check("evil.example:7879", false);
        check("192.168.1.4:7879", false);
        check("", false);
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; herald_session=abc"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn a_non_loopback_dashboard_needs_a_token() {
        let any: SocketAddr = ([0, 0, 0, 0], 7879).into();
        assert!(Auth::new(any, None).is_err());
        assert!(Auth::new(any, Some("")).is_err());
        let a = Auth::new(any, Some("s3cret")).expect("with a token");
        assert_eq!(a.csrf.len(), 64);
        let local: SocketAddr = ([127, 0, 0, 1], 7879).into();
        assert!(Auth::new(local, None).expect("loopback").token.is_none());
    }
}

//! A client for a running daemon's HTTP API: what the forwarder, `herald send/status/stop` and the tests
//! use. One method per endpoint; errors say whether the daemon was unreachable (spool and retry) or rejected
//! the request (fix the request). It does not retry by itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::api::{IngestReply, Status};

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answered (connection refused or timed out).
    #[error("no herald daemon answers at {url}: {message} (start one with `herald serve`)")]
    Unreachable {
        /// The daemon's address as tried.
        url: String,
        /// What the connection attempt said.
        message: String,
    },
    /// The daemon answered with an error status.
    #[error("the daemon refused the request ({status} {code}): {message}")]
    Rejected {
        /// The HTTP status (5xx: worth retrying).
        status: u16,
        /// The daemon's error code (`invalid_event`, `unauthorized`, ...).
        code: String,
        /// The daemon's explanation.
        message: String,
        /// For a batch, the index of the event it refused.
        index: Option<usize>,
    },
    /// The daemon answered something this client cannot read.
    #[error("unexpected answer from the daemon at {url}: {message}")]
    Protocol {
        /// The daemon's address.
        url: String,
        /// What was wrong with the answer.
        message: String,
    },
}

impl ClientError {
    /// Whether sending again later may succeed (daemon down, or busy/failing on its side).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Rejected { status, .. } => *status >= 500,
            ClientError::Protocol { .. } => false,
        }
    }
}

/// A connection to one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    index: Option<usize>,
}

/// The address a client uses to reach a daemon listening on `listen` (an unspecified address means this host).
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

impl Client {
    /// A client for the daemon listening on `listen`, sending `token` when set. `timeout` bounds each call.
    pub fn new(listen: SocketAddr, token: Option<String>, timeout: Duration) -> Result<Client, ClientError> {
        let base = format!("http://{}", connect_addr(listen));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Protocol { url: base.clone(), message: e.to_string() })?;
        Ok(Client { base, token, http })
    }

    /// The daemon's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: e.to_string() })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ClientError::Rejected {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
                index: b.error.index,
            },
            Err(_) => ClientError::Rejected {
                status: status.as_u16(),
                code: "http".into(),
                message: text.chars().take(200).collect(),
                index: None,
            },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, ClientError> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: e.to_string() })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol { url: self.base.clone(), message: e.to_string() })
    }

    /// `POST /v1/events` with a ready body (one event, a JSON array or NDJSON).
    pub async fn post_events(&self, body: Vec<u8>) -> Result<IngestReply, ClientError> {
        let rb = self
            .request(reqwest::Method::POST, "/v1/events")
            .header("content-type", "application/x-ndjson")
            .body(body);
        let resp = self.send(rb).await?;
        self.json(resp).await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        let resp = self.send(self.request(reqwest::Method::GET, "/v1/status")).await?;
        self.json(resp).await
    }

    /// `GET /v1/rules`: the alert rules with the runs they fired for, and the muted runs.
    pub async fn rules(&self) -> Result<herald_plugin::RuleList, ClientError> {
        let resp = self.send(self.request(reqwest::Method::GET, "/v1/rules")).await?;
        self.json(resp).await
    }

    /// `POST /v1/runs/{run}/stop`.
    pub async fn stop(&self, run: &str, reason: &str) -> Result<(), ClientError> {
        let path = format!("/v1/runs/{}/stop", percent_encode(run));
        let rb = self.request(reqwest::Method::POST, &path).json(&serde_json::json!({ "reason": reason }));
        self.send(rb).await.map(|_| ())
    }

    /// `GET /healthz`: whether a daemon answers.
    pub async fn healthy(&self) -> bool {
        self.send(self.request(reqwest::Method::GET, "/healthz")).await.is_ok()
    }
}

/// Percent-encode a path segment (run ids are free text).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_connect_to_localhost() {
        let check = |listen: &str, expected: &str| {
            let addr: SocketAddr = listen.parse().expect("address");
            assert_eq!(connect_addr(addr).to_string(), expected);
        };
        check("0.0.0.0:7878", "127.0.0.1:7878");
        check("[::]:7878", "[::1]:7878");
        check("192.168.1.2:9", "192.168.1.2:9");
    }

    #[test]
    fn run_ids_are_encoded_as_one_path_segment() {
        assert_eq!(percent_encode("mnist-2026_11.27"), "mnist-2026_11.27");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }
}

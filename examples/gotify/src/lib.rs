//! The `gotify` notifier: each notification as a message to a Gotify server, through its plain HTTP API.
//!
//! An example of an out-of-process plugin in Rust: the library is an ordinary [`Notifier`] with its registry
//! constructor [`new`], and the binary `herald-notify-gotify` runs it with [`herald_plugin::serve_constructor`],
//! so the daemon finds it on `PATH` for `type = "gotify"`. It POSTs `{title, message, priority, extras}` to
//! `<url>/message?token=<application token>`; the message is the Markdown rendering, marked as Markdown for
//! Gotify's clients. Failures get a higher priority (louder on the phone), epochs a lower one. HTTP answers
//! map to retryable or permanent errors with [`herald_plugin::http::check_status`]. It makes one attempt per
//! delivery: retries, rate limits and timeouts around it are the host's. Gotify cannot edit a message or take
//! commands, so it declares neither.

use std::time::Duration;

use herald_event::EventKind;
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, Notification, Notifier, Receipt, Secret, parse_table,
};
use serde::Deserialize;

/// The `type` name.
pub const KIND: &str = "gotify";

fn default_priority() -> u8 {
    5
}
fn default_failure_priority() -> u8 {
    8
}
fn default_epoch_priority() -> u8 {
    2
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(20)
}

/// The notifier's configuration table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GotifyConfig {
    /// The server's base URL, such as `https://gotify.example.com` (a path prefix is kept).
    pub url: String,
    /// The application token (Gotify: Apps, then the app's token).
    pub token: Secret,
    /// Priority of most messages, 0 to 10 (Gotify's Android app: 1-3 silent, 4-7 sound, 8-10 loud), default 5.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Priority of `run_failed`, `run_lost` and `run_stalled`, default 8.
    #[serde(default = "default_failure_priority")]
    pub failure_priority: u8,
    /// Priority of `epoch_ended` (progress), default 2.
    #[serde(default = "default_epoch_priority")]
    pub epoch_priority: u8,
    /// Send the Markdown rendering marked as Markdown (default), or the plain text.
    #[serde(default = "yes")]
    pub markdown: bool,
    /// Timeout of one HTTP request, default `20s`.
    #[serde(default = "default_request_timeout", deserialize_with = "herald_plugin::duration::deserialize")]
    pub request_timeout: Duration,
}

fn yes() -> bool {
    true
}

/// Sends notifications to one Gotify application.
pub struct Gotify {
    endpoint: reqwest::Url,
    config: GotifyConfig,
    client: reqwest::Client,
}

impl std::fmt::Debug for Gotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gotify").field("endpoint", &self.endpoint.as_str()).field("token", &"***").finish()
    }
}

/// The registry constructor (also what the binary serves): `name` and the `[[notifier]]` table.
pub fn new(_name: &str, table: toml::Table) -> Result<Box<dyn Notifier>, ConfigError> {
    let config: GotifyConfig = parse_table(table)?;
    Ok(Box::new(Gotify::new(config)?))
}

impl Gotify {
    /// Check the configuration and build the HTTP client.
    pub fn new(config: GotifyConfig) -> Result<Gotify, ConfigError> {
        let mut base = reqwest::Url::parse(&config.url).map_err(|e| {
            ConfigError::for_key(
                "url",
                format!("not a valid URL ({e}); write it like `https://gotify.example.com`"),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ConfigError::for_key(
                "url",
                format!("the URL scheme must be `http` or `https`, not `{}`", base.scheme()),
            ));
        }
        if base.query().is_some() {
            return Err(ConfigError::for_key(
                "url",
                "give the server's base URL without a query; the token goes in `token`",
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let endpoint = base
            .join("message")
            .map_err(|e| ConfigError::for_key("url", format!("cannot add `/message`: {e}")))?;
        if config.token.is_empty() {
            return Err(ConfigError::for_key(
                "token",
                "is empty: copy the application token from Gotify's Apps page",
            ));
        }
        for (key, value) in [
            ("priority", config.priority),
            ("failure_priority", config.failure_priority),
            ("epoch_priority", config.epoch_priority),
        ] {
            if value > 10 {
                return Err(ConfigError::for_key(key, format!("must be from 0 to 10, not {value}")));
            }
        }
        if config.request_timeout.is_zero() {
            return Err(ConfigError::for_key("request_timeout", "must be more than zero, such as `20s`"));
        }
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald-notify-gotify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Gotify { endpoint, config, client })
    }

    /// The priority of a notification's event.
    pub fn priority(&self, kind: EventKind) -> u8 {
        match kind {
            EventKind::RunFailed | EventKind::RunLost | EventKind::RunStalled => self.config.failure_priority,
            EventKind::EpochEnded | EventKind::EpochStarted | EventKind::BatchEnded => {
                self.config.epoch_priority
            }
            _ => self.config.priority,
        }
    }

    /// The JSON body for a notification.
    pub fn body(&self, n: &Notification) -> serde_json::Value {
        let (message, content_type) = match self.config.markdown {
            true => (n.markdown.as_str(), "text/markdown"),
            false => (n.text.as_str(), "text/plain"),
        };
        serde_json::json!({
            "title": n.title,
            "message": message,
            "priority": self.priority(n.event.kind()),
            "extras": {
                "client::display": { "contentType": content_type },
                "herald": { "run": n.event.run, "seq": n.event.seq, "type": n.event.kind().as_str() },
            },
        })
    }
}

/// A network failure as a retryable error, without the URL (it carries the token).
fn network_error(err: reqwest::Error) -> DeliveryError {
    let code = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "network"
    };
    let err = err.without_url();
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    DeliveryError::retryable(format!("cannot reach the Gotify server ({detail}); will retry")).with_code(code)
}

#[async_trait::async_trait]
impl Notifier for Gotify {
    fn kind(&self) -> &str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("token", self.config.token.expose());
        let response = self.client.post(url).json(&self.body(n)).send().await.map_err(network_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(network_error)?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !(200..300).contains(&status) {
            // Gotify explains errors as {"error", "errorCode", "errorDescription"}.
            let said = answer
                .get("errorDescription")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned());
            let said = match status {
                401 | 403 => {
                    format!("{said} (check `token`: it must be an application token, not a client token)")
                }
                _ => said,
            };
            herald_plugin::http::check_status("the Gotify server", status, retry_after.as_deref(), &said)?;
        }
        Ok(Receipt(serde_json::json!({ "id": answer.get("id").cloned().unwrap_or(serde_json::Value::Null) })))
    }
}

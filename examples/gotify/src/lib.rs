//! The `gotify` notifier: each notification as a message to a Gotify server, through its plain HTTP API.
//!
//! An example of an out-of-process plugin in Rust: the library is an ordinary [`Notifier`] whose
//! configuration struct [`GotifyConfig`] is its [`NotifierType`], and the binary `herald-notify-gotify` runs
//! it with [`herald_plugin::serve_type`], so the daemon finds it on `PATH` for `type = "gotify"`. It POSTs
//! `{title, message, priority, extras}` to `<url>/message?token=<application token>`; the message is the
//! Markdown rendering, marked as Markdown for Gotify's clients. Failures get a higher priority (louder on
//! the phone), epochs a lower one. HTTP answers map to retryable or permanent errors by the SDK's one policy
//! ([`herald_plugin::http::AnswerPolicy`], read by [`herald_http::check_response`]), with Gotify's own hint
//! for a wrong token. It makes one attempt per delivery: retries, rate limits and timeouts around it are the
//! host's. Gotify cannot edit a message or take commands, so it declares neither.

use std::time::Duration;

use herald_event::EventKind;
use herald_plugin::http::AnswerPolicy;
use herald_plugin::{ConfigError, DeliveryError, Notification, Notifier, NotifierType, Receipt, Secret};
use serde::Deserialize;

/// How Gotify's answers are read: the usual policy (Gotify explains errors in `errorDescription`), with what
/// a refused token usually means.
const ANSWERS: AnswerPolicy<'static> =
    AnswerPolicy::new("the Gotify server").with_hints(|status| match status {
        401 | 403 => Some("check `token`: it must be an application token, not a client token"),
        _ => None,
    });

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
    #[serde(default = "herald_plugin::default_true")]
    pub markdown: bool,
    /// Timeout of one HTTP request, default `20s`.
    #[serde(default = "default_request_timeout", deserialize_with = "herald_plugin::duration::deserialize")]
    pub request_timeout: Duration,
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

impl NotifierType for GotifyConfig {
    const KIND: &'static str = "gotify";
    const DESCRIPTION: &'static str = "sends each notification to a Gotify application (an example plugin)";
    type Notifier = Gotify;

    /// Check the configuration and build the HTTP client.
    fn build(self, _name: &str) -> Result<Gotify, ConfigError> {
        let config = self;
        let mut base = herald_http::parse_http_url(&config.url, "https://gotify.example.com")
            .map_err(|m| ConfigError::for_key("url", m))?;
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
}

impl Gotify {
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
    let detail = herald_plugin::error_chain(&err.without_url());
    DeliveryError::retryable(format!("cannot reach the Gotify server ({detail}); will retry")).with_code(code)
}

#[async_trait::async_trait]
impl Notifier for Gotify {
    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("token", self.config.token.expose());
        let response = self.client.post(url).json(&self.body(n)).send().await.map_err(network_error)?;
        let bytes = herald_http::check_response(response, &ANSWERS).await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Receipt(serde_json::json!({ "id": answer.get("id").cloned().unwrap_or(serde_json::Value::Null) })))
    }
}

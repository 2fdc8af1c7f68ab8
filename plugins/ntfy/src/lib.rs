//! The `ntfy` notifier: training notifications to a phone through an [ntfy](https://ntfy.sh) server.
//!
//! ntfy is the simplest way to reach a phone without a bot: subscribe to a topic in the ntfy app and publish
//! to it. Each notification is one `POST {server}/{topic}` with the plain-text rendering as the body (cut to
//! ntfy's 4096-byte message limit) and `Title`, `Priority` (by event: failure 5, finish 4, epoch 2), `Tags`,
//! `Click` and `Actions` headers; at run end, when the host hands over the loss curve, it is one
//! `PUT {server}/{topic}` with the PNG as the body, a `Filename` header and the text in the `Message` header.
//! A "Stop run" button (an ntfy `http` action that posts to the daemon's stop endpoint) appears only when
//! `public_url` and `daemon_token` are configured. The daemon and the CLI use this crate through its
//! [`NtfyConfig`] ([`NotifierType`]); it does not retry, rate-limit or edit earlier messages (ntfy cannot): the host retries.

use std::time::Duration;

use async_trait::async_trait;
use herald_event::{EventKind, Level, Payload};
use herald_plugin::http::AnswerPolicy;
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, Health, Notification, Notifier, NotifierType, Receipt, Secret,
    TableLayout, render,
};
use serde::Deserialize;

mod http;

/// ntfy refuses (or turns into an attachment) a message body over 4096 bytes.
pub const MESSAGE_LIMIT_BYTES: usize = 4096;

/// How the server's answers are read (ntfy explains errors in `{"error": ...}`).
const ANSWERS: AnswerPolicy<'static> = AnswerPolicy::new("ntfy");

/// Configuration of an `ntfy` notifier (`[[notifier]]` with `type = "ntfy"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyConfig {
    /// The ntfy server, such as `https://ntfy.sh` (default) or your own; no trailing path.
    #[serde(default = "default_server")]
    pub server: String,
    /// The topic to publish to (letters, digits, `-` and `_`, up to 64). Anyone who knows a topic on a
    /// public server can read it: pick one that is hard to guess, or use an access token.
    pub topic: String,
    /// Access token (`tk_...`) for servers or topics that need one; sent as `Authorization: Bearer`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Extra tags (ntfy shows emoji short codes such as `robot` as icons) added to the per-event ones.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A URL the notification opens when tapped (a dashboard, TensorBoard, ...).
    #[serde(default)]
    pub click: Option<String>,
    /// The daemon's address as the phone reaches it (such as `https://gpu1.example.org:7878`); with
    /// `daemon_token`, adds a "Stop run" button that calls `POST {public_url}/v1/runs/{run}/stop`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The daemon's bearer token, sent by the "Stop run" button. It travels through the ntfy server: use
    /// your own server or a topic with an access token.
    #[serde(default)]
    pub daemon_token: Option<Secret>,
    /// The results table: `"compact"` (default; at most 34 characters wide and the last 10 epochs, for a
    /// phone held upright) or `"full"` (fastai's layout, as the trainer prints it).
    #[serde(default)]
    pub table: TableLayout,
}

fn default_server() -> String {
    "https://ntfy.sh".to_owned()
}

/// The `ntfy` notifier.
#[derive(Debug)]
pub struct Ntfy {
    name: String,
    server: String,
    config: NtfyConfig,
    stop_url_base: Option<String>,
    client: reqwest::Client,
}

impl NotifierType for NtfyConfig {
    const KIND: &'static str = "ntfy";
    const DESCRIPTION: &'static str =
        "publishes to an ntfy topic: per-event priority and tags, loss curve, optional Stop run button";
    type Notifier = Ntfy;

    /// Check the configuration and set up the HTTP client (nothing is sent).
    fn build(self, name: &str) -> Result<Ntfy, ConfigError> {
        let server = http::check_base_url(&self.server).map_err(|m| ConfigError::for_key("server", m))?;
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 64
            && self.topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !topic_ok {
            return Err(ConfigError::for_key(
                "topic",
                format!(
                    "`{}` is not a valid ntfy topic: use 1 to 64 letters, digits, `-` or `_`",
                    self.topic
                ),
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.is_empty() || tag.contains(',') || tag.chars().any(char::is_control) {
                return Err(ConfigError::for_key(
                    format!("tags[{i}]"),
                    "a tag must be non-empty, without commas or control characters",
                ));
            }
        }
        if let Some(click) = &self.click {
            http::check_base_url(click).map_err(|m| ConfigError::for_key("click", m))?;
        }
        if let Some(token) = &self.token {
            http::check_token(token.expose()).map_err(|m| ConfigError::for_key("token", m))?;
        }
        let stop_url_base = match (&self.public_url, &self.daemon_token) {
            (Some(url), Some(token)) => {
                let base = http::check_base_url(url).map_err(|m| ConfigError::for_key("public_url", m))?;
                http::check_token(token.expose()).map_err(|m| ConfigError::for_key("daemon_token", m))?;
                Some(base)
            }
            (Some(_), None) => {
                return Err(ConfigError::for_key(
                    "daemon_token",
                    "the \"Stop run\" button needs the daemon's token too: set `daemon_token` (or remove \
                     `public_url`)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::for_key(
                    "public_url",
                    "the \"Stop run\" button needs the daemon's address as the phone reaches it: set \
                     `public_url` (or remove `daemon_token`)",
                ));
            }
            (None, None) => None,
        };
        let client = http::client().map_err(ConfigError::new)?;
        Ok(Ntfy { name: name.to_owned(), server, config: self, stop_url_base, client })
    }
}

impl Ntfy {
    fn topic_url(&self) -> String {
        format!("{}/{}", self.server, self.config.topic)
    }

    /// The headers of one notification except the body-related ones.
    fn headers(&self, n: &Notification) -> Vec<(&'static str, String)> {
        let kind = n.event.kind();
        let mut headers = vec![("Title", http::header_text(&n.title)), ("Priority", priority(n).to_string())];
        let mut tags: Vec<String> = event_tags(kind).iter().map(|t| (*t).to_owned()).collect();
        tags.extend(self.config.tags.iter().cloned());
        if !tags.is_empty() {
            headers.push(("Tags", http::header_text(&tags.join(","))));
        }
        if let Some(click) = &self.config.click {
            headers.push(("Click", click.clone()));
        }
        if let (Some(base), Some(token)) = (&self.stop_url_base, &self.config.daemon_token)
            && matches!(kind, EventKind::RunStarted | EventKind::EpochEnded | EventKind::RunStalled)
        {
            let url = format!("{base}/v1/runs/{}/stop", http::encode_path_segment(&n.event.run));
            headers.push((
                "Actions",
                format!(
                    "http, Stop run, {url}, method=POST, headers.Authorization=Bearer {}, clear=true",
                    token.expose()
                ),
            ));
        }
        if let Some(token) = &self.config.token {
            headers.push(("Authorization", format!("Bearer {}", token.expose())));
        }
        headers
    }
}

/// ntfy priority (1..5) for an event: failure 5, finish 4, epoch 2.
pub fn priority(n: &Notification) -> u8 {
    match &n.event.payload {
        Payload::RunFailed(_) | Payload::RunLost(_) => 5,
        Payload::RunFinished(_) | Payload::RunStalled(_) => 4,
        Payload::EpochEnded(_) | Payload::EpochStarted(_) | Payload::BatchEnded(_) => 2,
        Payload::Message(herald_event::Message { level, .. })
        | Payload::Alert(herald_event::Alert { level, .. }) => match level {
            Level::Info => 3,
            Level::Warning => 4,
            Level::Error => 5,
        },
        Payload::RunStarted(_) | Payload::Heartbeat(_) => 3,
        Payload::RankLost(_) | Payload::RankFailed(_) => 5,
        Payload::RankStalled(_) | Payload::RankSlow(_) | Payload::RanksMissing(_) => 4,
    }
}

/// The emoji tags ntfy shows for an event.
fn event_tags(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::RunStarted => &["rocket"],
        EventKind::EpochEnded => &["chart_with_downwards_trend"],
        EventKind::RunFinished => &["white_check_mark"],
        EventKind::RunFailed => &["rotating_light"],
        EventKind::RunStalled => &["hourglass"],
        EventKind::RunLost => &["skull"],
        EventKind::Message => &["speech_balloon"],
        EventKind::Alert => &["warning"],
        EventKind::RankStalled | EventKind::RanksMissing => &["hourglass"],
        EventKind::RankLost | EventKind::RankFailed => &["skull"],
        EventKind::RankSlow => &["snail"],
        EventKind::EpochStarted | EventKind::BatchEnded | EventKind::Heartbeat => &[],
    }
}

#[async_trait]
impl Notifier for Ntfy {
    fn capabilities(&self) -> Capabilities {
        Capabilities { edit: false, images: true, commands: self.stop_url_base.is_some() }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let n = &*render::with_table(n, self.config.table);
        let text = http::cut_bytes(&n.text, MESSAGE_LIMIT_BYTES);
        let mut headers = self.headers(n);
        let request = match &n.image {
            Some(image) => {
                headers.push(("Filename", http::header_text(&image.filename)));
                headers.push(("Message", http::header_text(&text)));
                self.client.put(self.topic_url()).body(image.bytes.clone())
            }
            None => self.client.post(self.topic_url()).body(text),
        };
        let request = headers.into_iter().fold(request, |r, (k, v)| r.header(k, v));
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, "publishing to ntfy");
        let response = request.send().await.map_err(|e| http::send_error(&self.server, e))?;
        let body = http::check_response(response, &ANSWERS).await?;
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
        Ok(Receipt(match id {
            Some(id) => serde_json::json!({ "id": id }),
            None => serde_json::Value::Null,
        }))
    }

    async fn health_check(&self) -> Health {
        let url = format!("{}/v1/health", self.server);
        match self.client.get(&url).timeout(Duration::from_secs(5)).send().await {
            Err(e) => Health::Unavailable {
                message: format!(
                    "cannot reach the ntfy server {}: {}",
                    self.server,
                    herald_plugin::error_chain(&e)
                ),
            },
            Ok(response) => {
                let healthy = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("healthy").and_then(serde_json::Value::as_bool));
                match healthy {
                    Some(false) => Health::Degraded {
                        message: format!("the ntfy server {} reports itself unhealthy", self.server),
                    },
                    _ => Health::Ok,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_plugin::parse_table;

    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
    }

    #[test]
    fn config_errors_name_the_key() {
        fn check(text: &str, key: &str, part: &str) {
            let err = NtfyConfig::from_table("n", table(text)).err().expect(text);
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
            assert!(err.message.contains(part), "{text}: {err}");
        }
        check("", "topic", "missing required key");
        check("topic = 'a b'", "topic", "not a valid ntfy topic");
        check("topic = 'runs'\nserver = 'ntfy.sh'", "server", "http");
        check("topic = 'runs'\ntopik = 'x'", "topik", "unknown key");
        check("topic = 'runs'\npublic_url = 'http://h:7878'", "daemon_token", "needs the daemon's token");
        check("topic = 'runs'\ndaemon_token = 't'", "public_url", "needs the daemon's address");
        check("topic = 'runs'\ntags = ['a,b']", "tags[0]", "without commas");
        check("topic = 'runs'\ntoken = 'a b'", "token", "spaces");
        assert!(NtfyConfig::from_table("n", table("topic = 'runs'")).is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let config: NtfyConfig = parse_table(table(
            "topic = 't'\ntoken = 'tk_secret'\npublic_url = 'http://h'\ndaemon_token = 'dt'",
        ))
        .expect("valid");
        let shown = format!("{:?}", config.build("n").expect("valid"));
        assert!(!shown.contains("tk_secret") && !shown.contains("\"dt\""), "{shown}");
    }
}

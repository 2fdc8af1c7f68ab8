//! The `pushover` notifier: training notifications through [Pushover](https://pushover.net), the app the
//! fastai forum posters used to get their results on a phone.
//!
//! Each notification is one `POST` to the messages API with the plain-text rendering as `message` (in
//! Pushover's monospace font when it holds the results table), the title, and the configured priority,
//! sound and device; message, title and URL are cut to the API limits (1024, 250 and 512 characters).
//! Failures (a failed, lost or stalled run, an error message) use `failure_priority`, which may be 2
//! (emergency: repeated every `retry` until acknowledged or `expire`). At run end the loss curve the host
//! hands over is attached when it is under Pushover's 2.5 MB limit. The daemon and the CLI use this crate
//! through its [`PushoverConfig`] ([`NotifierType`]); it does not retry, rate-limit or edit (Pushover
//! cannot): the host retries.

use std::time::Duration;

use async_trait::async_trait;
use herald_event::{Level, Payload};
use herald_http as http;
use herald_plugin::http::AnswerPolicy;
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, Health, Notification, Notifier, NotifierType, Receipt, Secret,
    TableLayout, duration, render,
};
use serde::Deserialize;

/// The longest message the API takes, in characters; longer texts are cut.
pub const MESSAGE_LIMIT: usize = 1024;
/// The longest title the API takes, in characters.
pub const TITLE_LIMIT: usize = 250;
/// The longest supplementary URL the API takes, in characters.
pub const URL_LIMIT: usize = 512;
/// The longest title of the supplementary URL the API takes, in characters.
pub const URL_TITLE_LIMIT: usize = 100;
/// The largest attachment Pushover takes (about 2.5 MB).
pub const ATTACHMENT_LIMIT_BYTES: usize = 2_621_440;

/// How the API's answers are read (Pushover explains refusals in `{"errors": [...]}`).
const ANSWERS: AnswerPolicy<'static> = AnswerPolicy::new("Pushover");

/// Configuration of a `pushover` notifier (`[[notifier]]` with `type = "pushover"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushoverConfig {
    /// Your application's API token (create one at pushover.net/apps).
    pub token: Secret,
    /// Your user key (or a group key), from the Pushover dashboard.
    pub user: Secret,
    /// The messages endpoint; change it only for a proxy or a test server.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Priority of ordinary notifications (start, epochs, finish, messages), -2 (silent) to 2.
    #[serde(default)]
    pub priority: i8,
    /// Priority of failures (failed, lost or stalled runs, error messages), -2 to 2; 2 repeats the alert
    /// every `retry` until you acknowledge it or `expire` passes.
    #[serde(default = "default_failure_priority")]
    pub failure_priority: i8,
    /// How often an emergency (priority 2) alert repeats; at least 30 s.
    #[serde(default = "default_retry", deserialize_with = "duration::deserialize")]
    pub retry: Duration,
    /// How long an emergency (priority 2) alert keeps repeating; at most 3 h.
    #[serde(default = "default_expire", deserialize_with = "duration::deserialize")]
    pub expire: Duration,
    /// A Pushover sound name (such as `pushover`, `siren`, `none`); the app's default when unset.
    #[serde(default)]
    pub sound: Option<String>,
    /// Send to this device of yours only; all devices when unset.
    #[serde(default)]
    pub device: Option<String>,
    /// A URL shown with every notification (a dashboard, TensorBoard, ...).
    #[serde(default)]
    pub url: Option<String>,
    /// The link text for `url`.
    #[serde(default)]
    pub url_title: Option<String>,
    /// The results table: `"compact"` (default; at most 34 characters wide and the last 10 epochs, for a
    /// phone held upright) or `"full"` (fastai's layout, as the trainer prints it).
    #[serde(default)]
    pub table: TableLayout,
}

fn default_api_url() -> String {
    "https://api.pushover.net/1/messages.json".to_owned()
}
fn default_failure_priority() -> i8 {
    1
}
fn default_retry() -> Duration {
    Duration::from_secs(60)
}
fn default_expire() -> Duration {
    Duration::from_secs(3600)
}

/// The `pushover` notifier.
#[derive(Debug)]
pub struct Pushover {
    name: String,
    api_url: String,
    config: PushoverConfig,
    client: reqwest::Client,
}

impl NotifierType for PushoverConfig {
    const KIND: &'static str = "pushover";
    const DESCRIPTION: &'static str =
        "sends Pushover messages: failure priority (emergency possible), loss curve attached";
    type Notifier = Pushover;

    /// Check the configuration and set up the HTTP client (nothing is sent).
    fn build(self, name: &str) -> Result<Pushover, ConfigError> {
        let api_url = http::check_base_url(&self.api_url).map_err(|m| ConfigError::for_key("api_url", m))?;
        for (key, value) in [("token", &self.token), ("user", &self.user)] {
            if value.is_empty() || !value.expose().chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ConfigError::for_key(
                    key,
                    "expected the 30-character key from the Pushover dashboard (letters and digits)",
                ));
            }
        }
        for (key, value) in [("priority", self.priority), ("failure_priority", self.failure_priority)] {
            if !(-2..=2).contains(&value) {
                return Err(ConfigError::for_key(key, format!("{value} is out of range: use -2 to 2")));
            }
        }
        if self.retry < Duration::from_secs(30) {
            return Err(ConfigError::for_key("retry", "Pushover repeats emergency alerts at most every 30s"));
        }
        if self.expire > Duration::from_secs(10_800) || self.expire < self.retry {
            return Err(ConfigError::for_key(
                "expire",
                "must be at least `retry` and at most 3h (Pushover's limit)",
            ));
        }
        if let Some(url) = &self.url {
            http::check_base_url(url).map_err(|m| ConfigError::for_key("url", m))?;
        }
        let client = http::client().map_err(ConfigError::new)?;
        Ok(Pushover { name: name.to_owned(), api_url, config: self, client })
    }
}

impl Pushover {
    /// The priority of one notification.
    pub fn priority_for(&self, n: &Notification) -> i8 {
        let failure = match &n.event.payload {
            Payload::RunFailed(_) | Payload::RunLost(_) | Payload::RunStalled(_) => true,
            Payload::Message(m) => m.level == Level::Error,
            _ => false,
        };
        if failure { self.config.failure_priority } else { self.config.priority }
    }

    /// The form fields of one notification, cut to the API limits (the image goes separately).
    fn fields(&self, n: &Notification) -> Vec<(&'static str, String)> {
        let priority = self.priority_for(n);
        let mut fields = vec![
            ("token", self.config.token.expose().to_owned()),
            ("user", self.config.user.expose().to_owned()),
            ("message", http::cut_chars(non_empty(&n.text), MESSAGE_LIMIT)),
            ("title", http::cut_chars(&n.title, TITLE_LIMIT)),
            ("priority", priority.to_string()),
            ("timestamp", n.event.time.unix_timestamp().to_string()),
        ];
        if render::table(&n.run, self.config.table).is_some_and(|table| n.text.contains(&table)) {
            // The results table lines up only in a fixed-width font.
            fields.push(("monospace", "1".to_owned()));
        }
        if priority == 2 {
            fields.push(("retry", self.config.retry.as_secs().to_string()));
            fields.push(("expire", self.config.expire.as_secs().to_string()));
        }
        if let Some(sound) = &self.config.sound {
            fields.push(("sound", sound.clone()));
        }
        if let Some(device) = &self.config.device {
            fields.push(("device", device.clone()));
        }
        if let Some(url) = &self.config.url {
            fields.push(("url", http::cut_chars(url, URL_LIMIT)));
            if let Some(title) = &self.config.url_title {
                fields.push(("url_title", http::cut_chars(title, URL_TITLE_LIMIT)));
            }
        }
        fields
    }

    /// `users/validate.json` beside the messages endpoint, when the endpoint has the standard shape.
    fn validate_url(&self) -> Option<String> {
        self.api_url.strip_suffix("/messages.json").map(|base| format!("{base}/users/validate.json"))
    }
}

/// Pushover rejects an empty message.
fn non_empty(text: &str) -> &str {
    if text.trim().is_empty() { "(no text)" } else { text }
}

#[async_trait]
impl Notifier for Pushover {
    fn capabilities(&self) -> Capabilities {
        Capabilities { edit: false, images: true, commands: false }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let n = &*render::with_table(n, self.config.table);
        let fields = self.fields(n);
        let image = n.image.as_ref().filter(|image| {
            let fits = image.bytes.len() <= ATTACHMENT_LIMIT_BYTES;
            if !fits {
                tracing::warn!(
                    notifier = %self.name, run = %n.event.run, bytes = image.bytes.len(),
                    "image over Pushover's 2.5 MB limit; sending the text alone"
                );
            }
            fits
        });
        let request = self.client.post(&self.api_url);
        let request = match image {
            Some(image) => {
                let mut form = reqwest::multipart::Form::new();
                for (key, value) in fields {
                    form = form.text(key, value);
                }
                let part = reqwest::multipart::Part::bytes(image.bytes.clone())
                    .file_name(image.filename.clone())
                    .mime_str(&image.mime)
                    .map_err(|e| {
                        DeliveryError::permanent(format!("invalid image type `{}`: {e}", image.mime))
                    })?;
                request.multipart(form.part("attachment", part))
            }
            None => request.form(&fields),
        };
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, "sending to Pushover");
        let response = request.send().await.map_err(|e| http::send_error(&self.api_url, e))?;
        let body = http::check_response(response, &ANSWERS).await?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            DeliveryError::retryable(format!("Pushover answered 200 with a body that is not JSON: {e}"))
        })?;
        if value.get("status").and_then(serde_json::Value::as_i64) != Some(1) {
            return Err(DeliveryError::permanent(format!("Pushover refused the message: {value}")));
        }
        let mut receipt = serde_json::Map::new();
        for key in ["request", "receipt"] {
            if let Some(v) = value.get(key) {
                receipt.insert(key.to_owned(), v.clone());
            }
        }
        Ok(Receipt(serde_json::Value::Object(receipt)))
    }

    async fn health_check(&self) -> Health {
        let Some(url) = self.validate_url() else {
            return Health::Ok;
        };
        let mut form = vec![("token", self.config.token.expose()), ("user", self.config.user.expose())];
        if let Some(device) = &self.config.device {
            form.push(("device", device));
        }
        let answer = self.client.post(&url).form(&form).timeout(Duration::from_secs(10)).send().await;
        match answer {
            Err(e) => Health::Unavailable {
                message: format!("cannot reach Pushover at {url}: {}", herald_plugin::error_chain(&e)),
            },
            Ok(response) => match http::check_response(response, &ANSWERS).await {
                Ok(_) => Health::Ok,
                Err(e) if e.retryable => Health::Degraded { message: e.message },
                Err(e) => Health::Unavailable { message: format!("{}; check `token` and `user`", e.message) },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_plugin::parse_table;

    use super::*;

    const KEYS: &str = "token = 'azGDORePK8gMaC0QOYAMyEEuzJnyUi'\nuser = 'uQiRzpo4DXghDmr9QzzfQu27cmVRsG'\n";

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
    }

    #[test]
    fn config_errors_name_the_key() {
        fn check(extra: &str, key: &str, part: &str) {
            let text = format!("{KEYS}{extra}");
            let err = PushoverConfig::from_table("p", table(&text)).err().expect(extra);
            assert_eq!(err.key.as_deref(), Some(key), "{extra}: {err}");
            assert!(err.message.contains(part), "{extra}: {err}");
        }
        check("priority = 3", "priority", "use -2 to 2");
        check("failure_priority = -3", "failure_priority", "use -2 to 2");
        check("retry = '10s'", "retry", "30s");
        check("expire = '4h'", "expire", "3h");
        check("api_url = 'api.pushover.net'", "api_url", "http");
        check("sounds = 'x'", "sounds", "unknown key");
        let err =
            PushoverConfig::from_table("p", table("token = 'a b'\nuser = 'u'")).err().expect("bad token");
        assert_eq!(err.key.as_deref(), Some("token"));
        let err = PushoverConfig::from_table("p", table("token = 'abc'")).err().expect("no user");
        assert_eq!((err.key.as_deref(), err.message.as_str()), (Some("user"), "missing required key"));
        assert!(PushoverConfig::from_table("p", table(KEYS)).is_ok());
    }

    #[test]
    fn keys_do_not_show_in_debug() {
        let config: PushoverConfig = parse_table(table(KEYS)).expect("valid");
        let shown = format!("{:?}", config.build("p").expect("valid"));
        assert!(!shown.contains("azGDORe") && !shown.contains("uQiRzpo"), "{shown}");
    }
}

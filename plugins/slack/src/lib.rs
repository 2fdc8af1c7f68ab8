//! The `slack` notifier: training notifications in a Slack channel, by incoming webhook or by the Web API.
//!
//! With `webhook_url` every notification is one message: Block Kit with the title, the summary and the
//! results table in a code block (webhooks cannot edit). With `token` and `channel` (a bot token with
//! `chat:write` and `files:write`) a run gets one live message: `chat.postMessage` at `run_started`, then
//! `chat.update` as epochs end; the start, the finish and a failure are thread replies under it (a
//! failure, a stall or a lost process with `reply_broadcast`, so it shows in the channel too), and at the
//! end the loss curve the host attached is uploaded into the thread (`files.getUploadURLExternal`, the
//! upload, `files.completeUploadExternal`). The live message's channel id and `ts` are kept in the
//! [`Receipt`], so a restarted daemon keeps updating the same message.
//!
//! Every user-supplied string is mrkdwn-escaped (`&`, `<`, `>`), so a run name cannot ping `<!channel>`.
//! HTTP answers follow the SDK's one policy ([`herald_plugin::http::AnswerPolicy`]: a 429 is retried after
//! its `Retry-After`, 5xx retried, other statuses permanent); Slack's `ok: false` errors are mapped to
//! retryable or permanent errors that say what to fix. The daemon and the CLI use this crate through its
//! [`SlackConfig`] ([`NotifierType`]); retries and queueing are the host's.

mod error;
mod format;

use async_trait::async_trait;
use herald_event::Payload;
use herald_plugin::http::AnswerPolicy;
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, DeliveryProgress, Health, Notification, Notifier, NotifierType,
    Receipt, Secret, TableLayout, render,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{SlackError, send_error};
use crate::format::fallback;
pub use crate::format::{blocks, escape_mrkdwn};

/// Slack's Web API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

/// How Slack's HTTP answers are read: an incoming webhook that is gone answers 403, 404 or 410.
const WEBHOOK_ANSWERS: AnswerPolicy<'static> = AnswerPolicy::new("Slack").with_hints(|status| match status {
    403 | 404 | 410 => Some("Slack does not know this webhook: create it again and update webhook_url"),
    _ => None,
});
/// The answers of the upload URL Slack hands out for the loss curve.
const UPLOAD_ANSWERS: AnswerPolicy<'static> = AnswerPolicy::new("Slack's file upload");

/// Configuration of a `slack` notifier (`[[notifier]]` with `type = "slack"`): `webhook_url`, or `token`
/// and `channel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// An incoming webhook URL (`https://hooks.slack.com/services/...`); keep it secret.
    #[serde(default)]
    pub webhook_url: Option<Secret>,
    /// A bot token (`xoxb-...`) with `chat:write` (and `files:write` for the loss curve); keep it secret.
    #[serde(default)]
    pub token: Option<Secret>,
    /// The channel for the Web API: an id (`C0123...`) or `#name`; invite the bot to it.
    #[serde(default)]
    pub channel: Option<String>,
    /// The Web API base (default `https://slack.com/api`; tests set it).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Web API mode: one message per run updated in place (default true); false posts every notification.
    #[serde(default = "herald_plugin::default_true")]
    pub live: bool,
    /// The results table: `"compact"` (default; at most 34 characters wide and the last 10 epochs, for a
    /// phone held upright) or `"full"` (fastai's layout, as the trainer prints it).
    #[serde(default)]
    pub table: TableLayout,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

enum Mode {
    Webhook(Secret),
    Api { token: Secret, channel: String, base: String },
}

/// The `slack` notifier.
pub struct Slack {
    name: String,
    live: bool,
    table: TableLayout,
    mode: Mode,
    client: reqwest::Client,
    /// Steps already done by an earlier attempt of a delivery that makes several calls.
    progress: DeliveryProgress<Step>,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack").field("name", &self.name).field("live", &self.live).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The live message's channel id and ts.
    Live(String, String),
    Reply(String),
    Plot,
}

impl NotifierType for SlackConfig {
    const KIND: &'static str = "slack";
    const DESCRIPTION: &'static str = "Slack: incoming webhook, or the Web API with one live message per run, thread replies and the loss curve";
    type Notifier = Slack;

    /// Check the configuration and set up the HTTP client (nothing is sent).
    fn build(self, name: &str) -> Result<Slack, ConfigError> {
        let mode = match (&self.webhook_url, &self.token, &self.channel) {
            (Some(url), None, None) => {
                // Say what is wrong without echoing the URL: it holds the webhook's secret.
                herald_http::check_base_url(url.expose()).map_err(|_| {
                    ConfigError::for_key(
                        "webhook_url",
                        "not a webhook URL: expected https://hooks.slack.com/services/...",
                    )
                })?;
                Mode::Webhook(url.clone())
            }
            (None, Some(token), Some(channel)) => {
                if !token.expose().starts_with("xox") {
                    return Err(ConfigError::for_key(
                        "token",
                        "not a Slack token: expected a bot token `xoxb-...`",
                    ));
                }
                let channel = channel.trim().to_owned();
                if channel.is_empty() || channel.contains(char::is_whitespace) {
                    return Err(ConfigError::for_key(
                        "channel",
                        "expected a channel id (`C0123...`) or `#name`",
                    ));
                }
                let base = herald_http::check_base_url(&self.api_url)
                    .map_err(|m| ConfigError::for_key("api_url", m))?;
                Mode::Api { token: token.clone(), channel, base }
            }
            (Some(_), _, _) => {
                return Err(ConfigError::for_key(
                    "webhook_url",
                    "set either `webhook_url`, or `token` and `channel`, not both",
                ));
            }
            (None, Some(_), None) => {
                return Err(ConfigError::for_key("channel", "missing required key (with `token`)"));
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::for_key("token", "missing required key (with `channel`)"));
            }
            (None, None, None) => {
                return Err(ConfigError::new("set `webhook_url`, or `token` and `channel`"));
            }
        };
        let client = herald_http::client().map_err(ConfigError::new)?;
        Ok(Slack {
            name: name.to_owned(),
            live: self.live,
            table: self.table,
            mode,
            client,
            progress: DeliveryProgress::new(),
        })
    }
}

impl Slack {
    async fn webhook(&self, url: &Secret, n: &Notification) -> Result<Receipt, DeliveryError> {
        let body = json!({ "text": fallback(n), "blocks": blocks(n) });
        let response = self
            .client
            .post(url.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| send_error(e.without_url()))?;
        herald_http::check_response(response, &WEBHOOK_ANSWERS).await?;
        Ok(Receipt::none())
    }

    /// One Web API call; the answer's fields on `ok: true`.
    async fn call(&self, method: &str, body: Body) -> Result<Value, SlackError> {
        let Mode::Api { token, base, .. } = &self.mode else {
            return Err(SlackError::Other(DeliveryError::permanent("not in Web API mode")));
        };
        let request = self.client.post(format!("{base}/{method}")).bearer_auth(token.expose());
        let request = match body {
            Body::Json(v) => request.json(&v),
            Body::Form(pairs) => request.form(&pairs),
        };
        let response = request.send().await.map_err(|e| SlackError::Other(send_error(e)))?;
        let status = response.status().as_u16();
        let after = herald_http::retry_after_header(response.headers());
        let text = response.text().await;
        // A status worth retrying (429, 5xx) is judged by the HTTP policy; other refusals explain
        // themselves in Slack's `ok: false` body.
        let service = format!("Slack's {method}");
        if let Err(e) = AnswerPolicy::new(&service).check(status, after, text.as_deref().unwrap_or_default())
            && e.retryable
        {
            return Err(SlackError::Other(e));
        }
        let text = text.map_err(|e| SlackError::Other(send_error(e)))?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            SlackError::Other(DeliveryError::retryable(format!(
                "Slack answered {method} with something that is not JSON ({status})"
            )))
        })?;
        if value["ok"] == json!(true) {
            return Ok(value);
        }
        let error = value["error"].as_str().unwrap_or("unknown_error").to_owned();
        Err(SlackError::Api(error))
    }

    async fn post(
        &self,
        channel: &str,
        n: &Notification,
        thread: Option<&str>,
        broadcast: bool,
    ) -> Result<(String, String), DeliveryError> {
        let mut body =
            json!({ "channel": channel, "text": fallback(n), "blocks": blocks(n), "unfurl_links": false });
        if let Some(t) = thread {
            body["thread_ts"] = json!(t);
            if broadcast {
                body["reply_broadcast"] = json!(true);
            }
        }
        let v = self
            .call("chat.postMessage", Body::Json(body))
            .await
            .map_err(|e| e.into_error("chat.postMessage"))?;
        let ts =
            v["ts"].as_str().ok_or_else(|| DeliveryError::retryable("Slack's answer has no ts"))?.to_owned();
        let channel = v["channel"].as_str().unwrap_or(channel).to_owned();
        Ok((channel, ts))
    }

    /// Update the live message; `Ok(false)` when it is gone.
    async fn update(&self, channel: &str, ts: &str, n: &Notification) -> Result<bool, DeliveryError> {
        let body = json!({ "channel": channel, "ts": ts, "text": fallback(n), "blocks": blocks(n) });
        match self.call("chat.update", Body::Json(body)).await {
            Ok(_) => Ok(true),
            Err(SlackError::Api(e)) if e == "message_not_found" || e == "cant_update_message" => {
                tracing::info!(notifier = %self.name, ts, "the live message is gone; posting a new one");
                Ok(false)
            }
            Err(e) => Err(e.into_error("chat.update")),
        }
    }

    async fn upload(
        &self,
        channel: &str,
        thread: Option<&str>,
        n: &Notification,
    ) -> Result<(), DeliveryError> {
        let Some(image) = &n.image else { return Ok(()) };
        let v = self
            .call(
                "files.getUploadURLExternal",
                Body::Form(vec![
                    ("filename".into(), image.filename.clone()),
                    ("length".into(), image.bytes.len().to_string()),
                ]),
            )
            .await
            .map_err(|e| e.into_error("files.getUploadURLExternal"))?;
        let (Some(url), Some(id)) = (v["upload_url"].as_str(), v["file_id"].as_str()) else {
            return Err(DeliveryError::retryable("Slack's upload answer has no upload_url or file_id"));
        };
        let response = self
            .client
            .post(url)
            .header("content-type", image.mime.as_str())
            .body(image.bytes.clone())
            .send()
            .await
            .map_err(send_error)?;
        herald_http::check_response(response, &UPLOAD_ANSWERS).await?;
        let mut body = json!({
            "files": [{ "id": id, "title": format!("{}: loss curve", n.run.name) }],
            "channel_id": channel,
        });
        if let Some(t) = thread {
            body["thread_ts"] = json!(t);
        }
        self.call("files.completeUploadExternal", Body::Json(body))
            .await
            .map_err(|e| e.into_error("files.completeUploadExternal"))?;
        Ok(())
    }

    async fn api_deliver(&self, channel: &str, n: &Notification) -> Result<Receipt, DeliveryError> {
        let done = self.progress.done(n);
        let prev = n.previous.as_ref().map(|r| &r.0);
        let mut live: Option<(String, String)> = if self.live {
            prev.and_then(|p| Some((p["channel"].as_str()?.to_owned(), p["live"].as_str()?.to_owned())))
        } else {
            None
        };
        let kind = kind(&n.event.payload);
        let mut posted = None;
        if !self.live {
            let (ch, ts) =
                match done.iter().find_map(|s| if let Step::Reply(ts) = s { Some(ts.clone()) } else { None })
                {
                    Some(ts) => (channel.to_owned(), ts),
                    None => {
                        let (ch, ts) = self.post(channel, n, None, false).await?;
                        self.progress.remember(n, Step::Reply(ts.clone()));
                        (ch, ts)
                    }
                };
            if !done.contains(&Step::Plot) {
                self.upload(&ch, Some(&ts), n).await?;
            }
            self.progress.forget(n);
            return Ok(Receipt(json!({ "channel": ch, "ts": ts })));
        }
        if kind == Kind::Tick {
            // Nothing to show in live mode; the receipt keeps the live message.
            return Ok(n.previous.clone().unwrap_or_else(Receipt::none));
        }
        // The live message: created at the start (or when missing), updated otherwise.
        let live_done = done
            .iter()
            .find_map(|s| if let Step::Live(ch, ts) = s { Some((ch.clone(), ts.clone())) } else { None });
        if let Some(done_live) = live_done {
            live = Some(done_live);
        } else if kind != Kind::Message {
            let updated = match (&live, kind) {
                (Some((ch, ts)), k) if k != Kind::Start => self.update(ch, ts, n).await?,
                _ => false,
            };
            if !updated {
                live = Some(self.post(channel, n, None, false).await?);
            }
            if let Some((ch, ts)) = &live {
                self.progress.remember(n, Step::Live(ch.clone(), ts.clone()));
            }
        }
        // Start, end and messages also go into the thread.
        if kind != Kind::Progress && kind != Kind::Tick {
            let reply_done = done.iter().any(|s| matches!(s, Step::Reply(_)));
            if !reply_done {
                let thread = live.as_ref().map(|(_, ts)| ts.as_str());
                let broadcast = kind == Kind::Alarm;
                let (_, ts) =
                    self.post(live.as_ref().map_or(channel, |(ch, _)| ch), n, thread, broadcast).await?;
                self.progress.remember(n, Step::Reply(ts.clone()));
                posted = Some(ts);
            }
        }
        if n.image.is_some() && !done.contains(&Step::Plot) {
            let (ch, thread) = match &live {
                Some((ch, ts)) => (ch.clone(), Some(ts.clone())),
                None => (channel.to_owned(), None),
            };
            self.upload(&ch, thread.as_deref(), n).await?;
            self.progress.remember(n, Step::Plot);
        }
        self.progress.forget(n);
        let mut receipt = serde_json::Map::new();
        if let Some((ch, ts)) = live {
            receipt.insert("channel".into(), json!(ch));
            receipt.insert("live".into(), json!(ts));
        }
        if let Some(ts) = posted {
            receipt.insert("ts".into(), json!(ts));
        }
        Ok(Receipt(Value::Object(receipt)))
    }
}

enum Body {
    Json(Value),
    Form(Vec<(String, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    /// An epoch ended: the live message is updated.
    Progress,
    /// Finer progress (an epoch or batch started, a heartbeat), when routed here: it would replace the
    /// table in the live message, so the Web API live mode leaves it out.
    Tick,
    /// Finished or stopped: a thread reply.
    End,
    /// Failed, stalled or lost: a thread reply also shown in the channel.
    Alarm,
    Message,
}

fn kind(p: &Payload) -> Kind {
    match p {
        Payload::RunStarted(_) => Kind::Start,
        Payload::EpochEnded(_) => Kind::Progress,
        Payload::EpochStarted(_) | Payload::BatchEnded(_) | Payload::Heartbeat(_) => Kind::Tick,
        Payload::RunFinished(f) if f.status != herald_event::RunStatus::Failed => Kind::End,
        Payload::RunFinished(_) | Payload::RunFailed(_) | Payload::RunStalled(_) | Payload::RunLost(_) => {
            Kind::Alarm
        }
        Payload::Message(_) | Payload::Alert(_) => Kind::Message,
        // A job's rank events: shown in the channel, the job goes on.
        Payload::RankStalled(_)
        | Payload::RankLost(_)
        | Payload::RankFailed(_)
        | Payload::RankSlow(_)
        | Payload::RanksMissing(_) => Kind::Alarm,
    }
}

#[async_trait]
impl Notifier for Slack {
    fn capabilities(&self) -> Capabilities {
        let api = matches!(self.mode, Mode::Api { .. });
        Capabilities { edit: api && self.live, images: api, commands: false }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let n = &*render::with_table(n, self.table);
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, "sending to Slack");
        match &self.mode {
            Mode::Webhook(url) => self.webhook(url, n).await,
            Mode::Api { channel, .. } => self.api_deliver(channel, n).await,
        }
    }

    async fn health_check(&self) -> Health {
        match &self.mode {
            Mode::Webhook(_) => Health::Ok,
            Mode::Api { .. } => match self.call("auth.test", Body::Json(json!({}))).await {
                Ok(_) => Health::Ok,
                Err(e) => {
                    let e = e.into_error("auth.test");
                    if e.retryable {
                        Health::Degraded { message: e.message }
                    } else {
                        Health::Unavailable { message: e.message }
                    }
                }
            },
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
    fn config_needs_one_mode() {
        let check = |text: &str, key: Option<&str>| {
            let err = SlackConfig::from_table("s", table(text)).err().expect(text);
            assert_eq!(err.key.as_deref(), key, "{text}: {err}");
            assert!(!err.to_string().contains("SECRET"), "{err}");
        };
        check("", None);
        check("token = 'xoxb-SECRET'", Some("channel"));
        check("channel = '#ml'", Some("token"));
        check("token = 'SECRET'\nchannel = '#ml'", Some("token"));
        check("webhook_url = 'hooks.slack.com/SECRET'", Some("webhook_url"));
        check("webhook_url = 'https://x/SECRET'\ntoken = 'xoxb-1'\nchannel = 'C1'", Some("webhook_url"));
        check("webhook_url = 'https://x/SECRET'\nchanel = 'C1'", Some("chanel"));
        let ok = SlackConfig::from_table("s", table("token = 'xoxb-1'\nchannel = '#ml'")).expect("valid");
        assert!(ok.capabilities().edit && ok.capabilities().images);
        let hook =
            parse_table::<SlackConfig>(table("webhook_url = 'https://hooks.slack.com/services/T/B/SECRET'"))
                .expect("valid")
                .build("s")
                .expect("valid");
        assert!(!hook.capabilities().edit);
        assert!(!format!("{hook:?}").contains("SECRET"));
    }
}

//! The `discord` notifier: training notifications in a Discord channel through a webhook.
//!
//! With `live = true` (the default) a run gets one live message: the first notification posts it
//! (`POST {webhook}?wait=true`, which answers with the message id, kept in the [`Receipt`]) and later
//! progress (epochs) edits it in place (`PATCH {webhook}/messages/{id}`), so the channel shows the results
//! table growing instead of a scroll of messages. Ends, failures and stalls also edit the live message to
//! its final state and then post a new message, because an edit does not ping anyone's phone; a free-text
//! `message` is posted beside the live message and leaves it alone.
//! Content is the Markdown rendering (the table in a code block) cut to Discord's 2000 characters by
//! dropping the oldest table rows (or traceback lines) first, with the code blocks kept closed; mentions in
//! run-supplied text are disabled. The loss curve is attached at run end. A 429 is retried after the
//! `retry_after` Discord sends (fractional seconds). The daemon and the CLI use this crate through its
//! [`DiscordConfig`] ([`NotifierType`]); it does not retry or rate-limit itself: the host does.

use std::time::Duration;

use async_trait::async_trait;
use herald_event::Payload;
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, Health, Notification, Notifier, NotifierType, Receipt, Secret,
    TableLayout, render,
};
use serde::Deserialize;

mod http;

/// Discord's limit on a message's `content`, in characters.
pub const CONTENT_LIMIT: usize = 2000;

/// Configuration of a `discord` notifier (`[[notifier]]` with `type = "discord"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The webhook URL (Server Settings → Integrations → Webhooks → Copy Webhook URL). It contains the
    /// webhook's token: keep it secret (`webhook_url_file`, or `${VAR}` from the environment).
    pub webhook_url: Secret,
    /// One message per run edited in place as epochs end (default true); false posts every notification.
    #[serde(default = "herald_plugin::default_true")]
    pub live: bool,
    /// The name the messages appear under; the webhook's own when unset.
    #[serde(default)]
    pub username: Option<String>,
    /// The avatar image URL the messages appear with; the webhook's own when unset.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// The results table: `"compact"` (default; at most 34 characters wide and the last 10 epochs, for a
    /// phone held upright) or `"full"` (fastai's layout, as the trainer prints it).
    #[serde(default)]
    pub table: TableLayout,
}

/// The `discord` notifier.
#[derive(Debug)]
pub struct Discord {
    name: String,
    config: DiscordConfig,
    /// The webhook URL without its query, and the query (such as `thread_id=...`) to keep on every call.
    base: Secret,
    query: Option<String>,
    client: reqwest::Client,
}

impl NotifierType for DiscordConfig {
    const KIND: &'static str = "discord";
    const DESCRIPTION: &'static str =
        "posts to a Discord webhook: one live message per run edited in place, table in a code block";
    type Notifier = Discord;

    /// Check the configuration and set up the HTTP client (nothing is sent).
    fn build(self, name: &str) -> Result<Discord, ConfigError> {
        let url = self.webhook_url.expose();
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query.to_owned()).filter(|q| !q.is_empty())),
            None => (url, None),
        };
        // Say what is wrong without echoing the URL: it holds the token.
        let base = http::check_base_url(base).map_err(|_| {
            ConfigError::for_key(
                "webhook_url",
                "not a webhook URL: expected https://discord.com/api/webhooks/...",
            )
        })?;
        if let Some(avatar) = &self.avatar_url {
            http::check_base_url(avatar).map_err(|m| ConfigError::for_key("avatar_url", m))?;
        }
        let client = http::client().map_err(ConfigError::new)?;
        Ok(Discord { name: name.to_owned(), base: Secret::new(base), query, config: self, client })
    }
}

impl Discord {
    fn url(&self, path: &str, wait: bool) -> String {
        let mut params: Vec<&str> = Vec::new();
        if wait {
            params.push("wait=true");
        }
        if let Some(q) = &self.query {
            params.push(q);
        }
        let mut url = format!("{}{path}", self.base.expose());
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        url
    }

    fn payload(&self, content: &str) -> serde_json::Value {
        let mut payload = serde_json::json!({
            "content": content,
            // Run names, errors and messages come from outside: never let them ping @everyone.
            "allowed_mentions": { "parse": [] },
        });
        if let Some(username) = &self.config.username {
            payload["username"] = serde_json::Value::from(username.as_str());
        }
        if let Some(avatar) = &self.config.avatar_url {
            payload["avatar_url"] = serde_json::Value::from(avatar.as_str());
        }
        payload
    }

    /// Post a new message; its id.
    async fn post(&self, n: &Notification, content: &str) -> Result<String, DeliveryError> {
        let payload = self.payload(content);
        let request = self.client.post(self.url("", true));
        let request = match &n.image {
            Some(image) => {
                let mut payload = payload;
                payload["attachments"] = serde_json::json!([{ "id": 0, "filename": image.filename }]);
                let part = reqwest::multipart::Part::bytes(image.bytes.clone())
                    .file_name(image.filename.clone())
                    .mime_str(&image.mime)
                    .map_err(|e| {
                        DeliveryError::permanent(format!("invalid image type `{}`: {e}", image.mime))
                    })?;
                let form = reqwest::multipart::Form::new()
                    .text("payload_json", payload.to_string())
                    .part("files[0]", part);
                request.multipart(form)
            }
            None => request.json(&payload),
        };
        let response = request.send().await.map_err(|e| http::send_error("Discord", without_url(e)))?;
        let body = http::check_response(response, &http::ANSWERS).await?;
        message_id(&body)
    }

    /// Edit a message; `Ok(false)` when Discord no longer has it (deleted by someone).
    async fn edit(&self, id: &str, content: &str) -> Result<bool, DeliveryError> {
        let url = self.url(&format!("/messages/{}", http::encode_path_segment(id)), false);
        let response = self
            .client
            .patch(url)
            .json(&self.payload(content))
            .send()
            .await
            .map_err(|e| http::send_error("Discord", without_url(e)))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            tracing::info!(notifier = %self.name, message = id, "the live message is gone; posting a new one");
            return Ok(false);
        }
        http::check_response(response, &http::ANSWERS).await.map(|_| true)
    }
}

/// reqwest errors print the URL, which holds the webhook token.
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}

fn message_id(body: &[u8]) -> Result<String, DeliveryError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        DeliveryError::retryable(format!("Discord answered with a body that is not JSON: {e}"))
    })?;
    match value.get("id") {
        Some(serde_json::Value::String(id)) => Ok(id.clone()),
        Some(serde_json::Value::Number(id)) => Ok(id.to_string()),
        _ => Err(DeliveryError::retryable("Discord's answer has no message id")),
    }
}

/// Whether an event should reach phones (a new message) rather than only update the live message.
fn pings(n: &Notification) -> bool {
    !matches!(
        n.event.payload,
        Payload::RunStarted(_)
            | Payload::EpochStarted(_)
            | Payload::EpochEnded(_)
            | Payload::BatchEnded(_)
            | Payload::Heartbeat(_)
    )
}

#[async_trait]
impl Notifier for Discord {
    fn capabilities(&self) -> Capabilities {
        Capabilities { edit: self.config.live, images: true, commands: false }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let n = &*render::with_table(n, self.config.table);
        let content = fit_markdown(&n.markdown, CONTENT_LIMIT);
        let previous_live = n
            .previous
            .as_ref()
            .and_then(|r| r.0.get("live"))
            .and_then(|v| v.as_str())
            .filter(|_| self.config.live)
            .map(str::to_owned);
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, "sending to Discord");
        let mut live = None;
        if let Some(id) = &previous_live {
            if matches!(n.event.payload, Payload::Message(_)) {
                // A free-text message goes beside the run's live message, never over its table.
                live = Some(id.clone());
            } else if self.edit(id, &content).await? {
                // The edit comes first: it is idempotent, so a retry after a failed post repeats it harmlessly.
                live = Some(id.clone());
            }
        }
        let posted = if live.is_none() || pings(n) { Some(self.post(n, &content).await?) } else { None };
        if self.config.live && live.is_none() {
            live.clone_from(&posted);
        }
        let mut receipt = serde_json::Map::new();
        if let Some(live) = live {
            receipt.insert("live".into(), live.into());
        }
        if let Some(posted) = posted {
            receipt.insert("message_id".into(), posted.into());
        }
        Ok(Receipt(serde_json::Value::Object(receipt)))
    }

    async fn health_check(&self) -> Health {
        let answer = self
            .client
            .get(self.url("", false))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(without_url);
        match answer {
            Err(e) => Health::Unavailable {
                message: format!("cannot reach Discord: {}", herald_plugin::error_chain(&e)),
            },
            Ok(response) => match response.status().as_u16() {
                200..=299 => Health::Ok,
                401 | 403 | 404 => Health::Unavailable {
                    message:
                        "Discord does not know this webhook (deleted, or the URL is wrong): copy it again \
                              from the channel's Integrations settings"
                            .to_owned(),
                },
                status => {
                    Health::Degraded { message: format!("Discord answered {status} to a webhook check") }
                }
            },
        }
    }
}

/// A Markdown message cut to `limit` characters: the longest code block loses its oldest lines first (a
/// results table keeps its header line), with a note of how many were dropped; as a last resort the text is
/// cut and an open code block closed.
pub fn fit_markdown(markdown: &str, limit: usize) -> String {
    if markdown.chars().count() <= limit {
        return markdown.to_owned();
    }
    let mut segments = split_fenced(markdown);
    loop {
        let text = join_fenced(&segments);
        if text.chars().count() <= limit {
            return text;
        }
        let candidate = segments
            .iter_mut()
            .filter(|s| s.code && s.lines.len() > s.keep + 1)
            .max_by_key(|s| s.lines.iter().map(|l| l.chars().count() + 1).sum::<usize>());
        match candidate {
            Some(segment) => {
                let keep = segment.keep;
                segment.lines.remove(keep);
                segment.dropped += 1;
            }
            None => break,
        }
    }
    let text = join_fenced(&segments);
    let mut cut = http::cut_chars(&text, limit.saturating_sub(4));
    if cut.matches("```").count() % 2 == 1 {
        cut.push_str("\n```");
    }
    cut
}

struct Segment {
    code: bool,
    lines: Vec<String>,
    /// Leading lines never dropped (a table's header).
    keep: usize,
    dropped: usize,
}

fn split_fenced(markdown: &str) -> Vec<Segment> {
    let mut segments = vec![Segment { code: false, lines: Vec::new(), keep: 0, dropped: 0 }];
    for line in markdown.split('\n') {
        if line.trim_start().starts_with("```") {
            let code = !segments.last().is_some_and(|s| s.code);
            segments.push(Segment { code, lines: Vec::new(), keep: 0, dropped: 0 });
            continue;
        }
        let Some(segment) = segments.last_mut() else { continue };
        if segment.code && segment.lines.is_empty() && line.starts_with("epoch ") {
            segment.keep = 1;
        }
        segment.lines.push(line.to_owned());
    }
    segments
}

fn join_fenced(segments: &[Segment]) -> String {
    let mut out: Vec<String> = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push("```".to_owned());
        }
        for (j, line) in s.lines.iter().enumerate() {
            if s.dropped > 0 && j == s.keep {
                out.push(format!("({} earlier lines not shown)", s.dropped));
            }
            out.push(line.clone());
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use herald_plugin::parse_table;

    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
    }

    #[test]
    fn config_errors_do_not_echo_the_url() {
        let err = DiscordConfig::from_table("d", table("webhook_url = 'discord.com/api/webhooks/1/SECRET'"))
            .err()
            .expect("no scheme");
        assert_eq!(err.key.as_deref(), Some("webhook_url"));
        assert!(!err.to_string().contains("SECRET"), "{err}");
        let err = DiscordConfig::from_table("d", table("webhook_url = 'https://x/1/t'\nlife = true"))
            .err()
            .expect("typo");
        assert_eq!(err.key.as_deref(), Some("life"));
        let ok = parse_table::<DiscordConfig>(table(
            "webhook_url = 'https://discord.com/api/webhooks/1/SECRET?thread_id=9'",
        ))
        .expect("valid")
        .build("d")
        .expect("valid");
        assert!(!format!("{ok:?}").contains("SECRET"));
        assert_eq!(
            ok.url("/messages/5", false),
            "https://discord.com/api/webhooks/1/SECRET/messages/5?thread_id=9"
        );
        assert_eq!(ok.url("", true), "https://discord.com/api/webhooks/1/SECRET?wait=true&thread_id=9");
    }

    #[test]
    fn fit_keeps_the_header_and_the_latest_rows() {
        let rows: Vec<String> = (0..200).map(|i| format!("{i:<8}  0.100000    0.200000    00:05")).collect();
        let md = format!(
            "**run: epoch 200/200**\nsummary\n```\nepoch     train_loss  valid_loss  time\n{}\n```",
            rows.join("\n")
        );
        let fitted = fit_markdown(&md, 2000);
        assert!(fitted.chars().count() <= 2000, "{}", fitted.chars().count());
        assert!(fitted.starts_with("**run: epoch 200/200**\nsummary\n```\nepoch     train_loss"), "{fitted}");
        assert!(fitted.ends_with("199       0.100000    0.200000    00:05\n```"), "{fitted}");
        assert!(fitted.contains("earlier lines not shown)\n"), "{fitted}");
        assert_eq!(fit_markdown("short", 2000), "short");
    }

    #[test]
    fn fit_falls_back_to_a_cut_with_closed_fences() {
        let md = format!("**t**\n{}\n```\n{}\n```", "p".repeat(3000), "x".repeat(10));
        let fitted = fit_markdown(&md, 2000);
        assert!(fitted.chars().count() <= 2000);
        assert_eq!(fitted.matches("```").count() % 2, 0, "{fitted}");
        let md = format!("**t**\n```\n{}\n```", "y".repeat(3000));
        let fitted = fit_markdown(&md, 2000);
        assert!(fitted.chars().count() <= 2000 && fitted.ends_with("\n```"), "{fitted}");
    }
}

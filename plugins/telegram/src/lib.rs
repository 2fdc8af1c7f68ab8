//! The `telegram` notifier: a run's progress on your phone through a Telegram bot, and commands back.
//!
//! With `live = true` (the default) each run gets one live message, sent at `run_started` (with sound: the
//! phone buzzes when training starts), holding the run header and the results table in `<pre>` (`table`:
//! `compact`, the default, fits a phone held upright; `full` is fastai's layout), and edited in place with
//! `editMessageText` as epochs end (an edit makes no sound). The live message's id is kept in the
//! [`Receipt`], which the host stores with the run, so a restarted daemon keeps editing the same message. The end of a run (finished, stopped, failed), a stall or a lost process first brings the
//! live message to its final state, then goes out as a new message with sound, and at the end the loss
//! curve the host attached is sent with `sendPhoto` and a short caption. An edit Telegram calls "not
//! modified" is a success; an edit of a message someone deleted sends a fresh live message. With
//! `live = false` every notification is a new message, epoch updates without sound when `quiet_epochs`.
//!
//! Messages are HTML (the host's rendering escapes every user string); one longer than 4096 characters is
//! split at line boundaries (`text.rs`); a live message is cut with a note instead. Calls are paced to one
//! message per second per chat and 30 per second per bot, and a 429's `retry_after` is honoured exactly
//! (`pace.rs`). A delivery that sends several messages remembers which went out, so a retry after a 429
//! does not send them twice.
//!
//! With `commands = true` (the default) [`Notifier::listen`] long-polls `getUpdates` and answers `/runs`,
//! `/status`, `/stop` (confirmed with a button) and `/help` in `allowed_chats` only (`commands.rs`).
//! The daemon and the CLI use this crate through its [`TelegramConfig`] ([`NotifierType`]); retries and
//! queueing are the host's.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_event::Payload;
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, DeliveryProgress, Health, Host, Notification, Notifier,
    NotifierType, Receipt, Secret, TableLayout, render, render::escape_html,
};
use serde::Deserialize;

mod api;
mod commands;
mod pace;
pub mod setup;
pub mod text;
mod watch;

pub use api::Chat;
use api::{Api, Failure};
pub use pace::Pacer;

/// Telegram's public Bot API server.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// Configuration of a `telegram` notifier (`[[notifier]]` with `type = "telegram"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot token from @BotFather (`123456:ABC...`); keep it secret (`token_file`, or `${VAR}`).
    pub token: Secret,
    /// The chat to notify: a numeric id (`herald setup telegram` finds it) or a public channel's `@name`.
    pub chat_id: ChatIdValue,
    /// The Bot API server (default `https://api.telegram.org`; tests and self-hosted Bot API servers set it).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// One message per run, edited in place as epochs end (default true); false sends every notification.
    #[serde(default = "herald_plugin::default_true")]
    pub live: bool,
    /// Take commands (`/runs`, `/status`, `/stop`, `/help`) from the allowed chats (default true).
    #[serde(default = "herald_plugin::default_true")]
    pub commands: bool,
    /// Chats whose commands are answered (default: `[chat_id]`); commands from other chats are ignored
    /// and logged.
    #[serde(default)]
    pub allowed_chats: Option<Vec<i64>>,
    /// Epoch updates without sound (default true); start, finish and failure always ring.
    #[serde(default = "herald_plugin::default_true")]
    pub quiet_epochs: bool,
    /// The results table: `"compact"` (default; at most 34 characters wide and the last 10 epochs, for a
    /// phone held upright) or `"full"` (fastai's layout, as the trainer prints it).
    #[serde(default)]
    pub table: TableLayout,
}

/// `chat_id` as written: a number, or a string (`"-100123"` or `"@channel"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ChatIdValue {
    /// A bare number (`chat_id = -100123`).
    Number(i64),
    /// A string: a number in quotes or a channel's `@username`.
    Text(String),
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

/// Parse a chat id: an integer, or `@name` for a public channel.
pub fn parse_chat(value: &ChatIdValue) -> Result<Chat, String> {
    match value {
        ChatIdValue::Number(n) => Ok(Chat::Id(*n)),
        ChatIdValue::Text(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<i64>() {
                Ok(Chat::Id(n))
            } else if s.len() > 1
                && s.starts_with('@')
                && s[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                Ok(Chat::Username(s.to_owned()))
            } else {
                Err(format!(
                    "`{s}` is not a chat id: use the number `herald setup telegram` prints, or @channelname"
                ))
            }
        }
    }
}

/// Check a bot token's shape (`<digits>:<35 or so characters>`) without echoing it.
fn check_token(token: &str) -> Result<(), String> {
    let ok = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !secret.is_empty()
            && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err("not a bot token: expected `<digits>:<letters>` as @BotFather gives it".to_owned())
    }
}

/// The `telegram` notifier.
pub struct Telegram {
    name: String,
    config: TelegramConfig,
    chat: Chat,
    allowed: HashSet<i64>,
    api: Api,
    /// Messages already sent by an earlier attempt of a delivery that sends several, with their ids.
    progress: DeliveryProgress<(Step, i32)>,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The parts of a delivery, remembered across its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Live,
    Message,
    Photo,
}

impl NotifierType for TelegramConfig {
    const KIND: &'static str = "telegram";
    const DESCRIPTION: &'static str = "Telegram bot: one live message per run edited as epochs end, the loss curve, /runs /status /stop from the phone";
    type Notifier = Telegram;

    /// Check the configuration and set up the client (nothing is sent).
    fn build(self, name: &str) -> Result<Telegram, ConfigError> {
        check_token(self.token.expose()).map_err(|m| ConfigError::for_key("token", m))?;
        let chat = parse_chat(&self.chat_id).map_err(|m| ConfigError::for_key("chat_id", m))?;
        let api_url =
            herald_http::check_base_url(&self.api_url).map_err(|m| ConfigError::for_key("api_url", m))?;
        let url: reqwest::Url =
            api_url.parse().map_err(|e| ConfigError::for_key("api_url", format!("not a valid URL: {e}")))?;
        let allowed: HashSet<i64> = match (&self.allowed_chats, &chat) {
            (Some(list), _) => list.iter().copied().collect(),
            (None, Chat::Id(id)) => [*id].into_iter().collect(),
            (None, Chat::Username(_)) => HashSet::new(),
        };
        // Long polls wait up to COMMAND_POLL; the client must wait longer than that.
        let client = teloxide::net::default_reqwest_settings()
            .timeout(commands::POLL_TIMEOUT + Duration::from_secs(30))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new(format!("cannot set up the HTTP client: {e}")))?;
        let bot = teloxide::Bot::with_client(self.token.expose(), client).set_api_url(url);
        let api = Api { bot, pacer: Pacer::for_bot(self.token.expose()) };
        Ok(Telegram {
            name: name.to_owned(),
            config: self,
            chat,
            allowed,
            api,
            progress: DeliveryProgress::new(),
        })
    }
}

impl Telegram {
    /// The chat notifications go to.
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// Send a new message (split when too long); the id of its first part.
    async fn send_new(&self, html: &str, plain: &str, silent: bool) -> Result<i32, DeliveryError> {
        let parts = text::split(html, text::MESSAGE_LIMIT, text::MAX_PARTS);
        let mut first = None;
        for part in &parts {
            let id = match self.api.send_html(&self.chat, part, silent, None).await {
                Ok(id) => id,
                Err(Failure::BadMarkup(e)) => {
                    tracing::warn!(notifier = %self.name, error = %e, "Telegram cannot parse the HTML; sending plain text");
                    return self.send_plain(plain, silent).await;
                }
                Err(Failure::TooLong) => {
                    tracing::warn!(notifier = %self.name, "Telegram says the message is too long; sending it cut");
                    return self.send_plain(plain, silent).await;
                }
                Err(f) => return Err(f.into_error()),
            };
            first.get_or_insert(id);
            // Later parts of one message do not ring again.
        }
        first.ok_or_else(|| DeliveryError::permanent("nothing to send: the message is empty"))
    }

    async fn send_plain(&self, plain: &str, silent: bool) -> Result<i32, DeliveryError> {
        let cut: String = plain.chars().take(text::MESSAGE_LIMIT - 100).collect();
        let cut = if cut.len() < plain.len() { format!("{cut}\n… (cut)") } else { cut };
        self.api.send_plain(&self.chat, &cut, silent).await.map_err(Failure::into_error)
    }

    /// Bring the live message to `html`; `Ok(false)` when it is gone.
    async fn edit_live(&self, id: i32, html: &str) -> Result<bool, DeliveryError> {
        let html = text::cut(html, text::MESSAGE_LIMIT);
        match self.api.edit_html(&self.chat, id, &html, None).await {
            Ok(()) | Err(Failure::NotModified) => Ok(true),
            Err(Failure::NotFound) => {
                tracing::info!(notifier = %self.name, message = id, "the live message is gone; sending a new one");
                Ok(false)
            }
            Err(f) => Err(f.into_error()),
        }
    }
}

/// How an event shows on the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The run begins: the live message is created, with sound.
    Start,
    /// An epoch ended: the live message is edited (quietly).
    Progress,
    /// Finer progress (an epoch or batch started, a heartbeat), when routed here: it would replace the
    /// results table in the live message, so only `live = false` sends it (quietly).
    Tick,
    /// The run ended, stalled or was lost: the live message's final state, and a new message with sound.
    End,
    /// A message of its own.
    Message,
}

fn kind(payload: &Payload) -> Kind {
    match payload {
        Payload::RunStarted(_) => Kind::Start,
        Payload::EpochEnded(_) => Kind::Progress,
        Payload::EpochStarted(_) | Payload::BatchEnded(_) | Payload::Heartbeat(_) => Kind::Tick,
        Payload::RunFinished(_) | Payload::RunFailed(_) | Payload::RunStalled(_) | Payload::RunLost(_) => {
            Kind::End
        }
        // Alerts are new messages with sound, never a silent edit of the live message.
        Payload::Message(_) | Payload::Alert(_) => Kind::Message,
        // A job's rank events: a new message with sound; the job's live message goes on.
        Payload::RankStalled(_)
        | Payload::RankLost(_)
        | Payload::RankFailed(_)
        | Payload::RankSlow(_)
        | Payload::RanksMissing(_) => Kind::Message,
    }
}

/// The live message id in a receipt.
fn live_id(receipt: Option<&Receipt>) -> Option<i32> {
    receipt?.0.get("live")?.as_i64().and_then(|v| i32::try_from(v).ok())
}

/// The photo's caption: the title and the first line of the summary, cut to 1024 characters.
fn caption(n: &Notification) -> String {
    let first = n.text.lines().next().unwrap_or_default();
    let html = format!(
        "<b>{}</b>\n{}\nloss curve: smoothed train loss per batch, valid loss per epoch",
        escape_html(&n.title),
        escape_html(first)
    );
    text::cut(&html, text::CAPTION_LIMIT)
}

#[async_trait]
impl Notifier for Telegram {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edit: self.config.live,
            images: true,
            commands: self.config.commands && !self.allowed.is_empty(),
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let n = &*render::with_table(n, self.config.table);
        let done = self.progress.done(n);
        let done_id = |step: Step| done.iter().find(|(s, _)| *s == step).map(|(_, id)| *id);
        let kind = kind(&n.event.payload);
        let mut live = if self.config.live { live_id(n.previous.as_ref()) } else { None };
        let mut sent: Vec<i32> = Vec::new();
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, kind = ?kind, live = ?live, "sending to Telegram");

        match (kind, self.config.live) {
            (Kind::Start, true) => {
                // A new live message per run start (a resumed run starts a fresh one).
                let id = match done_id(Step::Live) {
                    Some(id) => id,
                    None => {
                        let id = self.send_new(&n.html, &n.text, false).await?;
                        self.progress.remember(n, (Step::Live, id));
                        id
                    }
                };
                live = Some(id);
                sent.push(id);
            }
            (Kind::Progress, true) => {
                let edited = match live {
                    Some(id) => self.edit_live(id, &n.html).await?,
                    None => false,
                };
                if !edited {
                    let id = match done_id(Step::Live) {
                        Some(id) => id,
                        None => {
                            let html = text::cut(&n.html, text::MESSAGE_LIMIT);
                            let id = self.send_new(&html, &n.text, self.config.quiet_epochs).await?;
                            self.progress.remember(n, (Step::Live, id));
                            id
                        }
                    };
                    live = Some(id);
                    sent.push(id);
                }
            }
            (Kind::End, true) => {
                if let Some(id) = live
                    && done_id(Step::Live).is_none()
                {
                    // The final state stays in the live message; a gone one is not recreated (the new message
                    // below says it all).
                    if self.edit_live(id, &n.html).await? {
                        self.progress.remember(n, (Step::Live, id));
                    } else {
                        live = None;
                    }
                }
                let id = match done_id(Step::Message) {
                    Some(id) => id,
                    None => {
                        let id = self.send_new(&n.html, &n.text, false).await?;
                        self.progress.remember(n, (Step::Message, id));
                        id
                    }
                };
                sent.push(id);
            }
            (Kind::Tick, true) => {}
            (Kind::Progress | Kind::Tick, false) => {
                sent.push(self.send_new(&n.html, &n.text, self.config.quiet_epochs).await?);
            }
            (Kind::Start | Kind::End | Kind::Message, _) => {
                let id = match done_id(Step::Message) {
                    Some(id) => id,
                    None => {
                        let id = self.send_new(&n.html, &n.text, false).await?;
                        self.progress.remember(n, (Step::Message, id));
                        id
                    }
                };
                sent.push(id);
            }
        }
        if let Some(image) = &n.image
            && done_id(Step::Photo).is_none()
        {
            let id = self
                .api
                .send_photo(&self.chat, image.bytes.clone(), &image.filename, &caption(n), true)
                .await
                .map_err(Failure::into_error)?;
            self.progress.remember(n, (Step::Photo, id));
            sent.push(id);
        }
        self.progress.forget(n);
        let mut receipt = serde_json::Map::new();
        receipt.insert("chat_id".into(), self.chat.to_json());
        if let Some(live) = live {
            receipt.insert("live".into(), live.into());
        }
        if !sent.is_empty() {
            receipt.insert("sent".into(), sent.into());
        }
        Ok(Receipt(serde_json::Value::Object(receipt)))
    }

    async fn listen(&self, host: Arc<dyn Host>) -> Result<(), DeliveryError> {
        if !self.capabilities().commands {
            return Ok(());
        }
        commands::listen(&self.name, &self.api, &self.chat, &self.allowed, host, self.config.table).await
    }

    async fn health_check(&self) -> Health {
        match tokio::time::timeout(Duration::from_secs(10), self.api.me()).await {
            Ok(Ok(_)) => Health::Ok,
            Ok(Err(e)) if e.retryable => Health::Degraded { message: e.message },
            Ok(Err(e)) => Health::Unavailable { message: e.message },
            Err(_) => {
                Health::Degraded { message: "the Telegram Bot API did not answer getMe within 10 s".into() }
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
    fn config_errors_name_the_key_and_hide_the_token() {
        let check = |text: &str, key: &str| {
            let err = TelegramConfig::from_table("t", table(text)).err().expect(text);
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
            assert!(!err.to_string().contains("SECRET"), "{err}");
        };
        check("token = 'SECRET'\nchat_id = 1", "token");
        check("token = '1:SECRET'\nchat_id = 'my chat'", "chat_id");
        check("token = '1:SECRET'\nchat_id = 1\napi_url = 'api.telegram.org'", "api_url");
        check("token = '1:SECRET'\nchat_id = 1\nlife = true", "life");
        check("chat_id = 1", "token");
        let ok = parse_table::<TelegramConfig>(table("token = '1:SECRET'\nchat_id = '-100'"))
            .expect("valid")
            .build("t")
            .expect("valid");
        assert_eq!(ok.chat, Chat::Id(-100));
        assert!(!format!("{ok:?}").contains("SECRET"));
        let caps = ok.capabilities();
        assert!(caps.edit && caps.images && caps.commands);
        let channel = parse_table::<TelegramConfig>(table("token = '1:S'\nchat_id = '@news'"))
            .expect("valid")
            .build("t")
            .expect("valid");
        assert_eq!(channel.chat, Chat::Username("@news".into()));
        assert!(!channel.capabilities().commands, "a channel takes no commands unless allowed_chats says");
    }
}

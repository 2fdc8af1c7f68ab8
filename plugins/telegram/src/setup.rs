//! What `herald setup telegram` needs from the Bot API: who the bot is (`getMe`), and the chat of the first
//! message someone sends it (`getUpdates`), confirmed so the daemon does not see it again. The CLI prints the
//! instructions and writes the configuration; this module only asks Telegram.

use std::time::{Duration, Instant};

use herald_plugin::DeliveryError;
use teloxide::types::UpdateKind;

use crate::api::Api;
use crate::pace::Pacer;

/// The chat a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundChat {
    /// The chat's numeric id: the value to write as `chat_id`.
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    pub kind: String,
    /// The chat's title, or the person's name.
    pub title: String,
    /// Who wrote (`@username` or a name).
    pub from: String,
}

/// A Bot API client for setup.
pub struct Setup {
    api: Api,
}

impl Setup {
    /// Check the token's shape and the URL (nothing is sent).
    pub fn new(token: &str, api_url: &str) -> Result<Setup, String> {
        crate::check_token(token)?;
        let url = herald_http::check_base_url(api_url)?;
        let url: reqwest::Url = url.parse().map_err(|e| format!("`{api_url}` is not a valid URL: {e}"))?;
        let client = teloxide::net::default_reqwest_settings()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        let bot = teloxide::Bot::with_client(token, client).set_api_url(url);
        Ok(Setup { api: Api { bot, pacer: Pacer::for_bot(token) } })
    }

    /// The bot's `@username` (`getMe`): checks the token.
    pub async fn bot_username(&self) -> Result<String, DeliveryError> {
        self.api.me().await
    }

    /// Wait up to `timeout` for a message to the bot; its chat. Updates read are confirmed.
    pub async fn first_chat(&self, timeout: Duration) -> Result<Option<FoundChat>, DeliveryError> {
        let deadline = Instant::now() + timeout;
        let mut offset = 0;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(20));
            let updates = self.api.updates(offset, left.max(Duration::from_secs(1))).await?;
            let mut found = None;
            for update in updates {
                offset = offset.max(i32::try_from(update.id.0).unwrap_or(i32::MAX).saturating_add(1));
                if found.is_some() {
                    continue;
                }
                if let UpdateKind::Message(m) = update.kind {
                    let chat = &m.chat;
                    let kind = if chat.is_private() {
                        "private"
                    } else if chat.is_supergroup() {
                        "supergroup"
                    } else if chat.is_group() {
                        "group"
                    } else {
                        "channel"
                    };
                    let title = chat
                        .title()
                        .map(str::to_owned)
                        .or_else(|| chat.first_name().map(str::to_owned))
                        .unwrap_or_default();
                    let from = m
                        .from
                        .as_ref()
                        .map(|u| {
                            u.username.as_ref().map_or_else(|| u.first_name.clone(), |n| format!("@{n}"))
                        })
                        .unwrap_or_default();
                    found = Some(FoundChat { id: chat.id.0, kind: kind.to_owned(), title, from });
                }
            }
            if found.is_some() {
                // Confirm what was read, so that the daemon's command listener does not answer it.
                let _ = self.api.updates(offset, Duration::ZERO).await;
                return Ok(found);
            }
        }
        Ok(None)
    }
}

//! The Bot API calls Herald makes, over teloxide, paced by [`Pacer`] and with Telegram's answers mapped to
//! what the caller must do: an edit that changed nothing is fine, an edit of a deleted message means send a
//! new one, markup Telegram cannot parse or a message too long means fall back, a 429 waits exactly
//! `retry_after`, and the rest become [`DeliveryError`]s that say whether a retry may help.
//!
//! Used by the notifier (`lib.rs`) and the command listener (`commands.rs`); it decides nothing about what to
//! send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_plugin::DeliveryError;
use teloxide::payloads::setters::*;
use teloxide::requests::{Request, Requester};
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQueryId, ChatId, InlineKeyboardMarkup, InputFile, MessageId,
    ParseMode, Recipient, Update,
};
use teloxide::{ApiError, Bot, RequestError};

use crate::pace::Pacer;

/// A chat: its numeric id, or a public channel's `@username`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Chat {
    /// A numeric chat id (negative for groups and channels).
    Id(i64),
    /// A public channel's username, with its `@` (`@news`).
    Username(String),
}

impl Chat {
    /// The chat as teloxide addresses a request to it.
    pub fn recipient(&self) -> Recipient {
        match self {
            Chat::Id(id) => Recipient::Id(ChatId(*id)),
            Chat::Username(name) => Recipient::ChannelUsername(name.clone()),
        }
    }

    /// The key the pacer and receipts use.
    pub fn key(&self) -> String {
        match self {
            Chat::Id(id) => id.to_string(),
            Chat::Username(name) => name.clone(),
        }
    }

    /// The chat as a receipt stores it (`chat_id`): the id as a number, the username as a string.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Chat::Id(id) => serde_json::Value::from(*id),
            Chat::Username(name) => serde_json::Value::from(name.as_str()),
        }
    }
}

/// What a call's failure means to the caller.
#[derive(Debug)]
pub enum Failure {
    /// `editMessageText` with the text the message already has.
    NotModified,
    /// The message to edit is gone (deleted by someone).
    NotFound,
    /// Telegram could not parse the HTML (a rendering bug): send plain text instead.
    BadMarkup(String),
    /// Too long after all (Telegram counts differently than expected): send a shorter text.
    TooLong,
    /// Anything else.
    Error(DeliveryError),
}

impl From<DeliveryError> for Failure {
    fn from(e: DeliveryError) -> Failure {
        Failure::Error(e)
    }
}

impl Failure {
    /// The failure as a delivery error (for the cases the caller does not handle itself).
    pub fn into_error(self) -> DeliveryError {
        match self {
            Failure::NotModified => DeliveryError::permanent("Telegram says the message is not modified"),
            Failure::NotFound => DeliveryError::permanent("Telegram says the message to edit is gone"),
            Failure::BadMarkup(e) => DeliveryError::permanent(format!(
                "Telegram cannot parse the message's HTML ({e}): report this bug"
            ))
            .with_code("telegram_markup"),
            Failure::TooLong => {
                DeliveryError::permanent("Telegram says the message is too long: report this bug")
                    .with_code("telegram_too_long")
            }
            Failure::Error(e) => e,
        }
    }
}

/// A bot with its pacer.
#[derive(Clone)]
pub struct Api {
    pub bot: Bot,
    pub pacer: Arc<Pacer>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // teloxide's Bot prints its token: never show it.
        f.write_str("Api { bot: *** }")
    }
}

/// Map a teloxide error to what it means; `chat` is held back on a 429.
fn failure(api: &Api, chat: Option<&Chat>, err: RequestError) -> Failure {
    match err {
        RequestError::Api(ApiError::MessageNotModified) => Failure::NotModified,
        RequestError::Api(ApiError::MessageToEditNotFound)
        | RequestError::Api(ApiError::MessageIdInvalid) => Failure::NotFound,
        RequestError::Api(ApiError::CantParseEntities(e)) => Failure::BadMarkup(e),
        RequestError::Api(ApiError::MessageIsTooLong)
        | RequestError::Api(ApiError::EditedMessageIsTooLong) => Failure::TooLong,
        other => Failure::Error(error(api, chat, other)),
    }
}

/// A teloxide error as a [`DeliveryError`]; a 429 holds `chat` (or, without one, the bot) in the pacer.
pub fn error(api: &Api, chat: Option<&Chat>, err: RequestError) -> DeliveryError {
    match err {
        RequestError::RetryAfter(secs) => {
            let after = secs.duration();
            api.pacer.hold(chat.map(Chat::key).as_deref(), after, Instant::now());
            DeliveryError::retryable(format!(
                "Telegram's flood control asks to wait {} s (rate limited; will retry)",
                after.as_secs()
            ))
            .with_code("http_429")
            .with_retry_after(after)
        }
        RequestError::MigrateToChatId(id) => DeliveryError::permanent(format!(
            "the group became a supergroup: set chat_id = {} in the configuration",
            id.0
        ))
        .with_code("telegram_migrated"),
        RequestError::Network(e) => {
            let code = if e.is_timeout() { "timeout" } else { "network" };
            DeliveryError::retryable(format!("cannot reach the Telegram Bot API: {}", chain(&*e)))
                .with_code(code)
        }
        RequestError::InvalidJson { raw, .. } => {
            let raw: String = raw.chars().take(200).collect();
            DeliveryError::retryable(format!(
                "the Telegram Bot API answered something that is not its JSON: {raw}"
            ))
            .with_code("telegram_bad_answer")
        }
        RequestError::Io(e) => {
            DeliveryError::retryable(format!("I/O error talking to Telegram: {e}")).with_code("io")
        }
        RequestError::Api(api_error) => api_failure(api_error),
    }
}

fn api_failure(e: ApiError) -> DeliveryError {
    let text = e.to_string();
    match e {
        ApiError::InvalidToken => {
            DeliveryError::permanent("Telegram does not know this bot token: copy it again from @BotFather")
                .with_code("telegram_token")
        }
        ApiError::ChatNotFound => DeliveryError::permanent(
            "Telegram does not know chat_id, or the bot is not in it: send the bot a message first \
             (`herald setup telegram` finds the id)",
        )
        .with_code("telegram_chat"),
        ApiError::BotBlocked
        | ApiError::BotKicked
        | ApiError::BotKickedFromSupergroup
        | ApiError::BotKickedFromChannel
        | ApiError::UserDeactivated
        | ApiError::CantInitiateConversation
        | ApiError::CantTalkWithBots
        | ApiError::NotEnoughRightsToPostMessages
        | ApiError::GroupDeactivated => DeliveryError::permanent(format!(
            "Telegram refuses to deliver to this chat ({text}): unblock the bot or add it to the chat again"
        ))
        .with_code("telegram_forbidden"),
        ApiError::Unknown(description) => {
            let d = description.to_ascii_lowercase();
            if d.contains("unauthorized") || d == "not found" {
                DeliveryError::permanent(
                    "Telegram does not know this bot token (or api_url is wrong): copy the token again from @BotFather",
                )
                .with_code("telegram_token")
            } else if d.contains("internal")
                || d.contains("gateway")
                || d.contains("timeout")
                || d.contains("too many")
            {
                DeliveryError::retryable(format!("Telegram failed: {description}; will retry"))
                    .with_code("telegram_server")
            } else {
                DeliveryError::permanent(format!("Telegram refused the message: {description}"))
                    .with_code("telegram_refused")
            }
        }
        other => DeliveryError::permanent(format!("Telegram refused the message: {other}"))
            .with_code("telegram_refused"),
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let out = herald_plugin::error_chain(err);
    // reqwest puts the URL, which holds the token, into its messages.
    match out.find("/bot") {
        Some(i) => {
            let rest = &out[i + 4..];
            let end = rest.find(['/', ')', ' ']).map_or(out.len(), |j| i + 4 + j);
            format!("{}/bot***{}", &out[..i], &out[end..])
        }
        None => out,
    }
}

impl Api {
    /// Send an HTML message; its id.
    pub async fn send_html(
        &self,
        chat: &Chat,
        html: &str,
        silent: bool,
        markup: Option<InlineKeyboardMarkup>,
    ) -> Result<i32, Failure> {
        self.pacer.wait(&chat.key()).await;
        let mut request = self
            .bot
            .send_message(chat.recipient(), html)
            .parse_mode(ParseMode::Html)
            .disable_notification(silent);
        if let Some(m) = markup {
            request = request.reply_markup(m);
        }
        match request.send().await {
            Ok(m) => Ok(m.id.0),
            Err(e) => Err(failure(self, Some(chat), e)),
        }
    }

    /// Send plain text (no parse mode); its id.
    pub async fn send_plain(&self, chat: &Chat, text: &str, silent: bool) -> Result<i32, Failure> {
        self.pacer.wait(&chat.key()).await;
        match self.bot.send_message(chat.recipient(), text).disable_notification(silent).send().await {
            Ok(m) => Ok(m.id.0),
            Err(e) => Err(failure(self, Some(chat), e)),
        }
    }

    /// Replace a message's text (and its buttons: `None` removes them).
    pub async fn edit_html(
        &self,
        chat: &Chat,
        id: i32,
        html: &str,
        markup: Option<InlineKeyboardMarkup>,
    ) -> Result<(), Failure> {
        self.pacer.wait(&chat.key()).await;
        let mut request =
            self.bot.edit_message_text(chat.recipient(), MessageId(id), html).parse_mode(ParseMode::Html);
        if let Some(m) = markup {
            request = request.reply_markup(m);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(failure(self, Some(chat), e)),
        }
    }

    /// Send a photo with an HTML caption; its id.
    pub async fn send_photo(
        &self,
        chat: &Chat,
        bytes: Vec<u8>,
        filename: &str,
        caption: &str,
        silent: bool,
    ) -> Result<i32, Failure> {
        self.pacer.wait(&chat.key()).await;
        let file = InputFile::memory(bytes).file_name(filename.to_owned());
        let request = self
            .bot
            .send_photo(chat.recipient(), file)
            .caption(caption)
            .parse_mode(ParseMode::Html)
            .disable_notification(silent);
        match request.send().await {
            Ok(m) => Ok(m.id.0),
            Err(e) => Err(failure(self, Some(chat), e)),
        }
    }

    pub async fn answer_callback(&self, id: &str, text: &str) -> Result<(), DeliveryError> {
        self.bot
            .answer_callback_query(CallbackQueryId(id.to_owned()))
            .text(text)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error(self, None, e))
    }

    pub async fn set_commands(&self, commands: &[(&str, &str)]) -> Result<(), DeliveryError> {
        let list: Vec<BotCommand> = commands.iter().map(|(c, d)| BotCommand::new(*c, *d)).collect();
        self.bot.set_my_commands(list).send().await.map(|_| ()).map_err(|e| error(self, None, e))
    }

    /// Long-poll for updates from `offset`, waiting up to `timeout` for one.
    pub async fn updates(&self, offset: i32, timeout: Duration) -> Result<Vec<Update>, DeliveryError> {
        self.bot
            .get_updates()
            .offset(offset)
            .timeout(timeout.as_secs() as u32)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
            .send()
            .await
            .map_err(|e| error(self, None, e))
    }

    /// The bot's username (`getMe`).
    pub async fn me(&self) -> Result<String, DeliveryError> {
        self.bot.get_me().send().await.map(|me| me.username().to_owned()).map_err(|e| error(self, None, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_hide_the_token() {
        #[derive(Debug)]
        struct E(&'static str);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {}
        let shown = chain(&E("error sending request for url (http://127.0.0.1:9/bot123:SECRET/SendMessage)"));
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("/bot***/SendMessage"), "{shown}");
    }
}

//! A fake Telegram Bot API server.
//!
//! `POST {url}/bot{token}/{method}` with the method name in any case (teloxide sends `SendMessage`, curl
//! users `sendMessage`), parameters as JSON, a form, multipart or the query string. It checks what Telegram
//! checks: the token (401), HTML parse mode (400 `can't parse entities`), 1..4096 characters of visible text
//! (UTF-16 units), captions up to 1024, `editMessageText` of a message that exists (`message to edit not
//! found`) with new content (`message is not modified`). It keeps the messages of each chat, serves queued
//! updates (user messages, button presses) by `offset` with long polling (a second `getUpdates` while one is
//! open gets 409 Conflict, as from Telegram: one poller per bot), answers 429 with `retry_after` when
//! told to, and records every call.

mod api;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::Params;

/// The bot's own user id.
pub const BOT_USER_ID: i64 = 7_000_001;

/// One call as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Canonical method name (`sendMessage`), whatever case it was sent in.
    pub method: String,
    /// The method name as it appeared in the path (`SendMessage`).
    pub sent_as: String,
    /// The call's parameters, however they were sent.
    pub params: Params,
    /// The HTTP status answered.
    pub status: u16,
    /// The answer's `description` when it failed.
    pub error: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

impl Call {
    /// The `chat_id` parameter, when numeric.
    pub fn chat_id(&self) -> Option<i64> {
        self.params.i64("chat_id")
    }

    /// The `text` parameter.
    pub fn text(&self) -> Option<String> {
        self.params.str("text")
    }

    /// Whether the fake answered 200.
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

/// A message in a chat, as it stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The chat it is in.
    pub chat_id: i64,
    /// Its id within the chat.
    pub message_id: i64,
    /// Sent by the bot (false: a user's message).
    pub from_bot: bool,
    /// The HTML (or plain text) as last sent or edited.
    pub html: String,
    /// What the phone shows (tags removed, entities decoded).
    pub text: String,
    /// Sent with `disable_notification` (no sound).
    pub silent: bool,
    /// A photo's size in bytes (`sendPhoto`), with the text being its caption.
    pub photo: Option<usize>,
    /// How many times it was edited.
    pub edits: u32,
    /// The inline keyboard as last sent or edited, if any.
    pub reply_markup: Option<Value>,
}

/// A canned failure for the next calls of a method.
#[derive(Debug, Clone)]
struct Failure {
    /// Canonical method name, or `None` for any method but `getUpdates`.
    method: Option<String>,
    status: u16,
    description: String,
    retry_after: Option<u32>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    messages: BTreeMap<(i64, i64), Message>,
    next_message_id: i64,
    updates: VecDeque<Value>,
    next_update_id: i64,
    failures: VecDeque<Failure>,
    commands: Option<Value>,
    callback_answers: Vec<Params>,
    /// `getUpdates` calls being answered now.
    polls: usize,
    /// `getUpdates` calls answered 409 because another was being answered.
    conflicts: usize,
    /// `getUpdates` calls taken (not answered 409), counted when they arrive.
    polls_taken: usize,
}

/// The fake Bot API; clone freely (all clones share the state).
#[derive(Clone)]
pub struct FakeTelegram {
    /// Base URL to give as `api_url` (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The token it accepts.
    pub token: String,
    state: Arc<Mutex<State>>,
    updates: Arc<Notify>,
}

impl FakeTelegram {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many `getUpdates` calls were answered 409 because another poll of the bot was open.
    pub fn conflicts(&self) -> usize {
        self.state().conflicts
    }

    /// How many `getUpdates` calls arrived and were taken (a long poll counts at once, not when answered as
    /// [`calls`](FakeTelegram::calls) does).
    pub fn polls_taken(&self) -> usize {
        self.state().polls_taken
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls of one method (canonical name), in order.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.state().calls.iter().filter(|c| c.method == method).cloned().collect()
    }

    /// The successful calls of one method.
    pub fn ok_calls_to(&self, method: &str) -> Vec<Call> {
        self.calls_to(method).into_iter().filter(Call::ok).collect()
    }

    /// The messages of a chat as they stand now, oldest first.
    pub fn messages(&self, chat_id: i64) -> Vec<Message> {
        self.state()
            .messages
            .range((chat_id, i64::MIN)..=(chat_id, i64::MAX))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The bot's messages in a chat, oldest first.
    pub fn bot_messages(&self, chat_id: i64) -> Vec<Message> {
        self.messages(chat_id).into_iter().filter(|m| m.from_bot).collect()
    }

    /// The commands the bot registered with `setMyCommands`.
    pub fn commands(&self) -> Option<Value> {
        self.state().commands.clone()
    }

    /// The `answerCallbackQuery` calls' parameters.
    pub fn callback_answers(&self) -> Vec<Params> {
        self.state().callback_answers.clone()
    }

    /// Answer the next `times` calls of `method` (canonical name; `None`: any method but `getUpdates`) with
    /// 429 and `retry_after`, as Telegram's flood control does.
    pub fn fail_with_429(&self, method: Option<&str>, times: usize, retry_after: u32) {
        let mut st = self.state();
        for _ in 0..times {
            st.failures.push_back(Failure {
                method: method.map(str::to_owned),
                status: 429,
                description: format!("Too Many Requests: retry after {retry_after}"),
                retry_after: Some(retry_after),
            });
        }
    }

    /// Answer the next `times` calls of `method` with this status and description.
    pub fn fail_with(&self, method: Option<&str>, times: usize, status: u16, description: &str) {
        let mut st = self.state();
        for _ in 0..times {
            st.failures.push_back(Failure {
                method: method.map(str::to_owned),
                status,
                description: description.to_owned(),
                retry_after: None,
            });
        }
    }

    /// Delete a message (as a user would), so that editing it fails.
    pub fn delete_message(&self, chat_id: i64, message_id: i64) {
        self.state().messages.remove(&(chat_id, message_id));
    }

    /// A user writes `text` in a chat; it reaches the bot as an update. Returns the message id.
    pub fn user_message(&self, chat_id: i64, user_id: i64, text: &str) -> i64 {
        let id = {
            let mut st = self.state();
            st.next_message_id += 1;
            let message_id = st.next_message_id;
            st.messages.insert(
                (chat_id, message_id),
                Message {
                    chat_id,
                    message_id,
                    from_bot: false,
                    html: text.to_owned(),
                    text: text.to_owned(),
                    silent: false,
                    photo: None,
                    edits: 0,
                    reply_markup: None,
                },
            );
            let mut message = json!({
                "message_id": message_id,
                "date": unix_now(),
                "chat": chat_json(chat_id),
                "from": user_json(user_id),
                "text": text,
            });
            if text.starts_with('/') {
                let len = text.split_whitespace().next().map_or(0, |c| c.encode_utf16().count());
                message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
            }
            st.next_update_id += 1;
            let update_id = st.next_update_id;
            st.updates.push_back(json!({"update_id": update_id, "message": message}));
            message_id
        };
        self.updates.notify_waiters();
        id
    }

    /// A user presses an inline keyboard button with `data` under the bot's message `message_id`.
    /// Returns the callback query id.
    pub fn press_button(&self, chat_id: i64, message_id: i64, user_id: i64, data: &str) -> String {
        let id = {
            let mut st = self.state();
            let message =
                st.messages.get(&(chat_id, message_id)).map(|m| message_json(m, None)).unwrap_or_else(
                    || json!({"message_id": message_id, "date": 0, "chat": chat_json(chat_id)}),
                );
            st.next_update_id += 1;
            let update_id = st.next_update_id;
            let query_id = format!("cq{update_id}");
            st.updates.push_back(json!({
                "update_id": update_id,
                "callback_query": {
                    "id": query_id,
                    "from": user_json(user_id),
                    "message": message,
                    "chat_instance": format!("ci{chat_id}"),
                    "data": data,
                }
            }));
            query_id
        };
        self.updates.notify_waiters();
        id
    }

    /// Updates not yet confirmed by an offset.
    pub fn pending_updates(&self) -> usize {
        self.state().updates.len()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn chat_json(chat_id: i64) -> Value {
    if chat_id < 0 {
        json!({"id": chat_id, "type": "group", "title": format!("group {chat_id}")})
    } else {
        json!({"id": chat_id, "type": "private", "first_name": format!("user{chat_id}")})
    }
}

fn user_json(user_id: i64) -> Value {
    json!({"id": user_id, "is_bot": false, "first_name": format!("user{user_id}"), "username": format!("user{user_id}")})
}

fn bot_json() -> Value {
    json!({"id": BOT_USER_ID, "is_bot": true, "first_name": "Herald", "username": "herald_test_bot"})
}

fn message_json(m: &Message, edit_date: Option<u64>) -> Value {
    let mut v = json!({
        "message_id": m.message_id,
        "date": unix_now(),
        "chat": chat_json(m.chat_id),
        "from": if m.from_bot { bot_json() } else { user_json(m.chat_id) },
    });
    match m.photo {
        Some(size) => {
            v["photo"] = json!([{"file_id": format!("photo{}", m.message_id), "file_unique_id": format!("u{}", m.message_id), "width": 800, "height": 500, "file_size": size}]);
            if !m.text.is_empty() {
                v["caption"] = json!(m.text);
            }
        }
        None => v["text"] = json!(m.text),
    }
    if let Some(d) = edit_date {
        v["edit_date"] = json!(d);
    }
    if let Some(markup) = &m.reply_markup {
        v["reply_markup"] = markup.clone();
    }
    v
}

#[cfg(test)]
mod tests;

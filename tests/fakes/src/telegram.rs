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

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{Params, html, read_request};

/// The methods the fake knows, by their canonical names.
const METHODS: &[&str] = &[
    "getMe",
    "sendMessage",
    "editMessageText",
    "sendPhoto",
    "getUpdates",
    "setMyCommands",
    "answerCallbackQuery",
    "editMessageReplyMarkup",
    "deleteWebhook",
];

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

/// Counts one `getUpdates` call as being answered until dropped (also when the caller goes away).
struct Polling(Arc<Mutex<State>>);

impl Drop for Polling {
    fn drop(&mut self) {
        let mut st = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.polls = st.polls.saturating_sub(1);
    }
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
    /// Start a fake bot with this token on a free port.
    pub async fn start(token: &str) -> FakeTelegram {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let fake = FakeTelegram {
            url: format!("http://{addr}"),
            token: token.to_owned(),
            state: Arc::new(Mutex::new(State {
                next_message_id: 100,
                next_update_id: 5000,
                ..State::default()
            })),
            updates: Arc::new(Notify::new()),
        };
        let app = axum::Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

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

/// A Bot API answer.
fn answer(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn ok(result: Value) -> (u16, Value) {
    (200, json!({"ok": true, "result": result}))
}

fn err(status: u16, description: &str) -> (u16, Value) {
    (status, json!({"ok": false, "error_code": status, "description": description}))
}

async fn handle(
    axum::extract::State(fake): axum::extract::State<FakeTelegram>,
    request: axum::extract::Request,
) -> Response {
    let incoming = read_request(request).await;
    // /bot<token>/<method>
    let mut parts = incoming.path.trim_start_matches('/').splitn(2, '/');
    let bot = parts.next().unwrap_or_default();
    let sent_as = parts.next().unwrap_or_default().trim_end_matches('/').to_owned();
    let method = METHODS.iter().find(|m| m.eq_ignore_ascii_case(&sent_as)).map(|m| (*m).to_owned());
    let params = incoming.params.clone().unwrap_or_default();
    let (status, body) = if bot.strip_prefix("bot") != Some(fake.token.as_str()) {
        if bot.starts_with("bot") { err(401, "Unauthorized") } else { err(404, "Not Found") }
    } else if let Err(e) = &incoming.params {
        err(400, &format!("Bad Request: {e}"))
    } else {
        match &method {
            None => err(404, "Not Found"),
            Some(m) if m == "getUpdates" => fake.get_updates(&params).await,
            Some(m) => {
                let failure = {
                    let mut st = fake.state();
                    let pos = st.failures.iter().position(|f| match &f.method {
                        Some(fm) => fm == m,
                        None => true,
                    });
                    pos.and_then(|p| st.failures.remove(p))
                };
                match failure {
                    Some(f) => {
                        let mut body =
                            json!({"ok": false, "error_code": f.status, "description": f.description});
                        if let Some(r) = f.retry_after {
                            body["parameters"] = json!({"retry_after": r});
                        }
                        (f.status, body)
                    }
                    None => fake.call(m, &params),
                }
            }
        }
    };
    let error = if status == 200 { None } else { body["description"].as_str().map(str::to_owned) };
    fake.state().calls.push(Call {
        method: method.clone().unwrap_or_else(|| sent_as.clone()),
        sent_as,
        params,
        status,
        error,
        at: Instant::now(),
    });
    answer(status, body)
}

/// The visible text of a `text` or `caption`, checked as Telegram checks it.
fn visible(params: &Params, key: &str, limit: usize) -> Result<String, (u16, Value)> {
    let raw = params.str(key).unwrap_or_default();
    let text = match params.str("parse_mode").as_deref() {
        Some(m) if m.eq_ignore_ascii_case("html") => html::parse(&raw).map_err(|e| err(400, &e))?,
        Some(m) if m.eq_ignore_ascii_case("markdownv2") || m.eq_ignore_ascii_case("markdown") => raw.clone(),
        Some(other) => return Err(err(400, &format!("Bad Request: unsupported parse_mode \"{other}\""))),
        None => raw.clone(),
    };
    if html::telegram_len(&text) > limit {
        return Err(err(
            400,
            if key == "caption" {
                "Bad Request: message caption is too long"
            } else {
                "Bad Request: message is too long"
            },
        ));
    }
    Ok(text)
}

impl FakeTelegram {
    fn call(&self, method: &str, params: &Params) -> (u16, Value) {
        match method {
            "getMe" => ok(json!({
                "id": BOT_USER_ID, "is_bot": true, "first_name": "Herald", "username": "herald_test_bot",
                "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false,
                "can_connect_to_business": false, "has_main_web_app": false
            })),
            "deleteWebhook" => ok(json!(true)),
            "setMyCommands" => match params.json("commands") {
                Some(Value::Array(c))
                    if c.iter().all(|c| c["command"].is_string() && c["description"].is_string()) =>
                {
                    self.state().commands = Some(Value::Array(c));
                    ok(json!(true))
                }
                _ => err(400, "Bad Request: parameter \"commands\" is required"),
            },
            "answerCallbackQuery" => {
                if params.str("callback_query_id").is_none() {
                    return err(
                        400,
                        "Bad Request: query is too old and response timeout expired or query ID is invalid",
                    );
                }
                self.state().callback_answers.push(params.clone());
                ok(json!(true))
            }
            "sendMessage" | "sendPhoto" => {
                let Some(chat_id) = params.i64("chat_id") else {
                    return err(400, "Bad Request: chat not found");
                };
                let photo = if method == "sendPhoto" {
                    // A file part named `photo`, or `photo=attach://<part>` naming the part (teloxide's way).
                    let part = match params.str("photo") {
                        Some(v) => v.strip_prefix("attach://").map(str::to_owned),
                        None => Some("photo".to_owned()),
                    };
                    match params.files.iter().find(|f| Some(&f.0) == part.as_ref()) {
                        Some(f) if !f.2.is_empty() => Some(f.2.len()),
                        _ => return err(400, "Bad Request: there is no photo in the request"),
                    }
                } else {
                    None
                };
                let (key, limit) = if photo.is_some() { ("caption", 1024) } else { ("text", 4096) };
                let text = match visible(params, key, limit) {
                    Ok(t) => t,
                    Err(e) => return e,
                };
                if photo.is_none() && text.trim().is_empty() {
                    return err(400, "Bad Request: message text is empty");
                }
                let mut st = self.state();
                st.next_message_id += 1;
                let m = Message {
                    chat_id,
                    message_id: st.next_message_id,
                    from_bot: true,
                    html: params.str(key).unwrap_or_default(),
                    text,
                    silent: params.bool("disable_notification"),
                    photo,
                    edits: 0,
                    reply_markup: params.json("reply_markup"),
                };
                let body = message_json(&m, None);
                st.messages.insert((chat_id, m.message_id), m);
                ok(body)
            }
            "editMessageText" | "editMessageReplyMarkup" => {
                let (Some(chat_id), Some(message_id)) = (params.i64("chat_id"), params.i64("message_id"))
                else {
                    return err(400, "Bad Request: message identifier is not specified");
                };
                let new_text = if method == "editMessageText" {
                    match visible(params, "text", 4096) {
                        Ok(t) if t.trim().is_empty() => {
                            return err(400, "Bad Request: message text is empty");
                        }
                        Ok(t) => Some(t),
                        Err(e) => return e,
                    }
                } else {
                    None
                };
                let mut st = self.state();
                let Some(m) = st.messages.get_mut(&(chat_id, message_id)) else {
                    return err(400, "Bad Request: message to edit not found");
                };
                if !m.from_bot {
                    return err(400, "Bad Request: message can't be edited");
                }
                let markup = params.json("reply_markup");
                let same_text = new_text.as_ref().is_none_or(|t| *t == m.text);
                if same_text && markup == m.reply_markup {
                    return err(
                        400,
                        "Bad Request: message is not modified: specified new message content and reply markup are \
                         exactly the same as a current content and reply markup of the message",
                    );
                }
                if let Some(t) = new_text {
                    m.text = t;
                    m.html = params.str("text").unwrap_or_default();
                }
                m.reply_markup = markup;
                m.edits += 1;
                ok(message_json(m, Some(unix_now())))
            }
            _ => err(404, "Not Found"),
        }
    }

    async fn get_updates(&self, params: &Params) -> (u16, Value) {
        // Telegram allows one poller per bot: a second concurrent `getUpdates` gets 409 Conflict.
        let _polling = {
            let mut st = self.state();
            if st.polls > 0 {
                st.conflicts += 1;
                let description = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
                return (409, json!({"ok": false, "error_code": 409, "description": description}));
            }
            st.polls += 1;
            st.polls_taken += 1;
            Polling(self.state.clone())
        };
        let offset = params.i64("offset").unwrap_or(0);
        let timeout = Duration::from_secs(params.i64("timeout").unwrap_or(0).clamp(0, 50) as u64);
        let limit = params.i64("limit").unwrap_or(100).clamp(1, 100) as usize;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.updates.notified();
            {
                let mut st = self.state();
                // An offset confirms every update below it: they are gone for good.
                if offset > 0 {
                    st.updates.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                }
                if !st.updates.is_empty() {
                    let batch: Vec<Value> = st.updates.iter().take(limit).cloned().collect();
                    return ok(Value::Array(batch));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return ok(json!([]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, body: Value) -> (u16, Value) {
        // A tiny client over a raw TCP stream keeps this crate free of an HTTP client.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
        let body = body.to_string();
        let request = format!(
            "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        let status: u16 = answer[9..12].parse().expect("status");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        (status, serde_json::from_str(body).expect("JSON answer"))
    }

    #[tokio::test]
    async fn behaves_like_the_bot_api() {
        let fake = FakeTelegram::start("1:abc").await;
        let base = format!("{}/bot1:abc", fake.url);
        let (s, v) = post(
            &format!("{base}/SendMessage"),
            json!({"chat_id": 5, "text": "<b>hi</b> &lt;3", "parse_mode": "HTML"}),
        )
        .await;
        assert_eq!((s, v["result"]["text"].as_str()), (200, Some("hi <3")));
        let id = v["result"]["message_id"].as_i64().expect("id");
        let (s, v) = post(
            &format!("{base}/sendMessage"),
            json!({"chat_id": 5, "text": "a < b", "parse_mode": "HTML"}),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            v["description"].as_str().expect("text").starts_with("Bad Request: can't parse entities"),
            "{v}"
        );
        let (s, _) = post(
            &format!("{base}/editMessageText"),
            json!({"chat_id": 5, "message_id": id, "text": "<b>hi</b> &lt;3", "parse_mode": "HTML"}),
        )
        .await;
        assert_eq!(s, 400);
        let (s, v) =
            post(&format!("{base}/editMessageText"), json!({"chat_id": 5, "message_id": 999, "text": "x"}))
                .await;
        assert_eq!((s, v["description"].as_str()), (400, Some("Bad Request: message to edit not found")));
        let (s, v) =
            post(&format!("{base}/sendMessage"), json!({"chat_id": 5, "text": "x".repeat(4097)})).await;
        assert_eq!((s, v["description"].as_str()), (400, Some("Bad Request: message is too long")));
        fake.fail_with_429(Some("sendMessage"), 1, 3);
        let (s, v) = post(&format!("{base}/sendMessage"), json!({"chat_id": 5, "text": "x"})).await;
        assert_eq!((s, v["parameters"]["retry_after"].as_i64()), (429, Some(3)));
        let (s, _) = post(&format!("{}/bot9:wrong/getMe", fake.url), json!({})).await;
        assert_eq!(s, 401);
        fake.user_message(5, 77, "/runs");
        fake.user_message(5, 77, "/help");
        let (_, v) = post(&format!("{base}/getUpdates"), json!({"offset": 0, "timeout": 0})).await;
        let updates = v["result"].as_array().expect("updates").clone();
        assert_eq!(updates.len(), 2);
        let last = updates[1]["update_id"].as_i64().expect("id");
        let (_, v) = post(&format!("{base}/getUpdates"), json!({"offset": last + 1, "timeout": 0})).await;
        assert_eq!(v["result"], json!([]));
        assert_eq!(fake.pending_updates(), 0);
        assert_eq!(fake.calls()[0].sent_as, "SendMessage");
        assert_eq!(fake.calls()[0].method, "sendMessage");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_concurrent_get_updates_gets_409() {
        let fake = FakeTelegram::start("1:abc").await;
        let url = format!("{}/bot1:abc/getUpdates", fake.url);
        let first = tokio::spawn({
            let url = url.clone();
            async move { post(&url, json!({"offset": 0, "timeout": 2})).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while fake.state().polls == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the first poll never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (s, v) = post(&url, json!({"offset": 0, "timeout": 0})).await;
        assert_eq!((s, v["error_code"].as_i64()), (409, Some(409)), "{v}");
        assert_eq!(fake.conflicts(), 1);
        assert_eq!(first.await.expect("first poll").0, 200);
        let (s, _) = post(&url, json!({"offset": 0, "timeout": 0})).await;
        assert_eq!((s, fake.conflicts()), (200, 1), "one poll at a time is fine");
    }
}

//! The fake's Bot API side: the HTTP server [`FakeTelegram::start`] opens, and the answers to each method,
//! checked as Telegram checks them (token, parse mode, lengths, edits, one poller per bot). It reads and
//! writes the shared state of `mod.rs`; nothing there depends on this module.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{BOT_USER_ID, Call, FakeTelegram, Message, State, message_json, unix_now};
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

/// Counts one `getUpdates` call as being answered until dropped (also when the caller goes away).
struct Polling(Arc<Mutex<State>>);

impl Drop for Polling {
    fn drop(&mut self) {
        let mut st = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.polls = st.polls.saturating_sub(1);
    }
}

impl FakeTelegram {
    /// Start a fake bot with this token on a free port.
    pub async fn start(token: &str) -> FakeTelegram {
        let make = |url| FakeTelegram {
            url,
            token: token.to_owned(),
            state: Arc::new(Mutex::new(State {
                next_message_id: 100,
                next_update_id: 5000,
                ..State::default()
            })),
            updates: Arc::new(Notify::new()),
        };
        crate::serve(make, handle).await
    }
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

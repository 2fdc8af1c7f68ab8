//! A fake Slack: incoming webhooks (`POST /services/...`, answers `ok`) and the Web API methods Herald uses
//! (`auth.test`, `chat.postMessage`, `chat.update`, `files.getUploadURLExternal`, the upload URL,
//! `files.completeUploadExternal`), with Slack's rules: a bot token in `Authorization: Bearer` (else
//! `invalid_auth`, with HTTP 200 as Slack answers), `chat.update` needs the channel id and an existing `ts`,
//! `files.getUploadURLExternal` takes a form (not JSON), an upload must match the announced length before it
//! can be completed, and 429 with `Retry-After` on demand. Messages are kept per channel with their threads.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{Params, header_map, read_request};

/// The channel id every channel name resolves to.
pub const CHANNEL_ID: &str = "C0HERALD1";

/// One call as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `chat.postMessage`, `webhook`, `upload`, ...
    pub method: String,
    /// The call's parameters, however they were sent.
    pub params: Params,
    /// The request headers, by lowercase name.
    pub headers: HashMap<String, String>,
    /// Bytes of a raw upload.
    pub raw_len: usize,
    /// The HTTP status answered.
    pub status: u16,
    /// Slack's `error` when `ok` was false.
    pub error: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A message as it stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The channel id it was posted in.
    pub channel: String,
    /// Its timestamp, Slack's message id.
    pub ts: String,
    /// The parent's `ts`, for a reply in a thread.
    pub thread_ts: Option<String>,
    /// The text as last posted or updated.
    pub text: String,
    /// The Block Kit blocks as last posted or updated, if any.
    pub blocks: Option<Value>,
    /// A thread reply also shown in the channel.
    pub reply_broadcast: bool,
    /// How many times `chat.update` changed it.
    pub edits: u32,
    /// Files shared into this message (`files.completeUploadExternal`): `(file id, title, bytes)`.
    pub files: Vec<(String, String, usize)>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    webhook_posts: Vec<Value>,
    messages: BTreeMap<String, Message>,
    next_ts: u64,
    /// file id -> (filename, announced length, uploaded bytes)
    uploads: HashMap<String, (String, usize, Option<usize>)>,
    failures: VecDeque<(Option<String>, u32)>,
}

/// The fake Slack; clone freely.
#[derive(Clone)]
pub struct FakeSlack {
    /// Base URL: the Web API is `{url}/api/`, webhooks `{url}/services/...`.
    pub url: String,
    /// The bot token the Web API accepts.
    pub token: String,
    state: Arc<Mutex<State>>,
}

impl FakeSlack {
    /// Starts the fake on 127.0.0.1 (a free port), accepting `token`.
    pub async fn start(token: &str) -> FakeSlack {
        let make = |url| FakeSlack {
            url,
            token: token.to_owned(),
            state: Arc::new(Mutex::new(State { next_ts: 1, ..State::default() })),
        };
        crate::serve(make, handle).await
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An incoming-webhook URL this fake answers.
    pub fn webhook_url(&self) -> String {
        format!("{}/services/T000/B000/secretpart", self.url)
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls to `method` (`chat.postMessage`), in arrival order.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.state().calls.iter().filter(|c| c.method == method).cloned().collect()
    }

    /// The JSON bodies posted to the incoming webhook.
    pub fn webhook_posts(&self) -> Vec<Value> {
        self.state().webhook_posts.clone()
    }

    /// Every message, in `ts` order.
    pub fn messages(&self) -> Vec<Message> {
        self.state().messages.values().cloned().collect()
    }

    /// Answer the next `times` calls of `method` (`None`: any) with 429 and `Retry-After: secs`.
    pub fn fail_with_429(&self, method: Option<&str>, times: usize, secs: u32) {
        let mut st = self.state();
        for _ in 0..times {
            st.failures.push_back((method.map(str::to_owned), secs));
        }
    }
}

fn slack_ok(mut body: Value) -> (u16, Value) {
    body["ok"] = json!(true);
    (200, body)
}

fn slack_err(error: &str) -> (u16, Value) {
    (200, json!({"ok": false, "error": error}))
}

async fn handle(
    axum::extract::State(fake): axum::extract::State<FakeSlack>,
    request: axum::extract::Request,
) -> Response {
    let incoming = read_request(request).await;
    let headers = header_map(&incoming.headers);
    let path = incoming.path.clone();
    let method = if path.starts_with("/services/") {
        "webhook".to_owned()
    } else if let Some(m) = path.strip_prefix("/api/") {
        m.to_owned()
    } else if path.starts_with("/upload/") {
        "upload".to_owned()
    } else {
        path.clone()
    };
    let params = incoming.params.clone().unwrap_or_default();
    let failure = {
        let mut st = fake.state();
        let pos = st.failures.iter().position(|(m, _)| m.as_deref().is_none_or(|m| m == method));
        pos.and_then(|p| st.failures.remove(p))
    };
    let (status, body, text_answer) = if let Some((_, secs)) = failure {
        (429, json!({"ok": false, "error": "ratelimited"}), Some(secs))
    } else if let Err(e) = &incoming.params {
        (400, json!({"ok": false, "error": "invalid_form_data", "detail": e}), None)
    } else {
        let (s, b) = fake.call(
            &method,
            &path,
            &params,
            &headers,
            &incoming.raw,
            incoming.params.as_ref().map(|p| p.encoding).unwrap_or("empty"),
        );
        (s, b, None)
    };
    let error = body["error"].as_str().map(str::to_owned);
    fake.state().calls.push(Call {
        method: method.clone(),
        params,
        headers,
        raw_len: incoming.raw.len(),
        status,
        error,
        at: Instant::now(),
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(secs) = text_answer {
        return (code, [("retry-after", secs.to_string())], body.to_string()).into_response();
    }
    if method == "webhook" || method == "upload" || method.starts_with('/') {
        let text = body.as_str().unwrap_or_default().to_owned();
        return (code, [("content-type", "text/plain")], text).into_response();
    }
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

impl FakeSlack {
    fn authorized(&self, headers: &HashMap<String, String>, params: &Params) -> bool {
        let bearer = headers.get("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::to_owned);
        bearer.or_else(|| params.str("token")).is_some_and(|t| t == self.token)
    }

    fn next_ts(&self) -> String {
        let mut st = self.state();
        st.next_ts += 1;
        format!("1700000000.{:06}", st.next_ts)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        params: &Params,
        headers: &HashMap<String, String>,
        raw: &[u8],
        encoding: &str,
    ) -> (u16, Value) {
        match method {
            "webhook" => {
                if encoding != "json" {
                    return (400, json!("invalid_payload"));
                }
                let has_text = params.str("text").is_some_and(|t| !t.is_empty());
                let has_blocks = params.fields.get("blocks").is_some_and(Value::is_array);
                if !has_text && !has_blocks {
                    return (400, json!("no_text"));
                }
                if let Some(blocks) = params.fields.get("blocks")
                    && let Err(e) = check_blocks(blocks)
                {
                    return (400, json!(format!("invalid_blocks: {e}")));
                }
                self.state().webhook_posts.push(Value::Object(params.fields.clone()));
                (200, json!("ok"))
            }
            "upload" => {
                let id = path.trim_start_matches("/upload/").to_owned();
                let mut st = self.state();
                let Some(upload) = st.uploads.get_mut(&id) else {
                    return (404, json!("no such upload"));
                };
                let len =
                    if raw.is_empty() { params.files.first().map_or(0, |f| f.2.len()) } else { raw.len() };
                upload.2 = Some(len);
                (200, json!(format!("OK - {len}")))
            }
            // Neither the Web API, a webhook nor an upload: Slack answers 404 `no_service`.
            m if m.starts_with('/') => (404, json!("no_service")),
            _ if !self.authorized(headers, params) => {
                slack_err(if headers.contains_key("authorization") { "invalid_auth" } else { "not_authed" })
            }
            "auth.test" => slack_ok(
                json!({"url": "https://herald-test.slack.com/", "team": "Herald", "user": "herald", "team_id": "T000", "user_id": "U000", "bot_id": "B000"}),
            ),
            "chat.postMessage" => {
                let Some(channel) = params.str("channel") else { return slack_err("channel_not_found") };
                let channel = if channel.starts_with('#') || !channel.starts_with('C') {
                    CHANNEL_ID.to_owned()
                } else {
                    channel
                };
                let text = params.str("text").unwrap_or_default();
                let blocks = params.json("blocks");
                if text.is_empty() && blocks.is_none() {
                    return slack_err("no_text");
                }
                if let Some(b) = &blocks
                    && check_blocks(b).is_err()
                {
                    return slack_err("invalid_blocks");
                }
                let thread_ts = params.str("thread_ts");
                if let Some(t) = &thread_ts
                    && !self.state().messages.contains_key(t)
                {
                    return slack_err("thread_not_found");
                }
                let ts = self.next_ts();
                let m = Message {
                    channel: channel.clone(),
                    ts: ts.clone(),
                    thread_ts,
                    text: text.clone(),
                    blocks,
                    reply_broadcast: params.bool("reply_broadcast"),
                    edits: 0,
                    files: Vec::new(),
                };
                self.state().messages.insert(ts.clone(), m);
                slack_ok(json!({"channel": channel, "ts": ts, "message": {"text": text, "ts": ts}}))
            }
            "chat.update" => {
                let (Some(channel), Some(ts)) = (params.str("channel"), params.str("ts")) else {
                    return slack_err("invalid_arguments");
                };
                if channel != CHANNEL_ID {
                    return slack_err("channel_not_found");
                }
                let mut st = self.state();
                let Some(m) = st.messages.get_mut(&ts) else { return slack_err("message_not_found") };
                if let Some(t) = params.str("text") {
                    m.text = t;
                }
                if let Some(b) = params.json("blocks") {
                    m.blocks = Some(b);
                }
                m.edits += 1;
                slack_ok(json!({"channel": channel, "ts": ts, "text": m.text}))
            }
            "files.getUploadURLExternal" => {
                if encoding == "json" {
                    return slack_err("invalid_arguments");
                }
                let (Some(filename), Some(length)) = (params.str("filename"), params.i64("length")) else {
                    return slack_err("invalid_arguments");
                };
                let mut st = self.state();
                let id = format!("F{:08}", st.uploads.len() + 1);
                st.uploads.insert(id.clone(), (filename, length.max(0) as usize, None));
                slack_ok(json!({"upload_url": format!("{}/upload/{id}", self.url), "file_id": id}))
            }
            "files.completeUploadExternal" => {
                let Some(Value::Array(files)) = params.json("files") else {
                    return slack_err("invalid_arguments");
                };
                let thread_ts = params.str("thread_ts");
                let mut st = self.state();
                let mut shared = Vec::new();
                for f in &files {
                    let Some(id) = f["id"].as_str() else { return slack_err("invalid_arguments") };
                    match st.uploads.get(id) {
                        Some((_, announced, Some(got))) if announced == got => {
                            shared.push((
                                id.to_owned(),
                                f["title"].as_str().unwrap_or_default().to_owned(),
                                *got,
                            ));
                        }
                        Some(_) => return slack_err("file_upload_size_mismatch"),
                        None => return slack_err("file_not_found"),
                    }
                }
                if let Some(t) = &thread_ts {
                    let Some(parent) = st.messages.get_mut(t) else { return slack_err("thread_not_found") };
                    parent.files.extend(shared.clone());
                }
                let listed: Vec<Value> =
                    shared.iter().map(|(id, title, _)| json!({"id": id, "title": title})).collect();
                slack_ok(json!({"files": listed}))
            }
            _ => slack_err("unknown_method"),
        }
    }
}

/// Block Kit as far as Herald uses it: each block an object with a known `type`, `section`/`header` text
/// objects with `type` and `text` under Slack's length limits.
fn check_blocks(blocks: &Value) -> Result<(), String> {
    let Value::Array(blocks) = blocks else { return Err("blocks is not an array".into()) };
    if blocks.len() > 50 {
        return Err("more than 50 blocks".into());
    }
    for b in blocks {
        match b["type"].as_str() {
            Some("section") | Some("header") => {
                let text = b["text"]["text"].as_str().ok_or("a block without text")?;
                let limit = if b["type"] == "header" { 150 } else { 3000 };
                if text.chars().count() > limit {
                    return Err(format!("text longer than {limit} characters"));
                }
                if b["text"]["type"] != "mrkdwn" && b["text"]["type"] != "plain_text" {
                    return Err("unknown text type".into());
                }
            }
            Some("divider") | Some("context") | Some("image") => {}
            other => return Err(format!("unknown block type {other:?}")),
        }
    }
    Ok(())
}

//! Faithful local stand-ins for the Telegram Bot API ([`telegram::FakeTelegram`]) and the Slack Web API and
//! incoming webhooks ([`slack::FakeSlack`]), for the notifier crates' tests and the end-to-end tests.
//!
//! Each fake is an axum server on `127.0.0.1` (a free port) that records every call, answers like the real
//! service does (the same status codes, bodies and error texts for the mistakes a client can make: bad
//! markup, messages too long, editing what is not there, wrong credentials) and can be told to answer 429
//! with a retry delay. They keep state the way the services do (messages by id, updates by offset,
//! uploaded files), so a client that works against them does the same calls it must make for real. They do
//! not implement what Herald never calls, and they do not reach the internet.
//!
//! For the simpler HTTP services [`recording::Fake`] records requests and answers from a script, and
//! [`docs::examples`] loads a notifier's documented configuration examples for its tests; [`sample`] builds
//! the training events and renders the runs those tests deliver.

pub mod docs;
pub mod html;
pub mod recording;
pub mod sample;
pub mod slack;
pub mod telegram;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::HeaderMap;

/// The parameters of a request, whatever way they were sent: query string, JSON, form or multipart text
/// fields, as one JSON object (form values are strings, or JSON when they parse as an object or array).
/// Multipart file parts are listed apart.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Every non-file parameter by name.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// `(field name, file name, bytes)` of each multipart file part.
    pub files: Vec<(String, Option<String>, Vec<u8>)>,
    /// How the body came: `json`, `form`, `multipart`, `query` or `empty`.
    pub encoding: &'static str,
}

impl Params {
    /// Parameter `key` as text (a non-string value as its JSON); `None` when absent or null.
    pub fn str(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Parameter `key` as an integer, from a JSON number or a numeric string.
    pub fn i64(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Parameter `key` as a flag: `true`, `"true"` or `"1"`; false otherwise or when absent.
    pub fn bool(&self, key: &str) -> bool {
        match self.fields.get(key) {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true" || s == "1",
            _ => false,
        }
    }

    /// A JSON-valued parameter (such as `reply_markup`), whether sent as JSON or as a JSON string in a form.
    pub fn json(&self, key: &str) -> Option<serde_json::Value> {
        match self.fields.get(key)? {
            serde_json::Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }
}

fn form_value(v: String) -> serde_json::Value {
    let t = v.trim_start();
    if (t.starts_with('{') || t.starts_with('['))
        && let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&v)
    {
        return parsed;
    }
    serde_json::Value::String(v)
}

/// A request as the fakes see it: path, headers and parameters.
pub(crate) struct Incoming {
    pub path: String,
    pub headers: HeaderMap,
    pub params: Result<Params, String>,
    /// The raw body when it was neither JSON, a form nor multipart (an upload).
    pub raw: Vec<u8>,
}

/// Read a request's path, headers and parameters (query string and body).
pub(crate) async fn read_request(request: axum::extract::Request) -> Incoming {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let content_type =
        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    let mut incoming = Incoming { path, headers, params: Err(String::new()), raw: Vec::new() };
    incoming.params = read_params(request, query.as_deref(), &content_type, &mut incoming.raw).await;
    incoming
}

async fn read_params(
    request: axum::extract::Request,
    query: Option<&str>,
    content_type: &str,
    raw: &mut Vec<u8>,
) -> Result<Params, String> {
    use axum::extract::FromRequest;
    let mut params = Params { encoding: "empty", ..Params::default() };
    if let Some(q) = query {
        for (k, v) in urlencoded_pairs(q).map_err(|e| format!("bad query string: {e}"))? {
            params.fields.insert(k, form_value(v));
        }
        params.encoding = "query";
    }
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = axum::extract::Multipart::from_request(request, &())
            .await
            .map_err(|e| format!("bad multipart body: {e}"))?;
        while let Some(field) =
            multipart.next_field().await.map_err(|e| format!("bad multipart body: {e}"))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let bytes = field.bytes().await.map_err(|e| format!("bad multipart field: {e}"))?;
            match file_name {
                Some(f) => params.files.push((name, Some(f), bytes.to_vec())),
                None => {
                    params.fields.insert(name, form_value(String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
        }
        params.encoding = "multipart";
        return Ok(params);
    }
    let body: Bytes = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .map_err(|e| format!("cannot read the body: {e}"))?;
    if body.is_empty() {
        return Ok(params);
    }
    if content_type.starts_with("application/json") {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(map)) => params.fields.extend(map),
            Ok(_) => return Err("the JSON body is not an object".to_owned()),
            Err(e) => return Err(format!("the body is not valid JSON: {e}")),
        }
        params.encoding = "json";
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(&body).map_err(|_| "the form body is not UTF-8".to_owned())?;
        for (k, v) in urlencoded_pairs(text)? {
            params.fields.insert(k, form_value(v));
        }
        params.encoding = "form";
    } else {
        *raw = body.to_vec();
        params.encoding = "raw";
    }
    Ok(params)
}

/// `a=1&b=x%20y` as pairs, `+` as space.
fn urlencoded_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|_| "bad escape".to_owned())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape `%{hex}`"))?);
                i += 2;
            }
            b'%' => return Err("a `%` escape is cut off".to_owned()),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "an escaped value is not UTF-8".to_owned())
}

/// Headers as a lowercase map, for recording.
pub(crate) fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned())))
        .collect()
}

/// Serves a fake on a free port of 127.0.0.1: `make` gets the base URL (`http://127.0.0.1:PORT`) and builds
/// the fake, a clone of which is the state of every request to `handler`. The server runs on a spawned task
/// for as long as the test's runtime.
pub(crate) async fn serve<F, H, T>(make: impl FnOnce(String) -> F, handler: H) -> F
where
    F: Clone + Send + Sync + 'static,
    H: axum::handler::Handler<T, F>,
    T: 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let fake = make(format!("http://{addr}"));
    let app = axum::Router::new().fallback(handler).with_state(fake.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    fake
}

/// Wait until `check` holds, polling every 10 ms, or panic with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        assert_eq!(
            urlencoded_pairs("a=1&b=x%20y+z&c=").expect("valid"),
            vec![("a".into(), "1".into()), ("b".into(), "x y z".into()), ("c".into(), String::new())]
        );
        assert!(percent_decode("%4").is_err());
        assert_eq!(percent_decode("%41%42").expect("valid"), "AB");
    }
}

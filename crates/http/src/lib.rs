//! The reqwest plumbing shared by Herald's HTTP notifiers (ntfy, Pushover and Discord; Slack, Telegram and
//! the webhook use some of it): the client, URL checks, cutting text to service limits, percent-encoding a
//! path segment, and the mapping of HTTP answers to [`DeliveryError`]s. It lives apart from `herald-plugin`
//! so that the SDK stays free of I/O; `Retry-After` is parsed by the SDK's
//! [`herald_plugin::http::parse_retry_after`]. It sends nothing on its own and knows nothing of any one
//! service's API: service-specific checks and encodings stay in the plugins.

use std::time::{Duration, SystemTime};

use herald_plugin::DeliveryError;

/// The HTTP client every delivery uses (connections are reused).
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// An `http://` or `https://` URL with a host, without its trailing `/`.
pub fn check_base_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not a URL: write it with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` is not a valid URL: it needs a host and no spaces"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `text` cut to at most `max` bytes on a character boundary, ending with `…` when cut.
pub fn cut_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `text` cut to at most `max` characters (Unicode scalar values), ending with `…` when cut.
pub fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Percent-encode one URL path segment (everything but RFC 3986 unreserved characters).
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error and its causes, `: `-separated (reqwest hides the useful part in the sources).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A request that got no answer: retryable.
pub fn send_error(server: &str, err: reqwest::Error) -> DeliveryError {
    let code = if err.is_timeout() { "timeout" } else { "network" };
    DeliveryError::retryable(format!("cannot reach {server}: {}", error_chain(&err))).with_code(code)
}

/// The `Retry-After` header as a delay (seconds or an HTTP date), parsed by
/// [`herald_plugin::http::parse_retry_after`].
pub fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    herald_plugin::http::parse_retry_after(value, SystemTime::now())
}

/// The body of a 2xx answer, or the [`DeliveryError`] the answer means: 429 retryable after `Retry-After`,
/// 5xx and 408 retryable, other 4xx permanent with the service's own error text.
pub async fn check_response(response: reqwest::Response, service: &str) -> Result<Vec<u8>, DeliveryError> {
    check_response_with(response, service, |_| None).await
}

/// [`check_response`] for a service that says in the body of a 429 when to retry: `body_retry_after` reads
/// that delay from the body, and it wins over the `Retry-After` header when it gives one.
pub async fn check_response_with(
    response: reqwest::Response,
    service: &str,
    body_retry_after: impl FnOnce(&[u8]) -> Option<Duration>,
) -> Result<Vec<u8>, DeliveryError> {
    let status = response.status();
    let retry_after = retry_after_header(response.headers());
    let body = response.bytes().await.map_err(|e| {
        DeliveryError::retryable(format!("{service} answer was cut off: {}", error_chain(&e)))
            .with_code("network")
    })?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let detail = service_error_text(&body);
    let code = format!("http_{}", status.as_u16());
    let message = format!("{service} answered {status}: {detail}");
    Err(match status.as_u16() {
        429 => {
            let err = DeliveryError::retryable(format!("{message} (rate limited)")).with_code(code);
            match body_retry_after(&body).or(retry_after) {
                Some(after) => err.with_retry_after(after),
                None => err,
            }
        }
        401 | 403 => {
            DeliveryError::permanent(format!("{message}; check the credentials in the configuration"))
                .with_code(code)
        }
        408 | 500..=599 => DeliveryError::retryable(message).with_code(code),
        _ => DeliveryError::permanent(message).with_code(code),
    })
}

/// The service's own words: ntfy's `{"error": ...}`, Pushover's `{"errors": [...]}`, Discord's
/// `{"message": ...}`, or else the start of the body.
fn service_error_text(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(text) = value.get("error").and_then(|e| e.as_str()) {
            return text.to_owned();
        }
        if let Some(errors) = value.get("errors").and_then(|e| e.as_array()) {
            let texts: Vec<&str> = errors.iter().filter_map(|e| e.as_str()).collect();
            if !texts.is_empty() {
                return texts.join("; ");
            }
        }
        if let Some(text) = value.get("message").and_then(|e| e.as_str()) {
            return text.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() { "no details".to_owned() } else { cut_bytes(text, 300) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_char_boundaries() {
        assert_eq!(cut_bytes("abc", 3), "abc");
        assert_eq!(cut_bytes("abcdef", 5), "ab…");
        let cut = cut_bytes(&"é".repeat(10), 8);
        assert!(cut.len() <= 8 && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn cuts_characters() {
        assert_eq!(cut_chars("abc", 3), "abc");
        assert_eq!(cut_chars("ééééé", 3), "éé…");
    }

    #[test]
    fn urls_and_segments() {
        assert_eq!(check_base_url("https://api.example/"), Ok("https://api.example".to_owned()));
        assert!(check_base_url("api.example").is_err());
        assert!(check_base_url("http://").is_err());
        assert_eq!(encode_path_segment("run 1/a"), "run%201%2Fa");
    }

    #[test]
    fn retry_after_header_uses_the_sdk_parser() {
        fn check(value: &str, expected: Option<Duration>) {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().expect("a valid header value"));
            assert_eq!(retry_after_header(&headers), expected, "{value}");
        }
        check("7", Some(Duration::from_secs(7)));
        check("1.5", Some(Duration::from_millis(1500)));
        check("soon", None);
        assert_eq!(retry_after_header(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn service_errors_in_their_own_words() {
        assert_eq!(service_error_text(br#"{"error":"forbidden"}"#), "forbidden");
        assert_eq!(service_error_text(br#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(service_error_text(br#"{"message":"Unknown Webhook","code":10015}"#), "Unknown Webhook");
        assert_eq!(service_error_text(b"  "), "no details");
    }
}

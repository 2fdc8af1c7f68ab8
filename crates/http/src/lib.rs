//! The reqwest plumbing shared by Herald's HTTP notifiers (webhook, ntfy, Pushover, Discord, Slack and the
//! Gotify example; Telegram, over teloxide, uses the URL check): the client, URL checks,
//! cutting text to service limits, percent-encoding a path segment, and
//! [`check_response`], which reads a reqwest answer into the SDK's one HTTP answer policy
//! ([`AnswerPolicy`]: which statuses are retried and when, and what the message says). It lives apart from
//! `herald-plugin` so that the SDK stays free of reqwest and I/O; the policy itself, and the parsing of
//! `Retry-After`, are the SDK's. It sends nothing on its own and knows nothing of any one service's API:
//! service-specific checks, encodings and policy tweaks stay in the plugins.

use std::time::{Duration, SystemTime};

use herald_plugin::http::AnswerPolicy;
use herald_plugin::{DeliveryError, error_chain};

/// How much of a failed answer's body is read to explain the failure.
const FAILED_BODY_LIMIT: usize = 16 * 1024;

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

/// An `http://` or `https://` URL, parsed; the error says what is wrong and shows `example` (a URL that may
/// hold a token is never echoed).
pub fn parse_http_url(url: &str, example: &str) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(url).map_err(|e| format!("not a valid URL ({e}); write it like `{example}`"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the URL scheme must be `http` or `https`, not `{}`", url.scheme()));
    }
    Ok(url)
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

/// The body of a 2xx answer, or the [`DeliveryError`] that `policy` makes of the answer: its status, its
/// `Retry-After` header and the start of its body (at most 16 KiB of a failed answer is read; a failed
/// answer whose body cannot be read is judged on its status alone). A 2xx answer whose body is cut off is a
/// retryable `network` error.
pub async fn check_response(
    mut response: reqwest::Response,
    policy: &AnswerPolicy<'_>,
) -> Result<Vec<u8>, DeliveryError> {
    let status = response.status();
    let retry_after = retry_after_header(response.headers());
    if status.is_success() {
        let body = response.bytes().await.map_err(|e| {
            DeliveryError::retryable(format!("{} answer was cut off: {}", policy.service(), error_chain(&e)))
                .with_code("network")
        })?;
        return Ok(body.to_vec());
    }
    let mut body = Vec::new();
    while body.len() < FAILED_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(FAILED_BODY_LIMIT);
    policy.check(status.as_u16(), retry_after, &String::from_utf8_lossy(&body))?;
    // The policy calls only 2xx a success, and a 2xx answer returned above.
    Ok(Vec::new())
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
    fn http_urls() {
        let parsed = parse_http_url("https://h.example/hook?token=SECRET", "https://x").expect("valid");
        assert_eq!(parsed.path(), "/hook");
        let err = parse_http_url("h.example/hook?token=SECRET", "https://x/hook").expect_err("no scheme");
        assert!(
            err.starts_with("not a valid URL (") && err.ends_with("write it like `https://x/hook`"),
            "{err}"
        );
        assert!(!err.contains("SECRET"), "{err}");
        let err = parse_http_url("ftp://h.example/", "https://x").expect_err("ftp");
        assert_eq!(err, "the URL scheme must be `http` or `https`, not `ftp`");
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
}

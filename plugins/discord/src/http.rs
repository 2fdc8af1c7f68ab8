//! Discord's side of the HTTP plumbing: the shared pieces come from `herald-http` and the SDK's one answer
//! policy; this module adds the one thing Discord does its own way, the `retry_after` it puts in the body of
//! a 429. It sends nothing on its own.

use std::time::Duration;

pub use herald_http::{check_base_url, check_response, client, cut_chars, encode_path_segment, send_error};
use herald_plugin::http::AnswerPolicy;

/// How Discord's answers are read: the usual policy (Discord explains errors in `{"message": ...}`), except
/// that Discord says when to retry a 429 in the body, in fractional seconds (`"retry_after": 0.35`), which
/// wins over the header, which is rounded.
pub const ANSWERS: AnswerPolicy<'static> =
    AnswerPolicy::new("Discord").with_delay_in_body(|body| body_retry_after(body.as_bytes()));

/// The `retry_after` field of a JSON body, in seconds.
fn body_retry_after(body: &[u8]) -> Option<Duration> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("retry_after").and_then(serde_json::Value::as_f64))
        .filter(|s| s.is_finite() && (0.0..1e7).contains(s))
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_from_the_body() {
        fn check(body: &[u8], expected: Option<Duration>) {
            assert_eq!(body_retry_after(body), expected, "{}", String::from_utf8_lossy(body));
        }
        check(
            br#"{"message":"You are being rate limited.","retry_after":0.35}"#,
            Some(Duration::from_millis(350)),
        );
        check(br#"{"retry_after":-1}"#, None);
        check(b"slow down", None);
    }
}

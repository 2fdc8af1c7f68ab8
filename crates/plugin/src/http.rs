//! The one policy for HTTP answers, shared by every notifier that talks HTTP: [`AnswerPolicy`].
//!
//! The rules are the same for every service: 2xx is success; 408, 429 and 5xx are worth retrying, at the
//! time the service named (`Retry-After`, seconds or an HTTP date, honoured exactly; or a delay in the body
//! for a service that says so there); any other status is permanent, with a hint at what to fix (the
//! credentials for 401 and 403, the URL for 404 and redirects). The message quotes the service's own words
//! from the body. A service adds only what it does its own way: its name, its hints, a delay in its body.
//! This module knows no HTTP client: `herald-http` reads a reqwest answer into it
//! (`herald_http::check_response`), and a notifier with another client passes the status code, the parsed
//! `Retry-After` ([`parse_retry_after`]) and the start of the body.

use std::time::{Duration, SystemTime};

use crate::notifier::DeliveryError;

/// The longest body excerpt put into an error message.
const BODY_EXCERPT: usize = 200;

/// Parse a `Retry-After` value: delay seconds (`"120"`, also the non-standard `"1.5"`), or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, and the obsolete RFC 850 and asctime forms) taken relative to `now`.
/// A date in the past means now (zero). `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && (0.0..1e9).contains(s))
            .map(Duration::from_secs_f64);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a status is worth retrying: 408 (the service timed out reading), 429 (rate limited) and 5xx.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// How one service's HTTP answers become [`DeliveryError`]s: the one policy, with the service's name in
/// messages and, where a service needs them, its own hints and its own way of saying when to retry.
///
/// Build it as a constant beside the notifier:
///
/// ```
/// use herald_plugin::http::AnswerPolicy;
///
/// const GOTIFY: AnswerPolicy = AnswerPolicy::new("the Gotify server").with_hints(|status| match status {
///     401 | 403 => Some("check `token`: it must be an application token, not a client token"),
///     _ => None,
/// });
/// let err = GOTIFY.check(401, None, r#"{"errorDescription":"you need a valid token"}"#).expect_err("401");
/// assert_eq!(
///     err.message,
///     "the Gotify server answered 401 (check `token`: it must be an application token, not a client \
///      token): you need a valid token"
/// );
/// assert!(!err.retryable);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AnswerPolicy<'a> {
    service: &'a str,
    hints: Option<fn(u16) -> Option<&'static str>>,
    delay_in_body: Option<fn(&str) -> Option<Duration>>,
}

impl<'a> AnswerPolicy<'a> {
    /// The policy for `service`, as messages name it (`ntfy`, `the webhook`, `the Gotify server`).
    pub const fn new(service: &'a str) -> AnswerPolicy<'a> {
        AnswerPolicy { service, hints: None, delay_in_body: None }
    }

    /// Say `hints(status)` instead of the usual hint where it gives one (what to fix for this service; a
    /// hint for a retried status should say it will retry).
    pub const fn with_hints(self, hints: fn(u16) -> Option<&'static str>) -> AnswerPolicy<'a> {
        AnswerPolicy { hints: Some(hints), ..self }
    }

    /// For a service that says in the body when to retry (Discord's `"retry_after": 0.35`): `read` finds the
    /// delay in a retried answer's body, and it wins over the `Retry-After` header.
    pub const fn with_delay_in_body(self, read: fn(&str) -> Option<Duration>) -> AnswerPolicy<'a> {
        AnswerPolicy { delay_in_body: Some(read), ..self }
    }

    /// The service's name, as messages give it.
    pub fn service(&self) -> &str {
        self.service
    }

    /// `Ok` for a 2xx answer, else the [`DeliveryError`] the answer means, code `http_<status>`.
    ///
    /// `retry_after` is the parsed `Retry-After` header, if the answer had one; `body` the start of the
    /// answer, whose gist goes into the message ([`service_words`]) to show what the service said.
    pub fn check(&self, status: u16, retry_after: Option<Duration>, body: &str) -> Result<(), DeliveryError> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        let said = service_words(body);
        let code = format!("http_{status}");
        let own_hint = self.hints.and_then(|hints| hints(status));
        if retryable_status(status) {
            let hint = own_hint.unwrap_or(match status {
                429 => "rate limited; will retry",
                408 => "the service timed out reading the request; will retry",
                _ => "the service failed; will retry",
            });
            let err =
                DeliveryError::retryable(format!("{} answered {status} ({hint}): {said}", self.service))
                    .with_code(code);
            let delay = self.delay_in_body.and_then(|read| read(body)).or(retry_after);
            return Err(match delay {
                Some(after) => err.with_retry_after(after),
                None => err,
            });
        }
        let hint = own_hint.unwrap_or(match status {
            300..=399 => "a redirect; set the URL to the final address",
            401 | 403 => "check the credentials",
            404 => "check the URL",
            _ => "the request was refused; check the configuration",
        });
        Err(DeliveryError::permanent(format!("{} answered {status} ({hint}): {said}", self.service))
            .with_code(code))
    }
}

/// What a service said in an answer's body: its own words from the usual JSON error shapes (Gotify's
/// `errorDescription`, `description`, ntfy's `error`, Pushover's `errors`, Discord's `message`), or else the
/// body itself; control characters become spaces, cut to 200 characters, trimmed. `no details` when it said
/// nothing.
pub fn service_words(body: &str) -> String {
    let words = json_words(body).unwrap_or_else(|| body.to_owned());
    let excerpt: String =
        words.chars().take(BODY_EXCERPT).map(|c| if c.is_control() { ' ' } else { c }).collect();
    match excerpt.trim() {
        "" => "no details".to_owned(),
        words => words.to_owned(),
    }
}

fn json_words(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let text = |field: &str| value.get(field).and_then(serde_json::Value::as_str).map(str::trim);
    for field in ["errorDescription", "error_description", "description", "error"] {
        if let Some(text) = text(field).filter(|t| !t.is_empty()) {
            return Some(text.to_owned());
        }
    }
    let errors: Vec<&str> = value
        .get("errors")
        .and_then(serde_json::Value::as_array)
        .map(|errors| errors.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    if !errors.is_empty() {
        return Some(errors.join("; "));
    }
    text("message").filter(|t| !t.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("valid date");
        fn check(value: &str, now: SystemTime, expected: Option<Duration>) {
            assert_eq!(parse_retry_after(value, now), expected, "{value}");
        }
        check("120", now, Some(Duration::from_secs(120)));
        check(" 0 ", now, Some(Duration::ZERO));
        check("1.5", now, Some(Duration::from_millis(1500)));
        check("Wed, 21 Oct 2015 07:30:05 GMT", now, Some(Duration::from_secs(125)));
        check("Wednesday, 21-Oct-15 07:29:00 GMT", now, Some(Duration::from_secs(60)));
        check("Wed Oct 21 07:28:10 2015", now, Some(Duration::from_secs(10)));
        check("Wed, 21 Oct 2015 07:00:00 GMT", now, Some(Duration::ZERO));
        check("soon", now, None);
        check("-5", now, None);
        check("", now, None);
    }

    #[test]
    fn statuses() {
        fn check(status: u16, retry_after: Option<&str>, expected: Option<(bool, Option<Duration>)>) {
            let retry_after = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()));
            let got = AnswerPolicy::new("webhook")
                .check(status, retry_after, "nope\nnot today")
                .err()
                .map(|e| (e.retryable, e.retry_after));
            assert_eq!(got, expected, "{status}");
        }
        check(200, None, None);
        check(204, Some("5"), None);
        check(429, Some("7"), Some((true, Some(Duration::from_secs(7)))));
        check(429, None, Some((true, None)));
        check(429, Some("garbage"), Some((true, None)));
        check(503, Some("3"), Some((true, Some(Duration::from_secs(3)))));
        check(500, None, Some((true, None)));
        check(408, None, Some((true, None)));
        check(400, Some("5"), Some((false, None)));
        check(401, None, Some((false, None)));
        check(404, None, Some((false, None)));
        check(302, None, Some((false, None)));
        let err = AnswerPolicy::new("webhook").check(400, None, "bad\njson").expect_err("400 is an error");
        assert_eq!(err.code.as_deref(), Some("http_400"));
        assert_eq!(
            err.message,
            "webhook answered 400 (the request was refused; check the configuration): bad json"
        );
    }

    #[test]
    fn service_errors_in_their_own_words() {
        assert_eq!(service_words(r#"{"error":"forbidden"}"#), "forbidden");
        assert_eq!(service_words(r#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(service_words(r#"{"message":"Unknown Webhook","code":10015}"#), "Unknown Webhook");
        assert_eq!(service_words("  "), "no details");
        assert_eq!(
            service_words(r#"{"error":"Unauthorized","errorCode":401,"errorDescription":"a valid token"}"#),
            "a valid token"
        );
        assert_eq!(service_words(r#"{"error":{"nested":1}}"#), r#"{"error":{"nested":1}}"#);
        assert_eq!(service_words(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn a_service_adds_its_hints_and_its_delay_in_the_body() {
        const POLICY: AnswerPolicy = AnswerPolicy::new("Discord")
            .with_hints(|status| (status == 404).then_some("the webhook was deleted: create it again"))
            .with_delay_in_body(|body| {
                body.strip_prefix("wait ").and_then(|s| s.parse().ok()).map(Duration::from_secs)
            });
        let err = POLICY.check(404, None, "").expect_err("404");
        assert_eq!(
            err.message,
            "Discord answered 404 (the webhook was deleted: create it again): no details"
        );
        let err = POLICY.check(429, Some(Duration::from_secs(1)), "wait 5").expect_err("429");
        assert_eq!(err.retry_after, Some(Duration::from_secs(5)), "the body wins over the header");
        let err = POLICY.check(503, Some(Duration::from_secs(1)), "busy").expect_err("503");
        assert_eq!(err.retry_after, Some(Duration::from_secs(1)), "the header when the body says nothing");
        assert_eq!(err.message, "Discord answered 503 (the service failed; will retry): busy");
        let err = POLICY.check(401, Some(Duration::from_secs(1)), "").expect_err("401");
        assert_eq!((err.retryable, err.retry_after), (false, None), "a refusal is not retried later");
        assert!(retryable_status(408) && retryable_status(599) && !retryable_status(400));
    }
}

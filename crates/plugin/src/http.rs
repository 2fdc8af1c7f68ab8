//! Mapping HTTP answers to [`DeliveryError`]s, shared by every notifier that talks HTTP.
//!
//! The rules are the same for every service: 2xx is success; 408, 429 and 5xx are worth retrying, at the
//! time `Retry-After` names when the service sent one (seconds or an HTTP date, honoured exactly); any
//! other status is permanent. This module knows no HTTP client: notifiers pass the status code, the
//! `Retry-After` header and the start of the body.

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

/// Map a non-success HTTP status to a [`DeliveryError`] (`Ok` for 2xx).
///
/// `retry_after` is the raw `Retry-After` header, if any; `body` the start of the answer, shown in the
/// message (cut to 200 characters, control characters replaced) to help the user see what the service said.
pub fn check_status(
    service: &str,
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> Result<(), DeliveryError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let excerpt: String =
        body.chars().take(BODY_EXCERPT).map(|c| if c.is_control() { ' ' } else { c }).collect();
    let said = if excerpt.trim().is_empty() { String::new() } else { format!(": {}", excerpt.trim()) };
    let code = format!("http_{status}");
    let retryable = status == 408 || status == 429 || (500..600).contains(&status);
    let err = if retryable {
        let hint = match status {
            429 => "rate limited; will retry",
            408 => "the service timed out reading the request; will retry",
            _ => "the service failed; will retry",
        };
        let err =
            DeliveryError::retryable(format!("{service} answered {status} ({hint}){said}")).with_code(code);
        match retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())) {
            Some(after) => err.with_retry_after(after),
            None => err,
        }
    } else {
        let hint = match status {
            300..=399 => "a redirect; set the URL to the final address",
            401 | 403 => "check the credentials",
            404 => "check the URL",
            _ => "the request was refused; check the configuration",
        };
        DeliveryError::permanent(format!("{service} answered {status} ({hint}){said}")).with_code(code)
    };
    Err(err)
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
            let got = check_status("webhook", status, retry_after, "nope\nnot today")
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
        let err = check_status("webhook", 400, None, "bad\njson").expect_err("400 is an error");
        assert_eq!(err.code.as_deref(), Some("http_400"));
        assert_eq!(
            err.message,
            "webhook answered 400 (the request was refused; check the configuration): bad json"
        );
    }
}

//! Human durations in configuration: `"500ms"`, `"30s"`, `"10m"`, `"1h30m"`, `"2d"`.
//!
//! [`parse_duration`] reads them, [`format_duration`] writes them back in the same syntax, and
//! [`deserialize`] / [`deserialize_opt`] plug them into serde (`#[serde(deserialize_with = ...)]`) for a
//! notifier's own configuration. Calendar units (months, years) are deliberately not accepted: their length
//! varies.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Units in the order they must appear, with their length in nanoseconds.
const UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// Parse a duration such as `"0s"`, `"500ms"`, `"30s"`, `"10m"`, `"1h30m"`, `"1.5h"`, `"24h"` or `"2d"`.
///
/// Components are a number (decimals allowed) and a unit (`ms`, `s`, `m`, `h`, `d`), largest unit first,
/// each unit at most once, optionally separated by spaces. A bare `"0"` is zero. The error names the
/// problem and shows the accepted syntax.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let syntax = "write a number and a unit (ms, s, m, h, d), such as `30s`, `10m` or `1h30m`";
    if text.is_empty() {
        return Err(format!("empty duration: {syntax}"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(format!("invalid duration `{text}`: expected a number at `{rest}`; {syntax}"));
        }
        let after = after.trim_start();
        let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("invalid duration `{text}`: `{number}` has no unit; {syntax}"));
        }
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("invalid duration `{text}`: unknown unit `{unit}`; {syntax}"));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(format!(
                "invalid duration `{text}`: units must go from largest to smallest, each once (such as `1h30m`)"
            ));
        }
        last_unit = Some(index);
        let nanos = component_nanos(number, UNITS[index].1)
            .ok_or_else(|| format!("invalid duration `{text}`: `{number}` is not a number; {syntax}"))?;
        total = total.saturating_add(nanos);
        rest = after.trim_start();
    }
    let max = u128::from(u64::MAX) * 1_000_000_000;
    if total >= max {
        return Err(format!("duration `{text}` is too long"));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| format!("duration `{text}` is too long"))?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| format!("duration `{text}` is too long"))?;
    Ok(Duration::new(secs, nanos))
}

/// `number` (digits, at most one `.`) times `unit_nanos`, exactly for integers, to the nanosecond for
/// decimals.
fn component_nanos(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut nanos = whole.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in frac.chars().take(18) {
        scale /= 10;
        nanos = nanos.checked_add(u128::from(digit.to_digit(10)?) * scale)?;
    }
    Some(nanos)
}

/// Write a duration in the syntax [`parse_duration`] reads: `0s`, `500ms`, `45s`, `15m`, `1h30m`, `2d3h`.
/// Sub-second parts are kept only for durations under a minute.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_secs(60) && d.subsec_millis() != 0 {
        let ms = d.as_millis();
        return format!("{}s{}ms", ms / 1000, ms % 1000);
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Serde helper: a duration written as a string (`"30s"`).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Serde helper: an optional duration written as a string (`"30s"`).
pub fn deserialize_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        fn check(input: &str, expected: Duration) {
            assert_eq!(parse_duration(input), Ok(expected), "{input}");
        }
        check("0", Duration::ZERO);
        check("0s", Duration::ZERO);
        check("500ms", Duration::from_millis(500));
        check("30s", Duration::from_secs(30));
        check("10m", Duration::from_secs(600));
        check("1h30m", Duration::from_secs(5400));
        check("1h 30m", Duration::from_secs(5400));
        check(" 24h ", Duration::from_secs(86_400));
        check("2d", Duration::from_secs(172_800));
        check("1.5h", Duration::from_secs(5400));
        check("0.25s", Duration::from_millis(250));
        check(".5s", Duration::from_millis(500));
        check("1m30s250ms", Duration::from_millis(90_250));
    }

    #[test]
    fn rejects_with_a_reason() {
        fn check(input: &str, expected_part: &str) {
            let err = parse_duration(input).expect_err(input);
            assert!(err.contains(expected_part), "{input}: {err}");
        }
        check("", "empty duration");
        check("10", "has no unit");
        check("5x", "unknown unit `x`");
        check("5 minutes", "unknown unit `minutes`");
        check("30s10m", "largest to smallest");
        check("1m1m", "largest to smallest");
        check("-5s", "expected a number");
        check("1.2.3s", "is not a number");
        check(".s", "is not a number");
        check("99999999999999999999999d", "too long");
        check("s", "expected a number");
    }

    #[test]
    fn formats_what_it_parses() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(86_400 + 3 * 3600 + 5), "1d3h5s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }
}

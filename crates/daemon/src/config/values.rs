//! Serde field helpers for the daemon's own keys (`#[serde(deserialize_with = ...)]`), with the messages
//! the configuration reference promises: `expected a string, found integer`, a duration's syntax error.
//!
//! Each helper takes the value as a `toml::Value` and checks its TOML type, so a message names TOML's types
//! (`string`, `integer`, `array`, ...) rather than Rust's. `toml::Value` hands a datetime to serde as a
//! string, so a table goes through [`mark_datetimes`] first. Ranges are not checked here: that is each
//! section's `validate`. Of this crate, this module imports only the pre-pass's [`UNREAD`].

use std::time::Duration;

use herald_plugin::parse_duration;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Value;

use super::source::UNREAD;

/// The key of the one-key table [`mark_datetimes`] puts in place of a datetime.
const DATETIME: &str = "\u{0}datetime";

/// `table` with each datetime (a value, or an item of an array value) in a one-key table that [`type_str`]
/// recognises, so that it is not taken for a string.
pub(super) fn mark_datetimes(table: toml::Table) -> toml::Table {
    let mark = |v: Value| match v {
        Value::Datetime(_) => Value::Table(toml::Table::from_iter([(DATETIME.to_owned(), v)])),
        other => other,
    };
    let mark_all = |(key, v): (String, Value)| match v {
        Value::Array(items) => (key, Value::Array(items.into_iter().map(mark).collect())),
        other => (key, mark(other)),
    };
    table.into_iter().map(mark_all).collect()
}

/// The TOML type of a value, as messages name it.
pub(super) fn type_str(v: &Value) -> &'static str {
    match v {
        Value::Table(t) if t.len() == 1 && t.contains_key(DATETIME) => "datetime",
        other => other.type_str(),
    }
}

/// The value if `take` accepts it, else `expected <what>, found <its type>`.
fn expect<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &str,
    take: impl FnOnce(Value) -> Result<T, Value>,
) -> Result<Option<T>, D::Error> {
    match take(Value::deserialize(d)?) {
        Ok(t) => Ok(Some(t)),
        Err(other) => Err(D::Error::custom(format!("expected {what}, found {}", type_str(&other)))),
    }
}

/// A string (one whose variables could not be replaced is the error [`UNREAD`]).
pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match expect(d, "a string", |v| match v {
        Value::String(s) => Ok(s),
        other => Err(other),
    })? {
        Some(s) if s.starts_with(UNREAD) => Err(D::Error::custom(UNREAD)),
        s => Ok(s),
    }
}

/// A duration written as a string (`"30s"`, `"1h30m"`).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match string(d)? {
        Some(s) => parse_duration(&s).map(Some).map_err(D::Error::custom),
        None => Ok(None),
    }
}

/// An integer.
pub(super) fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    expect(d, "an integer", |v| match v {
        Value::Integer(i) => Ok(i),
        other => Err(other),
    })
}

/// A number: a float or an integer.
pub(super) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    expect(d, "a number", |v| match v {
        Value::Float(f) => Ok(f),
        Value::Integer(i) => Ok(i as f64),
        other => Err(other),
    })
}

/// An array of event type names; the names are checked by `validate`, which can point at each item.
pub(super) fn events<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Value>>, D::Error> {
    expect(d, "an array of event types, such as `[\"run_finished\"]`", |v| match v {
        Value::Array(items) => Ok(items),
        other => Err(other),
    })
}

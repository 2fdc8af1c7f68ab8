//! Notifier configuration tables: [`ConfigError`], [`parse_table`], and the small serde helpers config structs
//! share ([`default_true`]).
//!
//! A notifier type's config struct is `#[serde(deny_unknown_fields)]`; [`parse_table`] reads a
//! `[[notifier]]` table (less the host's keys) into it, so a misspelt key, a missing one or a value of the
//! wrong type is a [`ConfigError`] that names the key, and the host then adds the file, line and column. This
//! module imports nothing else of the crate and does no I/O.

use serde::de::DeserializeOwned;

/// `#[serde(default = "herald_plugin::default_true")]`: a boolean key that is on unless the table says
/// `false`.
pub fn default_true() -> bool {
    true
}

/// A configuration mistake: where (file, line, column, key when known) and what to do about it.
///
/// Displayed as `<file>:<line>:<column>: <key>: <message>`, leaving out the parts not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file the configuration came from (or `built-in defaults`).
    pub origin: Option<String>,
    /// 1-based line and column of the offending key or value.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, such as `daemon.listen`, `notifier[2].events` or `headers.X-Token`.
    pub key: Option<String>,
    /// What is wrong, lowercase, saying what to do.
    pub message: String,
}

impl ConfigError {
    /// An error not tied to a key.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError { origin: None, position: None, key: None, message: message.into() }
    }

    /// An error about one key (a dotted path for nested keys).
    pub fn for_key(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { key: Some(key.into()), ..ConfigError::new(message) }
    }

    /// The error for a key the notifier does not know.
    pub fn unknown_key(key: &str, expected: &[&str]) -> ConfigError {
        let expected: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
        ConfigError::for_key(key, format!("unknown key; expected one of {}", expected.join(", ")))
    }

    /// Put the key under `parent` (`headers` + `X-Token` -> `headers.X-Token`); sets it when there is none.
    pub fn under(mut self, parent: &str) -> ConfigError {
        self.key = Some(match self.key.take() {
            Some(key) if !parent.is_empty() => format!("{parent}.{key}"),
            Some(key) => key,
            None => parent.to_owned(),
        });
        self
    }

    /// Set the 1-based line and column, unless already known.
    pub fn at(mut self, line: usize, column: usize) -> ConfigError {
        self.position.get_or_insert((line, column));
        self
    }

    /// Set the file the configuration came from, unless already known.
    pub fn in_origin(mut self, origin: impl Into<String>) -> ConfigError {
        if self.origin.is_none() {
            self.origin = Some(origin.into());
        }
        self
    }

    fn render(&self) -> String {
        let mut out = String::new();
        match (&self.origin, self.position) {
            (Some(origin), Some((line, column))) => out.push_str(&format!("{origin}:{line}:{column}: ")),
            (Some(origin), None) => out.push_str(&format!("{origin}: ")),
            (None, Some((line, column))) => out.push_str(&format!("line {line}, column {column}: ")),
            (None, None) => {}
        }
        if let Some(key) = &self.key {
            out.push_str(&format!("{key}: "));
        }
        out.push_str(&self.message);
        out
    }
}

/// Deserialize a notifier's table into its configuration struct.
///
/// Use `#[serde(deny_unknown_fields)]` on the struct: an unknown or missing key, or a value of the wrong
/// type, becomes a [`ConfigError`] whose `key` is the full dotted path of the key (`headers.X-Token`,
/// `urll`), which the host turns into a line and column.
pub fn parse_table<T: DeserializeOwned>(table: toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(table).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.message().trim().to_owned();
        let parent = if path == "." { String::new() } else { path };
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix).and_then(|rest| rest.split('`').next()));
        match named {
            Some(field) => {
                // serde_path_to_error puts an unknown field in the path already, a missing one not.
                let key = if parent.is_empty() {
                    field.to_owned()
                } else if parent == field || parent.ends_with(&format!(".{field}")) {
                    parent
                } else {
                    format!("{parent}.{field}")
                };
                let message = if message.starts_with("unknown field") {
                    match message.split_once(", expected ") {
                        Some((_, expected)) => format!("unknown key; expected {expected}"),
                        None => "unknown key".to_owned(),
                    }
                } else {
                    "missing required key".to_owned()
                };
                ConfigError::for_key(key, message)
            }
            None if parent.is_empty() => ConfigError::new(message),
            None => ConfigError::for_key(parent, message),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::Secret;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        url: Secret,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
        timeout: Option<Duration>,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        level: u8,
    }

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
    }

    #[test]
    fn parse_table_names_the_key() {
        fn check(text: &str, key: Option<&str>, message_part: &str) {
            let err = parse_table::<Sample>(table(text)).expect_err(text);
            assert_eq!(err.key.as_deref(), key, "{text}: {err}");
            assert!(err.message.contains(message_part), "{text}: {err}");
        }
        check("url = 'x'\nurll = 'y'", Some("urll"), "unknown key; expected one of `url`");
        check("headers = {}", Some("url"), "missing required key");
        check("url = 3", Some("url"), "string");
        check("url = 'x'\nheaders = { A = 1 }", Some("headers.A"), "string");
        check("url = 'x'\ntimeout = '5 minutes'", Some("timeout"), "unknown unit `minutes`");
        check("url = 'x'\nnested = { level = 1, lvl = 2 }", Some("nested.lvl"), "unknown key");
        check("url = 'x'\nnested = { level = 'high' }", Some("nested.level"), "expected u8");
        let ok = parse_table::<Sample>(table("url = 'x'\ntimeout = '2s'")).expect("valid table");
        assert_eq!(ok.timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn config_error_display() {
        let e = ConfigError::for_key("url", "missing required key");
        assert_eq!(e.to_string(), "url: missing required key");
        let e = e.under("notifier[1]").at(3, 7).in_origin("/etc/herald.toml");
        assert_eq!(e.to_string(), "/etc/herald.toml:3:7: notifier[1].url: missing required key");
        assert_eq!(ConfigError::new("bad").at(1, 2).to_string(), "line 1, column 2: bad");
        assert_eq!(ConfigError::new("bad").in_origin("f").to_string(), "f: bad");
    }
}

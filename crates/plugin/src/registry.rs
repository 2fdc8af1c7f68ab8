//! Notifier configuration: the [`Registry`] of notifier types, [`ConfigError`] and [`parse_table`].
//!
//! The host (the daemon, `herald check`, `herald send --direct`) reads each `[[notifier]]` table, takes out
//! the keys it owns (name, type, routing) and hands the rest to the constructor registered for the table's
//! `type`. A constructor parses its table with [`parse_table`] into its own `#[serde(deny_unknown_fields)]`
//! struct, so a misspelt key is an error that names the key; the host then adds the file, line and column.
//! This module does no I/O and knows no notifier type itself.

use serde::de::DeserializeOwned;

use crate::notifier::Notifier;

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

/// Builds a notifier of one type from its name and table.
pub type Constructor = fn(name: &str, table: toml::Table) -> Result<Box<dyn Notifier>, ConfigError>;

/// Notifier types by `type` name.
#[derive(Default, Clone)]
pub struct Registry {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    kind: &'static str,
    description: &'static str,
    ctor: Constructor,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Register a type; a later registration of the same name replaces the earlier one.
    pub fn register(&mut self, kind: &'static str, description: &'static str, ctor: Constructor) {
        let entry = Entry { kind, description, ctor };
        match self.entries.iter_mut().find(|e| e.kind == kind) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// Build the notifier `name` of type `kind` from its table. An unknown type is an error on key `type`
    /// that lists the known ones.
    pub fn build(
        &self,
        kind: &str,
        name: &str,
        table: toml::Table,
    ) -> Result<Box<dyn Notifier>, ConfigError> {
        match self.entries.iter().find(|e| e.kind == kind) {
            Some(entry) => (entry.ctor)(name, table),
            None => {
                let known: Vec<String> = self.entries.iter().map(|e| format!("`{}`", e.kind)).collect();
                Err(ConfigError::for_key(
                    "type",
                    format!(
                        "unknown notifier type `{kind}`; this build knows {} (`herald plugins` lists them)",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                ))
            }
        }
    }

    /// Whether a type is registered.
    pub fn contains(&self, kind: &str) -> bool {
        self.entries.iter().any(|e| e.kind == kind)
    }

    /// `(type, description)` of every registered type, in registration order.
    pub fn kinds(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.entries.iter().map(|e| (e.kind, e.description))
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| e.kind)).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::{DeliveryError, Notification, Receipt, Secret};

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

    struct Null;

    #[async_trait::async_trait]
    impl Notifier for Null {
        fn kind(&self) -> &str {
            "null"
        }
        async fn deliver(&self, _: &Notification) -> Result<Receipt, DeliveryError> {
            Ok(Receipt::none())
        }
    }

    fn null(_name: &str, table: toml::Table) -> Result<Box<dyn Notifier>, ConfigError> {
        if let Some(key) = table.keys().next() {
            return Err(ConfigError::unknown_key(key, &[]));
        }
        Ok(Box::new(Null))
    }

    #[test]
    fn registry_builds_and_names_unknown_types() {
        let mut registry = Registry::new();
        registry.register("null", "drops everything", null);
        assert_eq!(registry.kinds().collect::<Vec<_>>(), vec![("null", "drops everything")]);
        assert!(registry.contains("null"));
        let n = registry.build("null", "n", toml::Table::new()).expect("null takes an empty table");
        assert_eq!(n.kind(), "null");
        let err = registry.build("nul", "n", toml::Table::new()).err().expect("unknown type");
        assert_eq!(err.key.as_deref(), Some("type"));
        assert!(err.message.contains("unknown notifier type `nul`; this build knows `null`"), "{err}");
        let err = registry.build("null", "n", table("x = 1")).err().expect("unknown key");
        assert_eq!(err.key.as_deref(), Some("x"));
    }
}

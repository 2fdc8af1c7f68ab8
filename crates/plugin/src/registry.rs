//! The [`Registry`] of notifier types, by `type` name.
//!
//! The host (the daemon, `herald check`, `herald send --direct`) reads each `[[notifier]]` table, takes out
//! the keys it owns (name, type, routing) and hands the rest to the type registered under the table's
//! `type`. A type is a [`NotifierType`] (`Registry::add`), whose table is parsed with
//! [`crate::parse_table`] into its config struct; a type whose table needs more than serde (the
//! out-of-process `exec` notifier) registers a [`Constructor`] instead. This module does no I/O and knows no
//! notifier type itself.

use crate::config::ConfigError;
use crate::notifier::Notifier;
use crate::notifier_type::NotifierType;

/// Builds a notifier of one type from its name and table ([`NotifierType::from_table`] for a typed one).
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

    /// Register the notifier type `T` under `T::KIND`; a later registration of the same name replaces the
    /// earlier one.
    pub fn add<T: NotifierType>(&mut self) {
        self.register(T::KIND, T::DESCRIPTION, T::from_table);
    }

    /// Register a type by hand, for one whose table needs more than a [`NotifierType`] (the host's `exec`
    /// notifier); a later registration of the same name replaces the earlier one.
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
    use super::*;
    use crate::{DeliveryError, Notification, Receipt};

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
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

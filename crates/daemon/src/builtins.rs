//! The notifier types linked into this build, as a [`Registry`].
//!
//! `herald serve`, `herald check`, `herald send --direct` and `herald plugins` all take their notifier
//! types from [`registry`]; a notifier crate joins by adding one `register` line here (and its crate to
//! `Cargo.toml`). Out-of-process notifiers are not listed here.

use herald_plugin::Registry;

/// Every built-in notifier type.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(herald_console::KIND, herald_console::DESCRIPTION, herald_console::new);
    registry.register(herald_webhook::KIND, herald_webhook::DESCRIPTION, herald_webhook::new);
    registry.register(crate::exec::KIND, crate::exec::DESCRIPTION, crate::exec::new);
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_console_and_webhook() {
        let kinds: Vec<&str> = super::registry().kinds().map(|(kind, _)| kind).collect();
        assert!(kinds.contains(&"console") && kinds.contains(&"webhook"), "{kinds:?}");
        for (kind, description) in super::registry().kinds() {
            assert!(!description.is_empty(), "{kind} has a description");
        }
    }
}

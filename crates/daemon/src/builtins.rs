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
    registry.register(herald_email::KIND, herald_email::DESCRIPTION, herald_email::new);
    registry.register(herald_desktop::KIND, herald_desktop::DESCRIPTION, herald_desktop::new);
    registry.register(herald_pushover::KIND, herald_pushover::DESCRIPTION, herald_pushover::new);
    registry.register(herald_ntfy::KIND, herald_ntfy::DESCRIPTION, herald_ntfy::new);
    registry.register(herald_discord::KIND, herald_discord::DESCRIPTION, herald_discord::new);
    registry.register(herald_telegram::KIND, herald_telegram::DESCRIPTION, herald_telegram::build);
    registry.register(herald_slack::KIND, herald_slack::DESCRIPTION, herald_slack::build);
    registry.register(herald_plugin_host::KIND, herald_plugin_host::DESCRIPTION, herald_plugin_host::new);
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_console_and_webhook() {
        let kinds: Vec<&str> = super::registry().kinds().map(|(kind, _)| kind).collect();
        assert!(kinds.contains(&"console") && kinds.contains(&"webhook"), "{kinds:?}");
        for kind in ["email", "desktop", "pushover", "ntfy", "discord", "telegram", "slack"] {
            assert!(kinds.contains(&kind), "{kind} is built in: {kinds:?}");
        }
        for (kind, description) in super::registry().kinds() {
            assert!(!description.is_empty(), "{kind} has a description");
        }
    }
}

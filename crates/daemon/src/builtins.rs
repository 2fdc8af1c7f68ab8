//! The notifier types linked into this build, as a [`Registry`].
//!
//! `herald serve`, `herald check`, `herald send --direct` and `herald plugins` all take their notifier
//! types from [`registry`]; a notifier crate joins by adding one `add::<ItsConfig>()` line here (its config
//! struct is its `herald_plugin::NotifierType`) and its crate to `Cargo.toml`. Out-of-process notifiers
//! are not listed here.

use herald_plugin::Registry;

/// Every built-in notifier type.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.add::<herald_console::ConsoleConfig>();
    registry.add::<herald_webhook::WebhookConfig>();
    registry.add::<herald_email::EmailConfig>();
    registry.add::<herald_desktop::DesktopConfig>();
    registry.add::<herald_pushover::PushoverConfig>();
    registry.add::<herald_ntfy::NtfyConfig>();
    registry.add::<herald_discord::DiscordConfig>();
    registry.add::<herald_telegram::TelegramConfig>();
    registry.add::<herald_slack::SlackConfig>();
    // `exec` splits its table between the host's keys and the plugin's, and names itself after the plugin:
    // more than a `NotifierType`, so it registers its constructor.
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

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

/// The configuration used when there is no file: the console, and desktop notifications when this session
/// has a D-Bus session bus (`herald_desktop::session_bus_available`).
pub fn default_config() -> String {
    default_config_for(herald_desktop::session_bus_available())
}

/// [`default_config`] for a session with or without a session bus. A bus with no notification server behind
/// it fails deliveries as retryable, so the desktop's are given up after ten minutes rather than a day.
pub fn default_config_for(session_bus: bool) -> String {
    defaults(session_bus, "[[notifier]]\ntype = \"console\"\n")
}

/// The configuration used when there is no file, for a process whose own output shares the console
/// notifier's terminal (`herald train`'s results table, the command `herald watch` runs): the console says
/// only what that output does not (`format = "lines"`), and desktop notifications as in [`default_config`].
pub fn default_config_beside_output() -> String {
    default_config_beside_output_for(herald_desktop::session_bus_available())
}

/// [`default_config_beside_output`] for a session with or without a session bus.
pub fn default_config_beside_output_for(session_bus: bool) -> String {
    defaults(session_bus, "[[notifier]]\ntype = \"console\"\nformat = \"lines\"\n")
}

fn defaults(session_bus: bool, console: &str) -> String {
    let desktop = "[[notifier]]\ntype = \"desktop\"\nmax_age = \"10m\"\n";
    if session_bus { format!("{console}{desktop}") } else { console.to_owned() }
}

/// Build the notifier `name` of type `kind` from its table: a type of `registry`, else the plugin
/// `herald-notify-<kind>` when one is installed (`herald_plugin_host::discover`), else the registry's error,
/// saying what to install.
pub fn build(
    registry: &Registry,
    kind: &str,
    name: &str,
    table: toml::Table,
) -> Result<Box<dyn herald_plugin::Notifier>, herald_plugin::ConfigError> {
    if registry.contains(kind) {
        return registry.build(kind, name, table);
    }
    match herald_plugin_host::discover(kind) {
        Some(program) => herald_plugin_host::build_discovered(name, kind, program, table),
        None => registry.build(kind, name, table).map_err(|e| herald_plugin::ConfigError {
            message: format!(
                "{}; or install a plugin as an executable `{}{kind}` on PATH or in ~/.local/share/herald/plugins",
                e.message,
                herald_plugin_host::PREFIX,
            ),
            ..e
        }),
    }
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

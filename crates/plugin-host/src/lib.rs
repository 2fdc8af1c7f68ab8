//! The host side of Herald's plugin protocol: out-of-process notifiers, supervised, behind the ordinary
//! [`Notifier`] trait, and the conformance kit that checks a plugin.
//!
//! `type = "exec"` with `command = ["program", "args"...]`, or any unknown `type = "<name>"` that resolves to
//! an executable `herald-notify-<name>` on `PATH` or in `~/.local/share/herald/plugins` ([`discover`]), builds
//! an [`ExecNotifier`]. Because it is a plain notifier, the daemon's workers give it what they give every
//! built-in (routing keys, order per run, rate limits, retries with backoff, `max_age`, isolation); this
//! crate adds what a child process needs. An [`ExecNotifier`] owns one child (spawned with `kill_on_drop`)
//! speaking `herald_plugin::protocol` on stdin/stdout, does the `hello`/`ready` handshake under a timeout,
//! sends `deliver` lines and matches answers by id with up to `concurrency` in flight, and restarts the child
//! with backoff after a crash, a hang (no answer within `delivery_timeout`) or a protocol violation (a line
//! that is not a protocol message, a line over 1 MiB, an unknown id, an answer of the wrong type). What the
//! child had in flight fails as retryable, so it goes back to the outbox and is retried by a fresh child;
//! while the child is down, deliveries fail at once instead of waiting. The child's stderr goes to the log
//! tagged with the notifier's name; `command` lines (only from plugins that declared `commands`) go to the
//! [`herald_plugin::Host`] passed to [`Notifier::listen`]. Restarts and the last error show in
//! [`Notifier::health_check`].
//!
//! [`conformance`] is the kit behind `herald plugin test`, and a plugin author's own `cargo test` can run it
//! ([`conformance::check`]).
//!
//! The modules depend one way: `options`, `discover` and `pipes` import nothing of the crate; `shared` (the
//! state the notifier and its supervisor share) imports `options`; `child` (one life of the child process)
//! imports `shared` and `pipes`; `supervisor` imports `child`; `notifier` imports `supervisor`.
//!
//! This crate depends on the SDK (`herald-plugin`), never on the daemon. It does not sandbox the plugin (it
//! runs as the daemon's user) and does not load code into the daemon.

use std::path::PathBuf;

use herald_plugin::{ConfigError, Notifier};

mod child;
pub mod conformance;
mod discover;
mod notifier;
mod options;
mod pipes;
mod shared;
mod supervisor;

pub use discover::{PREFIX, discover, discover_all, discover_all_in, discover_in, plugin_dirs};
pub use notifier::ExecNotifier;
pub use options::ExecOptions;
pub use shared::{ExecStats, PluginState};

/// The `type` name of a plugin given by its command.
pub const KIND: &str = "exec";
/// What `herald plugins` says about it.
pub const DESCRIPTION: &str =
    "runs an out-of-process plugin (`command = [...]`) speaking the herald-plugin protocol";

/// The registry constructor of `type = "exec"`.
pub fn new(name: &str, table: toml::Table) -> Result<Box<dyn Notifier>, ConfigError> {
    let options = ExecOptions::from_table(table, None)?;
    Ok(Box::new(ExecNotifier::new(name, KIND, options)))
}

/// Build the notifier of a discovered plugin: `type = kind` run by `program`.
pub fn build_discovered(
    name: &str,
    kind: &str,
    program: PathBuf,
    table: toml::Table,
) -> Result<Box<dyn Notifier>, ConfigError> {
    let options = ExecOptions::from_table(table, Some(program))?;
    Ok(Box::new(ExecNotifier::new(name, kind, options)))
}

#[cfg(test)]
mod tests;

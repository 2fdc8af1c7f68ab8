//! How to run one plugin: [`ExecOptions`], and the split of a `[[notifier]]` table into the host's keys
//! (`command`, `concurrency`, the timeouts) and the plugin's own configuration, which goes to it in `hello`.
//!
//! It checks the host's keys (with the key named in the error) and passes every other key on as JSON without
//! judging it: the plugin validates its own table at the handshake.

use std::path::PathBuf;
use std::time::Duration;

use herald_plugin::{ConfigError, parse_table};
use serde::Deserialize;

/// The keys the host keeps; every other key of the table goes to the plugin in `hello`.
const HOST_KEYS: [&str; 5] =
    ["command", "concurrency", "handshake_timeout", "delivery_timeout", "shutdown_grace"];

fn default_concurrency() -> usize {
    1
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(25)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(5)
}

/// The host's keys of a plugin's `[[notifier]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostKeys {
    /// The program and its arguments (`type = "exec"` only).
    #[serde(default)]
    command: Option<Vec<String>>,
    /// Deliveries in flight at once, default 1.
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    /// Time for the plugin to answer `hello`, default `10s`.
    #[serde(
        default = "default_handshake_timeout",
        deserialize_with = "herald_plugin::duration::deserialize"
    )]
    handshake_timeout: Duration,
    /// Time for the plugin to answer one `deliver` before it counts as hung and is restarted, default `25s`.
    #[serde(default = "default_delivery_timeout", deserialize_with = "herald_plugin::duration::deserialize")]
    delivery_timeout: Duration,
    /// Time for the plugin to exit after `shutdown` before it is killed, default `5s`.
    #[serde(default = "default_shutdown_grace", deserialize_with = "herald_plugin::duration::deserialize")]
    shutdown_grace: Duration,
}

/// How to run one plugin.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The program (a path, or a name looked up on `PATH`).
    pub program: PathBuf,
    /// The program's arguments.
    pub args: Vec<String>,
    /// The plugin's own configuration, sent in `hello`.
    pub config: serde_json::Value,
    /// Deliveries in flight at once (at least 1).
    pub concurrency: usize,
    /// Time for the plugin to answer `hello`.
    pub handshake_timeout: Duration,
    /// Time for the plugin to answer one `deliver` before it counts as hung and is restarted.
    pub delivery_timeout: Duration,
    /// Time for the plugin to exit after `shutdown` before it is killed.
    pub shutdown_grace: Duration,
}

impl ExecOptions {
    /// Options with the defaults for `program args...` and an empty configuration.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> ExecOptions {
        ExecOptions {
            program: program.into(),
            args,
            config: serde_json::Value::Object(Default::default()),
            concurrency: default_concurrency(),
            handshake_timeout: default_handshake_timeout(),
            delivery_timeout: default_delivery_timeout(),
            shutdown_grace: default_shutdown_grace(),
        }
    }

    /// Split a table into the host's keys and the plugin's configuration.
    pub(crate) fn from_table(
        mut table: toml::Table,
        program: Option<PathBuf>,
    ) -> Result<ExecOptions, ConfigError> {
        let mut host = toml::Table::new();
        for key in HOST_KEYS {
            if let Some(v) = table.remove(key) {
                host.insert(key.to_owned(), v);
            }
        }
        let keys: HostKeys = parse_table(host)?;
        let (program, args) = match (program, keys.command) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::for_key(
                    "command",
                    "only `type = \"exec\"` takes a command; a plugin found by its type runs as it is",
                ));
            }
            (Some(program), None) => (program, Vec::new()),
            (None, Some(mut command)) => {
                if command.is_empty() || command[0].trim().is_empty() {
                    return Err(ConfigError::for_key(
                        "command",
                        "name the program to run, such as `command = [\"herald-notify-gotify\"]`",
                    ));
                }
                let program = PathBuf::from(command.remove(0));
                (program, command)
            }
            (None, None) => {
                return Err(ConfigError::for_key(
                    "command",
                    "missing required key: the program to run and its arguments, such as \
                     `command = [\"python3\", \"/path/to/plugin.py\"]`",
                ));
            }
        };
        if !(1..=1024).contains(&keys.concurrency) {
            return Err(ConfigError::for_key("concurrency", "must be an integer from 1 to 1024"));
        }
        for (key, d) in
            [("handshake_timeout", keys.handshake_timeout), ("delivery_timeout", keys.delivery_timeout)]
        {
            if d.is_zero() {
                return Err(ConfigError::for_key(key, "must be more than zero, such as `10s`"));
            }
        }
        let config = serde_json::to_value(&table)
            .map_err(|e| ConfigError::new(format!("cannot pass the table to the plugin as JSON: {e}")))?;
        Ok(ExecOptions {
            program,
            args,
            config,
            concurrency: keys.concurrency,
            handshake_timeout: keys.handshake_timeout,
            delivery_timeout: keys.delivery_timeout,
            shutdown_grace: keys.shutdown_grace,
        })
    }
}

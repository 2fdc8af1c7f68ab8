//! Configuration: where it is found, what it may say, and errors that point at the offending key.
//!
//! [`load`] takes `--config`, else `$HERALD_CONFIG`, else `$XDG_CONFIG_HOME/herald/herald.toml` (by default
//! `~/.config/herald/herald.toml`), else the built-in default (`crate::builtins::default_config`). [`parse`]
//! reads the TOML with spans, so every error names `<file>:<line>:<column>: <key>: <message>`; unknown keys
//! are rejected. String values may use `${VAR}` and `${VAR:-default}` (`$${` writes a literal `${`), and any
//! top-level key `K_file = "path"` of `[daemon]` or a `[[notifier]]` reads `K` from that file (trailing
//! newlines dropped; relative paths are taken from the configuration file's folder), for secrets.
//!
//! One pre-pass (`source.rs`) does the interpolation, the `*_file` keys and the positions; then `[daemon]`
//! (`daemon.rs`) and the keys the daemon owns in each `[[notifier]]` (`notifier.rs`: name, type, routing)
//! are deserialized with serde and checked by a `validate`. The rest of a notifier's table goes to the
//! constructor of its `type` ([`NotifierConfig::build`]), which rejects what it does not know, and the
//! position of the key it names is added here. This module knows no notifier type, starts nothing, and does
//! not check that a non-loopback `listen` has a `token` (the daemon does at start).

mod cluster;
mod daemon;
mod glob;
mod notifier;
mod rule;
mod source;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_quiet;
mod values;

use std::path::{Path, PathBuf};

use herald_plugin::{ConfigError, Registry};

pub use cluster::{ClusterAuth, ClusterConfig, Role};
pub use daemon::DaemonConfig;
pub use glob::Glob;
pub use notifier::{KeyPositions, NamedNotifier, NotifierConfig, Routing};
pub use rule::{Op, RuleConfig, RuleKind};
pub use source::interpolate;

/// The origin of a configuration that came from no file.
pub const BUILT_IN: &str = "built-in defaults";

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[daemon]` section.
    pub daemon: DaemonConfig,
    /// Every `[[notifier]]`, in file order.
    pub notifiers: Vec<NotifierConfig>,
    /// Every `[[rule]]` (alert rules), in file order.
    pub rules: Vec<RuleConfig>,
    /// The `[cluster]` section: none for a single machine.
    pub cluster: Option<ClusterConfig>,
    /// The file it came from, or [`BUILT_IN`].
    pub origin: String,
}

impl Config {
    /// The built-in configuration: default daemon settings and the built-in default notifiers.
    pub fn defaults() -> Result<Config, ConfigError> {
        parse_with(&crate::builtins::default_config(), BUILT_IN, &process_env)
    }

    /// Build every notifier, in order, as `(name, notifier)`; the first error stops.
    pub fn build_notifiers(&self, registry: &Registry) -> Result<Vec<NamedNotifier>, ConfigError> {
        self.notifiers.iter().map(|n| Ok((n.name.clone(), n.build(registry)?))).collect()
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Find and read the configuration: `explicit` (`--config`), else `$HERALD_CONFIG`, else
/// [`default_path`] if that file exists, else the built-in default.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    load_with(explicit, &process_env)
}

/// [`load`] for a process whose own output shares the terminal with the console notifier (`herald train`,
/// `herald watch`): the same files, but with none the built-in default is
/// `crate::builtins::default_config_beside_output` (the console in `format = "lines"`, so the trainer's
/// results table is not printed twice). A configuration file says for itself what its console does.
pub fn load_beside_output(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    load_or(explicit, &process_env, &crate::builtins::default_config_beside_output)
}

/// [`load`] with the environment given as a function (for tests and embedding).
pub fn load_with(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    load_or(explicit, env, &crate::builtins::default_config)
}

/// [`load_with`], with `default` giving the configuration text used when no file is found.
fn load_or(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    default: &dyn Fn() -> String,
) -> Result<Config, ConfigError> {
    if let Some(path) = explicit {
        return read(path, env);
    }
    if let Some(path) = env("HERALD_CONFIG").filter(|p| !p.is_empty()) {
        return read(Path::new(&path), env);
    }
    if let Some(path) = default_path(env) {
        match std::fs::metadata(&path) {
            Ok(_) => return read(&path, env),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::new(format!("cannot read the configuration: {e}"))
                    .in_origin(path.display().to_string()));
            }
        }
    }
    parse_with(&default(), BUILT_IN, env)
}

/// Where the configuration is looked for when neither `--config` nor `$HERALD_CONFIG` say:
/// `$XDG_CONFIG_HOME/herald/herald.toml`, else `~/.config/herald/herald.toml`.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = match env("XDG_CONFIG_HOME").filter(|p| Path::new(p).is_absolute()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME").filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("herald").join("herald.toml"))
}

fn read(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(format!(
            "cannot read the configuration: {e}; check the path given by --config or $HERALD_CONFIG"
        ))
        .in_origin(origin.clone())
    })?;
    parse_with(&text, &origin, env)
}

/// Parse configuration text. `origin` names the file in errors; relative paths in it (`*_file`,
/// `state_dir`, `socket`) are taken from its folder.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_with(text, origin, &process_env)
}

/// [`parse`] with the environment given as a function (for tests and embedding).
pub fn parse_with(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let src = source::Source::new(text, origin, env, origin == BUILT_IN);
    sections(&src).map_err(|e| e.in_origin(origin))
}

/// The top-level sections: `[daemon]`, `[[notifier]]`, `[[rule]]` and `[cluster]`, nothing else.
fn sections(src: &source::Source) -> Result<Config, ConfigError> {
    let mut daemon = None;
    let mut notifiers = Vec::new();
    let mut rules = Vec::new();
    let mut cluster = None;
    for (key, value) in src.root()? {
        match key.get_ref().as_ref() {
            "daemon" => daemon = Some(daemon::section(src, Some(value))?),
            "notifier" => notifiers = notifier::list(src, value)?,
            "rule" => rules = rule::list(src, value)?,
            "cluster" => cluster = Some(cluster::section(src, value)?),
            other => {
                let message =
                    "unknown section; expected `[daemon]`, `[[notifier]]`, `[[rule]]` or `[cluster]`";
                return Err(src.err(&key.span(), other, message));
            }
        }
    }
    let daemon = match daemon {
        Some(d) => d,
        None => daemon::section(src, None)?,
    };
    let rules = rule::finish(rules, &notifiers)?;
    if let Some(c) = cluster.as_ref().filter(|c| c.role.deliver() && notifiers.is_empty()) {
        let message =
            "a deliverer needs at least one [[notifier]] to deliver to; add one, or set `role = \"edge\"`";
        let (line, column) = c.role_at;
        return Err(ConfigError::for_key("cluster.role", message).at(line, column));
    }
    Ok(Config { daemon, notifiers, rules, cluster, origin: src.origin.to_owned() })
}

//! Configuration: where it is found, what it may say, and errors that point at the offending key.
//!
//! [`load`] takes `--config`, else `$HERALD_CONFIG`, else `$XDG_CONFIG_HOME/herald/herald.toml` (by default
//! `~/.config/herald/herald.toml`), else the built-in default: one `console` notifier. [`parse`] reads the
//! TOML with spans, so every error names `<file>:<line>:<column>: <key>: <message>`; unknown keys are
//! rejected. String values may use `${VAR}` and `${VAR:-default}` (`$${` writes a literal `${`), and any
//! top-level key `K_file = "path"` of `[daemon]` or a `[[notifier]]` reads `K` from that file (trailing
//! newlines dropped; relative paths are taken from the configuration file's folder), for secrets.
//!
//! The daemon owns `[daemon]` and the routing keys of each `[[notifier]]`; the rest of a notifier's table
//! goes to the constructor of its `type` ([`NotifierConfig::build`]), which rejects what it does not know,
//! and the position of the key it names is added here. This module does not start anything and does not
//! check that a non-loopback `listen` has a `token` (the daemon does at start).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_event::EventKind;
use herald_plugin::{ConfigError, Notifier, Registry, Secret, parse_duration};
use toml::de::{DeArray, DeTable, DeValue};
use toml::{Spanned, Value};

/// A built notifier and its configured name.
pub type NamedNotifier = (String, Box<dyn Notifier>);

/// The origin of a configuration that came from no file.
pub const BUILT_IN: &str = "built-in defaults";

/// The built-in configuration, used when no file is found: the console.
const DEFAULT_TOML: &str = "[[notifier]]\ntype = \"console\"\n";

/// What the built-in configuration adds when a D-Bus session bus exists: desktop notifications. A bus with
/// no notification server behind it fails deliveries as retryable, so they are given up after ten minutes
/// rather than a day.
const DEFAULT_DESKTOP_TOML: &str = "[[notifier]]\ntype = \"desktop\"\nmax_age = \"10m\"\n";

/// The built-in configuration for this session: the console, and the desktop when there is a session bus.
fn default_toml(session_bus: bool) -> String {
    if session_bus { format!("{DEFAULT_TOML}{DEFAULT_DESKTOP_TOML}") } else { DEFAULT_TOML.to_owned() }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[daemon]` section.
    pub daemon: DaemonConfig,
    /// Every `[[notifier]]`, in file order.
    pub notifiers: Vec<NotifierConfig>,
    /// The file it came from, or [`BUILT_IN`].
    pub origin: String,
}

/// The `[daemon]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Address of the HTTP API, default `127.0.0.1:7878`.
    pub listen: SocketAddr,
    /// Unix socket of the same API, default `$XDG_RUNTIME_DIR/herald.sock` when `XDG_RUNTIME_DIR` is set;
    /// `""` disables it.
    pub socket: Option<PathBuf>,
    /// Bearer token the API requires; required when `listen` is not a loopback address.
    pub token: Option<Secret>,
    /// Where the outbox and run history live, default `$XDG_STATE_HOME/herald` (`~/.local/state/herald`).
    pub state_dir: PathBuf,
    /// A run silent this long gets `run_stalled`, default `15m`.
    pub stall_after: Duration,
    /// How long shutdown waits for deliveries in flight, default `30s`.
    pub drain_timeout: Duration,
    /// The address people reach the daemon at, for links in notifications; none by default.
    pub public_url: Option<String>,
}

/// One `[[notifier]]`.
#[derive(Clone)]
pub struct NotifierConfig {
    /// Unique name (letters, digits, `-`, `_`), default the type.
    pub name: String,
    /// `type`: which notifier (`console`, `webhook`, ...).
    pub kind: String,
    /// Which events it gets, how often and how fast.
    pub routing: Routing,
    /// The remaining keys, interpolated, with `*_file` keys resolved, for the notifier's constructor.
    pub table: toml::Table,
    /// Line and column of the `[[notifier]]` table.
    pub span: Option<(usize, usize)>,
    /// Where each key of `table` is, to point at the key a constructor complains about.
    pub keys: KeyPositions,
}

impl std::fmt::Debug for NotifierConfig {
    /// The table's values may be secrets: only its keys are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("routing", &self.routing)
            .field("table_keys", &self.table.keys().collect::<Vec<_>>())
            .field("span", &self.span)
            .finish()
    }
}

/// Positions of a notifier table's keys, for errors found after parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPositions {
    /// The file the table is in.
    pub origin: String,
    /// The key path prefix of the table in messages, such as `notifier[1]`.
    pub label: String,
    /// Dotted key path (`url`, `headers.X-Token`) -> 1-based line and column.
    pub positions: BTreeMap<String, (usize, usize)>,
}

/// The routing keys of a `[[notifier]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Event types sent, default `run_started, epoch_ended, run_finished, run_failed, run_stalled, run_lost,
    /// message`.
    pub events: Vec<EventKind>,
    /// Send every n-th epoch (and always the last), default 1.
    pub every_n_epochs: u32,
    /// At most one notification per this interval; when epochs end faster, the latest state is sent,
    /// never a backlog. Default `0s`.
    pub min_interval: Duration,
    /// Send `epoch_ended` only when this metric improves (such as `valid_loss` or `accuracy`).
    pub only_on_improvement: Option<String>,
    /// Token bucket rate, notifications per second; default per service.
    pub rate_per_s: Option<f64>,
    /// Token bucket size; default per service.
    pub burst: Option<u32>,
    /// Deadline of one delivery attempt, default `30s`.
    pub timeout: Duration,
    /// Give up retrying a notification this old, default `24h`.
    pub max_age: Duration,
}

impl Routing {
    /// The events a notifier gets unless it says otherwise.
    pub const DEFAULT_EVENTS: [EventKind; 7] = [
        EventKind::RunStarted,
        EventKind::EpochEnded,
        EventKind::RunFinished,
        EventKind::RunFailed,
        EventKind::RunStalled,
        EventKind::RunLost,
        EventKind::Message,
    ];
}

impl Default for Routing {
    fn default() -> Routing {
        Routing {
            events: Routing::DEFAULT_EVENTS.to_vec(),
            every_n_epochs: 1,
            min_interval: Duration::ZERO,
            only_on_improvement: None,
            rate_per_s: None,
            burst: None,
            timeout: Duration::from_secs(30),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl NotifierConfig {
    /// Build the notifier with `registry`. A constructor's error gets this table's file, the line and column
    /// of the key it names (or of the table), and the key path under `notifier[i]`.
    /// A type the registry does not know runs the plugin `herald-notify-<type>` when one is installed
    /// (`herald_plugin_host::discover`).
    pub fn build(&self, registry: &Registry) -> Result<Box<dyn Notifier>, ConfigError> {
        let built = match registry.contains(&self.kind) {
            true => registry.build(&self.kind, &self.name, self.table.clone()),
            false => match herald_plugin_host::discover(&self.kind) {
                Some(program) => {
                    herald_plugin_host::build_discovered(&self.name, &self.kind, program, self.table.clone())
                }
                None => registry.build(&self.kind, &self.name, self.table.clone()).map_err(|e| ConfigError {
                    message: format!(
                        "{}; or install a plugin as an executable `{}{}` on PATH or in \
                         ~/.local/share/herald/plugins",
                        e.message,
                        herald_plugin_host::PREFIX,
                        self.kind
                    ),
                    ..e
                }),
            },
        };
        built.map_err(|err| self.locate(err))
    }

    fn locate(&self, err: ConfigError) -> ConfigError {
        let mut position = None;
        if let Some(key) = &err.key {
            let mut path = key.as_str();
            loop {
                if let Some(p) = self.keys.positions.get(path) {
                    position = Some(*p);
                    break;
                }
                match path.rsplit_once('.') {
                    Some((parent, _)) => path = parent,
                    None => break,
                }
            }
        }
        let err = match err.message.starts_with("unknown key") {
            true => {
                let routing: Vec<String> = ROUTING_KEYS.iter().map(|k| format!("`{k}`")).collect();
                let message = format!("{} (or a routing key: {})", err.message, routing.join(", "));
                ConfigError { message, ..err }
            }
            false => err,
        };
        let err = err.under(&self.keys.label);
        let err = match position.or(self.span) {
            Some((line, column)) => err.at(line, column),
            None => err,
        };
        err.in_origin(self.keys.origin.clone())
    }
}

impl Config {
    /// The built-in configuration: one `console` notifier, default daemon settings.
    pub fn defaults() -> Result<Config, ConfigError> {
        parse_with(&default_toml(herald_desktop::session_bus_available()), BUILT_IN, &process_env)
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

/// [`load`] with the environment given as a function (for tests and embedding).
pub fn load_with(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
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
    parse_with(&default_toml(herald_desktop::session_bus_available()), BUILT_IN, env)
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
    let base_dir = if origin == BUILT_IN {
        None
    } else {
        Path::new(origin).parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf)
    };
    let cx = Cx { text, origin, env, base_dir };
    cx.parse().map_err(|e| e.in_origin(origin))
}

/// What every step of parsing needs.
struct Cx<'a> {
    text: &'a str,
    origin: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: Option<PathBuf>,
}

type Span = std::ops::Range<usize>;

const DAEMON_KEYS: [&str; 8] =
    ["listen", "socket", "token", "token_file", "state_dir", "stall_after", "drain_timeout", "public_url"];
const ROUTING_KEYS: [&str; 8] = [
    "events",
    "every_n_epochs",
    "min_interval",
    "only_on_improvement",
    "rate_per_s",
    "burst",
    "timeout",
    "max_age",
];

impl Cx<'_> {
    fn position(&self, span: &Span) -> (usize, usize) {
        let offset = span.start.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn err(&self, span: &Span, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(span);
        let err = ConfigError::new(message).at(line, column);
        if key.is_empty() { err } else { err.under(key) }
    }

    fn parse(&self) -> Result<Config, ConfigError> {
        let root = DeTable::parse(self.text).map_err(|e| {
            let message = format!("invalid TOML: {}", e.message().trim());
            match e.span() {
                Some(span) => self.err(&span, "", message),
                None => ConfigError::new(message),
            }
        })?;
        let mut daemon = None;
        let mut notifiers = Vec::new();
        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "daemon" => daemon = Some(self.daemon(value)?),
                "notifier" => notifiers = self.notifiers(value)?,
                other => {
                    return Err(self.err(
                        &key.span(),
                        other,
                        "unknown section; expected `[daemon]` or `[[notifier]]`",
                    ));
                }
            }
        }
        let daemon = match daemon {
            Some(d) => d,
            None => self.daemon(Spanned::new(0..0, DeValue::Table(DeTable::new())))?,
        };
        Ok(Config { daemon, notifiers, origin: self.origin.to_owned() })
    }

    // ---- values -------------------------------------------------------------------------------------

    fn interpolate(&self, s: &str, span: &Span, key: &str) -> Result<String, ConfigError> {
        interpolate(s, self.env).map_err(|m| self.err(span, key, m))
    }

    fn string(&self, v: &Spanned<DeValue>, key: &str) -> Result<String, ConfigError> {
        match v.get_ref() {
            DeValue::String(s) => self.interpolate(s, &v.span(), key),
            other => Err(self.err(&v.span(), key, format!("expected a string, found {}", other.type_str()))),
        }
    }

    fn duration(&self, v: &Spanned<DeValue>, key: &str) -> Result<Duration, ConfigError> {
        let s = self.string(v, key)?;
        parse_duration(&s).map_err(|m| self.err(&v.span(), key, m))
    }

    fn positive_duration(&self, v: &Spanned<DeValue>, key: &str) -> Result<Duration, ConfigError> {
        let d = self.duration(v, key)?;
        if d.is_zero() {
            return Err(self.err(&v.span(), key, "must be more than zero"));
        }
        Ok(d)
    }

    fn integer(&self, v: &Spanned<DeValue>, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                return Err(self.err(
                    &v.span(),
                    key,
                    format!("expected an integer, found {}", other.type_str()),
                ));
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(&v.span(), key, format!("must be an integer from {min} to {max}"))),
        }
    }

    fn path(&self, s: &str) -> PathBuf {
        let expanded = match s.strip_prefix("~/") {
            Some(rest) => match (self.env)("HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join(rest),
                None => PathBuf::from(s),
            },
            None if s == "~" => (self.env)("HOME").map_or_else(|| PathBuf::from(s), PathBuf::from),
            None => PathBuf::from(s),
        };
        match &self.base_dir {
            Some(base) if expanded.is_relative() => base.join(expanded),
            _ => expanded,
        }
    }

    /// Resolve `K_file` keys of a table into `K`, reading the files. Returns the table and, for each
    /// resolved key, the span of its `K_file` key.
    fn resolve_files<'i>(&self, table: DeTable<'i>, label: &str) -> Result<DeTable<'i>, ConfigError> {
        let mut out = DeTable::new();
        let names: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
        for (key, value) in table {
            let name = key.get_ref().to_string();
            let base = name.strip_suffix("_file").filter(|b| !b.is_empty());
            let (Some(base), DeValue::String(_)) = (base, value.get_ref()) else {
                out.insert(key, value);
                continue;
            };
            let full = join(label, &name);
            if names.iter().any(|n| n == base) {
                return Err(self.err(
                    &key.span(),
                    &full,
                    format!("set either `{base}` or `{name}`, not both"),
                ));
            }
            let path = self.path(&self.string(&value, &full)?);
            let contents = std::fs::read_to_string(&path).map_err(|e| {
                self.err(&value.span(), &full, format!("cannot read `{}`: {e}", path.display()))
            })?;
            let secret = contents.trim_end_matches(['\n', '\r']).to_owned();
            // The value is already final: `$` in a secret file is not interpolated.
            let escaped = secret.replace("${", "$${");
            out.insert(
                Spanned::new(key.span(), std::borrow::Cow::Owned(base.to_owned())),
                Spanned::new(value.span(), DeValue::String(std::borrow::Cow::Owned(escaped))),
            );
        }
        Ok(out)
    }

    // ---- [daemon] -----------------------------------------------------------------------------------

    fn daemon(&self, value: Spanned<DeValue>) -> Result<DaemonConfig, ConfigError> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            return Err(self.err(
                &span,
                "daemon",
                "expected a table: write `[daemon]` and its keys below it",
            ));
        };
        let table = self.resolve_files(table, "daemon")?;
        let env = self.env;
        let mut d = DaemonConfig {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7878)),
            socket: env("XDG_RUNTIME_DIR")
                .filter(|d| !d.is_empty())
                .map(|dir| PathBuf::from(dir).join("herald.sock")),
            token: None,
            state_dir: PathBuf::new(),
            stall_after: Duration::from_secs(15 * 60),
            drain_timeout: Duration::from_secs(30),
            public_url: None,
        };
        let mut state_dir = None;
        for (key, v) in &table {
            let name = key.get_ref().as_ref();
            let full = format!("daemon.{name}");
            match name {
                "listen" => d.listen = self.listen(v, &full)?,
                "socket" => {
                    let s = self.string(v, &full)?;
                    d.socket = if s.is_empty() { None } else { Some(self.path(&s)) };
                }
                "token" => {
                    let s = self.string(v, &full)?;
                    if s.is_empty() {
                        return Err(self.err(&v.span(), &full, "empty token; remove the key or set a token"));
                    }
                    d.token = Some(Secret::new(s));
                }
                "state_dir" => {
                    let s = self.string(v, &full)?;
                    if s.is_empty() {
                        return Err(self.err(&v.span(), &full, "empty path; remove the key for the default"));
                    }
                    state_dir = Some(self.path(&s));
                }
                "stall_after" => d.stall_after = self.positive_duration(v, &full)?,
                "drain_timeout" => d.drain_timeout = self.duration(v, &full)?,
                "public_url" => {
                    let s = self.string(v, &full)?;
                    if !(s.starts_with("http://") || s.starts_with("https://")) {
                        return Err(self.err(
                            &v.span(),
                            &full,
                            "must start with `http://` or `https://`, such as `https://herald.example.com`",
                        ));
                    }
                    d.public_url = Some(s.trim_end_matches('/').to_owned());
                }
                _ => return Err(self.err(&key.span(), &full, unknown_key(&DAEMON_KEYS))),
            }
        }
        d.state_dir = match state_dir {
            Some(dir) => dir,
            None => default_state_dir(env).ok_or_else(|| {
                self.err(
                    &(0..0),
                    "daemon.state_dir",
                    "cannot find a home folder ($HOME is not set); set `state_dir`",
                )
            })?,
        };
        Ok(d)
    }

    fn listen(&self, v: &Spanned<DeValue>, key: &str) -> Result<SocketAddr, ConfigError> {
        let s = self.string(v, key)?;
        let parsed = match s.strip_prefix("localhost:") {
            Some(port) => {
                port.parse::<u16>().ok().map(|p| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)))
            }
            None => s.parse::<SocketAddr>().ok(),
        };
        parsed.ok_or_else(|| {
            self.err(
                &v.span(),
                key,
                format!("`{s}` is not an address and port, such as `127.0.0.1:7878` or `[::1]:7878`"),
            )
        })
    }

    // ---- [[notifier]] -------------------------------------------------------------------------------

    fn notifiers(&self, value: Spanned<DeValue>) -> Result<Vec<NotifierConfig>, ConfigError> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            return Err(self.err(
                &span,
                "notifier",
                "expected an array of tables: write `[[notifier]]` (double brackets) above each notifier",
            ));
        };
        let mut out: Vec<NotifierConfig> = Vec::new();
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (index, item) in items.into_iter().enumerate() {
            let label = format!("notifier[{index}]");
            let (n, name_span) = self.notifier(item, &label)?;
            if let Some((line, _)) = seen.get(&n.name) {
                return Err(self.err(
                    &name_span,
                    &join(&label, "name"),
                    format!(
                        "the name `{}` is already used by the notifier at line {line}; give each [[notifier]] a \
                         unique `name`",
                        n.name
                    ),
                ));
            }
            seen.insert(n.name.clone(), n.span.unwrap_or((0, 0)));
            out.push(n);
        }
        Ok(out)
    }

    fn notifier(&self, item: Spanned<DeValue>, label: &str) -> Result<(NotifierConfig, Span), ConfigError> {
        let span = item.span();
        let DeValue::Table(table) = item.into_inner() else {
            return Err(self.err(&span, label, "expected a table of keys under `[[notifier]]`"));
        };
        let table = self.resolve_files(table, label)?;
        let mut name: Option<(String, Span)> = None;
        let mut kind: Option<String> = None;
        let mut routing = Routing::default();
        let mut rest = toml::Table::new();
        let mut positions = BTreeMap::new();
        for (key, v) in &table {
            let k = key.get_ref().as_ref();
            let full = join(label, k);
            match k {
                "name" => {
                    let s = self.string(v, &full)?;
                    if s.is_empty()
                        || s.len() > 64
                        || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(self.err(
                            &v.span(),
                            &full,
                            format!("`{s}` is not a valid name: use 1 to 64 letters, digits, `-` or `_`"),
                        ));
                    }
                    name = Some((s, key.span()));
                }
                "type" => {
                    let s = self.string(v, &full)?;
                    if s.is_empty() {
                        return Err(self.err(
                            &v.span(),
                            &full,
                            "empty type; `herald plugins` lists the types",
                        ));
                    }
                    positions.insert("type".to_owned(), self.position(&v.span()));
                    kind = Some(s);
                }
                "events" => routing.events = self.events(v, &full)?,
                "every_n_epochs" => {
                    routing.every_n_epochs = u32::try_from(self.integer(v, &full, 1, i64::from(u32::MAX))?)
                        .map_err(|_| self.err(&v.span(), &full, "too large"))?;
                }
                "min_interval" => routing.min_interval = self.duration(v, &full)?,
                "only_on_improvement" => {
                    let s = self.string(v, &full)?;
                    if s.is_empty() {
                        return Err(self.err(
                            &v.span(),
                            &full,
                            "empty metric name; name a metric or `valid_loss`",
                        ));
                    }
                    routing.only_on_improvement = Some(s);
                }
                "rate_per_s" => {
                    let rate = match v.get_ref() {
                        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
                        DeValue::Integer(i) => {
                            i64::from_str_radix(i.as_str(), i.radix()).ok().map(|i| i as f64)
                        }
                        other => {
                            return Err(self.err(
                                &v.span(),
                                &full,
                                format!("expected a number, found {}", other.type_str()),
                            ));
                        }
                    };
                    match rate {
                        Some(r) if r.is_finite() && r > 0.0 => routing.rate_per_s = Some(r),
                        _ => {
                            return Err(self.err(
                                &v.span(),
                                &full,
                                "must be a number above zero, such as `0.5`",
                            ));
                        }
                    }
                }
                "burst" => {
                    routing.burst = Some(
                        u32::try_from(self.integer(v, &full, 1, 1_000_000)?)
                            .map_err(|_| self.err(&v.span(), &full, "too large"))?,
                    );
                }
                "timeout" => routing.timeout = self.positive_duration(v, &full)?,
                "max_age" => routing.max_age = self.positive_duration(v, &full)?,
                _ => {
                    positions.insert(k.to_owned(), self.position(&key.span()));
                    let converted = self.value(v, k, label, &mut positions)?;
                    rest.insert(k.to_owned(), converted);
                }
            }
        }
        let Some(kind) = kind else {
            return Err(self.err(
                &span,
                &join(label, "type"),
                "missing key `type`: say which notifier this is, such as `type = \"console\"` (`herald plugins` \
                 lists the types)",
            ));
        };
        let (name, name_span) = match name {
            Some((n, s)) => (n, s),
            None => (kind.clone(), span.clone()),
        };
        let keys = KeyPositions { origin: self.origin.to_owned(), label: label.to_owned(), positions };
        let config =
            NotifierConfig { name, kind, routing, table: rest, span: Some(self.position(&span)), keys };
        Ok((config, name_span))
    }

    fn events(&self, v: &Spanned<DeValue>, key: &str) -> Result<Vec<EventKind>, ConfigError> {
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                key,
                format!(
                    "expected an array of event types, such as `[\"run_finished\"]`, found {}",
                    v.get_ref().type_str()
                ),
            ));
        };
        if items.is_empty() {
            return Err(self.err(
                &v.span(),
                key,
                "lists no event type; name at least one, or remove the notifier",
            ));
        }
        let mut kinds = Vec::new();
        for item in items.iter() {
            let name = self.string(item, key)?;
            let kind = name.parse::<EventKind>().map_err(|m| self.err(&item.span(), key, m))?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }

    /// A notifier-specific value as a `toml::Value`, strings interpolated, nested key positions recorded.
    fn value(
        &self,
        v: &Spanned<DeValue>,
        path: &str,
        label: &str,
        positions: &mut BTreeMap<String, (usize, usize)>,
    ) -> Result<Value, ConfigError> {
        let full = join(label, path);
        Ok(match v.get_ref() {
            DeValue::String(s) => Value::String(self.interpolate(s, &v.span(), &full)?),
            DeValue::Integer(i) => Value::Integer(
                i64::from_str_radix(i.as_str(), i.radix())
                    .map_err(|_| self.err(&v.span(), &full, "integer out of range"))?,
            ),
            DeValue::Float(f) => Value::Float(
                f.as_str()
                    .replace('_', "")
                    .parse::<f64>()
                    .map_err(|_| self.err(&v.span(), &full, "invalid float"))?,
            ),
            DeValue::Boolean(b) => Value::Boolean(*b),
            DeValue::Datetime(d) => Value::Datetime(*d),
            DeValue::Array(items) => Value::Array(self.array(items, path, label, positions)?),
            DeValue::Table(t) => {
                let mut out = toml::Table::new();
                for (key, item) in t {
                    let sub = join(path, key.get_ref());
                    positions.insert(sub.clone(), self.position(&key.span()));
                    out.insert(key.get_ref().to_string(), self.value(item, &sub, label, positions)?);
                }
                Value::Table(out)
            }
        })
    }

    fn array(
        &self,
        items: &DeArray,
        path: &str,
        label: &str,
        positions: &mut BTreeMap<String, (usize, usize)>,
    ) -> Result<Vec<Value>, ConfigError> {
        items.iter().map(|item| self.value(item, path, label, positions)).collect()
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

fn unknown_key(expected: &[&str]) -> String {
    let list: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
    format!("unknown key; expected one of {}", list.join(", "))
}

/// `$XDG_STATE_HOME/herald`, else `~/.local/state/herald`.
fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match env("XDG_STATE_HOME").filter(|p| Path::new(p).is_absolute()) {
        Some(dir) => Some(PathBuf::from(dir).join("herald")),
        None => Some(PathBuf::from(env("HOME").filter(|h| !h.is_empty())?).join(".local/state/herald")),
    }
}

/// Replace `${VAR}` and `${VAR:-default}` (default when VAR is unset or empty); `$${` is a literal `${`.
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                "`${` without a closing `}`; write `${NAME}`, or `$${` for a literal `${`".to_owned()
            })?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{inner}}}` does not name an environment variable; write `${{NAME}}` or `${{NAME:-default}}`"
                ));
            }
            let value = env(name).filter(|v| default.is_none() || !v.is_empty());
            match (value, default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set; set it, or write `${{{name}:-default}}`"
                    ));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/ada".into()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1000".into()),
            "HOOK_URL" => Some("http://127.0.0.1:9000/hook".into()),
            "EMPTY" => Some(String::new()),
            "HERALD_TOKEN" => Some("t0ken".into()),
            "HERALD_WEBHOOK_URL" => Some("https://hooks.example.com/T0K3N".into()),
            _ => None,
        }
    }

    fn parse_ok(text: &str) -> Config {
        match parse_with(text, "/etc/herald/herald.toml", &env) {
            Ok(c) => c,
            Err(e) => panic!("{text}\n-> {e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse_with(text, "/etc/herald/herald.toml", &env) {
            Ok(c) => panic!("{text}\n-> accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let c = parse_ok("");
        assert_eq!(c.daemon.listen, "127.0.0.1:7878".parse().expect("valid address"));
        assert_eq!(c.daemon.socket, Some(PathBuf::from("/run/user/1000/herald.sock")));
        assert_eq!(c.daemon.state_dir, PathBuf::from("/home/ada/.local/state/herald"));
        assert_eq!(c.daemon.stall_after, Duration::from_secs(900));
        assert_eq!(c.daemon.drain_timeout, Duration::from_secs(30));
        assert_eq!((c.daemon.token.is_none(), c.daemon.public_url.is_none()), (true, true));
        assert!(c.notifiers.is_empty());
        let builtin = parse_with(DEFAULT_TOML, BUILT_IN, &env).expect("the built-in default parses");
        assert_eq!(builtin.origin, BUILT_IN);
        assert_eq!(builtin.notifiers.len(), 1);
        let n = &builtin.notifiers[0];
        assert_eq!((n.name.as_str(), n.kind.as_str()), ("console", "console"));
        assert_eq!(n.routing, Routing::default());
        assert!(n.table.is_empty());
        let registry = crate::builtins::registry();
        builtin.build_notifiers(&registry).expect("the built-in default builds");
        assert!(Config::defaults().is_ok());
        // With a session bus, the desktop joins, with a short max_age.
        let with_bus = parse_with(&default_toml(true), BUILT_IN, &env).expect("the desktop default parses");
        let kinds: Vec<&str> = with_bus.notifiers.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, ["console", "desktop"]);
        assert_eq!(with_bus.notifiers[1].routing.max_age, Duration::from_secs(600));
        with_bus.build_notifiers(&registry).expect("the desktop default builds");
        assert_eq!(parse_with(&default_toml(false), BUILT_IN, &env).expect("parses").notifiers.len(), 1);
    }

    #[test]
    fn full_daemon_and_routing() {
        let c = parse_ok(
            r#"
[daemon]
listen = "0.0.0.0:9999"
socket = ""
token = "${HERALD_TOKEN}"
state_dir = "~/herald-state"
stall_after = "5m"
drain_timeout = "10s"
public_url = "https://herald.example.com/"

[[notifier]]
name = "hook"
type = "webhook"
url = "${HOOK_URL}"
headers = { X-Run = "${UNSET:-none}" }
events = ["run_started", "epoch_ended", "run_finished"]
every_n_epochs = 5
min_interval = "1m"
only_on_improvement = "valid_loss"
rate_per_s = 2
burst = 3
timeout = "5s"
max_age = "1h"
"#,
        );
        let d = &c.daemon;
        assert_eq!(d.listen, "0.0.0.0:9999".parse().expect("valid address"));
        assert_eq!(d.socket, None);
        assert_eq!(d.token.as_ref().map(Secret::expose), Some("t0ken"));
        assert_eq!(d.state_dir, PathBuf::from("/home/ada/herald-state"));
        assert_eq!((d.stall_after, d.drain_timeout), (Duration::from_secs(300), Duration::from_secs(10)));
        assert_eq!(d.public_url.as_deref(), Some("https://herald.example.com"));
        let n = &c.notifiers[0];
        assert_eq!((n.name.as_str(), n.kind.as_str()), ("hook", "webhook"));
        let r = &n.routing;
        assert_eq!(r.events, [EventKind::RunStarted, EventKind::EpochEnded, EventKind::RunFinished]);
        assert_eq!((r.every_n_epochs, r.min_interval), (5, Duration::from_secs(60)));
        assert_eq!(r.only_on_improvement.as_deref(), Some("valid_loss"));
        assert_eq!((r.rate_per_s, r.burst), (Some(2.0), Some(3)));
        assert_eq!((r.timeout, r.max_age), (Duration::from_secs(5), Duration::from_secs(3600)));
        assert_eq!(n.table.get("url").and_then(Value::as_str), Some("http://127.0.0.1:9000/hook"));
        assert_eq!(n.table["headers"]["X-Run"].as_str(), Some("none"));
        assert_eq!(n.table.len(), 2, "routing keys are not passed on");
        assert_eq!(n.span, Some((11, 1)));
        assert_eq!(n.keys.positions.get("headers.X-Run"), Some(&(15, 13)));
        assert!(!format!("{c:?}").contains("t0ken"), "Debug hides secrets");
        assert!(!format!("{c:?}").contains("9000/hook"), "Debug hides notifier values");
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        fn check(text: &str, expected: &str) {
            let err = parse_err(text);
            assert!(err.starts_with(expected), "{text}\n-> {err}\nexpected: {expected}");
        }
        let f = "/etc/herald/herald.toml";
        // A bad key.
        check(
            "[daemon]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n",
            &format!("{f}:3:1: daemon.lisen: unknown key; expected one of `listen`"),
        );
        check("[deamon]\n", &format!("{f}:1:2: deamon: unknown section"));
        // A bad type.
        check(
            "[daemon]\nstall_after = 15\n",
            &format!("{f}:2:15: daemon.stall_after: expected a string, found integer"),
        );
        check(
            "[[notifier]]\ntype = \"console\"\nevery_n_epochs = \"2\"\n",
            &format!("{f}:3:18: notifier[0].every_n_epochs: expected an integer, found string"),
        );
        check(
            "[[notifier]]\ntype = \"console\"\nevery_n_epochs = 0\n",
            &format!("{f}:3:18: notifier[0].every_n_epochs: must be an integer from 1"),
        );
        check(
            "[[notifier]]\ntype = \"console\"\nrate_per_s = -1.0\n",
            &format!("{f}:3:14: notifier[0].rate_per_s: must be a number above zero"),
        );
        check("[notifier]\ntype = \"console\"\n", &format!("{f}:1:1: notifier: expected an array of tables"));
        // An unknown event name.
        check(
            "[[notifier]]\ntype = \"console\"\nevents = [\"run_started\", \"run_ended\"]\n",
            &format!(
                "{f}:3:26: notifier[0].events: unknown event type `run_ended`; expected one of run_started"
            ),
        );
        check(
            "[[notifier]]\ntype = \"console\"\nevents = []\n",
            &format!("{f}:3:10: notifier[0].events: lists no event"),
        );
        // A bad duration.
        check(
            "[daemon]\nstall_after = \"15 minutes\"\n",
            &format!("{f}:2:15: daemon.stall_after: invalid duration `15 minutes`: unknown unit `minutes`"),
        );
        check(
            "[[notifier]]\ntype = \"console\"\ntimeout = \"0s\"\n",
            &format!("{f}:3:11: notifier[0].timeout: must be more than zero"),
        );
        // Other values.
        check(
            "[daemon]\nlisten = \"localhost\"\n",
            &format!("{f}:2:10: daemon.listen: `localhost` is not an address and port"),
        );
        check(
            "[daemon]\npublic_url = \"herald.example.com\"\n",
            &format!("{f}:2:14: daemon.public_url: must start with"),
        );
        check("[[notifier]]\nname = \"x\"\n", &format!("{f}:1:1: notifier[0].type: missing key `type`"));
        check(
            "[[notifier]]\ntype = \"console\"\nname = \"my hook\"\n",
            &format!("{f}:3:8: notifier[0].name: `my hook` is not a valid name"),
        );
        check(
            "[[notifier]]\ntype = \"console\"\n\n[[notifier]]\ntype = \"console\"\n",
            &format!(
                "{f}:4:1: notifier[1].name: the name `console` is already used by the notifier at line 1"
            ),
        );
        check(
            "[[notifier]]\nname = \"a\"\ntype = \"console\"\n[[notifier]]\nname = \"a\"\ntype = \"webhook\"\n",
            &format!("{f}:5:1: notifier[1].name: the name `a` is already used"),
        );
        // TOML syntax, with a position.
        check("[daemon\n", &format!("{f}:1:"));
        check("[daemon]\nlisten = \n", &format!("{f}:2:"));
        // Interpolation.
        check(
            "[daemon]\ntoken = \"${NOPE}\"\n",
            &format!("{f}:2:9: daemon.token: environment variable `NOPE` is not set"),
        );
        check("[daemon]\ntoken = \"${NOPE\"\n", &format!("{f}:2:9: daemon.token: `${{` without a closing"));
        check(
            "[[notifier]]\ntype = \"webhook\"\nurl = \"${1X}\"\n",
            &format!("{f}:3:7: notifier[0].url: `${{1X}}` does not name"),
        );
    }

    #[test]
    fn column_counts_characters() {
        let err = parse_err("[daemon]\nstall_after = \"λλ\" # ünïcode\nxx = 1\n");
        assert!(err.contains(":2:15:"), "{err}");
        let err = parse_err("[daemon] # ☃☃☃\nlisten = \"127.0.0.1:1\"\n   bad = 1");
        assert!(err.contains(":3:4: daemon.bad"), "{err}");
    }

    #[test]
    fn interpolation() {
        fn check(input: &str, expected: Result<&str, &str>) {
            let got = interpolate(input, &env);
            match expected {
                Ok(s) => assert_eq!(got.as_deref(), Ok(s), "{input}"),
                Err(part) => {
                    let err = got.expect_err(input);
                    assert!(err.contains(part), "{input}: {err}");
                }
            }
        }
        check("plain", Ok("plain"));
        check("${HOME}/x", Ok("/home/ada/x"));
        check("a${HERALD_TOKEN}b${HERALD_TOKEN}", Ok("at0kenbt0ken"));
        check("${UNSET:-fallback}", Ok("fallback"));
        check("${UNSET:-}", Ok(""));
        check("${EMPTY:-used when empty}", Ok("used when empty"));
        check("${EMPTY}", Ok(""));
        check("${HOME:-ignored}", Ok("/home/ada"));
        check("${UNSET:-a:-b}", Ok("a:-b"));
        check("cost $5 and $$", Ok("cost $5 and $$"));
        check("$${HOME}", Ok("${HOME}"));
        check("$", Ok("$"));
        check("${UNSET}", Err("environment variable `UNSET` is not set"));
        check("${}", Err("does not name"));
        check("${A-B}", Err("does not name"));
        check("${HOME", Err("without a closing"));
    }

    #[test]
    fn file_keys_read_secrets() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(dir.path().join("token"), "s3cret-${HOME}\n").expect("write the token file");
        std::fs::write(dir.path().join("hook"), "http://127.0.0.1:1/hook\r\n").expect("write the url file");
        let origin = dir.path().join("herald.toml");
        let origin = origin.to_str().expect("UTF-8 temp path");
        let text = "[daemon]\ntoken_file = \"token\"\n\n[[notifier]]\ntype = \"webhook\"\nurl_file = \"${DIR}/hook\"\n";
        let dir_s = dir.path().to_str().expect("UTF-8 temp path").to_owned();
        let env2 = move |name: &str| if name == "DIR" { Some(dir_s.clone()) } else { env(name) };
        let c = parse_with(text, origin, &env2).expect("the secret files are read");
        assert_eq!(
            c.daemon.token.as_ref().map(Secret::expose),
            Some("s3cret-${HOME}"),
            "no interpolation inside"
        );
        assert_eq!(c.notifiers[0].table["url"].as_str(), Some("http://127.0.0.1:1/hook"));
        assert_eq!(c.notifiers[0].keys.positions.get("url"), Some(&(6, 1)));
        c.build_notifiers(&crate::builtins::registry()).expect("the webhook builds from url_file");

        let err =
            parse_with("[daemon]\ntoken_file = \"missing\"\n", origin, &env2).expect_err("missing file");
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("{origin}:2:14: daemon.token_file: cannot read `")), "{shown}");
        let err =
            parse_with("[daemon]\ntoken = \"a\"\ntoken_file = \"token\"\n", origin, &env2).expect_err("both");
        assert!(
            err.to_string().contains("daemon.token_file: set either `token` or `token_file`, not both"),
            "{err}"
        );
    }

    #[test]
    fn notifier_errors_point_at_the_key() {
        let registry = crate::builtins::registry();
        fn build_err(registry: &Registry, text: &str) -> String {
            let c = parse_with(text, "h.toml", &env).expect("the daemon-level keys are valid");
            match c.build_notifiers(registry) {
                Ok(_) => panic!("{text}: built"),
                Err(e) => e.to_string(),
            }
        }
        let err =
            build_err(&registry, "[[notifier]]\ntype = \"webhook\"\nurl = \"http://h/\"\n  urll = \"x\"\n");
        assert!(err.starts_with("h.toml:4:3: notifier[0].urll: unknown key; expected one of `url`"), "{err}");
        let err = build_err(
            &registry,
            "[[notifier]]\ntype = \"webhook\"\nurl = \"http://h/\"\nheaders = { \"a b\" = \"x\" }\n",
        );
        assert!(
            err.starts_with("h.toml:4:13: notifier[0].headers.a b: not a valid HTTP header name"),
            "{err}"
        );
        let err = build_err(&registry, "[[notifier]]\nname = \"x\"\ntype = \"carrier-pigeon\"\n");
        assert!(
            err.starts_with("h.toml:3:8: notifier[0].type: unknown notifier type `carrier-pigeon`"),
            "{err}"
        );
        let err = build_err(&registry, "\n[[notifier]]\ntype = \"webhook\"\n");
        assert!(err.starts_with("h.toml:2:1: notifier[0].url: missing required key"), "{err}");
        let err = build_err(&registry, "[[notifier]]\ntype = \"console\"\nevent = [\"message\"]\n");
        assert_eq!(
            err,
            "h.toml:3:1: notifier[0].event: unknown key; expected `format` (or a routing key: `events`, \
             `every_n_epochs`, `min_interval`, `only_on_improvement`, `rate_per_s`, `burst`, `timeout`, `max_age`)"
        );
        let err = build_err(&registry, "[[notifier]]\ntype = \"console\"\nformat = \"xml\"\n");
        assert!(err.starts_with("h.toml:3:1: notifier[0].format: unknown variant `xml`"), "{err}");
    }

    #[test]
    fn load_order() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let explicit = dir.path().join("explicit.toml");
        std::fs::write(&explicit, "[[notifier]]\nname = \"explicit\"\ntype = \"console\"\n").expect("write");
        let from_env = dir.path().join("env.toml");
        std::fs::write(&from_env, "[[notifier]]\nname = \"env\"\ntype = \"console\"\n").expect("write");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".config/herald")).expect("mkdir");
        std::fs::write(
            home.join(".config/herald/herald.toml"),
            "[[notifier]]\nname = \"home\"\ntype = \"console\"\n",
        )
        .expect("write");
        let (from_env_s, home_s) = (from_env.display().to_string(), home.display().to_string());
        let with = |herald_config: bool, home_dir: bool| {
            let (e, h) = (from_env_s.clone(), home_s.clone());
            move |name: &str| match name {
                "HERALD_CONFIG" if herald_config => Some(e.clone()),
                "HOME" if home_dir => Some(h.clone()),
                _ => None,
            }
        };
        let name = |c: Config| c.notifiers[0].name.clone();
        let c = load_with(Some(&explicit), &with(true, true)).expect("explicit");
        assert_eq!((name(c.clone()), c.origin), ("explicit".to_owned(), explicit.display().to_string()));
        assert_eq!(name(load_with(None, &with(true, true)).expect("env")), "env");
        assert_eq!(name(load_with(None, &with(false, true)).expect("home")), "home");
        let c = load_with(None, &with(false, false));
        // No HOME: the built-in default cannot pick a state_dir.
        assert!(c.is_err_and(|e| e.to_string().contains("set `state_dir`")));
        let empty_home = dir.path().join("empty");
        let e = empty_home.display().to_string();
        let c = load_with(None, &move |n: &str| (n == "HOME").then(|| e.clone())).expect("defaults");
        assert_eq!((c.origin.as_str(), name(c.clone()).as_str()), (BUILT_IN, "console"));
        let err = load_with(Some(&dir.path().join("nope.toml")), &with(false, true)).expect_err("missing");
        assert!(err.to_string().contains("nope.toml: cannot read the configuration"), "{err}");
    }

    #[test]
    fn the_example_uses_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/herald.toml");
        let text = std::fs::read_to_string(&path).expect("config/herald.toml exists");
        let raw: toml::Table = text.parse().expect("config/herald.toml is TOML");
        let daemon = raw["daemon"].as_table().expect("a [daemon] table");
        for key in DAEMON_KEYS.iter().filter(|k| !k.ends_with("_file")) {
            assert!(daemon.contains_key(*key), "[daemon] lacks `{key}`");
        }
        let notifiers = raw["notifier"].as_array().expect("[[notifier]] tables");
        let keys_of = |kind: &str| -> Vec<String> {
            notifiers
                .iter()
                .filter_map(|n| n.as_table())
                .filter(|n| n.get("type").and_then(Value::as_str) == Some(kind))
                .flat_map(|n| n.keys().cloned())
                .collect()
        };
        let all: Vec<String> = ["console", "webhook"].iter().flat_map(|k| keys_of(k)).collect();
        for key in ROUTING_KEYS.iter().chain(&["name", "type"]) {
            assert!(all.iter().any(|k| k == key), "no [[notifier]] sets `{key}`");
        }
        for (kind, keys) in
            [("console", &["format"][..]), ("webhook", &["url", "headers", "secret", "request_timeout"][..])]
        {
            let set = keys_of(kind);
            for key in keys {
                assert!(set.iter().any(|k| k == key), "the {kind} example lacks `{key}`");
            }
        }
        // Every documented key is in docs/configuration.md too.
        let docs = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
        )
        .expect("docs/configuration.md exists");
        for key in DAEMON_KEYS.iter().chain(&ROUTING_KEYS).chain(&[
            "format",
            "url",
            "headers",
            "secret",
            "request_timeout",
        ]) {
            assert!(docs.contains(&format!("`{key}`")), "docs/configuration.md does not mention `{key}`");
        }
    }

    #[test]
    fn toml_examples_in_the_docs_parse_and_build() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        let registry = crate::builtins::registry();
        let mut seen = 0;
        for file in ["configuration.md", "notifiers/console.md", "notifiers/webhook.md"] {
            let text = std::fs::read_to_string(docs.join(file)).expect("the document exists");
            for block in text.split("```toml\n").skip(1) {
                let example = block.split("```").next().expect("split yields at least one piece");
                let secret = tempfile::NamedTempFile::new().expect("a temporary file");
                let example =
                    example.replace("/run/secrets/herald-hook-secret", &secret.path().display().to_string());
                let config =
                    parse_with(&example, file, &env).unwrap_or_else(|e| panic!("{file}: {e}\n{example}"));
                config.build_notifiers(&registry).unwrap_or_else(|e| panic!("{file}: {e}\n{example}"));
                seen += 1;
            }
        }
        assert!(seen >= 3, "found {seen} examples");
    }

    #[test]
    fn every_file_in_config_parses_and_builds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let registry = crate::builtins::registry();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the config/ folder exists") {
            let path = entry.expect("a readable folder entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a readable example");
            let config =
                parse_with(&text, &path.display().to_string(), &env).unwrap_or_else(|e| panic!("{e}"));
            config.build_notifiers(&registry).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
        assert!(seen >= 1, "no .toml file in {}", dir.display());
    }
}

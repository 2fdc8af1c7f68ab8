//! The `[daemon]` section: its keys as a serde struct, checked and completed by `validate`.
//!
//! Defaults that depend on the environment (the socket under `$XDG_RUNTIME_DIR`, the state folder) and
//! relative paths are resolved here. Whether a non-loopback `listen` has a `token` is the daemon's check at
//! start (`check_listen`), not this module's.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_plugin::{ConfigError, Secret, parse_table};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::source::{Section, Source};
use super::values;

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
    /// A rank of a distributed job whose epoch takes more than this times the job's median epoch, two epochs
    /// running, gets `rank_slow`; default `1.5`, more than 1.
    pub slow_rank_factor: f64,
    /// How long shutdown waits for deliveries in flight, default `30s`.
    pub drain_timeout: Duration,
    /// The address people reach the daemon at, for links in notifications; none by default.
    pub public_url: Option<String>,
    /// Address of the web dashboard (pages, read API, event stream), such as `127.0.0.1:7879`; off by
    /// default. A non-loopback address requires `token` (asked once by a login form).
    pub dashboard: Option<SocketAddr>,
}

/// Every key `[daemon]` takes, as the message for an unknown one lists them.
pub(super) const DAEMON_KEYS: [&str; 10] = [
    "listen",
    "socket",
    "token",
    "token_file",
    "state_dir",
    "stall_after",
    "drain_timeout",
    "public_url",
    "dashboard",
    "slow_rank_factor",
];

/// The keys of `[daemon]` as written (`token_file` is read into `token` by the pre-pass).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonKeys {
    #[serde(default, deserialize_with = "values::string")]
    listen: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    socket: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    token: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    state_dir: Option<String>,
    #[serde(default, deserialize_with = "values::duration")]
    stall_after: Option<Duration>,
    #[serde(default, deserialize_with = "values::duration")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "values::string")]
    public_url: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    dashboard: Option<String>,
    #[serde(default, deserialize_with = "values::number")]
    slow_rank_factor: Option<f64>,
}

/// Read `[daemon]` (`None`: the file has none, so every default).
pub(super) fn section(src: &Source, value: Option<Spanned<DeValue>>) -> Result<DaemonConfig, ConfigError> {
    let section = match value {
        Some(value) => {
            src.section(value, "daemon", "expected a table: write `[daemon]` and its keys below it")?
        }
        None => Section::empty("daemon"),
    };
    let keys: DaemonKeys = parse_table(values::mark_datetimes(section.table.clone())).map_err(|err| {
        let err = match (err.message.starts_with("unknown key"), &err.key) {
            (true, Some(key)) => ConfigError::unknown_key(key, &DAEMON_KEYS),
            _ => err,
        };
        section.place(err)
    })?;
    section.check()?;
    keys.validate(src).map_err(|err| section.place(err))
}

impl DaemonKeys {
    /// Check the values and fill in the defaults.
    fn validate(self, src: &Source) -> Result<DaemonConfig, ConfigError> {
        let env = src.env;
        let listen = match self.listen {
            Some(s) => parse_listen(&s).ok_or_else(|| {
                let message =
                    format!("`{s}` is not an address and port, such as `127.0.0.1:7878` or `[::1]:7878`");
                ConfigError::for_key("listen", message)
            })?,
            None => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7878)),
        };
        let socket = match self.socket {
            Some(s) if s.is_empty() => None,
            Some(s) => Some(src.path(&s)),
            None => {
                env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join("herald.sock"))
            }
        };
        let token = match self.token {
            Some(t) if t.is_empty() => {
                return Err(ConfigError::for_key("token", "empty token; remove the key or set a token"));
            }
            t => t.map(Secret::new),
        };
        let state_dir = match self.state_dir {
            Some(s) if s.is_empty() => {
                return Err(ConfigError::for_key("state_dir", "empty path; remove the key for the default"));
            }
            Some(s) => src.path(&s),
            None => default_state_dir(env).ok_or_else(|| {
                let message = "cannot find a home folder ($HOME is not set); set `state_dir`";
                ConfigError::for_key("state_dir", message).at(1, 1)
            })?,
        };
        let stall_after = self.stall_after.unwrap_or(Duration::from_secs(15 * 60));
        if stall_after.is_zero() {
            return Err(ConfigError::for_key("stall_after", "must be more than zero"));
        }
        let slow_rank_factor = self.slow_rank_factor.unwrap_or(1.5);
        if !(slow_rank_factor.is_finite() && slow_rank_factor > 1.0) {
            let message = format!("must be a number more than 1, such as 1.5 (found {slow_rank_factor})");
            return Err(ConfigError::for_key("slow_rank_factor", message));
        }
        let public_url = match self.public_url {
            Some(s) if !(s.starts_with("http://") || s.starts_with("https://")) => {
                let message = "must start with `http://` or `https://`, such as `https://herald.example.com`";
                return Err(ConfigError::for_key("public_url", message));
            }
            s => s.map(|s| s.trim_end_matches('/').to_owned()),
        };
        let dashboard = match self.dashboard {
            Some(s) => Some(parse_listen(&s).ok_or_else(|| {
                let message = format!("`{s}` is not an address and port, such as `127.0.0.1:7879`");
                ConfigError::for_key("dashboard", message)
            })?),
            None => None,
        };
        Ok(DaemonConfig {
            listen,
            socket,
            token,
            state_dir,
            stall_after,
            slow_rank_factor,
            drain_timeout: self.drain_timeout.unwrap_or(Duration::from_secs(30)),
            public_url,
            dashboard,
        })
    }
}

/// `host:port`, `[v6]:port`, or `localhost:port`.
fn parse_listen(s: &str) -> Option<SocketAddr> {
    match s.strip_prefix("localhost:") {
        Some(port) => {
            port.parse::<u16>().ok().map(|p| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)))
        }
        None => s.parse::<SocketAddr>().ok(),
    }
}

/// `$XDG_STATE_HOME/herald`, else `~/.local/state/herald`.
fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match env("XDG_STATE_HOME").filter(|p| Path::new(p).is_absolute()) {
        Some(dir) => Some(PathBuf::from(dir).join("herald")),
        None => Some(PathBuf::from(env("HOME").filter(|h| !h.is_empty())?).join(".local/state/herald")),
    }
}

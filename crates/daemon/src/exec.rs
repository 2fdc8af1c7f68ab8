//! The `exec` notifier: an out-of-process plugin, supervised, behind the ordinary [`Notifier`] trait.
//!
//! `type = "exec"` with `command = ["program", "args"...]`, or any unknown `type = "<name>"` that resolves to
//! an executable `herald-notify-<name>` on `PATH` or in `~/.local/share/herald/plugins` ([`discover`]), builds
//! an [`ExecNotifier`]. Because it is a plain notifier, the daemon's workers give it what they give every
//! built-in (routing keys, order per run, rate limits, retries with backoff, `max_age`, isolation); this
//! module adds what a child process needs. It owns one child (spawned with `kill_on_drop`) speaking
//! `herald_plugin::protocol` on stdin/stdout, does the `hello`/`ready` handshake under a timeout, sends
//! `deliver` lines and matches answers by id with up to `concurrency` in flight, and restarts the child with
//! backoff after a crash, a hang (no answer within `delivery_timeout`) or a protocol violation (a line that is
//! not a protocol message, a line over 1 MiB, an unknown id, an answer of the wrong type). What the child had
//! in flight fails as retryable, so it goes back to the outbox and is retried by a fresh child; while the
//! child is down, deliveries fail at once instead of waiting. The child's stderr goes to the log tagged with
//! the notifier's name; `command` lines (only from plugins that declared `commands`) go to the [`Host`]
//! passed to [`Notifier::listen`]. Restarts and the last error show in [`Notifier::health_check`].
//!
//! It does not sandbox the plugin (it runs as the daemon's user) and does not load code into the daemon.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_plugin::protocol::{self, HostMessage, MAX_LINE, PluginMessage};
use herald_plugin::serve::{Line, read_line};
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, Health, Host, Notification, Notifier, Receipt, parse_table,
};
use serde::Deserialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

/// The `type` name of a plugin given by its command.
pub const KIND: &str = "exec";
/// What `herald plugins` says about it.
pub const DESCRIPTION: &str =
    "runs an out-of-process plugin (`command = [...]`) speaking the herald-plugin protocol";
/// Executables named `herald-notify-<type>` are plugins for `type = "<type>"`.
pub const PREFIX: &str = "herald-notify-";

/// The keys the host keeps; every other key of the table goes to the plugin in `hello`.
const HOST_KEYS: [&str; 5] =
    ["command", "concurrency", "handshake_timeout", "delivery_timeout", "shutdown_grace"];
/// Commands relayed at once; a plugin sending more is flooding the host.
const MAX_COMMANDS: usize = 64;
/// The longest stderr line logged, in bytes (the rest is cut).
const MAX_LOG_LINE: usize = 4096;
/// Restart backoff: the first delay, doubled per consecutive failure up to the cap.
const RESTART_BASE: Duration = Duration::from_millis(250);
const RESTART_CAP: Duration = Duration::from_secs(30);

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
    pub args: Vec<String>,
    /// The plugin's own configuration, sent in `hello`.
    pub config: serde_json::Value,
    /// Deliveries in flight at once (at least 1).
    pub concurrency: usize,
    pub handshake_timeout: Duration,
    pub delivery_timeout: Duration,
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
    fn from_table(mut table: toml::Table, program: Option<PathBuf>) -> Result<ExecOptions, ConfigError> {
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

/// Whether `kind` can name a plugin executable (lowercase letters, digits, `-` and `_`).
fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The folders searched for `herald-notify-*`, in order: `PATH`, then `$XDG_DATA_HOME/herald/plugins`
/// (default `~/.local/share/herald/plugins`).
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let data = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/share"))
    });
    if let Some(data) = data {
        dirs.push(data.join("herald").join("plugins"));
    }
    dirs
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The executable `herald-notify-<kind>` in the first of [`plugin_dirs`] that has one.
pub fn discover(kind: &str) -> Option<PathBuf> {
    discover_in(kind, &plugin_dirs())
}

/// The executable `herald-notify-<kind>` in the first of `dirs` that has one.
pub fn discover_in(kind: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if !valid_kind(kind) {
        return None;
    }
    dirs.iter().map(|d| d.join(format!("{PREFIX}{kind}"))).find(|p| is_executable(p))
}

/// Every plugin in [`plugin_dirs`] as `(type, path)`, sorted by type.
pub fn discover_all() -> Vec<(String, PathBuf)> {
    discover_all_in(&plugin_dirs())
}

/// Every plugin in `dirs` as `(type, path)`, sorted by type; the first folder wins for a type found twice.
pub fn discover_all_in(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(kind) = file.to_str().and_then(|f| f.strip_prefix(PREFIX)) else { continue };
            if valid_kind(kind) && !found.contains_key(kind) && is_executable(&entry.path()) {
                found.insert(kind.to_owned(), entry.path());
            }
        }
    }
    found.into_iter().collect()
}

/// Where the plugin stands, for health and status.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginState {
    /// Not started yet (the child starts at first use).
    Idle,
    /// Started, handshake under way.
    Starting,
    /// Handshake done.
    Ready { name: String, version: String },
    /// Failed; restarting after a delay.
    Down,
    /// Stopped for good (shutdown).
    Stopped,
}

/// What the supervisor knows, for health and status.
#[derive(Debug, Clone)]
pub struct ExecStats {
    pub state: PluginState,
    /// Children started after a failure.
    pub restarts: u64,
    /// Why the child last failed.
    pub last_error: Option<String>,
    /// The capabilities of the last handshake.
    pub capabilities: Capabilities,
    /// Deliveries answered `delivered`.
    pub delivered: u64,
    /// Handshakes that succeeded.
    pub handshakes: u64,
}

struct Shared {
    name: String,
    options: ExecOptions,
    stats: Mutex<ExecStats>,
    /// Changes whenever `stats.state` does.
    state_tx: watch::Sender<u64>,
    host: Mutex<Option<Arc<dyn Host>>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, ExecStats> {
        // Every update is a field assignment: a poisoned lock still holds consistent data.
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_state(&self, state: PluginState) {
        self.stats().state = state;
        self.state_tx.send_modify(|v| *v += 1);
    }
}

/// One delivery handed to the supervisor: its encoded `deliver` line and where to answer.
struct Request {
    id: u64,
    line: Vec<u8>,
    reply: oneshot::Sender<Result<Receipt, DeliveryError>>,
    permit: OwnedSemaphorePermit,
}

/// A notifier that is an out-of-process plugin. See the module documentation.
pub struct ExecNotifier {
    name: String,
    kind: String,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    next_id: AtomicU64,
    requests: mpsc::Sender<Request>,
    /// Taken by the supervisor when it starts (at first use).
    start: Mutex<Option<mpsc::Receiver<Request>>>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for ExecNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecNotifier")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("program", &self.shared.options.program)
            .finish()
    }
}

impl ExecNotifier {
    /// A plugin notifier named `name` of type `kind`; the child starts at first use.
    pub fn new(name: &str, kind: &str, mut options: ExecOptions) -> ExecNotifier {
        options.concurrency = options.concurrency.max(1);
        let (requests, rx) = mpsc::channel(options.concurrency.max(16));
        let (state_tx, _) = watch::channel(0);
        let permits = Arc::new(Semaphore::new(options.concurrency));
        ExecNotifier {
            name: name.to_owned(),
            kind: kind.to_owned(),
            shared: Arc::new(Shared {
                name: name.to_owned(),
                options,
                stats: Mutex::new(ExecStats {
                    state: PluginState::Idle,
                    restarts: 0,
                    last_error: None,
                    capabilities: Capabilities::default(),
                    delivered: 0,
                    handshakes: 0,
                }),
                state_tx,
                host: Mutex::new(None),
            }),
            permits,
            next_id: AtomicU64::new(1),
            requests,
            start: Mutex::new(Some(rx)),
            supervisor: Mutex::new(None),
            stop: watch::channel(false).0,
        }
    }

    /// Restarts, last error, state and capabilities.
    pub fn stats(&self) -> ExecStats {
        self.shared.stats().clone()
    }

    /// Start the supervisor (and the child) unless it runs already. Needs a tokio runtime.
    fn ensure_started(&self) {
        let rx = self.start.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(rx) = rx {
            let task = tokio::spawn(supervise(self.shared.clone(), rx, self.stop.subscribe()));
            *self.supervisor.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        }
    }

    /// Wait until the first handshake has ended one way or the other (or `limit` has passed).
    async fn settled(&self, limit: Duration) {
        let mut rx = self.shared.state_tx.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            if !matches!(self.shared.stats().state, PluginState::Idle | PluginState::Starting) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return;
            }
        }
    }

    /// Send `shutdown`, give the child its grace period, then kill it; wait for the supervisor to end.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.supervisor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for ExecNotifier {
    fn drop(&mut self) {
        // The supervisor sends `shutdown` and kills the child after the grace period, if the runtime lives
        // that long; if it does not, `kill_on_drop` ends the child.
        let _ = self.stop.send(true);
    }
}

fn encode_deliver(id: u64, n: &Notification) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = Vec::with_capacity(2048);
    line.extend_from_slice(b"{\"type\":\"deliver\",\"id\":\"");
    line.extend_from_slice(id.to_string().as_bytes());
    line.extend_from_slice(b"\",\"notification\":");
    serde_json::to_writer(&mut line, n)?;
    line.extend_from_slice(b"}\n");
    Ok(line)
}

#[async_trait::async_trait]
impl Notifier for ExecNotifier {
    fn kind(&self) -> &str {
        &self.kind
    }

    /// What the plugin declared at its last handshake. Before the first one nothing is known, so it says
    /// `commands` (and nothing else): a host that starts `listen` only for notifiers that take commands then
    /// starts it for plugins too, and the plugin's real answer governs from the handshake on.
    fn capabilities(&self) -> Capabilities {
        let stats = self.shared.stats();
        match stats.handshakes {
            0 => Capabilities { commands: true, ..Capabilities::default() },
            _ => stats.capabilities,
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        self.ensure_started();
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| {
            DeliveryError::retryable("the plugin is shutting down; will retry").with_code("plugin_down")
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = encode_deliver(id, n).map_err(|e| {
            DeliveryError::permanent(format!("cannot encode the notification as JSON: {e}"))
                .with_code("encode")
        })?;
        if line.len() > MAX_LINE {
            return Err(DeliveryError::permanent(format!(
                "the notification is {} bytes as JSON, over the protocol's 1 MiB line limit (a large image?)",
                line.len()
            ))
            .with_code("too_large"));
        }
        let (reply, answer) = oneshot::channel();
        let gone = || {
            DeliveryError::retryable("the plugin's supervisor has stopped; will retry")
                .with_code("plugin_down")
        };
        self.requests.send(Request { id, line, reply, permit }).await.map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Relay the plugin's `command` lines to `host` until the notifier is shut down.
    async fn listen(&self, host: Arc<dyn Host>) -> Result<(), DeliveryError> {
        *self.shared.host.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(host);
        self.ensure_started();
        let mut stop = self.stop.subscribe();
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Starts the plugin if needed and waits for its handshake: `Ok` when it is up and never restarted,
    /// `Degraded` when it is up after restarts, `Unavailable` (with the last error) when it is down.
    async fn health_check(&self) -> Health {
        self.ensure_started();
        self.settled(self.shared.options.handshake_timeout + Duration::from_secs(1)).await;
        let stats = self.stats();
        let last = stats.last_error.clone().unwrap_or_else(|| "no error recorded".to_owned());
        match stats.state {
            PluginState::Ready { .. } if stats.restarts == 0 => Health::Ok,
            PluginState::Ready { .. } => Health::Degraded {
                message: format!("plugin restarted {} times; last error: {last}", stats.restarts),
            },
            PluginState::Idle | PluginState::Starting => {
                Health::Degraded { message: "the plugin is still starting".to_owned() }
            }
            PluginState::Down | PluginState::Stopped => {
                Health::Unavailable { message: format!("{last} (restarted {} times)", stats.restarts) }
            }
        }
    }
}

/// How one child's life ended.
enum End {
    /// Shut down on request.
    Stopped,
    /// Failed; `delivered` says whether it delivered anything first (which resets the backoff).
    Failed { error: String, delivered: bool },
}

/// Restart delay after `failures` consecutive failures.
fn restart_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    RESTART_BASE.saturating_mul(1u32 << exp).min(RESTART_CAP)
}

async fn supervise(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<Request>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut first = true;
    loop {
        if *stop.borrow() {
            break;
        }
        if !first {
            shared.stats().restarts += 1;
        }
        first = false;
        match run_child(&shared, &mut requests, &mut stop).await {
            End::Stopped => break,
            End::Failed { error, delivered } => {
                if delivered {
                    failures = 0;
                }
                failures += 1;
                let delay = restart_delay(failures);
                tracing::warn!(
                    notifier = %shared.name, error = %error, restart_in_ms = delay.as_millis() as u64,
                    "plugin failed; restarting it"
                );
                shared.stats().last_error = Some(error.clone());
                shared.set_state(PluginState::Down);
                let until = Instant::now() + delay;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        request = requests.recv() => match request {
                            Some(r) => {
                                let _ = r.reply.send(Err(DeliveryError::retryable(format!(
                                    "the plugin is down ({error}); restart {} in {:.1} s, and the delivery will be retried",
                                    shared.stats().restarts + 1,
                                    until.saturating_duration_since(Instant::now()).as_secs_f64()
                                )).with_code("plugin_down")));
                            }
                            None => return,
                        },
                        _ = stop.changed() => break,
                    }
                }
            }
        }
    }
    shared.set_state(PluginState::Stopped);
    // Answer what is still queued, so no caller waits for a child that will not come.
    requests.close();
    while let Ok(r) = requests.try_recv() {
        let _ = r.reply.send(Err(shutting_down()));
    }
}

fn shutting_down() -> DeliveryError {
    DeliveryError::retryable("the daemon is shutting down; the delivery will be retried at the next start")
        .with_code("shutdown")
}

/// What the stdout reader hands the child's loop.
enum FromChild {
    Message(PluginMessage),
    Violation(String),
    Eof,
}

/// Read the child's stdout into protocol messages until the end, or the first violation.
async fn read_messages(stdout: ChildStdout, tx: mpsc::Sender<FromChild>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let item = match read_line(&mut reader, &mut buf, MAX_LINE).await {
            Ok(Line::Eof) | Err(_) => FromChild::Eof,
            Ok(Line::TooLong) => FromChild::Violation("it wrote a line longer than 1 MiB".to_owned()),
            Ok(Line::Line) if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Line) => match serde_json::from_slice::<PluginMessage>(&buf) {
                Ok(m) => FromChild::Message(m),
                Err(e) => FromChild::Violation(format!(
                    "it wrote a line that is not a protocol message ({e}): {}",
                    excerpt(&buf)
                )),
            },
        };
        let last = !matches!(item, FromChild::Message(_));
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

/// The start of a line, printable, for an error message.
fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(120)]);
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if line.len() > 120 {
        out.push('…');
    }
    format!("`{out}`")
}

/// Log the child's stderr, line by line, tagged with the notifier's name.
async fn log_stderr(stderr: tokio::process::ChildStderr, name: String) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        match read_line(&mut reader, &mut buf, MAX_LOG_LINE).await {
            Ok(Line::Line) => {
                let line = String::from_utf8_lossy(&buf);
                tracing::info!(target: "herald::plugin", notifier = %name, "{}", line.trim_end());
            }
            Ok(Line::TooLong) => {
                tracing::info!(target: "herald::plugin", notifier = %name, "(a log line over 4 KiB, left out)")
            }
            Ok(Line::Eof) | Err(_) => return,
        }
    }
}

/// Write lines to the child's stdin as they come, one flush per burst.
async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = lines.recv().await {
        if stdin.write_all(&line).await.is_err() {
            return;
        }
        while let Ok(line) = lines.try_recv() {
            if stdin.write_all(&line).await.is_err() {
                return;
            }
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Aborts a task when dropped.
struct Owned(tokio::task::JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Pending {
    reply: oneshot::Sender<Result<Receipt, DeliveryError>>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

/// How the child exited, in words.
async fn exit_status(child: &mut Child, wait: Duration) -> String {
    match tokio::time::timeout(wait, child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => status.to_string(),
            }
        }
        Ok(Err(e)) => format!("its status is unknown: {e}"),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            "it closed its stdout but kept running, so it was killed".to_owned()
        }
    }
}

/// Start one child, shake hands, serve deliveries until it fails or the notifier stops.
async fn run_child(
    shared: &Arc<Shared>,
    requests: &mut mpsc::Receiver<Request>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let o = &shared.options;
    shared.set_state(PluginState::Starting);
    let program = o.program.display().to_string();
    let spawned = Command::new(&o.program)
        .args(&o.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return End::Failed {
                error: format!("cannot start `{program}`: {e}; check `command` (or the plugin's install)"),
                delivered: false,
            };
        }
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return End::Failed { error: "the child's pipes were not set up".to_owned(), delivered: false };
    };
    let _log = Owned(tokio::spawn(log_stderr(stderr, shared.name.clone())));
    let (messages_tx, mut messages) = mpsc::channel(64);
    let _reader = Owned(tokio::spawn(read_messages(stdout, messages_tx)));
    let (out, lines) = mpsc::channel::<Vec<u8>>(o.concurrency + 16);
    let _writer = Owned(tokio::spawn(write_lines(stdin, lines)));

    // The handshake.
    let hello = HostMessage::Hello {
        protocol: protocol::PROTOCOL.to_owned(),
        version: protocol::VERSION.to_owned(),
        name: shared.name.clone(),
        config: o.config.clone(),
    };
    let Ok(hello) = protocol::encode(&hello) else {
        return End::Failed { error: "cannot encode `hello`".to_owned(), delivered: false };
    };
    let _ = out.send(hello).await;
    let first = tokio::select! {
        first = tokio::time::timeout(o.handshake_timeout, messages.recv()) => first,
        _ = stop.changed() => return stop_child(&mut child, &out, o.shutdown_grace).await,
    };
    let capabilities = match first {
        Err(_) => {
            return End::Failed {
                error: format!(
                    "the plugin did not answer `hello` within {:.0} s (handshake_timeout)",
                    o.handshake_timeout.as_secs_f64()
                ),
                delivered: false,
            };
        }
        Ok(None) | Ok(Some(FromChild::Eof)) => {
            let status = exit_status(&mut child, Duration::from_secs(2)).await;
            return End::Failed {
                error: format!("the plugin exited during the handshake ({status})"),
                delivered: false,
            };
        }
        Ok(Some(FromChild::Violation(v))) => {
            return End::Failed {
                error: format!("protocol violation during the handshake: {v}"),
                delivered: false,
            };
        }
        Ok(Some(FromChild::Message(PluginMessage::Error { message }))) => {
            return End::Failed {
                error: format!("the plugin refused to start: {message}"),
                delivered: false,
            };
        }
        Ok(Some(FromChild::Message(PluginMessage::Ready {
            name,
            version,
            protocol_version,
            capabilities,
        }))) => {
            if let Err(e) = protocol::check_version(&protocol_version) {
                tracing::error!(notifier = %shared.name, plugin = %name, error = %e, "plugin refused");
                return End::Failed { error: format!("refused: {e}"), delivered: false };
            }
            let capabilities = protocol::capabilities_from(&capabilities);
            tracing::info!(
                notifier = %shared.name, plugin = %name, version = %version, protocol = %protocol_version,
                edit = capabilities.edit, image = capabilities.images, commands = capabilities.commands,
                "plugin ready"
            );
            {
                let mut stats = shared.stats();
                stats.capabilities = capabilities;
                stats.handshakes += 1;
            }
            shared.set_state(PluginState::Ready { name, version });
            capabilities
        }
        Ok(Some(FromChild::Message(other))) => {
            return End::Failed {
                error: format!(
                    "protocol violation during the handshake: it answered `hello` with `{}` instead of `ready` or \
                     `error`",
                    other.kind()
                ),
                delivered: false,
            };
        }
    };

    // Deliveries.
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut delivered = false;
    let mut commands = tokio::task::JoinSet::new();
    let failure = loop {
        while commands.try_join_next().is_some() {}
        let earliest = pending.values().map(|p| p.deadline).min();
        tokio::select! {
            message = messages.recv() => match message {
                Some(FromChild::Message(m)) => match m {
                    PluginMessage::Delivered { id, receipt } => match take(&mut pending, &id) {
                        Some(p) => {
                            delivered = true;
                            shared.stats().delivered += 1;
                            let _ = p.reply.send(Ok(receipt));
                        }
                        None => break format!("protocol violation: it answered `delivered` for unknown id `{id}`"),
                    },
                    PluginMessage::Failed { id, message, code, retryable, retry_after } => match take(&mut pending, &id) {
                        Some(p) => {
                            let err = protocol::delivery_error(message, code, retryable, retry_after);
                            let _ = p.reply.send(Err(err));
                        }
                        None => break format!("protocol violation: it answered `failed` for unknown id `{id}`"),
                    },
                    PluginMessage::Command { run, action, reason, id } => {
                        if !capabilities.commands {
                            break "protocol violation: it sent a `command` without declaring the `commands` capability"
                                .to_owned();
                        }
                        if commands.len() >= MAX_COMMANDS {
                            break format!(
                                "protocol violation: more than {MAX_COMMANDS} commands waiting for the host at once"
                            );
                        }
                        commands.spawn(relay(shared.clone(), out.clone(), run, action, reason, id));
                    }
                    other => break format!("protocol violation: it sent `{}` after the handshake", other.kind()),
                },
                Some(FromChild::Violation(v)) => break format!("protocol violation: {v}"),
                Some(FromChild::Eof) | None => {
                    let status = exit_status(&mut child, Duration::from_secs(2)).await;
                    break format!("the plugin exited ({status})");
                }
            },
            request = requests.recv() => match request {
                Some(r) => {
                    pending.insert(r.id, Pending { reply: r.reply, deadline: Instant::now() + o.delivery_timeout, _permit: r.permit });
                    if out.send(r.line).await.is_err() {
                        break "cannot write to the plugin's stdin".to_owned();
                    }
                }
                None => return stop_child(&mut child, &out, o.shutdown_grace).await,
            },
            _ = sleep_until_opt(earliest) => {
                break format!(
                    "the plugin hangs: no answer to a delivery within {:.0} s (delivery_timeout)",
                    o.delivery_timeout.as_secs_f64()
                );
            }
            _ = stop.changed() => {
                for (_, p) in pending.drain() {
                    let _ = p.reply.send(Err(shutting_down()));
                }
                return stop_child(&mut child, &out, o.shutdown_grace).await;
            }
        }
    };
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let in_flight = pending.len();
    for (_, p) in pending.drain() {
        let _ = p.reply.send(Err(DeliveryError::retryable(format!(
            "plugin `{}` failed with the delivery in flight ({failure}); it is being restarted (restart {}) and \
             the delivery will be retried",
            shared.name,
            shared.stats().restarts + 1
        ))
        .with_code("plugin_failed")));
    }
    if in_flight > 0 {
        tracing::info!(notifier = %shared.name, in_flight, "deliveries in flight go back to the outbox");
    }
    End::Failed { error: failure, delivered }
}

fn take(pending: &mut HashMap<u64, Pending>, id: &str) -> Option<Pending> {
    id.parse::<u64>().ok().and_then(|id| pending.remove(&id))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Send `shutdown`, wait up to `grace` for the child to exit, then kill it.
async fn stop_child(child: &mut Child, out: &mpsc::Sender<Vec<u8>>, grace: Duration) -> End {
    if let Ok(line) = protocol::encode(&HostMessage::Shutdown) {
        let _ = out.send(line).await;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    End::Stopped
}

/// Carry out a plugin's command through the host and answer it when it carried an id.
async fn relay(
    shared: Arc<Shared>,
    out: mpsc::Sender<Vec<u8>>,
    run: String,
    action: String,
    reason: Option<String>,
    id: Option<String>,
) {
    let host = shared.host.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let (ok, message) = match (action.as_str(), host) {
        ("stop", Some(host)) => {
            let reason = reason.unwrap_or_else(|| format!("stop requested through notifier {}", shared.name));
            match host.request_stop(&run, &reason).await {
                Ok(summary) => (true, format!("stopping run {} ({})", summary.name, summary.run)),
                Err(e) => (false, e.to_string()),
            }
        }
        ("stop", None) => (false, "this host takes no commands from notifiers".to_owned()),
        (other, _) => (false, format!("unknown action `{other}`: protocol 1.0 knows `stop`")),
    };
    tracing::info!(notifier = %shared.name, run = %run, action = %action, ok, result = %message, "plugin command");
    if let Some(id) = id
        && let Ok(line) = protocol::encode(&HostMessage::CommandResult { id, ok, message })
    {
        let _ = out.send(line).await;
    }
}

pub mod conformance;

#[cfg(test)]
mod tests;

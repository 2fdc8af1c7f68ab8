//! [`ExecNotifier`]: an out-of-process plugin behind the [`Notifier`] trait. It encodes each delivery as a
//! `deliver` line, hands it to the supervisor (`supervisor.rs`, started at first use) with a permit that
//! bounds the deliveries in flight, and awaits the answer; health comes from the supervisor's stats.
//!
//! It never touches the child process itself: that is `child.rs`, through the supervisor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_plugin::protocol::MAX_LINE;
use herald_plugin::{Capabilities, DeliveryError, Health, Host, Notification, Notifier, Receipt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::options::ExecOptions;
use crate::shared::{ExecStats, PluginState, Request, Shared};
use crate::supervisor::supervise;

/// A notifier that is an out-of-process plugin. See the crate documentation.
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
        let permits = Arc::new(Semaphore::new(options.concurrency));
        ExecNotifier {
            name: name.to_owned(),
            kind: kind.to_owned(),
            shared: Arc::new(Shared::new(name, options)),
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

//! What an [`crate::ExecNotifier`], its supervisor and the child's loop share: the options, the stats behind
//! health and status, the state watch, the [`Host`] for relayed commands, and the [`Request`] a delivery
//! travels in.
//!
//! It holds data and the small helpers around it; it starts nothing and talks to no process.

use std::sync::{Arc, Mutex};

use herald_plugin::{Capabilities, DeliveryError, Host, Receipt};
use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};

use crate::options::ExecOptions;

/// Where the plugin stands, for health and status.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginState {
    /// Not started yet (the child starts at first use).
    Idle,
    /// Started, handshake under way.
    Starting,
    /// Handshake done.
    Ready {
        /// The name the plugin gave in `ready`.
        name: String,
        /// The version the plugin gave in `ready`.
        version: String,
    },
    /// Failed; restarting after a delay.
    Down,
    /// Stopped for good (shutdown).
    Stopped,
}

/// What the supervisor knows, for health and status.
#[derive(Debug, Clone)]
pub struct ExecStats {
    /// Where the plugin stands.
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

/// The state of one plugin notifier, shared by the notifier, its supervisor and the child's loop.
pub(crate) struct Shared {
    /// The notifier's name, for logs and messages.
    pub(crate) name: String,
    pub(crate) options: ExecOptions,
    stats: Mutex<ExecStats>,
    /// Changes whenever `stats.state` does.
    pub(crate) state_tx: watch::Sender<u64>,
    /// Where relayed commands go; set by `listen`.
    pub(crate) host: Mutex<Option<Arc<dyn Host>>>,
}

impl Shared {
    /// A notifier's shared state before its first child.
    pub(crate) fn new(name: &str, options: ExecOptions) -> Shared {
        Shared {
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
            state_tx: watch::channel(0).0,
            host: Mutex::new(None),
        }
    }

    pub(crate) fn stats(&self) -> std::sync::MutexGuard<'_, ExecStats> {
        // Every update is a field assignment: a poisoned lock still holds consistent data.
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_state(&self, state: PluginState) {
        self.stats().state = state;
        self.state_tx.send_modify(|v| *v += 1);
    }

    /// The host given to `listen`, if any.
    pub(crate) fn host(&self) -> Option<Arc<dyn Host>> {
        self.host.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// One delivery handed to the supervisor: its encoded `deliver` line and where to answer.
pub(crate) struct Request {
    pub(crate) id: u64,
    pub(crate) line: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<Receipt, DeliveryError>>,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// The answer to a delivery cut short by shutdown.
pub(crate) fn shutting_down() -> DeliveryError {
    DeliveryError::retryable("the daemon is shutting down; the delivery will be retried at the next start")
        .with_code("shutdown")
}

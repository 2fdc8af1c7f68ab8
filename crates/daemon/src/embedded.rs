//! Notifications from inside a training process: [`spawn_for_trainer`] connects an `EventEmitter`'s channel
//! either to a running daemon (the forwarder, with spooling and stop requests fed back into the
//! `StopHandle`) or, when no daemon answers, to an in-process dispatcher: the daemon's own dispatcher with an
//! in-memory outbox, delivering straight to the configured notifiers.
//!
//! Used by `herald train`. Everything runs on a thread of its own with its own small tokio runtime, so the
//! trainer never awaits the network and needs no runtime. The in-process mode is durable only while the
//! process lives, and cannot notice its own process dying: run `herald serve` for that.

use std::time::Duration;

use herald_callback::{EventReceiver, StopHandle};
use herald_event::Event;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::config::Config;
use crate::dispatcher::{Dispatcher, Options};
use crate::error::DaemonError;
use crate::forwarder::{self, ForwardReport};
use crate::store::Store;

/// Events per ingest in in-process mode.
const BATCH: usize = 500;
/// How long to wait for a daemon's `/healthz` before choosing in-process mode.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Where the trainer's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMode {
    /// To the daemon at this URL.
    Daemon { url: String },
    /// To the configured notifiers from this process.
    InProcess,
}

/// What the link did, once the trainer's channel closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkReport {
    /// Forwarder figures (daemon mode).
    pub forward: ForwardReport,
    /// Deliveries not made when the in-process dispatcher stopped (in-process mode).
    pub undelivered: u64,
}

/// The running link between a trainer and its notifiers.
#[derive(Debug)]
pub struct TrainerLink {
    mode: LinkMode,
    thread: std::thread::JoinHandle<Result<LinkReport, DaemonError>>,
}

impl TrainerLink {
    pub fn mode(&self) -> &LinkMode {
        &self.mode
    }

    /// Wait until the trainer's channel is closed (drop the emitter's sender) and what it sent is handed
    /// over: forwarded or spooled, or delivered in process for up to `[daemon] drain_timeout`.
    pub fn finish(self) -> Result<LinkReport, DaemonError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(DaemonError::io("the notification thread panicked", std::io::Error::other("panic")))
        })
    }
}

/// Connect a trainer's event channel to the daemon at the configured address, or, when none answers, to an
/// in-process dispatcher. Stop requests (from `herald stop` or a phone) go into `stop`.
pub fn spawn_for_trainer(
    config: &Config,
    receiver: EventReceiver,
    stop: StopHandle,
) -> Result<TrainerLink, DaemonError> {
    let config = config.clone();
    let (mode_tx, mode_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("herald-notify".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DaemonError::io("cannot start the notification runtime", e))?;
            rt.block_on(link(config, receiver, stop, mode_tx))
        })
        .map_err(|e| DaemonError::io("cannot start the notification thread", e))?;
    match mode_rx.recv() {
        Ok(Ok(mode)) => Ok(TrainerLink { mode, thread }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            _ => {
                Err(DaemonError::io("the notification thread ended early", std::io::Error::other("no mode")))
            }
        },
    }
}

async fn link(
    config: Config,
    mut receiver: EventReceiver,
    stop: StopHandle,
    mode_tx: std::sync::mpsc::Sender<Result<LinkMode, DaemonError>>,
) -> Result<LinkReport, DaemonError> {
    let d = &config.daemon;
    let token = d.token.as_ref().map(|t| t.expose().to_owned());
    let client = Client::new(d.listen, token, Duration::from_secs(10))
        .map_err(|e| DaemonError::io("cannot build the daemon client", std::io::Error::other(e.to_string())));
    let probe = match &client {
        Ok(c) => tokio::time::timeout(PROBE_TIMEOUT, c.healthy()).await.unwrap_or(false),
        Err(_) => false,
    };
    if let (true, Ok(client)) = (probe, client) {
        let _ = mode_tx.send(Ok(LinkMode::Daemon { url: client.base().to_owned() }));
        tracing::info!(daemon = client.base(), "forwarding events to the herald daemon");
        let (tx, rx) = mpsc::channel::<Event>(4096);
        let pump = tokio::spawn(async move {
            while let Some(e) = receiver.recv().await {
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        });
        let on_stop: forwarder::StopCallback = Box::new(move |_run, reason| stop.request(reason.to_owned()));
        let report =
            forwarder::run(rx, client, forwarder::spool_path(&d.state_dir), on_stop, d.drain_timeout).await;
        let _ = pump.await;
        return Ok(LinkReport { forward: report, undelivered: 0 });
    }
    let started = (|| {
        let registry = crate::builtins::registry();
        let notifiers = crate::daemon::build_notifiers(&config, &registry)?;
        let store = Store::in_memory()?;
        Dispatcher::start(store, notifiers, Options::new(d.stall_after))
    })();
    let dispatcher = match started {
        Ok(d) => d,
        Err(e) => {
            let message = e.to_string();
            let _ = mode_tx.send(Err(e));
            return Err(DaemonError::io(
                "cannot start the in-process dispatcher",
                std::io::Error::other(message),
            ));
        }
    };
    let _ = mode_tx.send(Ok(LinkMode::InProcess));
    tracing::info!("no herald daemon answers: delivering from this process");
    let handle = dispatcher.handle();
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        match handle.ingest(batch).await {
            Ok(reply) => {
                for control in reply.control.into_values() {
                    if control.stop && !stop.is_requested() {
                        stop.request(control.reason.unwrap_or_else(|| "stop requested".into()));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot queue events for delivery"),
        }
    }
    drop(handle);
    let undelivered = dispatcher.shutdown(d.drain_timeout).await;
    if undelivered > 0 {
        tracing::warn!(undelivered, "notifications not delivered before the drain timeout");
    }
    Ok(LinkReport { forward: ForwardReport::default(), undelivered })
}

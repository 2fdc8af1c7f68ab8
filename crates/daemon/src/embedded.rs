//! Notifications from inside a training process: [`spawn_for_trainer`] connects an `EventEmitter`'s channel
//! either to a running daemon (the forwarder, with spooling and stop requests fed back into the
//! `StopHandle`) or, when no daemon answers, to an in-process dispatcher: the daemon's own dispatcher with an
//! in-memory outbox, delivering straight to the configured notifiers.
//!
//! Used by `herald train`. Everything runs on a thread of its own with its own small tokio runtime, so the
//! trainer never awaits the network and needs no runtime. The in-process mode is durable only while the
//! process lives, and cannot notice its own process dying: run `herald serve` for that.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_callback::{EventReceiver, StopHandle};
use herald_event::Event;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::config::Config;
use crate::dispatcher::Dispatcher;
use crate::error::DaemonError;
use crate::forwarder::{self, ForwardReport};
use crate::outbox::MemoryOutbox;
use crate::shared::Options;

/// Events per ingest in in-process mode.
const BATCH: usize = 500;
/// How long to wait for a daemon's `/healthz` before choosing in-process mode.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Where the trainer's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMode {
    /// To the daemon at this URL.
    Daemon {
        /// The daemon's address.
        url: String,
    },
    /// No daemon answers, but this machine runs one (its outbox exists): events are spooled to this file
    /// and sent once the daemon is back (or replayed by the daemon at its next start).
    Spool {
        /// The daemon's address, tried again as events come.
        url: String,
        /// The spool file events are appended to meanwhile.
        spool: PathBuf,
    },
    /// To the configured notifiers from this process.
    InProcess,
}

/// Where a link's events come from.
enum Source {
    Trainer(EventReceiver),
    Channel(mpsc::Receiver<Event>),
}

impl Source {
    async fn recv(&mut self) -> Option<Event> {
        match self {
            Source::Trainer(r) => r.recv().await,
            Source::Channel(r) => r.recv().await,
        }
    }

    fn try_recv(&mut self) -> Option<Event> {
        match self {
            Source::Trainer(r) => r.try_recv().ok(),
            Source::Channel(r) => r.try_recv().ok(),
        }
    }
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
    /// Where this trainer's events go, as chosen at start.
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
    let on_stop: forwarder::StopCallback = Box::new(move |_run, reason| {
        if !stop.is_requested() {
            stop.request(reason.to_owned());
        }
    });
    spawn(config, Source::Trainer(receiver), on_stop)
}

/// [`spawn_for_trainer`] for any event source (`herald watch`): events from `events`, stop requests to
/// `on_stop(run, reason)`.
pub fn spawn_link(
    config: &Config,
    events: mpsc::Receiver<Event>,
    on_stop: forwarder::StopCallback,
) -> Result<TrainerLink, DaemonError> {
    spawn(config, Source::Channel(events), on_stop)
}

fn spawn(
    config: &Config,
    source: Source,
    on_stop: forwarder::StopCallback,
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
            rt.block_on(link(config, source, on_stop, mode_tx))
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
    mut receiver: Source,
    on_stop: forwarder::StopCallback,
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
    // A machine that ran a daemon (its outbox exists) expects one: spool while it is down.
    let expects_daemon = d.state_dir.join("outbox.redb").exists();
    if let (true, Ok(client)) = (probe || expects_daemon, client) {
        let spool = forwarder::spool_path(&d.state_dir);
        let url = client.base().to_owned();
        let mode =
            if probe { LinkMode::Daemon { url } } else { LinkMode::Spool { url, spool: spool.clone() } };
        let _ = mode_tx.send(Ok(mode));
        tracing::info!(daemon = client.base(), answers = probe, "forwarding events to the herald daemon");
        let (tx, rx) = mpsc::channel::<Event>(4096);
        let pump = tokio::spawn(async move {
            while let Some(e) = receiver.recv().await {
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        });
        let report = forwarder::run(rx, client, spool, on_stop, d.drain_timeout).await;
        let _ = pump.await;
        return Ok(LinkReport { forward: report, undelivered: 0 });
    }
    let started = async {
        let registry = crate::builtins::registry();
        let notifiers = crate::daemon::build_notifiers(&config, &registry)?;
        let options = Options::new(d.stall_after)
            .with_rules(config.rules.clone())
            .with_slow_rank_factor(d.slow_rank_factor);
        Dispatcher::start(Arc::new(MemoryOutbox::new()), notifiers, options).await
    }
    .await;
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
                Some(e) => batch.push(e),
                None => break,
            }
        }
        match handle.ingest(batch).await {
            Ok(reply) => {
                for (run, control) in reply.control {
                    if control.stop {
                        on_stop(&run, control.reason.as_deref().unwrap_or("stop requested"));
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use herald_event::{Message, RunStarted};

    use super::*;
    use crate::dispatcher::Dispatcher;
    use crate::server;

    type Bodies = Arc<Mutex<Vec<serde_json::Value>>>;

    /// A webhook receiver on 127.0.0.1, on a runtime of its own.
    fn receiver() -> (u16, Bodies, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let bodies: Bodies = Arc::default();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let port = listener.local_addr().expect("address").port();
        let b = bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let b = b.clone();
                async move {
                    b.lock().expect("lock").push(serde_json::from_slice(&body).unwrap_or_default());
                    "ok"
                }
            }),
        );
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (port, bodies, rt)
    }

    fn config(dir: &std::path::Path, listen_port: u16, hook_port: u16) -> Config {
        let text = format!(
            "[daemon]\nlisten = \"127.0.0.1:{listen_port}\"\nsocket = \"\"\nstate_dir = \"{}\"\ndrain_timeout = \"5s\"\n\n\
             [[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n",
            dir.display()
        );
        crate::config::parse(&text, "test.toml").expect("valid config")
    }

    fn started(run: &str) -> Event {
        Event::now(
            run,
            0,
            RunStarted {
                name: "mlp".into(),
                host: "h".into(),
                pid: 1,
                rank: 0,
                job: None,
                world_size: None,
                n_epochs: 1,
                batches_per_epoch: 1,
                metric_names: vec![],
                hyper: Default::default(),
            },
        )
    }

    fn message(run: &str, seq: u64) -> Event {
        Event::now(run, seq, Message { title: "t".into(), text: "x".into(), level: Default::default() })
    }

    fn unused_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
    }

    #[test]
    fn without_a_daemon_the_trainer_delivers_in_process() {
        let (hook_port, bodies, _rt) = receiver();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config(dir.path(), unused_port(), hook_port);
        let (tx, rx) = herald_callback::channel(100);
        let link = spawn_for_trainer(&config, rx, StopHandle::new()).expect("link");
        assert_eq!(link.mode(), &LinkMode::InProcess);
        tx.send(started("r")).expect("send");
        tx.send(message("r", 1)).expect("send");
        drop(tx);
        let report = link.finish().expect("finish");
        assert_eq!(report.undelivered, 0);
        let seqs: Vec<u64> = bodies.lock().expect("lock").iter().filter_map(|b| b["seq"].as_u64()).collect();
        assert_eq!(seqs, vec![0, 1], "delivered before finish returned");
    }

    #[test]
    fn with_a_daemon_the_trainer_forwards_and_gets_stop_requests() {
        let (hook_port, bodies, rt) = receiver();
        let dir = tempfile::tempdir().expect("temp dir");
        // A daemon: the dispatcher and the API on a free port.
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let port = listener.local_addr().expect("address").port();
        let config = config(&dir.path().join("client"), port, hook_port);
        let daemon_store =
            Arc::new(crate::outbox::RedbOutbox::open(&dir.path().join("daemon")).expect("store"));
        let registry = crate::builtins::registry();
        let handle = rt.block_on(async {
            let notifiers = crate::daemon::build_notifiers(&config, &registry).expect("notifiers");
            let d = Dispatcher::start(daemon_store, notifiers, Options::new(Duration::from_secs(3600)))
                .await
                .expect("dispatcher");
            let h = d.handle();
            let router = server::router(h.clone(), None);
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
                drop(d);
            });
            h
        });
        let (tx, rx) = herald_callback::channel(100);
        let stop = StopHandle::new();
        let link = spawn_for_trainer(&config, rx, stop.clone()).expect("link");
        assert!(matches!(link.mode(), LinkMode::Daemon { .. }), "{:?}", link.mode());
        tx.send(started("fwd")).expect("send");
        // Ask the run to stop, as `herald stop` would, once the daemon knows it.
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !handle.request_stop("fwd", "enough").await.expect("stop") {
                assert!(tokio::time::Instant::now() < deadline, "the run never reached the daemon");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        tx.send(message("fwd", 1)).expect("send");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !stop.is_requested() {
            assert!(std::time::Instant::now() < deadline, "the stop request never reached the trainer");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(stop.reason().as_deref(), Some("enough"));
        drop(tx);
        let report = link.finish().expect("finish");
        assert_eq!(report.forward.forwarded, 2);
        assert_eq!(report.forward.left_in_spool, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bodies.lock().expect("lock").len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the daemon did not deliver");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

//! `herald serve`: start the dispatcher, serve the API on TCP and the Unix socket, tell systemd, and shut
//! down cleanly on SIGTERM or SIGINT (stop ingest, drain deliveries for up to `drain_timeout`, keep the rest
//! in the outbox for the next start).
//!
//! The binary calls [`serve`]; tests and benchmarks start the real binary. Configuration parsing is
//! `config.rs`'s; the notifier types come from the registry the caller passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_plugin::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::dispatcher::Dispatcher;
use crate::error::DaemonError;
use crate::outbox::RedbOutbox;
use crate::shared::{NotifierSpec, Options, StopHook};
use crate::{dashboard, forwarder, sdnotify, server};

/// Build every configured notifier.
pub fn build_notifiers(config: &Config, registry: &Registry) -> Result<Vec<NotifierSpec>, DaemonError> {
    config
        .notifiers
        .iter()
        .map(|n| {
            let notifier = n
                .build(registry)
                .map_err(|e| DaemonError::Notifier { name: n.name.clone(), message: e.to_string() })?;
            Ok(NotifierSpec {
                name: n.name.clone(),
                kind: n.kind.clone(),
                notifier,
                routing: n.routing.clone(),
            })
        })
        .collect()
}

/// Refuse a configuration the daemon must not run with: a non-loopback listener (API or dashboard) without a
/// token.
pub fn check_listen(config: &Config) -> Result<(), DaemonError> {
    let d = &config.daemon;
    let has_token = d.token.as_ref().is_some_and(|t| !t.expose().is_empty());
    for addr in std::iter::once(d.listen).chain(d.dashboard) {
        if !addr.ip().is_loopback() && !has_token {
            return Err(DaemonError::TokenRequired { addr });
        }
    }
    Ok(())
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn serve(config: &Config, registry: &Registry) -> Result<(), DaemonError> {
    serve_with_stop_hook(config, registry, None).await
}

/// [`serve`], telling `on_stop` of every stop request (cluster mode: the other nodes hear of it).
pub async fn serve_with_stop_hook(
    config: &Config,
    registry: &Registry,
    on_stop: Option<StopHook>,
) -> Result<(), DaemonError> {
    check_listen(config)?;
    let d = &config.daemon;
    let notifiers = build_notifiers(config, registry)?;
    let state_dir = d.state_dir.clone();
    let store = tokio::task::spawn_blocking(move || RedbOutbox::open(&state_dir))
        .await
        .map_err(|e| DaemonError::io("cannot open the outbox", std::io::Error::other(e)))??;
    let tcp = tokio::net::TcpListener::bind(d.listen)
        .await
        .map_err(|source| DaemonError::Bind { addr: d.listen.to_string(), source })?;
    let dashboard = match d.dashboard {
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Bind { addr: addr.to_string(), source })?,
            addr,
        )),
        None => None,
    };
    let unix = match &d.socket {
        Some(path) => Some((bind_unix(path)?, path.clone())),
        None => None,
    };
    let names: Vec<String> = notifiers.iter().map(|n| format!("{} ({})", n.name, n.kind)).collect();
    let options = Options::new(d.stall_after)
        .with_rules(config.rules.clone())
        .with_slow_rank_factor(d.slow_rank_factor)
        .with_stop_hook(on_stop);
    let dispatcher = Dispatcher::start(std::sync::Arc::new(store), notifiers, options).await?;
    let handle = dispatcher.handle();
    let replayed = forwarder::replay_orphans(&d.state_dir, &handle).await;
    if replayed > 0 {
        tracing::info!(events = replayed, "replayed spooled events");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let token = d.token.as_ref().map(|t| t.expose().to_owned()).filter(|t| !t.is_empty());
    let mut servers = tokio::task::JoinSet::new();
    // The dashboard's stream: one hub numbers the committed events for every open stream.
    let hub = std::sync::Arc::new(dashboard::Hub::new(handle.shared().started_ms));
    servers.spawn(hub.clone().run(handle.clone(), handle.shared().events.subscribe(), stop_rx.clone()));
    {
        let router = server::router(handle.clone(), token.as_deref()).merge(dashboard::api_routes(
            handle.clone(),
            hub.clone(),
            token.as_deref(),
        ));
        let rx = stop_rx.clone();
        servers.spawn(async move {
            let _ = axum::serve(tcp, router).with_graceful_shutdown(wait_true(rx)).await;
        });
    }
    if let Some((listener, addr)) = dashboard {
        let router = dashboard::router(handle.clone(), hub.clone(), addr, token.as_deref())?;
        let rx = stop_rx.clone();
        // The client's address goes into a stop request's reason.
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        servers.spawn(async move {
            let _ = axum::serve(listener, service).with_graceful_shutdown(wait_true(rx)).await;
        });
    }
    if let Some((listener, _)) = unix {
        let router = server::router(handle.clone(), None);
        let rx = stop_rx.clone();
        servers.spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(wait_true(rx)).await;
        });
    }
    tracing::info!(
        listen = %d.listen,
        socket = ?d.socket,
        dashboard = ?d.dashboard,
        state_dir = %d.state_dir.display(),
        notifiers = %names.join(", "),
        config = %config.origin,
        "herald daemon ready"
    );
    sdnotify::notify(&format!("READY=1\nSTATUS=listening on {}", d.listen));
    if let Some(every) = sdnotify::watchdog_interval() {
        let mut rx = stop_rx.clone();
        servers.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => { sdnotify::notify("WATCHDOG=1"); }
                    _ = rx.changed() => return,
                }
            }
        });
    }
    drop(handle);

    let why = shutdown_signal().await;
    tracing::info!(signal = why, "shutting down");
    sdnotify::notify("STOPPING=1\nSTATUS=draining deliveries");
    let _ = stop_tx.send(true);
    // In-flight requests finish (their events are committed); idle connections close.
    let _ =
        tokio::time::timeout(Duration::from_secs(5), async { while servers.join_next().await.is_some() {} })
            .await;
    servers.abort_all();
    dispatcher.shutdown(d.drain_timeout).await;
    if let Some(path) = &d.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Bind the Unix socket (mode 0600), replacing a stale socket file but refusing one a daemon answers on.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketInUse { path: path.to_owned() });
        }
        std::fs::remove_file(path)
            .map_err(|e| DaemonError::io(format!("cannot remove the stale socket {}", path.display()), e))?;
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::outbox::create_private_dir(dir)
            .map_err(|e| DaemonError::io(format!("cannot create {}", dir.display()), e))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|source| DaemonError::Bind { addr: path.display().to_string(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        DaemonError::io(format!("cannot restrict the socket {} to its owner", path.display()), e)
    })?;
    Ok(listener)
}

/// The default socket path when `[daemon] socket` is not set: `$XDG_RUNTIME_DIR/herald.sock`.
pub fn default_socket() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(|d| PathBuf::from(d).join("herald.sock"))
}

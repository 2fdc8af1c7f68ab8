//! Herald's cluster mode on NATS JetStream (`docs/cluster.md`): many training machines, one team bot, no
//! single point of failure.
//!
//! `herald serve` calls [`serve`] when the configuration has `[cluster]`. An **edge** (`edge.rs`) is the
//! daemon as on one machine whose only notifier forwards every event to the stream `<prefix>-events`
//! (`forward.rs`). A **deliverer** (`deliver.rs`) competes for the lease (`lease.rs`); the leader runs the
//! daemon's dispatcher over the [`JetStreamOutbox`] (`outbox.rs`), fed from the stream. The stream, its
//! subjects and buckets are named by `names.rs`; `connect.rs` reaches the servers and checks the stream;
//! stop requests asked at any node travel to the edges through a bucket (`stops.rs`); the leader's status
//! reaches every node's `herald status` through another (`status.rs`); a deliver-only node serves a small
//! API for `herald status` and `herald stop` (`api.rs`).
//! This crate does not change the daemon: it configures it and gives it another outbox.

mod api;
mod connect;
mod deliver;
mod edge;
mod error;
mod forward;
mod lease;
mod loss;
pub mod names;
mod outbox;
mod pack;
mod status;
mod stops;

use herald_daemon::config::Config;
use herald_plugin::Registry;

pub use connect::{Target, connect, ensure_stream, stream_config};
pub use edge::{edge_config, registry};
pub use error::ClusterError;
pub use forward::{Forwarder, forwarded_events};
pub use outbox::JetStreamOutbox;

/// Run this node of the cluster until SIGTERM or SIGINT; without `[cluster]`, the single-machine daemon.
pub async fn serve(config: &Config, registry: &Registry) -> Result<(), ClusterError> {
    let Some(cluster) = &config.cluster else {
        return Ok(herald_daemon::serve(config, registry).await?);
    };
    let ca_path = write_ca(config, cluster.ca.as_deref())?;
    let target = Target::new(cluster, ca_path);
    tracing::info!(role = cluster.role.as_str(), servers = %cluster.servers.join(", "), prefix = %cluster.prefix, "cluster mode");
    let role = cluster.role;
    if !role.edge() {
        return serve_deliver_only(config, registry, target, cluster.lease).await;
    }
    check_reachable(&target).await?;
    let edge = edge_config(config, &target);
    let edge_registry = edge::registry(registry);
    // The edge's daemon handles the signals; what runs beside it stops when it returns.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let d = &config.daemon;
    let token = d.token.as_ref().map(|t| t.expose().to_owned());
    let local = herald_daemon::Client::new(d.listen, token, std::time::Duration::from_secs(5))
        .map_err(|e| ClusterError::nats("cannot make a client for the local API", &e))?;
    let watcher = tokio::spawn(stops::watch(target.clone(), local, stop.clone()));
    // `herald status` here shows the leader and its status (every edge's runs) beside this node's own.
    let view: status::Shared = std::sync::Arc::new(std::sync::Mutex::new(herald_daemon::ClusterView {
        role: role.as_str().to_owned(),
        node: status::node_id(),
        ..Default::default()
    }));
    let shown = view.clone();
    herald_daemon::api::set_cluster_view(Box::new(move || {
        Some(shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }));
    let viewer = tokio::spawn(status::watch(target.clone(), view, stop.clone()));
    // Stops asked here (`herald stop`, the API), for this edge's runs or another's, go to the bucket at once.
    let (hook, requests) = stops::hook();
    let sender = tokio::spawn(stops::send(target.clone(), requests, stop.clone()));
    let deliverer = role
        .deliver()
        .then(|| tokio::spawn(deliver::run(config.clone(), registry.clone(), target, cluster.lease, stop)));
    let served = herald_daemon::serve_with_stop_hook(&edge, &edge_registry, Some(hook)).await;
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    let _ = viewer.await;
    let _ = sender.await;
    if let Some(deliverer) = deliverer {
        deliverer.await.map_err(|e| ClusterError::nats("the deliverer task failed", &e))??;
    }
    Ok(served?)
}

/// A deliverer alone: the lease and, while leading, the notifiers; and a small API on `[daemon] listen`
/// (`api.rs`) so that `herald status` and `herald stop` work here too.
async fn serve_deliver_only(
    config: &Config,
    registry: &Registry,
    target: Target,
    lease: std::time::Duration,
) -> Result<(), ClusterError> {
    herald_daemon::check_listen(config)?;
    let d = &config.daemon;
    let listener = tokio::net::TcpListener::bind(d.listen)
        .await
        .map_err(|source| herald_daemon::DaemonError::Bind { addr: d.listen.to_string(), source })?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let view: status::Shared = std::sync::Arc::new(std::sync::Mutex::new(herald_daemon::ClusterView {
        role: "deliver".to_owned(),
        node: status::node_id(),
        ..Default::default()
    }));
    let viewer = tokio::spawn(status::watch(target.clone(), view.clone(), stop.clone()));
    let (hook, requests) = stops::hook();
    let sender = tokio::spawn(stops::send(target.clone(), requests, stop.clone()));
    let token = d.token.as_ref().map(|t| t.expose().to_owned()).filter(|t| !t.is_empty());
    let router = api::router(view, hook, token.as_deref());
    let mut served = stop.clone();
    let server = tokio::spawn(async move {
        let until = async move {
            while !*served.borrow() {
                if served.changed().await.is_err() {
                    return;
                }
            }
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(until).await {
            tracing::warn!(error = %e, "the deliverer's API stopped");
        }
    });
    tracing::info!(listen = %d.listen, "deliver-only node: API for herald status and herald stop");
    let deliverer = deliver::run(config.clone(), registry.clone(), target, lease, stop);
    tokio::pin!(deliverer);
    let done = tokio::select! {
        done = &mut deliverer => done,
        why = shutdown_signal() => {
            tracing::info!(signal = why, "shutting down");
            let _ = stop_tx.send(true);
            deliverer.await
        }
    };
    let _ = stop_tx.send(true);
    let _ = viewer.await;
    let _ = sender.await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    done
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => std::future::pending().await,
    }
}

/// Connect once at start: wrong credentials or a stream with other settings stop the node with a clear
/// error; unreachable servers only warn (an edge keeps taking events and forwards them when NATS is back).
async fn check_reachable(target: &Target) -> Result<(), ClusterError> {
    match connect(target, "herald-check").await {
        Ok(client) => {
            let js = async_nats::jetstream::new(client.clone());
            let checked = ensure_stream(&js, target).await;
            let _ = client.drain().await;
            match checked {
                Err(err @ ClusterError::Nats { .. }) => {
                    tracing::warn!(error = %err, "JetStream does not answer yet; events wait in the outbox until it does");
                    Ok(())
                }
                other => other,
            }
        }
        Err(err @ ClusterError::Connect { .. }) if !err.to_string().contains("refused the credentials") => {
            tracing::warn!(error = %err, "NATS is not reachable now; events wait in the outbox until it is");
            Ok(())
        }

        Err(err) => Err(err),
    }
}

/// Write the CA certificate of `[cluster] ca_file` where the NATS client reads it: `state_dir/nats-ca.pem`.
fn write_ca(config: &Config, ca: Option<&str>) -> Result<Option<std::path::PathBuf>, ClusterError> {
    let Some(pem) = ca else { return Ok(None) };
    let dir = &config.daemon.state_dir;
    let path = dir.join("nats-ca.pem");
    herald_daemon::outbox::create_private_dir(dir).and_then(|()| std::fs::write(&path, pem)).map_err(
        |e| herald_daemon::DaemonError::Io { context: format!("cannot write {}", path.display()), source: e },
    )?;
    Ok(Some(path))
}

//! Stop requests across machines: the KV bucket `<prefix>-stops`, one key per run (its [`token`]) whose
//! value is the reason.
//!
//! Every node's daemon tells the cluster of each stop request it is asked, known run or not, through its
//! stop hook ([`hook`]): Telegram's `/stop` at the leader, `herald stop` and `POST /v1/runs/{run}/stop` at
//! an edge. [`publish`] writes it at once with `create`, so each run's request is written once. Every edge
//! watches the bucket ([`watch`]) and hands each request to its own daemon's API (`POST
//! /v1/runs/{run}/stop`); the edge the run reports to answers its next post with `control.stop`, the others
//! do not know the run and ignore it. Requests are kept for 14 days.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use herald_daemon::{Client, StopHook};
use tokio::sync::{mpsc, watch};

use crate::connect::{Target, connect};
use crate::error::ClusterError;
use crate::names::{Names, token, untoken};

/// How soon a write or a connection that failed is tried again.
pub const PERIOD: Duration = Duration::from_millis(500);

/// The stops bucket, made when missing.
pub async fn bucket(
    js: &jetstream::Context,
    names: &Names,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    crate::connect::open_bucket(
        js,
        names.bucket("stops"),
        replicas,
        Some(Duration::from_secs(14 * 24 * 3600)),
    )
    .await
}

/// The daemon's stop hook and what it hands over: every stop request the daemon is asked (`herald stop`,
/// `POST /v1/runs/{run}/stop`, Telegram's `/stop` at the leader), as (run, reason), at once.
pub fn hook() -> (StopHook, mpsc::UnboundedReceiver<(String, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let hook = StopHook(Arc::new(move |run: &str, reason: &str| {
        tx.send((run.to_owned(), reason.to_owned())).is_ok()
    }));
    (hook, rx)
}

/// Write each request of `requests` to the bucket (once per run: `create`), retrying while NATS does not
/// answer, until `done`.
pub async fn publish(
    store: kv::Store,
    mut requests: mpsc::UnboundedReceiver<(String, String)>,
    mut done: watch::Receiver<bool>,
) {
    loop {
        let (run, reason) = tokio::select! {
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = done.changed() => return,
        };
        loop {
            match store.create(token(&run), Bytes::from(reason.clone().into_bytes())).await {
                Ok(_) => {
                    tracing::info!(run = %run, "stop request sent to the edges");
                    break;
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => break,
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "cannot record a stop request; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(PERIOD) => {}
                        _ = done.changed() => return,
                    }
                }
            }
        }
    }
}

/// On an edge: connect (again, as often as it must), then [`publish`] the local daemon's stop requests.
pub async fn send(
    target: Target,
    requests: mpsc::UnboundedReceiver<(String, String)>,
    mut done: watch::Receiver<bool>,
) {
    loop {
        let opened = async {
            let client = connect(&target, "herald-edge-stop-requests").await?;
            bucket(&jetstream::new(client), &target.names(), target.replicas).await
        };
        match opened.await {
            Ok(store) => return publish(store, requests, done).await,
            Err(e) => tracing::debug!(error = %e, "cannot reach the stops bucket yet; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = done.changed() => return,
        }
    }
}

/// On an edge: hand every stop request of the bucket to the local daemon, until `done`. Connects (again)
/// whenever it must; waits for the local API to answer first.
pub async fn watch(target: Target, local: Client, mut done: watch::Receiver<bool>) {
    loop {
        if *done.borrow() {
            return;
        }
        if let Err(e) = watch_once(&target, &local, &mut done).await {
            tracing::debug!(error = %e, "watching stop requests; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = done.changed() => {}
        }
    }
}

async fn watch_once(
    target: &Target,
    local: &Client,
    done: &mut watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    if !local.healthy().await {
        return Ok(());
    }
    let client = connect(target, "herald-edge-stops").await?;
    let js = jetstream::new(client);
    let store = bucket(&js, &target.names(), target.replicas).await?;
    let mut entries = store
        .watch_with_history(">")
        .await
        .map_err(|e| ClusterError::nats("cannot watch stop requests", &e))?;
    loop {
        let entry = tokio::select! {
            entry = entries.next() => entry,
            _ = done.changed() => return Ok(()),
        };
        let Some(entry) = entry else { return Ok(()) };
        let entry = entry.map_err(|e| ClusterError::nats("watching stop requests", &e))?;
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let Some(run) = untoken(&entry.key) else { continue };
        let reason = String::from_utf8_lossy(&entry.value).into_owned();
        match local.stop(&run, &reason).await {
            Ok(()) => tracing::info!(run = %run, "stop request from the cluster handed to the run"),
            // Not this edge's run (the daemon answers 404), or the API is busy: nothing to do here.
            Err(e) => tracing::debug!(run = %run, error = %e, "stop request not for this edge"),
        }
    }
}

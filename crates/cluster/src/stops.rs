//! Stop requests across machines: the KV bucket `<prefix>-stops`, one key per run (its [`token`]) whose
//! value is the reason.
//!
//! The leader records every run its dispatcher has been asked to stop (Telegram's `/stop` at the leader,
//! through the daemon's host) with `create`, so each request is written once ([`publish`], which reads the
//! dispatcher's status every [`PERIOD`]). Every edge watches the bucket ([`watch`]) and hands each request
//! to its own daemon's API (`POST /v1/runs/{run}/stop`); the edge the run reports to answers its next post
//! with `control.stop`, the others do not know the run and ignore it. Requests are kept for 14 days.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use herald_daemon::{Client, Handle};
use tokio::sync::watch;

use crate::connect::{Target, connect};
use crate::error::ClusterError;
use crate::names::{Names, token, untoken};

/// How often the leader looks for new stop requests, and an edge retries its connection.
pub const PERIOD: Duration = Duration::from_millis(500);
/// The reason written for a stop asked at the leader (the dispatcher's status does not say who asked).
const REASON: &str = "asked to stop from the team's chat";

/// The stops bucket, made when missing.
pub async fn bucket(
    js: &jetstream::Context,
    names: &Names,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    let name = names.bucket("stops");
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age: Duration::from_secs(14 * 24 * 3600),
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..kv::Config::default()
    };
    js.create_key_value(config)
        .await
        .map_err(|e| ClusterError::nats(&format!("cannot create the bucket {name}"), &e))
}

/// While leading: write each run the dispatcher was asked to stop to the bucket, once, until `done`.
pub async fn publish(handle: Handle, store: kv::Store, mut done: watch::Receiver<bool>) {
    let mut sent: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => return,
        }
        let wanted: Vec<String> = handle
            .status()
            .runs
            .into_iter()
            .filter(|r| r.stop_requested && !sent.contains(&r.run))
            .map(|r| r.run)
            .collect();
        for run in wanted {
            match store.create(token(&run), Bytes::from_static(REASON.as_bytes())).await {
                Ok(_) => {
                    tracing::info!(run = %run, "stop request sent to the edges");
                    sent.insert(run);
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    sent.insert(run);
                }
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "cannot record a stop request; trying again")
                }
            }
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

//! The cluster's status, seen from any node: the leader publishes its [`Status`] (every edge's runs, since
//! it ingests every event; its notifiers' health) to the key `leader` of the bucket `<prefix>-status`
//! every [`PUBLISH_EVERY`]; each node with an API reads that key and the lease every [`READ_EVERY`] and
//! shows both as the `cluster` section of its own `GET /v1/status` ([`ClusterView`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use herald_daemon::{ClusterView, Handle, Status};
use tokio::sync::watch;

use crate::connect::{Target, connect};
use crate::error::ClusterError;
use crate::names::Names;

/// How often the leader publishes its status.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// How often a node reads the leader and its status.
pub const READ_EVERY: Duration = Duration::from_secs(1);
/// The key of the leader's status.
const KEY: &str = "leader";

/// This process's node id, `<host>/<pid>` (the lease's value).
pub fn node_id() -> String {
    format!("{}/{}", herald_daemon::local_hostname(), std::process::id())
}

/// The status bucket, made when missing.
pub async fn bucket(
    js: &jetstream::Context,
    names: &Names,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    crate::connect::open_bucket(js, names.bucket("status"), replicas, None).await
}

/// The leader's side: publish `handle`'s status every [`PUBLISH_EVERY`] while `fence` holds, until `done`.
pub async fn publish(
    store: kv::Store,
    handle: Handle,
    fence: crate::lease::Fence,
    mut done: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => return,
        }
        if *done.borrow() {
            return;
        }
        if !fence.holds() {
            continue;
        }
        let mut status = handle.status();
        // The leader's own view of the cluster is the reader's to make.
        status.cluster = None;
        let bytes = match serde_json::to_vec(&status) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the leader's status");
                continue;
            }
        };
        if let Err(e) = store.put(KEY, Bytes::from(bytes)).await {
            tracing::debug!(error = %e, "cannot publish the leader's status");
        }
    }
}

/// The latest [`ClusterView`] a [`watch`] task keeps.
pub type Shared = Arc<Mutex<ClusterView>>;

/// A node's side: keep `view` up to date every [`READ_EVERY`] until `stop`.
pub async fn watch(target: Target, view: Shared, mut stop: watch::Receiver<bool>) {
    let names = target.names();
    let mut js: Option<jetstream::Context> = None;
    loop {
        if js.is_none() {
            match connect(&target, "herald-status").await {
                Ok(client) => js = Some(jetstream::new(client)),
                Err(e) => set_error(&view, e.to_string()),
            }
        }
        if let Some(ctx) = &js {
            match read(ctx, &names).await {
                Ok((leader, renewed, status, age)) => {
                    let mut v = view.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    v.leader = leader;
                    v.lease_renewed_s_ago = renewed;
                    v.leader_status = status.map(Box::new);
                    v.leader_status_age_s = age;
                    v.error = None;
                }
                Err(e) => set_error(&view, e),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(READ_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

fn set_error(view: &Shared, error: String) {
    view.lock().unwrap_or_else(std::sync::PoisonError::into_inner).error = Some(error);
}

/// Seconds since a key-value entry was written.
fn age_s(entry: &kv::Entry) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    ((now - entry.created.unix_timestamp_nanos()) as f64 / 1e9).max(0.0)
}

type Read = (Option<String>, Option<f64>, Option<Status>, Option<f64>);

/// The leader, the age of its lease's renewal, its status and the status's age.
async fn read(js: &jetstream::Context, names: &Names) -> Result<Read, String> {
    let mut out: Read = (None, None, None, None);
    // Either bucket may not exist yet (no deliverer started): then there is nothing to show.
    if let Ok(lease) = js.get_key_value(names.bucket("leader")).await
        && let Some(entry) = lease.entry("leader").await.map_err(|e| format!("cannot read the lease: {e}"))?
        && entry.operation == kv::Operation::Put
    {
        out.0 = Some(String::from_utf8_lossy(&entry.value).into_owned());
        out.1 = Some(age_s(&entry));
    }
    if let Ok(store) = js.get_key_value(names.bucket("status")).await
        && let Some(entry) =
            store.entry(KEY).await.map_err(|e| format!("cannot read the leader's status: {e}"))?
        && entry.operation == kv::Operation::Put
    {
        match serde_json::from_slice::<Status>(&entry.value) {
            Ok(status) => {
                out.2 = Some(status);
                out.3 = Some(age_s(&entry));
            }
            Err(e) => tracing::debug!(error = %e, "the leader's status is unreadable (another version?)"),
        }
    }
    Ok(out)
}

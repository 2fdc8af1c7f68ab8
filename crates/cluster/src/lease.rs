//! The leader's lease: the key `leader` of the KV bucket `<prefix>-leader`, whose `max_age` is the lease.
//!
//! A deliverer takes the lease with `create` (which succeeds only when the key is absent: no leader, or the
//! last one's entry expired), renews it every third of the lease with `update` at the revision it holds
//! (compare-and-set: a renewal after someone else took over fails), and gives it up with a delete at that
//! revision when it shuts down, so the next one need not wait for the expiry. [`hold`] renews until a
//! renewal fails; the holder then steps down at once.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::names::Names;

/// The key the leader holds.
const KEY: &str = "leader";

/// The lease bucket, made when missing.
pub async fn bucket(
    js: &jetstream::Context,
    names: &Names,
    replicas: usize,
    lease: Duration,
) -> Result<kv::Store, ClusterError> {
    let name = names.bucket("leader");
    if let Ok(store) = js.get_key_value(&name).await {
        if let Ok(status) = store.status().await
            && status.max_age() != lease
        {
            tracing::warn!(bucket = %name, have = ?status.max_age(), want = ?lease, "the lease bucket has another max_age than [cluster] lease: every deliverer must use the same lease");
        }
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age: lease,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..kv::Config::default()
    };
    js.create_key_value(config)
        .await
        .map_err(|e| ClusterError::nats(&format!("cannot create the bucket {name}"), &e))
}

/// Take the lease if nobody holds it: the revision held, or `None` when another node leads.
pub async fn try_acquire(store: &kv::Store, node: &str) -> Result<Option<u64>, ClusterError> {
    match store.create(KEY, Bytes::from(node.to_owned())).await {
        Ok(revision) => Ok(Some(revision)),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(ClusterError::nats("cannot take the lease", &e)),
    }
}

/// Renew the lease every third of `lease` until a renewal fails or `stop` turns true; then tell `lost`
/// (on a failure) or give the lease up (on `stop`).
pub async fn hold(
    store: kv::Store,
    node: String,
    mut revision: u64,
    lease: Duration,
    lost: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A renewal slower than the rest of the lease is a lost lease.
                let renew = store.update(KEY, Bytes::from(node.clone()), revision);
                match tokio::time::timeout(lease / 2, renew).await {
                    Ok(Ok(r)) => revision = r,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "lost the leader's lease; stepping down");
                        let _ = lost.send(true);
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("renewing the leader's lease timed out; stepping down");
                        let _ = lost.send(true);
                        return;
                    }
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = store.delete_expect_revision(KEY, Some(revision)).await;
                    return;
                }
            }
        }
    }
}

//! The leader's lease: the key `leader` of the KV bucket `<prefix>-leader`, whose `max_age` is the lease.
//!
//! A deliverer takes the lease with `create` (which succeeds only when the key is absent: no leader, or the
//! last one's entry expired), renews it every third of the lease with `update` at the revision it holds
//! (compare-and-set: a renewal after someone else took over fails), and gives it up with a delete at that
//! revision when it shuts down, so the next one need not wait for the expiry. [`hold`] renews until a
//! renewal fails; the holder then steps down at once. The [`Fence`] stops a deposed leader's writes even
//! before it notices: they are refused once its last renewal may have expired.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::names::Names;

/// The key the leader holds.
const KEY: &str = "leader";

/// The leader's fence: until when its lease surely holds. A renewal sent at `t` keeps the key until at
/// least `t + lease` (the server counts `max_age` from when it stored the write), so no other node can take
/// the lease before then; the fence stands at `t + 3/4 lease`, leaving a quarter for clocks that run at
/// different rates. The leader writes (commits) and reads the stream only inside it ([`Fence::holds`]).
#[derive(Clone)]
pub struct Fence {
    base: std::time::Instant,
    until_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Fence {
    /// A fence up to `sent + 3/4 lease`, for a lease taken by a write sent at `sent`.
    pub fn new(sent: std::time::Instant, lease: Duration) -> Fence {
        let fence = Fence { base: sent, until_ms: Default::default() };
        fence.renewed(sent, lease);
        fence
    }

    fn renewed(&self, sent: std::time::Instant, lease: Duration) {
        let until = sent.saturating_duration_since(self.base) + lease * 3 / 4;
        self.until_ms.fetch_max(until.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the lease surely still holds now.
    pub fn holds(&self) -> bool {
        (self.base.elapsed().as_millis() as u64) < self.until_ms.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The lease bucket, made when missing.
pub async fn bucket(
    js: &jetstream::Context,
    names: &Names,
    replicas: usize,
    lease: Duration,
) -> Result<kv::Store, ClusterError> {
    let name = names.bucket("leader");
    let store = crate::connect::open_bucket(js, name.clone(), replicas, Some(lease)).await?;
    if let Ok(status) = store.status().await
        && status.max_age() != lease
    {
        tracing::warn!(bucket = %name, have = ?status.max_age(), want = ?lease, "the lease bucket has another max_age than [cluster] lease: every deliverer must use the same lease");
    }
    Ok(store)
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
    fence: Fence,
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
                let sent = std::time::Instant::now();
                let renew = store.update(KEY, Bytes::from(node.clone()), revision);
                match tokio::time::timeout(lease / 2, renew).await {
                    Ok(Ok(r)) => {
                        revision = r;
                        fence.renewed(sent, lease);
                    }
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

//! Reading and writing key-value buckets: pipelined puts and deletes, a whole bucket read at open, and
//! records that a version of Herald cannot read skipped with a warning.

use std::collections::HashMap;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use herald_daemon::outbox::StoreError;
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;

/// One write to a bucket, to be awaited with the others of its batch.
pub(super) type Put = BoxFuture<'static, Result<(), String>>;

pub(super) fn put(store: &kv::Store, key: String, value: Vec<u8>) -> Put {
    let store = store.clone();
    async move { store.put(key, Bytes::from(value)).await.map(|_| ()).map_err(|e| e.to_string()) }.boxed()
}

pub(super) fn delete(store: &kv::Store, key: String) -> Put {
    let store = store.clone();
    async move { store.delete(key).await.map_err(|e| e.to_string()) }.boxed()
}

pub(super) fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(v)?)
}

pub(super) fn store_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Task(format!("{what}: {e}: is NATS reachable?"))
}

/// Every live (key, value) of a bucket.
pub(super) async fn load(store: &kv::Store) -> Result<Vec<(String, Bytes)>, ClusterError> {
    let fail = |e: &dyn std::fmt::Display| ClusterError::nats("cannot read a bucket", e);
    let status = store.status().await.map_err(|e| fail(&e))?;
    if status.values() == 0 {
        return Ok(Vec::new());
    }
    let mut values: HashMap<String, Bytes> = HashMap::new();
    let mut watch = store.watch_with_history(">").await.map_err(|e| fail(&e))?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| fail(&e))?;
        match entry.operation {
            kv::Operation::Put => {
                values.insert(entry.key, entry.value);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                values.remove(&entry.key);
            }
        }
        if entry.delta == 0 {
            break;
        }
    }
    Ok(values.into_iter().collect())
}

/// A record of `bucket`, or `None` (with a warning) when it cannot be read.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(bucket: &str, key: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(bucket, key, error = %e, "skipping an unreadable record (written by another version?)");
            None
        }
    }
}

//! [`StopHandle`]: ask a running `fit` to stop, from any thread or task.
//!
//! The daemon relays a stop pressed on a phone; a signal handler or a test may do the same. The handle is a
//! shared flag plus the reason; the [`crate::EventEmitter`] checks it at every training `on_batch_end` and
//! every `on_epoch_end` (one atomic load) and, once it is set, stops the epoch and the training, skips
//! validation and ends the run with `run_finished {status: stopped, reason}`. It does not interrupt a batch in progress, and a request
//! stays set: a later `fit` with the same handle stops at its first batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A cloneable, thread-safe request to stop training.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl StopHandle {
    /// A handle with no stop requested.
    pub fn new() -> StopHandle {
        StopHandle::default()
    }

    /// Asks training to stop at the next batch end; the first reason given is kept.
    pub fn request(&self, reason: impl Into<String>) {
        {
            let mut slot = self.inner.reason.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.get_or_insert_with(|| reason.into());
        }
        self.inner.requested.store(true, Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::Acquire)
    }

    /// The reason given with the request, once requested.
    pub fn reason(&self) -> Option<String> {
        if !self.is_requested() {
            return None;
        }
        self.inner.reason.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Withdraws the request (before a new `fit`, say).
    pub fn clear(&self) {
        self.inner.requested.store(false, Ordering::Release);
        *self.inner.reason.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_seen_by_clones_on_other_threads() {
        let handle = StopHandle::new();
        assert!(!handle.is_requested());
        assert_eq!(handle.reason(), None);
        let remote = handle.clone();
        std::thread::spawn(move || remote.request("stopped from phone")).join().expect("thread ran");
        assert!(handle.is_requested());
        handle.request("second reason");
        assert_eq!(handle.reason().as_deref(), Some("stopped from phone"));
        handle.clear();
        assert!(!handle.is_requested());
        assert_eq!(handle.reason(), None);
    }

    #[test]
    fn handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<StopHandle>();
    }
}

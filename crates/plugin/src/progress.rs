//! [`DeliveryProgress`]: what an earlier attempt of a delivery already did, so its retry repeats nothing.
//!
//! A notifier whose delivery makes several calls (Telegram: the live message, a new message, the photo;
//! Slack: the live message, a thread reply, the upload) remembers each call that went through under the
//! delivery's (run, seq). When a later call fails and the host retries, the retry skips what is done, so
//! nobody gets the same message twice. The map lives in memory only (a restarted daemon may repeat a step)
//! and is cleared when it holds more than 1000 deliveries, since deliveries the host gave up on never come
//! back to be forgotten. It knows nothing of the steps themselves.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::notifier::Notification;

/// More unfinished deliveries than this and the map starts afresh.
const MAX_DELIVERIES: usize = 1000;

/// The steps (`S`, the notifier's own) done so far by each unfinished delivery, keyed by (run, seq).
#[derive(Debug)]
pub struct DeliveryProgress<S> {
    done: Mutex<HashMap<(String, u64), Vec<S>>>,
}

impl<S> Default for DeliveryProgress<S> {
    fn default() -> Self {
        DeliveryProgress { done: Mutex::new(HashMap::new()) }
    }
}

impl<S: Clone> DeliveryProgress<S> {
    /// Nothing done yet.
    pub fn new() -> DeliveryProgress<S> {
        DeliveryProgress::default()
    }

    /// The steps earlier attempts of `n`'s delivery did, in order (empty for a first attempt).
    pub fn done(&self, n: &Notification) -> Vec<S> {
        self.lock().get(&key(n)).cloned().unwrap_or_default()
    }

    /// Record that `step` of `n`'s delivery went through.
    pub fn remember(&self, n: &Notification, step: S) {
        let mut done = self.lock();
        if done.len() > MAX_DELIVERIES {
            done.clear();
        }
        done.entry(key(n)).or_default().push(step);
    }

    /// `n`'s delivery is complete: drop what was recorded for it.
    pub fn forget(&self, n: &Notification) {
        self.lock().remove(&key(n));
    }

    /// How many deliveries have steps recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no delivery has steps recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map; a panic elsewhere while it was held leaves it usable (it holds plain data).
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, u64), Vec<S>>> {
        self.done.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn key(n: &Notification) -> (String, u64) {
    (n.event.run.clone(), n.event.seq)
}

#[cfg(test)]
mod tests {
    use herald_event::{EpochStarted, Event};

    use super::*;
    use crate::RunContext;
    use crate::render::notification;

    fn note(run: &str, seq: u64) -> Notification {
        notification(&RunContext::new(run), &Event::now(run, seq, EpochStarted { epoch: 0 }), None, None, 1)
    }

    #[test]
    fn remembers_steps_per_delivery_until_forgotten() {
        let progress = DeliveryProgress::new();
        let (a, b) = (note("r", 1), note("r", 2));
        assert!(progress.done(&a).is_empty());
        progress.remember(&a, "live");
        progress.remember(&a, "reply");
        progress.remember(&b, "photo");
        assert_eq!(progress.done(&a), ["live", "reply"]);
        assert_eq!(progress.done(&note("r", 2)), ["photo"], "a retry is a new notification, same key");
        assert!(progress.done(&note("other", 1)).is_empty());
        progress.forget(&a);
        assert!(progress.done(&a).is_empty());
        assert_eq!(progress.len(), 1);
    }

    #[test]
    fn starts_afresh_past_a_thousand_unfinished_deliveries() {
        let progress = DeliveryProgress::new();
        for seq in 0..=MAX_DELIVERIES as u64 {
            progress.remember(&note("r", seq), seq);
        }
        assert_eq!(progress.len(), MAX_DELIVERIES + 1);
        progress.remember(&note("r", 5000), 5000);
        assert_eq!(progress.len(), 1, "cleared, then the new step");
        assert_eq!(progress.done(&note("r", 5000)), [5000]);
        assert!(progress.done(&note("r", 0)).is_empty());
    }
}

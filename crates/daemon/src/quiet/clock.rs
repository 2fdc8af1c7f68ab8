//! The dispatcher's clock: the system's, which tests may set or move forward, so quiet hours and digest
//! timers can be tested without waiting.
//!
//! The writer stamps jobs and decides what waits by it, and the workers time digests by it; a worker also
//! wakes when the clock is moved. In production nobody moves it and it is the system clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// The system clock plus an offset that tests may change (zero unless they do); clones share the offset.
#[derive(Debug, Clone)]
pub struct Clock {
    offset_ms: Arc<watch::Sender<i64>>,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock { offset_ms: Arc::new(watch::channel(0).0) }
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Clock {
    /// Milliseconds since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(system_ms().saturating_add(*self.offset_ms.borrow())).unwrap_or(0)
    }

    /// Set the clock so that it reads `at_ms` now (it goes on from there).
    pub fn set_ms(&self, at_ms: u64) {
        let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
        self.offset_ms.send_replace(at.saturating_sub(system_ms()));
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.send_modify(|o| *o = o.saturating_add(by));
    }

    /// A receiver that sees each time the clock is set or moved.
    pub fn moves(&self) -> watch::Receiver<i64> {
        self.offset_ms.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_system_clock_until_moved() {
        let clock = Clock::default();
        let before = system_ms() as u64;
        assert!((before..=before + 1000).contains(&clock.now_ms()));
        let moves = clock.moves();
        let copy = clock.clone();
        copy.set_ms(1_000_000);
        assert!(moves.has_changed().expect("the clock is alive"));
        assert!((1_000_000..1_001_000).contains(&clock.now_ms()));
        clock.advance(Duration::from_secs(60));
        assert!((1_060_000..1_061_000).contains(&copy.now_ms()));
    }
}

//! Rate limits and retry timing: the token bucket each notifier worker draws from, the per-service default
//! rates (REFERENCE §2), and exponential backoff with jitter.
//!
//! Used by the workers (`worker.rs`) only. Pure arithmetic on instants handed in by the caller, so the unit
//! tests drive time by hand; nothing here sleeps or reads a clock.

use std::time::{Duration, Instant};

/// Backoff base: the first retry waits about this long.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Backoff cap: no retry waits longer (unless the service asked with `retry_after`).
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` must be positive; a non-positive or non-finite rate is treated as one token per
    /// hour so that a bad override slows a notifier down instead of stalling it forever.
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { 1.0 / 3600.0 };
        let burst = f64::from(burst.max(1));
        TokenBucket { rate, burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    /// Take one token, or say how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Empty the bucket: the service said it is over its limit (a 429), so the next send waits a full token.
    pub fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = 0.0;
    }
}

/// The default rate limit (tokens per second, burst) for a notifier type, from the services' published limits
/// (REFERENCE §2); `None` for local sinks that need none (console, webhook, process plugins).
pub fn default_rate(kind: &str) -> Option<(f64, u32)> {
    match kind {
        // About 1 message/s per chat; short bursts pass.
        "telegram" => Some((1.0, 3)),
        // About 1 message/s per channel.
        "slack" => Some((1.0, 3)),
        // 30 messages a minute per webhook.
        "discord" => Some((0.5, 5)),
        // ntfy.sh: a burst of 60, then one request per 5 s.
        "ntfy" => Some((0.2, 60)),
        // 10 000 messages a month per application: no burst limit, be polite.
        "pushover" => Some((1.0, 5)),
        // SMTP providers throttle bursts.
        "email" => Some((0.5, 5)),
        "desktop" => Some((5.0, 10)),
        _ => None,
    }
}

/// The delay before retry number `failures` (1 for the first retry): `min(cap, base * 2^(failures-1))`,
/// jittered down by up to half (`jitter` in `[0, 1)`), so that many failing jobs do not retry in lockstep.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP);
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    full.mul_f64(1.0 - 0.5 * jitter)
}

/// A cheap random number in `[0, 1)` for jitter (std's randomly seeded hasher; not for secrets).
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_paces_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).expect_err("the burst is used up");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Half a second later exactly one token is back.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take(t1), Ok(()));
        assert!(b.take(t1).is_err());
        // A long pause refills up to the burst only.
        let t2 = t1 + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(b.take(t2), Ok(()));
        }
        assert!(b.take(t2).is_err());
    }

    #[test]
    fn drained_bucket_waits_a_full_token() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 5, t0);
        b.drain(t0);
        let wait = b.take(t0).expect_err("drained");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bad_rate_does_not_stall_forever() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 1, t0);
        assert_eq!(b.take(t0), Ok(()));
        let wait = b.take(t0).expect_err("one per hour");
        assert!(wait <= Duration::from_secs(3600));
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        let check = |failures: u32, expected_s: u64| {
            assert_eq!(backoff(failures, 0.0), Duration::from_secs(expected_s), "failures {failures}");
        };
        check(1, 1);
        check(2, 2);
        check(3, 4);
        check(9, 256);
        check(10, 300);
        check(40, 300);
        check(u32::MAX, 300);
    }

    #[test]
    fn jitter_shortens_by_at_most_half() {
        for failures in [1, 5, 12] {
            let full = backoff(failures, 0.0);
            for j in [0.0, 0.25, 0.999, f64::NAN, 7.0] {
                let d = backoff(failures, j);
                assert!(d <= full && d >= full / 2, "{failures} {j} {d:?}");
            }
        }
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn service_defaults_follow_the_reference() {
        assert_eq!(default_rate("telegram"), Some((1.0, 3)));
        assert_eq!(default_rate("webhook"), None);
        assert_eq!(default_rate("console"), None);
    }
}

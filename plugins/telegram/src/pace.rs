//! Pacing calls to the Bot API within Telegram's limits: about one message per second per chat and 30 per
//! second per bot, and nothing to a chat (or, for a bot-wide flood wait, to any chat) before a 429's
//! `retry_after` has passed.
//!
//! One [`Pacer`] is shared by every notifier and command listener of the same bot in this process
//! ([`Pacer::for_bot`]), so two notifiers with one token do not add up to twice the rate. Deliveries and
//! command answers both wait here. It only computes and sleeps; it sends nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Least time between two messages to one chat.
pub const PER_CHAT: Duration = Duration::from_secs(1);
/// Messages per second per bot.
pub const PER_BOT: usize = 30;

/// The pacing state of one bot.
#[derive(Debug, Default)]
pub struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When each chat may get its next message.
    next: HashMap<String, Instant>,
    /// When the last (up to 30) messages went out, any chat.
    recent: VecDeque<Instant>,
    /// Nothing to any chat before this (a bot-wide 429).
    blocked_until: Option<Instant>,
}

impl Pacer {
    /// The pacer of the bot with this token (one per bot per process).
    pub fn for_bot(token: &str) -> Arc<Pacer> {
        use std::hash::{Hash, Hasher};
        static PACERS: OnceLock<Mutex<HashMap<u64, Arc<Pacer>>>> = OnceLock::new();
        // Keyed by a hash: the registry keeps no copy of the token.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut h);
        let key = h.finish();
        let map = PACERS.get_or_init(Default::default);
        let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key).or_default().clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long to wait before a message to `chat` may go at `now`; zero means go now, and the send is
    /// booked.
    pub fn reserve(&self, chat: &str, now: Instant) -> Duration {
        let mut st = self.state();
        while st.recent.front().is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1)) {
            st.recent.pop_front();
        }
        let mut wait = Duration::ZERO;
        if let Some(until) = st.blocked_until {
            wait = wait.max(until.saturating_duration_since(now));
        }
        if let Some(next) = st.next.get(chat) {
            wait = wait.max(next.saturating_duration_since(now));
        }
        if st.recent.len() >= PER_BOT
            && let Some(oldest) = st.recent.front()
        {
            wait = wait.max((*oldest + Duration::from_secs(1)).saturating_duration_since(now));
        }
        if wait.is_zero() {
            st.recent.push_back(now);
            st.next.insert(chat.to_owned(), now + PER_CHAT);
        }
        wait
    }

    /// Wait for a turn to send to `chat`.
    pub async fn wait(&self, chat: &str) {
        loop {
            let wait = self.reserve(chat, Instant::now());
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Telegram answered 429 for `chat`: nothing goes to it until `retry_after` has passed (to no chat at
    /// all when `chat` is `None`).
    pub fn hold(&self, chat: Option<&str>, retry_after: Duration, now: Instant) {
        let until = now + retry_after;
        let mut st = self.state();
        match chat {
            Some(chat) => {
                let next = st.next.entry(chat.to_owned()).or_insert(until);
                *next = (*next).max(until);
            }
            None => st.blocked_until = Some(st.blocked_until.map_or(until, |b| b.max(until))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_second_per_chat() {
        let p = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(p.reserve("a", t0), Duration::ZERO);
        assert_eq!(p.reserve("b", t0), Duration::ZERO, "another chat is not held back");
        assert_eq!(p.reserve("a", t0 + Duration::from_millis(300)), Duration::from_millis(700));
        assert_eq!(p.reserve("a", t0 + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn thirty_per_second_per_bot() {
        let p = Pacer::default();
        let t0 = Instant::now();
        for i in 0..30 {
            assert_eq!(p.reserve(&format!("chat{i}"), t0), Duration::ZERO);
        }
        assert_eq!(p.reserve("chat30", t0 + Duration::from_millis(400)), Duration::from_millis(600));
        assert_eq!(p.reserve("chat30", t0 + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn retry_after_holds_exactly() {
        let p = Pacer::default();
        let t0 = Instant::now();
        p.hold(Some("a"), Duration::from_secs(7), t0);
        assert_eq!(p.reserve("a", t0), Duration::from_secs(7));
        assert_eq!(p.reserve("b", t0), Duration::ZERO);
        p.hold(None, Duration::from_secs(3), t0);
        assert_eq!(p.reserve("c", t0 + Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(p.reserve("a", t0 + Duration::from_secs(7)), Duration::ZERO);
    }

    #[test]
    fn one_pacer_per_bot() {
        assert!(Arc::ptr_eq(&Pacer::for_bot("1:x"), &Pacer::for_bot("1:x")));
        assert!(!Arc::ptr_eq(&Pacer::for_bot("1:x"), &Pacer::for_bot("2:y")));
    }
}

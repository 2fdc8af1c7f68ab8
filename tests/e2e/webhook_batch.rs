//! The webhook's batch mode through the real daemon: `batch = 500` sends each run's notifications as JSON
//! arrays, a 429 on a batch is retried whole after `Retry-After`, and every notification arrives once, in
//! per-run order.

use std::time::Duration;

use crate::daemon::{Daemon, Receiver, Reply, config_text, free_port, message, started, wait_for};

#[test]
fn a_429_on_a_batch_retries_it_whole_and_each_notification_arrives_once_in_order() {
    // The first request is refused with Retry-After: 1, the rest accepted.
    let hook =
        Receiver::start(|_, attempt| if attempt == 1 { Reply::Status(429, Some(1)) } else { Reply::Ok });
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", "batch = 500"));
    let mut lines = vec![started("a", "h", 1), started("b", "h", 2)];
    for seq in 1..=40 {
        lines.push(message("a", seq, "x"));
        lines.push(message("b", seq, "y"));
    }
    assert_eq!(d.post(&lines.join("\n")).0, 202);
    let total = lines.len();
    let delivered = wait_for("every notification at the webhook", Duration::from_secs(30), || {
        let items: Vec<(String, u64)> = hook
            .delivered()
            .iter()
            .flat_map(|h| h.body.as_array().cloned().unwrap_or_default())
            .map(|o| (o["run"].as_str().unwrap_or("").to_owned(), o["seq"].as_u64().unwrap_or(u64::MAX)))
            .collect();
        (items.len() >= total).then_some(items)
    });
    let hits = hook.hits();
    assert!(hits.iter().all(|h| h.body.is_array()), "batch mode sends arrays only");
    assert_eq!(hits[0].reply, Reply::Status(429, Some(1)));
    let refused: Vec<_> = hits[0].body.as_array().cloned().unwrap_or_default();
    assert!(!refused.is_empty());
    let gap = hits[1].at - hits[0].at;
    assert!(gap >= Duration::from_millis(950), "Retry-After 1 s honoured, retried after {gap:?}");
    assert!(hits.len() < total, "{} requests for {total} notifications: batched", hits.len());
    // Each notification once, each run in order.
    assert_eq!(delivered.len(), total, "no duplicate: {delivered:?}");
    for run in ["a", "b"] {
        let seqs: Vec<u64> = delivered.iter().filter(|(r, _)| r == run).map(|(_, s)| *s).collect();
        assert_eq!(seqs, (0..=40).collect::<Vec<_>>(), "run {run}");
    }
    // The refused batch's notifications are among the delivered ones.
    for o in refused {
        let key = (o["run"].as_str().unwrap_or("").to_owned(), o["seq"].as_u64().unwrap_or(u64::MAX));
        assert!(delivered.contains(&key), "{key:?} was retried and delivered");
    }
}

//! Quiet hours end to end: a real `herald serve` whose webhook notifier is in its quiet hours now gets only
//! the failure and the `error` alert; what waits stays queued in the outbox, also across a `kill -9` and a
//! restart. (The digest at
//! the end of quiet hours is tested with the dispatcher's clock in herald-daemon's `tests/it/quiet.rs`.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::daemon::{Daemon, Receiver, Reply, config_text, event, free_port, started, wait_for};

/// Quiet hours in UTC from an hour ago to two hours from now.
fn quiet_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let minute = (now / 60) % 1440;
    let at = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
    format!(
        "quiet_hours = \"{}-{}\"\ntimezone = \"UTC\"\n",
        at((minute + 1380) % 1440),
        at((minute + 120) % 1440)
    )
}

fn queue(d: &Daemon) -> u64 {
    d.status()["notifiers"][0]["queue"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn in_quiet_hours_only_the_failure_arrives_and_the_rest_waits_in_the_outbox() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = config_text(dir.path(), port, hook.port, "", &quiet_now());
    let mut d = Daemon::start(dir.path(), port, &config);
    let epoch = |seq: u64, e: u32| {
        let p = json!({ "epoch": e, "n_epochs": 3, "train_loss": 0.5, "valid_loss": 0.4, "elapsed_s": 0.01 });
        event("night", seq, "epoch_ended", p)
    };
    let note = event("night", 3, "message", json!({ "title": "note", "text": "checkpoint saved" }));
    let body = format!("{}\n{}\n{}\n{}\n", started("night", "elsewhere", 1), epoch(1, 0), epoch(2, 1), note);
    assert_eq!(d.post(&body).0, 202);
    let failed = event("night", 4, "run_failed", json!({ "error": "CUDA out of memory" }));
    assert_eq!(d.post(&failed).0, 202);
    let hits = wait_for("the failure at the webhook", Duration::from_secs(20), || {
        let hits = hook.delivered();
        hits.iter().any(|h| h.kind == "run_failed").then_some(hits)
    });
    let kinds: Vec<&str> = hits.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["run_failed"], "only the failure in quiet hours");
    wait_for("four jobs waiting", Duration::from_secs(20), || (queue(&d) == 4).then_some(()));
    // Held deliveries are outbox jobs: a crash and a restart keep them, and still send nothing.
    d.kill9();
    d.restart();
    assert_eq!(queue(&d), 4, "the held jobs survive a kill -9:\n{}", d.log());
    let note = event("night", 5, "message", json!({ "title": "probe", "text": "after the restart" }));
    let alert =
        event("other", 0, "alert", json!({ "title": "disk full", "text": "/data", "level": "error" }));
    assert_eq!(d.post(&format!("{note}\n{alert}\n")).0, 202);
    let hits = wait_for("the error alert at the webhook", Duration::from_secs(20), || {
        let hits = hook.delivered();
        hits.iter().any(|h| h.kind == "alert").then_some(hits)
    });
    let kinds: Vec<&str> = hits.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["run_failed", "alert"], "nothing held went out after the restart");
    wait_for("five jobs waiting", Duration::from_secs(20), || (queue(&d) == 5).then_some(()));
    assert!(d.terminate(), "the daemon exits cleanly:\n{}", d.log());
}

//! The daemon delivers: in order over TCP and the Unix socket, through retries, across a `kill -9` in a
//! burst, and it reports stalled and lost runs once each.

use super::*;

#[test]
fn events_reach_the_webhook_in_order_over_tcp_and_the_unix_socket() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    // One event, an array, NDJSON, then the socket.
    assert_eq!(d.post(&started("r1", "elsewhere", 1)).0, 202);
    let (code, reply) = d.post(&format!("[{},{}]", epoch("r1", 1, 0), batch("r1", 2, 0)));
    assert_eq!(code, 202, "{reply}");
    assert_eq!(reply["accepted"], 2);
    assert_eq!(reply["control"]["r1"]["stop"], false);
    assert_eq!(d.post(&format!("{}\n{}\n", epoch("r1", 3, 1), epoch("r1", 4, 2))).0, 202);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).expect("socket exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is private");
    let (code, text) = http_unix(&d.socket, "POST", "/v1/events", finished("r1", 5).as_bytes());
    assert_eq!(code, 202, "{text}");
    let hits = hook.wait_delivered(5, Duration::from_secs(20));
    let seqs: Vec<u64> = hits.iter().map(|h| h.seq).collect();
    assert_eq!(seqs, vec![0, 1, 3, 4, 5], "batch_ended is not routed by default; the rest in order");
    assert_eq!(hits[4].kind, "run_finished");
    assert!(hits[1].body["text"].as_str().unwrap_or("").contains("train_loss"), "{}", hits[1].body);
    // Status over the socket too.
    let (code, text) = http_unix(&d.socket, "GET", "/v1/status", b"");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&text).expect("JSON");
    let run = &status["runs"][0];
    assert_eq!(run["run"], "r1");
    assert_eq!(run["state"], "completed");
    assert_eq!(run["epochs_done"], 3);
    assert_eq!(run["smooth_loss"], 0.5);
    assert_eq!(status["notifiers"][0]["name"], "hook");
    // Outcomes are recorded just after the deliveries.
    wait_for("5 recorded deliveries and an empty outbox", Duration::from_secs(5), || {
        let s = d.status();
        (s["notifiers"][0]["delivered"] == 5 && s["outbox"]["jobs"] == 0).then_some(())
    });
}

#[test]
fn retries_429_5xx_and_timeouts_and_delivers_each_key_once() {
    // seq 1: 429 with Retry-After 1; seq 2: 500 twice; seq 3: hangs past the 1 s timeout once.
    let hook = Receiver::start(|body, attempt| match (body["seq"].as_u64(), attempt) {
        (Some(1), 1) => Reply::Status(429, Some(1)),
        (Some(2), 1 | 2) => Reply::Status(500, None),
        (Some(3), 1) => Reply::Hang(Duration::from_secs(3)),
        _ => Reply::Ok,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let body = [
        started("r", "h", 1),
        message("r", 1, "a"),
        message("r", 2, "b"),
        message("r", 3, "c"),
        message("r", 4, "d"),
    ]
    .join("\n");
    assert_eq!(d.post(&body).0, 202);
    let delivered = hook.wait_delivered(5, Duration::from_secs(30));
    let keys: Vec<&str> = delivered.iter().map(|h| h.key.as_str()).collect();
    let unique: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "each idempotency key is delivered once: {keys:?}");
    assert_eq!(
        delivered.iter().map(|h| h.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4],
        "per-run order kept"
    );
    let hits = hook.hits();
    let at =
        |seq: u64, nth: usize| hits.iter().filter(|h| h.seq == seq).nth(nth).map(|h| h.at).expect("attempt");
    let gap = at(1, 1) - at(1, 0);
    assert!(gap >= Duration::from_millis(950), "retry_after 1 s honoured, retried after {gap:?}");
    assert_eq!(hits.iter().filter(|h| h.seq == 2).count(), 3, "two 500s, then success");
    assert_eq!(hits.iter().filter(|h| h.seq == 3).count(), 2, "a timeout, then success");
    // Nothing more arrives later.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.delivered().len(), 5);
    let status = d.status();
    assert!(status["notifiers"][0]["failed_attempts"].as_u64().unwrap_or(0) >= 4, "{status}");
    assert_eq!(status["notifiers"][0]["gave_up"], 0);
}

#[test]
fn kill_9_during_a_10k_burst_loses_no_accepted_lifecycle_notification() {
    // A slowish receiver, so that deliveries are still waiting when the daemon is killed.
    let hook = Receiver::start(|_, _| Reply::Slow(Duration::from_millis(3)));
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    // 20 runs x 500 events: run_started, 30 epochs, 468 batches, run_finished.
    let mut batches: Vec<Batch> = Vec::new();
    for r in 0..20 {
        let run = format!("burst{r}");
        let mut evs: Vec<(String, u64, bool)> = Vec::new();
        let mut lines = Vec::new();
        for seq in 0..500u64 {
            let (line, lifecycle) = match seq {
                0 => (started(&run, "elsewhere", 1), true),
                499 => (finished(&run, seq), true),
                s if s % 16 == 0 => (epoch(&run, s, (s / 16) as u32), true),
                s => (batch(&run, s, s), false),
            };
            evs.push((run.clone(), seq, lifecycle));
            lines.push(line);
        }
        batches.push((evs, lines.join("\n")));
    }
    let mut accepted: Vec<(String, u64)> = Vec::new();
    let mut pending = Vec::new();
    for (i, (evs, body)) in batches.iter().enumerate() {
        if i == 10 {
            d.kill9();
        }
        if d.child.is_some() {
            let (code, _) = d.post(body);
            assert_eq!(code, 202);
            accepted.extend(evs.iter().filter(|e| e.2).map(|e| (e.0.clone(), e.1)));
        } else {
            pending.push(i);
        }
    }
    // What the outbox recorded as done before the kill must never be sent again.
    let before_restart: Vec<Hit> = hook.delivered();
    let recorded_done: HashSet<(String, u64)> = {
        let store = herald_daemon::RedbOutbox::open(&dir.path().join("state"))
            .expect("open the outbox after kill -9");
        let waiting: HashSet<(String, u64)> = store
            .load_jobs("hook", 0, usize::MAX)
            .expect("read jobs")
            .into_iter()
            .map(|(_, j)| (j.event.run.clone(), j.event.seq))
            .collect();
        accepted.iter().filter(|k| !waiting.contains(k)).cloned().collect()
    };
    d.restart();
    for i in pending {
        let (evs, body) = &batches[i];
        assert_eq!(d.post(body).0, 202);
        accepted.extend(evs.iter().filter(|e| e.2).map(|e| (e.0.clone(), e.1)));
    }
    let hits = wait_for("every accepted lifecycle notification", Duration::from_secs(60), || {
        let hits = hook.delivered();
        let got: HashSet<(String, u64)> = hits.iter().map(|h| (h.run.clone(), h.seq)).collect();
        accepted.iter().all(|k| got.contains(k)).then_some(hits)
    });
    let mut counts: HashMap<(String, u64), usize> = HashMap::new();
    for h in &hits {
        *counts.entry((h.run.clone(), h.seq)).or_default() += 1;
    }
    for key in &recorded_done {
        assert!(
            before_restart.iter().any(|h| (h.run.clone(), h.seq) == *key),
            "{key:?} recorded done but never sent"
        );
        assert_eq!(counts.get(key), Some(&1), "{key:?} was recorded as delivered yet sent again");
    }
    assert_eq!(accepted.len(), 20 * 33, "20 runs x (start + 31 epochs + finish)");
    assert!(!recorded_done.is_empty(), "some deliveries finished before the kill");
    // Per-run order holds for first deliveries.
    for r in 0..20 {
        let run = format!("burst{r}");
        let mut seen = HashSet::new();
        let firsts: Vec<u64> =
            hits.iter().filter(|h| h.run == run && seen.insert(h.seq)).map(|h| h.seq).collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{run} out of order: {firsts:?}");
    }
}

#[test]
fn stalled_and_lost_runs_are_reported_once_each() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(
        dir.path(),
        port,
        &config_text(dir.path(), port, hook.port, r#"stall_after = "1s""#, ""),
    );
    let host = this_host();
    let mut doomed = Command::new("sleep").arg("60").spawn().expect("spawn sleep");
    assert_eq!(d.post(&started("doomed", &host, doomed.id())).0, 202);
    assert_eq!(d.post(&started("quiet", &host, std::process::id())).0, 202);
    let _ = doomed.kill();
    let _ = doomed.wait();
    let kinds = |run: &str| -> Vec<String> {
        hook.delivered().iter().filter(|h| h.run == run).map(|h| h.kind.clone()).collect()
    };
    wait_for("run_lost for the killed process", Duration::from_secs(10), || {
        kinds("doomed").contains(&"run_lost".to_owned()).then_some(())
    });
    wait_for("run_stalled for the silent run", Duration::from_secs(10), || {
        kinds("quiet").contains(&"run_stalled".to_owned()).then_some(())
    });
    let lost = hook.delivered().into_iter().find(|h| h.kind == "run_lost").expect("lost");
    assert!(lost.body["text"].as_str().unwrap_or("").contains("killed, out of memory"), "{}", lost.body);
    // Silence goes on: no second alert.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(kinds("quiet").iter().filter(|k| *k == "run_stalled").count(), 1, "stalled once");
    assert_eq!(kinds("doomed").iter().filter(|k| *k == "run_lost").count(), 1, "lost once");
    // A later event clears the flag: the next silence is reported again.
    assert_eq!(d.post(&epoch("quiet", 1, 0)).0, 202);
    wait_for("a second run_stalled after new silence", Duration::from_secs(10), || {
        (kinds("quiet").iter().filter(|k| *k == "run_stalled").count() == 2).then_some(())
    });
    let status = d.status();
    let states: HashMap<&str, &str> = status["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| (r["run"].as_str().unwrap_or(""), r["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(states.get("doomed"), Some(&"lost"));
    assert_eq!(states.get("quiet"), Some(&"stalled"));
}

//! The daemon end to end: the real `herald serve` against an axum fake webhook receiver on 127.0.0.1.
//!
//! The harness here (a daemon in a temp folder, the fake receiver, a small HTTP client over TCP and the Unix
//! socket, polling with deadlines) is shared with `watch.rs`.

use std::collections::{HashMap, HashSet};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::herald;

/// Poll `f` until it returns `Some`, or fail after `limit` saying what was awaited.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// One HTTP/1.1 request over any stream; returns the status and the body.
fn http_on(
    mut stream: impl std::io::Read + std::io::Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write request");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((head, rest)) if head.to_ascii_lowercase().contains("transfer-encoding: chunked") => {
            dechunk(rest)
        }
        Some((_, rest)) => rest.to_owned(),
        None => String::new(),
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An HTTP request to 127.0.0.1:`port`.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    http_on(stream, method, path, headers, body)
}

/// An HTTP request over a Unix socket.
pub fn http_unix(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to the daemon's socket");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    http_on(stream, method, path, &[], body)
}

/// What the fake receiver does with a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    Ok,
    /// Answer 200 after this long.
    Slow(Duration),
    /// This status, with `Retry-After: secs` when given.
    Status(u16, Option<u64>),
    /// Answer only after this long (past the notifier's timeout), with a 503 so that it never counts.
    Hang(Duration),
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub key: String,
    pub run: String,
    pub seq: u64,
    pub kind: String,
    pub body: Value,
    pub reply: Reply,
    pub at: Instant,
}

type Script = dyn Fn(&Value, usize) -> Reply + Send + Sync;
type Hits = Arc<Mutex<Vec<Hit>>>;
/// Events of one request body: (run, seq, is lifecycle), and the body.
type Batch = (Vec<(String, u64, bool)>, String);
/// A malformed-input case: what, body, status, error code, bad index.
type Case = (&'static str, Vec<u8>, u16, &'static str, Option<u64>);

/// An axum webhook receiver on 127.0.0.1 recording every request; `script(body, attempt)` picks the reply
/// (`attempt` counts requests for the same idempotency key, from 1).
pub struct Receiver {
    pub port: u16,
    hits: Hits,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start(script: impl Fn(&Value, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let hits: Hits = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind the fake receiver");
        let port = listener.local_addr().expect("address").port();
        let state = (hits.clone(), script);
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |axum::extract::State((hits, script)): axum::extract::State<(Hits, Arc<Script>)>,
                     body: axum::body::Bytes| async move {
                        use axum::response::IntoResponse;
                        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let key = value["idempotency_key"].as_str().unwrap_or("").to_owned();
                        let attempt = {
                            let h = hits.lock().expect("hits lock");
                            h.iter().filter(|h| h.key == key).count() + 1
                        };
                        let reply = script(&value, attempt);
                        hits.lock().expect("hits lock").push(Hit {
                            key,
                            run: value["run"].as_str().unwrap_or("").to_owned(),
                            seq: value["seq"].as_u64().unwrap_or(u64::MAX),
                            kind: value["type"].as_str().unwrap_or("").to_owned(),
                            body: value,
                            reply,
                            at: Instant::now(),
                        });
                        match reply {
                            Reply::Ok => (axum::http::StatusCode::OK, "ok").into_response(),
                            Reply::Slow(d) => {
                                tokio::time::sleep(d).await;
                                (axum::http::StatusCode::OK, "ok").into_response()
                            }
                            Reply::Status(code, retry_after) => {
                                let status = axum::http::StatusCode::from_u16(code).expect("valid status");
                                match retry_after {
                                    Some(s) => (status, [("retry-after", s.to_string())], "slow down")
                                        .into_response(),
                                    None => (status, "failed").into_response(),
                                }
                            }
                            Reply::Hang(d) => {
                                tokio::time::sleep(d).await;
                                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "too late").into_response()
                            }
                        }
                    },
                ),
            )
            .with_state(state);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { port, hits, _runtime: runtime }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits lock").clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| matches!(h.reply, Reply::Ok | Reply::Slow(_))).collect()
    }

    /// Wait until `n` requests were answered 2xx.
    pub fn wait_delivered(&self, n: usize, limit: Duration) -> Vec<Hit> {
        wait_for(&format!("{n} deliveries at the webhook"), limit, || {
            let d = self.delivered();
            (d.len() >= n).then_some(d)
        })
    }
}

/// A `herald serve` in a temp folder.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
}

/// The configuration for a daemon in `dir` on `port` posting to a webhook on `hook_port`.
pub fn config_text(
    dir: &Path,
    port: u16,
    hook_port: u16,
    extra_daemon: &str,
    extra_notifier: &str,
) -> String {
    format!(
        r#"[daemon]
listen = "127.0.0.1:{port}"
socket = "{dir}/herald.sock"
state_dir = "{dir}/state"
drain_timeout = "2s"
{extra_daemon}

[[notifier]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
timeout = "1s"
{extra_notifier}
"#,
        dir = dir.display()
    )
}

impl Daemon {
    /// Write `config` into `dir` and start the daemon there; returns once `/healthz` answers.
    pub fn start(dir: &Path, port: u16, config: &str) -> Daemon {
        let config_path = dir.join("herald.toml");
        std::fs::write(&config_path, config).expect("write the config");
        let mut d = Daemon {
            child: None,
            port,
            dir: dir.to_owned(),
            config: config_path,
            socket: dir.join("herald.sock"),
        };
        d.restart();
        d
    }

    /// (Re)start the process with the same configuration.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("log file");
        let child = herald()
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start herald serve");
        self.child = Some(child);
        let port = self.port;
        let dir = self.dir.clone();
        wait_for("the daemon to answer /healthz", Duration::from_secs(20), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "herald serve exited early ({status}):\n{}",
                    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
                );
            }
            let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http(port, "GET", "/healthz", &[], b"").0 == 200;
            ok.then_some(())
        });
    }

    /// POST a body to /v1/events.
    pub fn post(&self, body: &str) -> (u16, Value) {
        let (status, text) =
            http(self.port, "POST", "/v1/events", &[("content-type", "application/json")], body.as_bytes());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn status(&self) -> Value {
        let (code, text) = http(self.port, "GET", "/v1/status", &[], b"");
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).expect("status is JSON")
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return true };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An event as JSON text.
pub fn event(run: &str, seq: u64, kind: &str, payload: Value) -> String {
    let mut v = json!({ "v": 1, "run": run, "seq": seq, "time": "2026-11-27T10:00:00Z", "type": kind });
    if let (Some(obj), Value::Object(p)) = (v.as_object_mut(), payload) {
        obj.extend(p);
    }
    v.to_string()
}

pub fn started(run: &str, host: &str, pid: u32) -> String {
    event(
        run,
        0,
        "run_started",
        json!({ "name": run, "host": host, "pid": pid, "n_epochs": 3, "batches_per_epoch": 10, "metric_names": ["accuracy"] }),
    )
}

pub fn epoch(run: &str, seq: u64, e: u32) -> String {
    event(
        run,
        seq,
        "epoch_ended",
        json!({ "epoch": e, "n_epochs": 3, "train_loss": 1.0 / f64::from(e + 1), "valid_loss": 0.9, "metrics": {"accuracy": 0.5}, "elapsed_s": 0.01 }),
    )
}

pub fn batch(run: &str, seq: u64, b: u64) -> String {
    event(
        run,
        seq,
        "batch_ended",
        json!({ "epoch": 0, "batch": b, "n_batches": 100000, "loss": 0.5, "smooth_loss": 0.5, "lr": 0.01 }),
    )
}

pub fn finished(run: &str, seq: u64) -> String {
    event(run, seq, "run_finished", json!({ "status": "completed", "reason": "done", "duration_s": 1.0 }))
}

pub fn message(run: &str, seq: u64, text: &str) -> String {
    event(run, seq, "message", json!({ "title": "t", "text": text }))
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

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

#[test]
fn stop_requests_round_trip_to_the_next_post() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let (_, reply) = d.post(&started("train1", "h", 1));
    assert_eq!(reply["control"]["train1"]["stop"], false);
    let out = herald()
        .arg("--config")
        .arg(&d.config)
        .args(["stop", "train1", "--reason", "enough"])
        .output()
        .expect("herald stop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, reply) = d.post(&epoch("train1", 1, 0));
    assert_eq!(reply["control"]["train1"]["stop"], true, "{reply}");
    assert_eq!(reply["control"]["train1"]["reason"], "enough");
    // The HTTP endpoint, and an unknown run.
    let (code, _) = http(port, "POST", "/v1/runs/train1/stop", &[], b"");
    assert_eq!(code, 200);
    let out =
        herald().arg("--config").arg(&d.config).args(["stop", "nosuchrun"]).output().expect("herald stop");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run `nosuchrun`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn malformed_inputs_get_4xx_naming_the_problem_and_the_daemon_keeps_serving() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let big = format!("[{}]", vec![message("big", 0, &"x".repeat(1000)); 1100].join(","));
    let bad_batch = [
        message("bad", 0, "a"),
        message("bad", 1, "b"),
        r#"{"v":1,"run":"bad","seq":2,"type":"epoch_ended"}"#.to_owned(),
    ]
    .join("\n");
    let cases: Vec<Case> = vec![
        ("not json", b"{nope".to_vec(), 400, "malformed_json", Some(0)),
        ("unknown type", event("x", 0, "explode", json!({})).into_bytes(), 400, "unknown_type", Some(0)),
        ("too new", br#"{"v":99,"run":"x","seq":0,"time":"2026-11-27T10:00:00Z","type":"message","title":"t","text":"x"}"#.to_vec(), 400, "unsupported_version", Some(0)),
        ("bad element", bad_batch.into_bytes(), 400, "missing_field", Some(2)),
        ("over 1 MiB", big.into_bytes(), 413, "body_too_large", None),
        ("not utf-8", vec![0xff, 0xfe, b'{'], 400, "invalid_utf8", None),
        ("empty", Vec::new(), 400, "empty", None),
    ];
    for (what, body, status, code, index) in cases {
        let (got, text) = http(port, "POST", "/v1/events", &[], &body);
        assert_eq!(got, status, "{what}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], code, "{what}: {text}");
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty(), "{what}: {text}");
        if let Some(i) = index {
            assert_eq!(v["error"]["index"], i, "{what}: {text}");
        }
    }
    let (code, _) = http(port, "GET", "/v1/nothing", &[], b"");
    assert_eq!(code, 404);
    // Still serving; nothing from the rejected batch was stored.
    assert_eq!(d.post(&message("good", 0, "fine")).0, 202);
    let hits = hook.wait_delivered(1, Duration::from_secs(10));
    assert_eq!(hits[0].run, "good");
    let runs: Vec<String> = d.status()["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(runs, vec!["good".to_owned()], "rejected requests left nothing behind");
}

#[test]
fn a_token_is_required_off_loopback_and_checked_when_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let text = config_text(dir.path(), port, 9, "", "").replace("127.0.0.1:", "0.0.0.0:");
    std::fs::write(dir.path().join("open.toml"), &text).expect("write");
    let out = herald()
        .arg("--config")
        .arg(dir.path().join("open.toml"))
        .arg("serve")
        .output()
        .expect("herald serve");
    assert!(!out.status.success(), "a non-loopback listen without a token must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address") && err.contains("token"), "{err}");
    // A loopback daemon with a token checks it.
    let hook = Receiver::start(|_, _| Reply::Ok);
    let d =
        Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, r#"token = "s3cret""#, ""));
    let body = message("t", 0, "x");
    assert_eq!(http(port, "POST", "/v1/events", &[], body.as_bytes()).0, 401);
    assert_eq!(
        http(port, "POST", "/v1/events", &[("authorization", "Bearer wrong")], body.as_bytes()).0,
        401
    );
    assert_eq!(http(port, "GET", "/v1/status", &[], b"").0, 401);
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(
        http(port, "POST", "/v1/events", &[("authorization", "Bearer s3cret")], body.as_bytes()).0,
        202
    );
    // The CLI sends the configured token.
    let out =
        herald().arg("--config").arg(&d.config).args(["status", "--json"]).output().expect("herald status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["runs"][0]["run"], "t");
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("temp dir");
    let notify_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    systemd.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let port = free_port();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, config_text(dir.path(), port, 9, "", "")).expect("write config");
    let mut child = herald()
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .expect("herald serve");
    let mut got = Vec::new();
    let next = || {
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).expect("a datagram from the daemon");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    got.push(next());
    assert!(got[0].starts_with("READY=1"), "{got:?}");
    // The daemon answers by the time it says it is ready.
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200);
    got.push(next());
    assert_eq!(got[1], "WATCHDOG=1", "a watchdog ping every WATCHDOG_USEC/2");
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let stopping = loop {
        let m = next();
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = child.wait().expect("the daemon exits");
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
}

#[test]
fn send_check_and_plugins_work_with_and_without_the_daemon() {
    let hook = Receiver::start(|body, _| match body["title"].as_str() {
        Some(t) if t.contains("refuse") => Reply::Status(403, None),
        _ => Reply::Ok,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, config_text(dir.path(), port, hook.port, "", "")).expect("write config");
    let run = |args: &[&str]| herald().arg("--config").arg(&config).args(args).output().expect("herald runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // No daemon: --direct delivers and prints each notifier's result; without --direct it says what to do.
    let out = run(&["send", "--direct", "--title", "direct", "--text", "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("hook (webhook): ok in "), "{}", text(&out.stdout));
    let out = run(&["send", "--direct", "--title", "refuse me", "--text", "x"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("hook (webhook): failed: the webhook answered 403"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["send", "--title", "t", "--text", "x"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("herald send --direct"), "{}", text(&out.stderr));
    let out = run(&["send"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nothing to send"), "{}", text(&out.stderr));

    // check --send-test: a result table.
    let out = run(&["check", "--send-test"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("NOTIFIER") && table.contains("hook      webhook  ok") && table.contains("sent in"),
        "{table}"
    );

    // plugins lists the built-in types.
    let out = run(&["plugins"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("webhook")), "{}", text(&out.stdout));

    // With the daemon: send an event file through it.
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, format!("{}\n{}\n", started("f", "h", 1), message("f", 1, "from a file")))
        .expect("write");
    let out = run(&["send", "--event", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("accepted 2 event(s)"), "{}", text(&out.stdout));
    // direct, check's test message, then the file's two events.
    let delivered = hook.wait_delivered(4, Duration::from_secs(10));
    assert!(delivered.iter().any(|h| h.run == "f" && h.kind == "message"), "{delivered:?}");
    let out = run(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("NOTIFIER"), "{}", text(&out.stdout));
    drop(d);
}

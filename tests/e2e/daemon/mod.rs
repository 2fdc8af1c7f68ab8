//! The daemon end to end: the real `herald serve` against an axum fake webhook receiver on 127.0.0.1.
//!
//! The harness here (a daemon in a temp folder, the fake receiver, a small HTTP client over TCP and the Unix
//! socket, polling with deadlines) is shared with the other topics; the tests are in `delivery.rs` (order,
//! retries, a kill during a burst, stalls and losses) and `control.rs` (stops, bad input, tokens, systemd,
//! `herald send`).

use std::collections::{HashMap, HashSet};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::herald;

mod control;
mod delivery;

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

/// `herald --config <config> serve` logging at info, appending its stderr to `log`; the caller adds what its
/// topic needs (environment) and spawns.
pub fn serve_command(config: &Path, log: &Path) -> Command {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let mut cmd = herald();
    cmd.arg("--config").arg(config).arg("serve").env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log);
    cmd
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
        let child =
            serve_command(&self.config, &self.dir.join("daemon.log")).spawn().expect("start herald serve");
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

pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

//! The dashboard end to end: the real `herald serve` with `[daemon] dashboard` on 127.0.0.1, its read API
//! (runs, one run, the downsampled loss, the plot, the event stream with resume), the pages and their
//! security (CSRF on Stop, the login on a non-loopback address), and, in `browser.rs`, headless Chromium.
//!
//! Events are posted over HTTP as a trainer would; the API is read over plain TCP (the harness of
//! `daemon.rs`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{Daemon, config_text, epoch, event, finished, free_port, http, started, wait_for};

mod browser;
mod deliveries;
mod list;

/// A daemon with its dashboard on its own port; the webhook goes nowhere (deliveries are not the point).
pub struct Dash {
    pub daemon: Daemon,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Dash {
    /// A daemon whose dashboard listens on `host` (`127.0.0.1`, or `0.0.0.0` for the login tests) with these
    /// extra `[daemon]` keys.
    pub fn start_on(host: &str, extra: &str) -> Dash {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let api = free_port();
        let extra = format!("dashboard = \"{host}:{port}\"\n{extra}");
        let config = config_text(dir.path(), api, free_port(), &extra, "");
        let daemon = Daemon::start(dir.path(), api, &config);
        wait_for("the dashboard to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        Dash { daemon, port, _dir: dir }
    }

    pub fn start() -> Dash {
        Dash::start_on("127.0.0.1", "")
    }

    /// GET on the dashboard's listener: status and JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (code, text) = http(self.port, "GET", path, &[], b"");
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Post events (JSON texts) as a trainer does; fails unless all are accepted.
    pub fn post(&self, events: &[String]) {
        let body = format!("[{}]", events.join(","));
        let (code, reply) = self.daemon.post(&body);
        assert_eq!(code, 202, "{reply}");
    }
}

/// A `run_started` with this name and host, 3 epochs of 10 batches, one metric, and a hyperparameter named
/// and valued like the name.
pub fn started_as(run: &str, name: &str, host: &str) -> String {
    event(
        run,
        0,
        "run_started",
        json!({ "name": name, "host": host, "pid": 1, "n_epochs": 3, "batches_per_epoch": 10,
            "metric_names": ["accuracy"], "hyper": { name: name } }),
    )
}

fn batch_point(run: &str, seq: u64, epoch: u32, batch: u64, smooth_loss: f64) -> String {
    event(
        run,
        seq,
        "batch_ended",
        json!({ "epoch": epoch, "batch": batch, "n_batches": 10, "loss": smooth_loss, "smooth_loss": smooth_loss, "lr": 0.01 }),
    )
}

#[test]
fn dashboard_api_lists_runs_with_filters_and_shows_one_run() {
    let d = Dash::start();
    d.post(&[
        started("alpha-1", "box", 1),
        epoch("alpha-1", 1, 0),
        epoch("alpha-1", 2, 1),
        finished("alpha-1", 3),
    ]);
    d.post(&[started("beta-2", "box", 2), epoch("beta-2", 1, 0)]);

    let names = |q: &str| -> Vec<String> {
        let (code, body) = d.get(&format!("/v1/runs{q}"));
        assert_eq!(code, 200, "{q}: {body}");
        body["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["run"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let mut all = names("");
    all.sort();
    assert_eq!(all, ["alpha-1", "beta-2"]);
    assert_eq!(names("?state=completed"), ["alpha-1"]);
    assert_eq!(names("?state=running"), ["beta-2"]);
    assert_eq!(names("?state=running,completed").len(), 2);
    assert_eq!(names("?name=ALP"), ["alpha-1"]);
    assert_eq!(names("?name=zzz"), Vec::<String>::new());
    assert_eq!(d.get("/v1/runs?limit=many").0, 400);
    assert_eq!(d.get("/v1/runs?colour=red").0, 400);

    let (code, beta) = d.get("/v1/runs?name=beta");
    assert_eq!(code, 200);
    let row = &beta["runs"][0];
    assert_eq!(
        (row["state"].as_str(), row["epochs_done"].as_u64(), row["n_epochs"].as_u64()),
        (Some("running"), Some(1), Some(3))
    );
    assert!(row["eta_s"].as_f64().is_some_and(|s| s > 0.0), "{row}");

    let (code, one) = d.get("/v1/runs/alpha-1");
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["run"]["state"], "completed");
    assert_eq!(one["context"]["epochs"].as_array().map(Vec::len), Some(2));
    assert_eq!(one["context"]["metric_names"], json!(["accuracy"]));
    let kinds: Vec<&str> =
        one["events"].as_array().expect("events").iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["run_started", "epoch_ended", "epoch_ended", "run_finished"]);
    assert_eq!(one["deliveries"][0]["notifier"], "hook");

    let (code, missing) = d.get("/v1/runs/nobody");
    assert_eq!((code, missing["error"]["code"].as_str()), (404, Some("unknown_run")));
    // The same read API on the main listener.
    let (code, text) = http(d.daemon.port, "GET", "/v1/runs/alpha-1", &[], b"");
    assert_eq!(code, 200, "{text}");
}

#[test]
fn dashboard_loss_of_100000_points_comes_back_downsampled_with_its_minimum_and_maximum() {
    let d = Dash::start();
    let run = "long";
    d.post(&[started(run, "box", 1)]);
    let n: u64 = 100_000;
    let loss = |i: u64| -> f64 {
        match i {
            61_234 => 9.5,
            87_001 => 0.001,
            _ => 2.0 / (1.0 + i as f64 / 1000.0) + ((i * 7919) % 101) as f64 * 1e-3,
        }
    };
    let events: Vec<String> =
        (0..n).map(|i| batch_point(run, i + 1, (i / 10) as u32, i % 10, loss(i))).collect();
    for chunk in events.chunks(4000) {
        d.post(chunk);
    }
    for (query, max) in [("", 2000), ("?points=500", 500), ("?points=2", 2)] {
        let (code, s) = d.get(&format!("/v1/runs/{run}/loss{query}"));
        assert_eq!(code, 200, "{query}: {s}");
        assert_eq!(s["total"].as_u64(), Some(n), "{query}");
        let ys: Vec<f64> =
            s["smooth_loss"].as_array().expect("series").iter().filter_map(Value::as_f64).collect();
        let xs = s["x"].as_array().expect("x");
        assert!(ys.len() <= max && ys.len() == xs.len(), "{query}: {} points", ys.len());
        assert!(ys.contains(&9.5) && ys.contains(&0.001), "{query}: the extremes are kept");
        let lr = s["lr"].as_array().expect("lr");
        let wall = s["wall_ms"].as_array().expect("wall_ms");
        assert!(lr.len() == xs.len() && wall.len() == xs.len(), "{query}: one lr and time per point");
        assert!(lr.iter().all(|v| v.as_f64() == Some(0.01)), "{query}: the stored lr");
        assert!(wall.iter().all(|v| v.as_u64() == Some(1_795_773_600_000)), "{query}: the events' time");
    }
    for bad in ["?points=1", "?points=100001", "?points=x", "?step=2"] {
        assert_eq!(d.get(&format!("/v1/runs/{run}/loss{bad}")).0, 400, "{bad}");
    }
    assert_eq!(d.get("/v1/runs/other/loss").0, 404);
}

#[test]
fn dashboard_plot_is_the_phone_image() {
    let d = Dash::start();
    d.post(&[started("plotted", "box", 1)]);
    let (code, _) = d.get("/v1/runs/plotted/plot.png");
    assert_eq!(code, 404, "nothing to draw yet");
    let points: Vec<String> = (0..30)
        .map(|i| batch_point("plotted", i + 1, (i / 10) as u32, i % 10, 1.0 / (i + 1) as f64))
        .collect();
    d.post(&points);
    d.post(&[epoch("plotted", 40, 0)]);
    let raw =
        raw(d.port, "GET /v1/runs/plotted/plot.png HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.contains("content-type: image/png"), "{head}");
    assert!(raw[head_end..].starts_with(b"\x89PNG"), "a PNG body");
}

/// Send a whole request as written; the whole answer.
fn raw(port: u16, request: &str) -> Vec<u8> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    socket.write_all(request.as_bytes()).expect("request");
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    answer
}

/// An open `GET /v1/stream`, read by a thread into a buffer.
struct Stream {
    text: Arc<Mutex<String>>,
    socket: TcpStream,
}

impl Stream {
    fn open(port: u16, last_event_id: Option<&str>) -> Stream {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut req =
            "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n".to_owned();
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        socket.write_all(req.as_bytes()).expect("request");
        let text = Arc::new(Mutex::new(String::new()));
        let (mut reader, sink) = (socket.try_clone().expect("clone"), text.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("buffer").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Stream { text, socket }
    }

    /// Wait until the stream holds `needle`; returns everything read so far.
    fn wait(&self, needle: &str) -> String {
        wait_for(&format!("`{needle}` on the stream"), Duration::from_secs(10), || {
            let t = self.text.lock().expect("buffer").clone();
            t.contains(needle).then_some(t)
        })
    }

    /// The `id:` of the item whose data mentions `needle`.
    fn id_of(&self, needle: &str) -> String {
        let text = self.wait(needle);
        let at = text.find(needle).expect("found");
        let before = &text[..at];
        let line = before.rfind("id: ").expect("an id before the data");
        before[line + 4..].lines().next().expect("the id line").trim().to_owned()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

#[test]
fn dashboard_stream_sends_each_event_type_and_resumes_from_last_event_id() {
    let d = Dash::start();
    let s = Stream::open(d.port, None);
    s.wait("text/event-stream");
    d.post(&[started("streamed", "box", 1)]);
    s.wait("event: run_started");
    d.post(&[epoch("streamed", 1, 0)]);
    let text = s.wait("event: epoch_ended");
    assert!(text.contains("\"run\":\"streamed\""), "{text}");
    let id = s.id_of("\"type\":\"epoch_ended\"");
    drop(s);

    // While no one listens, two more events; a client resuming after the epoch gets exactly those.
    d.post(&[epoch("streamed", 2, 1), finished("streamed", 3)]);
    let resumed = Stream::open(d.port, Some(&id));
    let text = resumed.wait("event: run_finished");
    assert!(text.contains("\"epoch\":1") && !text.contains("\"epoch\":0"), "only what was missed:\n{text}");
    assert!(!text.contains("event: run_started"), "{text}");

    // An id the daemon cannot resume from (another daemon's, or garbage): resync.
    let lost = Stream::open(d.port, Some("1-999999"));
    lost.wait("event: resync");
    // A new stream starts with the notifiers' figures.
    let status = Stream::open(d.port, None);
    status.wait("event: status");
}

#[test]
fn dashboard_pages_are_served_escaped_and_stop_needs_the_csrf_token() {
    let d = Dash::start();
    let evil = "<img src=x onerror=alert(1)>";
    d.post(&[started_as(evil, evil, "box")]);
    for path in ["/", "/notifiers", "/runs/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"] {
        let (code, html) = http(d.port, "GET", path, &[], b"");
        assert_eq!(code, 200, "{path}");
        assert!(html.contains("<script src=\"/assets/app.js\""), "{path}: a dashboard page");
        assert!(!html.contains("onerror"), "{path}: no run data in the page's markup");
    }
    for asset in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"] {
        assert_eq!(http(d.port, "GET", &format!("/assets/{asset}"), &[], b"").0, 200, "{asset}");
    }
    let (_, html) = http(d.port, "GET", "/", &[], b"");
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries a CSRF token")
        .to_owned();
    assert_eq!(csrf.len(), 64);

    let path = "/v1/runs/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E/stop";
    let (code, text) = http(d.port, "POST", path, &[], b"");
    assert_eq!(code, 403, "no CSRF token: {text}");
    let (code, text) = http(d.port, "POST", path, &[("x-csrf-token", "0000")], b"");
    assert_eq!(code, 403, "a wrong token: {text}");
    assert_eq!(d.get("/v1/runs?state=stopping").1["runs"], json!([]), "not asked to stop");
    let (code, text) =
        http(d.port, "POST", path, &[("x-csrf-token", &csrf)], b"{\"reason\":\"from the test\"}");
    assert_eq!(code, 200, "{text}");
    let (_, runs) = d.get("/v1/runs?state=stopping");
    let reason = runs["runs"][0]["stop_reason"].as_str().unwrap_or("");
    assert_eq!(reason, "from the test (from 127.0.0.1)", "the reason says where the request came from");
    // The trainer hears it in its next answer, as with `herald stop`.
    let (code, reply) = d.daemon.post(&event(evil, 1, "epoch_started", json!({ "epoch": 0 })));
    assert_eq!(code, 202, "{reply}");
    assert_eq!(reply["control"][evil]["stop"], true, "{reply}");
    // Another site's page cannot reach a loopback dashboard by a name of its own (DNS rebinding).
    let answer = raw(d.port, "GET / HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn dashboard_on_a_non_loopback_address_asks_for_the_token_once() {
    let d = Dash::start_on("0.0.0.0", "token = \"s3cret-token\"");
    let (code, _) = http(d.port, "GET", "/", &[], b"");
    assert_eq!(code, 303, "a page without a session goes to the login form");
    assert_eq!(http(d.port, "GET", "/v1/runs", &[], b"").0, 401);
    assert_eq!(http(d.port, "GET", "/v1/stream", &[], b"").0, 401);
    let (code, form) = http(d.port, "GET", "/login", &[], b"");
    assert!(code == 200 && form.contains("name=\"token\""), "{form}");
    let wrong = http(
        d.port,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"token=nope",
    );
    assert_eq!(wrong.0, 401);

    // The right token: a session cookie, HttpOnly and SameSite=Strict.
    let body = "token=s3cret-token";
    let head = String::from_utf8_lossy(&raw(
        d.port,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    ))
    .into_owned();
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("a cookie: {head}"))
        .to_owned();
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"), "{cookie_line}");
    let cookie =
        cookie_line.split_once(':').map(|(_, v)| v.trim()).and_then(|v| v.split(';').next()).expect("value");
    let (code, html) = http(d.port, "GET", "/", &[("Cookie", cookie)], b"");
    assert_eq!(code, 200, "{html}");
    assert_eq!(http(d.port, "GET", "/v1/runs", &[("Cookie", cookie)], b"").0, 200);
    assert_eq!(http(d.port, "GET", "/v1/runs", &[("Authorization", "Bearer s3cret-token")], b"").0, 200);
    assert_eq!(http(d.port, "GET", "/v1/runs", &[("Cookie", "herald_session=forged")], b"").0, 401);
}

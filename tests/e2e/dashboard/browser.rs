//! The dashboard in a real browser: Debian's headless Chromium driven by `chromedriver` over WebDriver's
//! HTTP JSON protocol (plain requests with the harness's HTTP client; no WebDriver crate).
//!
//! `cargo xtask setup` installs `chromium` and `chromium-driver`; without them these tests fail saying so.
//! Screenshots of each page at 1280 and 390 px wide are written to `target/dashboard/*.png`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Dash, started_as};
use crate::daemon::{epoch, event, free_port, started, wait_for};

mod pages;

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one headless Chromium session.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromedriver ({e}): run `cargo xtask setup` (Debian chromium-driver)")
            });
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut b = Browser { driver, port, session: String::new(), _profile: profile };
        wait_for("chromedriver to answer", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            let (code, body) = driver_http(port, "GET", "/status", b"");
            (code == 200 && body.contains("\"ready\":true")).then_some(())
        });
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let reply = b.call("POST", "/session", caps);
        b.session = reply["sessionId"].as_str().expect("a session id").to_owned();
        b
    }

    /// One WebDriver command; fails on an error answer.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (code, value) = self.try_call(method, path, body);
        assert_eq!(code, 200, "WebDriver {method} {path}: {value}");
        value
    }

    /// One WebDriver command: the status and the answer's `value`.
    fn try_call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let body =
            if method == "GET" || method == "DELETE" { Vec::new() } else { body.to_string().into_bytes() };
        let (code, text) = driver_http(self.port, method, path, &body);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (code, v.get("value").cloned().unwrap_or(v))
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn open(&self, url: &str) {
        self.call("POST", &self.at("/url"), json!({ "url": url }));
    }

    /// Run a script in the page; its return value.
    fn js(&self, script: &str) -> Value {
        self.call("POST", &self.at("/execute/sync"), json!({ "script": script, "args": [] }))
    }

    /// Wait until `script` returns `true`.
    fn wait_js(&self, what: &str, script: &str) {
        wait_for(what, Duration::from_secs(15), || (self.js(script) == Value::Bool(true)).then_some(()));
    }

    fn click(&self, css: &str) {
        let found = self.call("POST", &self.at("/element"), json!({ "using": "css selector", "value": css }));
        let id =
            found[ELEMENT].as_str().unwrap_or_else(|| panic!("an element for {css}: {found}")).to_owned();
        self.call("POST", &self.at(&format!("/element/{id}/click")), json!({}));
    }

    /// The text of an open alert or confirm, if any.
    fn alert(&self) -> Option<String> {
        let (code, v) = self.try_call("GET", &self.at("/alert/text"), Value::Null);
        (code == 200).then(|| v.as_str().unwrap_or("").to_owned())
    }

    /// Browser console entries since the last call, as "LEVEL message".
    fn console(&self) -> Vec<String> {
        let v = self.call("POST", &self.at("/se/log"), json!({ "type": "browser" }));
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn assert_no_console_errors(&self, page: &str) {
        let errors: Vec<String> = self.console().into_iter().filter(|l| l.starts_with("SEVERE")).collect();
        assert!(errors.is_empty(), "{page}: console errors: {errors:#?}");
    }

    /// Lay the page out `width` px wide (a phone's 390 or a desktop's 1280), and wait until it has.
    fn width(&self, width: u32) {
        let height = if width < 600 { 844 } else { 900 };
        self.call(
            "POST",
            &self.at("/goog/cdp/execute"),
            json!({ "cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 } }),
        );
        self.wait_js(
            "the new layout",
            &format!(
                "const c = document.querySelector('#chart .uplot'); return window.innerWidth === {width} && \
                 (!c || c.offsetWidth <= {width})"
            ),
        );
    }

    /// Save a screenshot of the viewport to `target/dashboard/<name>.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call("GET", &self.at("/screenshot"), Value::Null);
        let png = base64_decode(v.as_str().expect("base64 PNG")).expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).expect("target/dashboard");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), Value::Null);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One request to chromedriver. It keeps connections open whatever the request says, so the answer is read
/// up to its `Content-Length` instead of to the end of the stream.
fn driver_http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to chromedriver");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).expect("send to chromedriver");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("a status line");
    let code = status.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut answer = Vec::new();
    match length {
        Some(n) => {
            answer.resize(n, 0);
            reader.read_exact(&mut answer).expect("the answer");
        }
        None => {
            let _ = reader.read_to_end(&mut answer);
        }
    }
    (code, String::from_utf8_lossy(&answer).into_owned())
}

/// `target/dashboard`, beside the profile folder of the `herald` binary under test.
fn artifacts() -> PathBuf {
    let bin = crate::herald_bin();
    let target = bin.parent().and_then(|p| p.parent()).expect("target/<profile>/herald");
    target.join("dashboard")
}

/// Standard base64 (WebDriver's screenshots); `None` on a bad character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn batch(run: &str, seq: u64, epoch: u32, batch: u64) -> String {
    let loss = 2.0 / (1.0 + seq as f64 / 20.0);
    event(
        run,
        seq,
        "batch_ended",
        json!({ "epoch": epoch, "batch": batch, "n_batches": 10, "loss": loss, "smooth_loss": loss, "lr": 0.01 }),
    )
}

#[test]
fn dashboard_in_chromium_updates_live_stops_a_run_shows_names_as_text_and_logs_no_errors() {
    let d = Dash::start();
    let base = format!("http://127.0.0.1:{}", d.port);
    let run = "live-run";
    let evil = "<img src=x onerror=alert(1)>";
    d.post(&[started(run, "gpu-box", 4242)]);
    d.post(&(1..=10).map(|i| batch(run, i, 0, i - 1)).collect::<Vec<_>>());
    d.post(&[started_as(evil, evil, evil)]);
    let b = Browser::start();

    // The run page, opened while the run is going: new rows and points come without a reload.
    b.open(&format!("{base}/runs/{run}"));
    b.wait_js(
        "the run page to load",
        "return document.getElementById('run-name').textContent === 'live-run'",
    );
    b.wait_js("the chart", "return !!document.querySelector('#chart canvas')");
    b.js("window.notReloaded = true; return true");
    d.post(&[epoch(run, 11, 0)]);
    b.wait_js("the first row", "return document.querySelectorAll('#results tbody tr').length === 1");
    d.post(&(12..=21).map(|i| batch(run, i, 1, i - 12)).collect::<Vec<_>>());
    d.post(&[epoch(run, 22, 1)]);
    b.wait_js("the second row", "return document.querySelectorAll('#results tbody tr').length === 2");
    b.wait_js(
        "the new points on the curve",
        "return document.getElementById('chart').dataset.points === '20'",
    );
    assert_eq!(b.js("return window.notReloaded === true"), json!(true), "the page was not reloaded");
    b.assert_no_console_errors("run page");
    b.screenshot("run-1280");
    b.width(390);
    b.screenshot("run-390");
    b.width(1280);

    // Stop: the button asks first; confirming sends the stop request the trainer hears in its next answer.
    b.click("#stop");
    b.wait_js("the confirmation", "return document.getElementById('stop-dialog').open");
    b.click("#stop-cancel");
    b.wait_js("the dialog to close", "return !document.getElementById('stop-dialog').open");
    assert_eq!(d.get(&format!("/v1/runs/{run}")).1["run"]["stop_requested"], false, "cancel stops nothing");
    b.click("#stop");
    b.wait_js("the confirmation", "return document.getElementById('stop-dialog').open");
    b.click("#stop-confirm");
    b.wait_js("`stopping`", "return document.getElementById('run-state').textContent === 'stopping'");
    let (_, reply) = d.daemon.post(&event(run, 23, "epoch_started", json!({ "epoch": 2 })));
    assert_eq!(reply["control"][run]["stop"], true, "the trainer is told to stop: {reply}");
    d.post(&[event(
        run,
        24,
        "run_finished",
        json!({ "status": "stopped", "reason": "stop requested", "duration_s": 3.0 }),
    )]);
    b.wait_js("`stopped`", "return document.getElementById('run-state').textContent === 'stopped'");
    // The timeline has the stop request, with where it came from, before the run's end.
    let items = b.js("return Array.from(document.querySelectorAll('#events li')).map(li => li.className)");
    let items: Vec<&str> = items.as_array().expect("items").iter().filter_map(Value::as_str).collect();
    let stop = items.iter().position(|c| *c == "ev-stop").unwrap_or_else(|| panic!("a stop item: {items:?}"));
    assert_eq!(items.get(stop + 1), Some(&"ev-run_finished"), "{items:?}");
    let text = b.js("return document.querySelector('#events li.ev-stop').textContent");
    assert!(text.as_str().is_some_and(|t| t.contains("from the dashboard (from 127.0.0.1)")), "{text}");
    b.assert_no_console_errors("run page after Stop");

    // A run named like markup shows as text, on the list and on its own page, and runs no script.
    b.open(&format!("{base}/"));
    b.wait_js("the runs list", "return document.querySelectorAll('#runs tbody tr').length === 2");
    let shown = b.js("return Array.from(document.querySelectorAll('#runs tbody a')).map(a => a.textContent)");
    assert!(shown.as_array().is_some_and(|names| names.contains(&json!(evil))), "{shown}");
    assert_eq!(b.js("return document.querySelectorAll('main img').length"), json!(0));
    assert_eq!(b.alert(), None, "no script ran");
    b.assert_no_console_errors("runs page");
    b.screenshot("runs-1280");
    b.width(390);
    b.screenshot("runs-390");
    b.width(1280);

    b.click("#runs tbody tr:last-child a");
    b.wait_js(
        "the evil run's page",
        &format!("return document.getElementById('run-name').textContent === {}", json!(evil)),
    );
    assert_eq!(b.js("return document.querySelectorAll('main img').length"), json!(0));
    assert_eq!(b.js("return document.querySelector('#hyper dt').textContent"), json!(evil));
    assert_eq!(b.alert(), None, "no script ran");
    b.assert_no_console_errors("the evil run's page");

    b.open(&format!("{base}/notifiers"));
    b.wait_js("the notifiers", "return document.querySelectorAll('#notifiers tbody tr').length === 1");
    b.assert_no_console_errors("deliveries page");
    b.screenshot("notifiers-1280");
    b.width(390);
    b.screenshot("notifiers-390");
    // The page fits a phone: nothing wider than the screen but the tables' own scrolling boxes.
    assert_eq!(b.js("return document.documentElement.scrollWidth <= 390"), json!(true));
}

#[test]
fn dashboard_in_chromium_follows_a_herald_train_run_and_its_stop_button_ends_it() {
    let d = Dash::start();
    let base = format!("http://127.0.0.1:{}", d.port);
    // Batch size 1: epochs of 1438 batches, long enough for the page to see the run going.
    let mut trainer = crate::KillOnDrop(
        crate::train::long_train(&d.daemon.config, Some("in-the-browser"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start herald train"),
    );
    let b = Browser::start();
    b.open(&format!("{base}/"));
    b.wait_js("the run on the list", "return document.querySelectorAll('#runs tbody a').length === 1");
    b.click("#runs tbody a");
    b.wait_js(
        "the run's page",
        "return document.getElementById('run-name').textContent === 'in-the-browser'",
    );
    b.js("window.notReloaded = true; return true");
    wait_for("an epoch row on the page", Duration::from_secs(90), || {
        (b.js("return document.querySelectorAll('#results tbody tr').length >= 1") == json!(true))
            .then_some(())
    });
    let points = b.js("return Number(document.getElementById('chart').dataset.points || 0)");
    b.wait_js(
        "more curve points",
        &format!("return Number(document.getElementById('chart').dataset.points) > {points}"),
    );
    assert_eq!(b.js("return window.notReloaded === true"), json!(true), "the page was not reloaded");

    b.click("#stop");
    b.wait_js("the confirmation", "return document.getElementById('stop-dialog').open");
    b.click("#stop-confirm");
    let status = wait_for("herald train to exit after Stop", Duration::from_secs(90), || {
        trainer.0.try_wait().expect("poll herald train")
    });
    assert!(status.success(), "herald train: {status}");
    b.wait_js(
        "`stopped` on the page",
        "return document.getElementById('run-state').textContent === 'stopped'",
    );
    b.assert_no_console_errors("a herald train run's page");
}

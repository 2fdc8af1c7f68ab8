//! `cargo xtask bench dashboard`: the dashboard's figures with a full store, against the `profiling` build.
//!
//! - fills a store with 1 000 runs of 50 epochs and 20 000 batch points each (posted to `herald serve` over
//!   HTTP in NDJSON batches by four clients, the path a trainer's events take; kept under
//!   `target/bench-dashboard/` and reused by later runs unless `--refill`);
//! - restarts the daemon over the filled store and reads its idle RSS;
//! - `GET /v1/runs/{run}/loss` latency (p50, p99) over many runs: first read, all runs again, and each run
//!   asked twice in a row (the second timed: a page polling or opened again), and `GET /v1/runs?limit=100`;
//! - time to first paint of `/` and of a run page in headless Chromium (Debian's, over WebDriver), from the
//!   Performance API: `first-paint`, `first-contentful-paint`, and when the data is on the page (the runs
//!   page's `herald:runs-rendered` mark; the run page's loss response end), median and max of several loads;
//! - the daemon's RSS with 10 open dashboards (five runs pages, five run pages, in three Chromium instances)
//!   following a live run.
//!
//! `--runs N` fills a smaller store (a quick look), `--no-build` uses the binary already built, `--herald PATH`
//! measures another binary (an older build, to compare), `--api-only` stops after the API figures. Goals (issue 14):
//! first paint <= 300 ms each, loss <= 20 ms, RSS with 10 dashboards <= idle + 10 MB.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::daemon::{Conn, Daemon, percentile, profiling_herald};

const EPOCHS: u32 = 50;
const BATCHES: u64 = 400;
const CLIENTS: usize = 4;
/// Events per POST while filling.
const PER_POST: usize = 4000;
/// Page loads measured per page.
const LOADS: usize = 7;

/// `HH:MM:SS.mmm` of a day, for event times.
fn stamp(ms: u64) -> String {
    let ms = ms % 86_400_000;
    format!(
        "2026-11-27T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Every event of bench run `i`, as NDJSON lines: a start, 50 epochs of 400 batches (100 ms apart) with their
/// ends, and the finish.
fn run_events(i: usize) -> Vec<String> {
    let run = format!("bench-{i:04}");
    let t0 = (i as u64 * 79 % 60_000) * 1000;
    let mut seq = 0u64;
    let mut out = Vec::with_capacity((EPOCHS as usize) * (BATCHES as usize + 1) + 2);
    let mut push = |kind: &str, at: u64, payload: Value, seq: &mut u64| {
        let mut v = json!({ "v": 1, "run": run, "seq": *seq, "time": stamp(at), "type": kind });
        if let (Some(obj), Value::Object(p)) = (v.as_object_mut(), payload) {
            obj.extend(p);
        }
        out.push(v.to_string());
        *seq += 1;
    };
    push(
        "run_started",
        t0,
        json!({ "name": format!("resnet-{i:04}"), "host": "bench", "pid": 0, "n_epochs": EPOCHS,
            "batches_per_epoch": BATCHES, "metric_names": ["accuracy"], "hyper": { "lr": 1e-3, "bs": 64 } }),
        &mut seq,
    );
    for e in 0..EPOCHS {
        for b in 0..BATCHES {
            let k = u64::from(e) * BATCHES + b;
            let loss = 2.0 / (1.0 + k as f64 / 2000.0) + ((k * 7919) % 101) as f64 * 1e-3;
            let lr = 1e-3 * (1.0 - k as f64 / (u64::from(EPOCHS) * BATCHES) as f64) + 1e-6;
            push(
                "batch_ended",
                t0 + k * 100,
                json!({ "epoch": e, "batch": b, "n_batches": BATCHES, "loss": loss, "smooth_loss": loss, "lr": lr }),
                &mut seq,
            );
        }
        let end = t0 + (u64::from(e) + 1) * BATCHES * 100;
        push(
            "epoch_ended",
            end,
            json!({ "epoch": e, "n_epochs": EPOCHS, "train_loss": 1.0 / f64::from(e + 1),
                "valid_loss": 1.1 / f64::from(e + 1), "metrics": { "accuracy": 0.5 + f64::from(e) / 120.0 },
                "elapsed_s": 40.0 }),
            &mut seq,
        );
    }
    let end = t0 + u64::from(EPOCHS) * BATCHES * 100 + 1;
    push(
        "run_finished",
        end,
        json!({ "status": "completed", "reason": "done", "duration_s": 2000.0 }),
        &mut seq,
    );
    out
}

/// Post every event of `runs` bench runs, four clients; returns events posted.
fn fill(d: &Daemon, runs: usize) -> Result<u64> {
    let posted = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let mut conn = d.tcp()?;
        let posted = posted.clone();
        threads.push(std::thread::spawn(move || -> Result<()> {
            for i in (c..runs).step_by(CLIENTS) {
                for chunk in run_events(i).chunks(PER_POST) {
                    let mut body = chunk.join("\n");
                    body.push('\n');
                    let (status, text) = conn.request("POST", "/v1/events", body.as_bytes())?;
                    if status != 202 {
                        bail!("fill answered {status}: {}", String::from_utf8_lossy(&text));
                    }
                    posted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("fill thread panicked"))??;
    }
    Ok(posted.load(Ordering::Relaxed))
}

/// A daemon stopped when dropped, on an error too.
struct Running(Option<Daemon>);

impl std::ops::Deref for Running {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        self.0.as_ref().expect("the daemon runs until dropped")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.stop();
        }
    }
}

/// A chromedriver with one headless Chromium session, over WebDriver's HTTP JSON protocol.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: PathBuf,
}

impl Browser {
    fn start(profile: PathBuf) -> Result<Browser> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start chromedriver: run `cargo xtask setup` (Debian chromium-driver)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut b = Browser { driver, port, session: String::new(), _profile: profile };
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-background-timer-throttling".to_owned(),
            "--disable-renderer-backgrounding".to_owned(),
            "--disable-backgrounding-occluded-windows".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", b._profile.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        }}});
        let reply = b.call("POST", "/session", &caps)?;
        b.session = reply["sessionId"].as_str().context("a session id")?.to_owned();
        Ok(b)
    }

    fn call(&mut self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let body =
            if method == "GET" || method == "DELETE" { Vec::new() } else { body.to_string().into_bytes() };
        // A connection per command: chromedriver may close one after an answer.
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let (status, text) = Conn::new(stream)
            .request(method, path, &body)
            .with_context(|| format!("WebDriver {method} {path}"))?;
        let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        if status != 200 {
            bail!("WebDriver {method} {path} answered {status}: {v}");
        }
        Ok(v.get("value").cloned().unwrap_or(v))
    }

    fn session_call(&mut self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    fn goto(&mut self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", &json!({ "url": url })).map(|_| ())
    }

    fn js(&mut self, script: &str) -> Result<Value> {
        self.session_call("POST", "/execute/sync", &json!({ "script": script, "args": [] }))
    }

    /// Run `script` until it answers something other than null or false, for up to 30 s.
    fn wait_js(&mut self, what: &str, script: &str) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script)?;
            if !v.is_null() && v != Value::Bool(false) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open a tab and switch to it; returns the tab it came from.
    fn new_tab(&mut self) -> Result<String> {
        let was = self.session_call("GET", "/window", &Value::Null)?.as_str().context("a window")?.to_owned();
        let v = self.session_call("POST", "/window/new", &json!({ "type": "tab" }))?;
        let handle = v["handle"].as_str().context("a window handle")?.to_owned();
        self.session_call("POST", "/window", &json!({ "handle": handle }))?;
        Ok(was)
    }

    /// Close this tab (and the connections its page holds) and switch to `back`.
    fn close_tab(&mut self, back: &str) -> Result<()> {
        self.session_call("DELETE", "/window", &Value::Null)?;
        self.session_call("POST", "/window", &json!({ "handle": back })).map(|_| ())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &path, &Value::Null);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The paint times of the page just loaded (ms since navigation start), and when its data was on the page:
/// `data` is a script answering that time, or null while it is not there yet.
fn paints(b: &mut Browser, data: &str) -> Result<(f64, f64, f64)> {
    let p = b.wait_js(
        "the first contentful paint",
        "const e = performance.getEntriesByType('paint'); \
         const f = e.find(x => x.name === 'first-paint'), c = e.find(x => x.name === 'first-contentful-paint'); \
         return c ? [f ? f.startTime : c.startTime, c.startTime] : null;",
    )?;
    let d = match b.wait_js("the data on the page", data) {
        Ok(d) => d,
        Err(e) => {
            let seen = b.js(
                "return [location.href, document.title, (document.getElementById('count') || {}).textContent, \
                 document.querySelectorAll('tbody tr').length, performance.getEntriesByType('mark').map(m => m.name), \
                 performance.getEntriesByType('resource').map(r => r.name)];",
            )?;
            bail!("{e}: the page shows {seen}");
        }
    };
    Ok((p[0].as_f64().unwrap_or(f64::NAN), p[1].as_f64().unwrap_or(f64::NAN), d.as_f64().unwrap_or(f64::NAN)))
}

/// Median and max of `v`.
fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

struct Args {
    runs: usize,
    refill: bool,
    herald: Option<PathBuf>,
    api_only: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args { runs: 1000, refill: false, herald: None, api_only: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => out.runs = it.next().and_then(|n| n.parse().ok()).context("--runs takes a number")?,
            "--refill" => out.refill = true,
            "--no-build" => {}
            "--herald" => out.herald = Some(it.next().context("--herald takes a path")?.into()),
            "--api-only" => out.api_only = true,
            other => {
                bail!("unknown option `{other}`: --runs N, --refill, --no-build, --herald PATH, --api-only")
            }
        }
    }
    Ok(out)
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let bin = match &opts.herald {
        Some(path) => path.clone(),
        None => profiling_herald(root, args)?,
    };
    let dir = crate::target_dir(root).join("bench-dashboard").join(format!("store-{}", opts.runs));
    let marker = dir.join("filled");
    let dash_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let keys = format!("dashboard = \"127.0.0.1:{dash_port}\"\n");
    let points = opts.runs as u64 * u64::from(EPOCHS) * BATCHES;

    let mut filled = None;
    if opts.refill || !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let d = Running(Some(Daemon::start_with(&bin, &dir, &keys, "")?));
        println!("filling {} runs x {EPOCHS} epochs x {BATCHES} batches ({points} points)...", opts.runs);
        let t = Instant::now();
        let n = fill(&d, opts.runs)?;
        let secs = t.elapsed().as_secs_f64();
        drop(d);
        std::fs::write(&marker, format!("{n}\n"))?;
        filled = Some((n, secs));
    }
    let outbox_bytes = std::fs::metadata(dir.join("state/outbox.redb")).map_or(0, |m| m.len());

    // A fresh daemon over the filled store: idle RSS once it has settled.
    let t = Instant::now();
    let d = Running(Some(Daemon::start_with(&bin, &dir, &keys, "")?));
    let start_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = d.rss_kib();
    let mut conn = Conn::new(TcpStream::connect(("127.0.0.1", dash_port))?);

    // Loss latency: each run once (cold for redb's cache), then again (warm).
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let sample: Vec<usize> = (0..opts.runs.min(200)).map(|k| k * 7919 % opts.runs).collect();
    for (pass, out) in [(0, &mut cold), (1, &mut warm)] {
        for &i in &sample {
            let path = format!("/v1/runs/bench-{i:04}/loss");
            let t = Instant::now();
            let (status, body) = conn.request("GET", &path, b"")?;
            out.push(t.elapsed().as_nanos() as u64);
            if status != 200 {
                bail!("{path} answered {status}: {}", String::from_utf8_lossy(&body));
            }
            if pass == 0 && i == sample[0] {
                let v: Value = serde_json::from_slice(&body)?;
                println!(
                    "loss of bench-{i:04}: {} points of {} kept, {} bytes",
                    v["x"].as_array().map_or(0, Vec::len),
                    v["total"],
                    body.len()
                );
            }
        }
    }
    // Each run asked twice in a row, the second timed: a page polling, or opened again.
    let mut again = Vec::new();
    for &i in &sample {
        let path = format!("/v1/runs/bench-{i:04}/loss");
        conn.request("GET", &path, b"")?;
        let t = Instant::now();
        let (status, _) = conn.request("GET", &path, b"")?;
        again.push(t.elapsed().as_nanos() as u64);
        if status != 200 {
            bail!("{path} answered {status}");
        }
    }
    cold.sort_unstable();
    warm.sort_unstable();
    again.sort_unstable();
    let mut list = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let (status, _) = conn.request("GET", "/v1/runs?limit=100", b"")?;
        list.push(t.elapsed().as_nanos() as u64);
        if status != 200 {
            bail!("/v1/runs answered {status}");
        }
    }
    list.sort_unstable();
    let mut api = format!(
        "\nherald dashboard benchmark ({}, {} runs, {points} batch points)\n",
        opts.herald.as_ref().map_or_else(|| "profiling build".to_owned(), |p| p.display().to_string()),
        opts.runs
    );
    if let Some((n, secs)) = filled {
        api += &format!(
            "  fill over HTTP                 {n} events in {secs:.0} s ({:.0} events/s)\n",
            n as f64 / secs
        );
    }
    api += &format!(
        "  outbox file                    {:.0} MB; daemon start over it {:.2} s\n",
        outbox_bytes as f64 / 1e6,
        start_s
    );
    api += &format!(
        "  GET /v1/runs/{{run}}/loss        first read p50 {:.2} ms, p99 {:.2} ms; all again p50 {:.2} ms, p99 {:.2} ms; \
         twice in a row p50 {:.2} ms, p99 {:.2} ms   (goal <= 20 ms)\n",
        percentile(&cold, 0.5),
        percentile(&cold, 0.99),
        percentile(&warm, 0.5),
        percentile(&warm, 0.99),
        percentile(&again, 0.5),
        percentile(&again, 0.99)
    );
    api += &format!(
        "  GET /v1/runs?limit=100         p50 {:.2} ms, p99 {:.2} ms",
        percentile(&list, 0.5),
        percentile(&list, 0.99)
    );
    if opts.api_only {
        drop(d);
        println!("{api}");
        return Ok(());
    }

    // First paint in headless Chromium.
    eprintln!("loss and list measured; first paint in Chromium...");
    let base = format!("http://127.0.0.1:{dash_port}");
    let mut b = Browser::start(dir.join("chromium-profile"))?;
    let mut runs_page = (Vec::new(), Vec::new(), Vec::new());
    let mut run_page = (Vec::new(), Vec::new(), Vec::new());
    // Each load in a tab of its own, closed after: a page's stream holds one of the six connections
    // Chromium allows per host, and a page left behind may keep it a while.
    for k in 0..LOADS {
        let home = b.new_tab()?;
        b.goto(&format!("{base}/"))?;
        let (fp, fcp, data) = paints(
            &mut b,
            "const m = performance.getEntriesByName('herald:runs-rendered'); return m.length ? m[0].startTime : null;",
        )?;
        runs_page.0.push(fp);
        runs_page.1.push(fcp);
        runs_page.2.push(data);
        b.close_tab(&home)?;
        let i = (k * 131 + 17) % opts.runs;
        let home = b.new_tab()?;
        b.goto(&format!("{base}/runs/bench-{i:04}"))?;
        let (fp, fcp, data) = paints(
            &mut b,
            "const r = performance.getEntriesByType('resource').find(e => e.name.includes('/loss')); \
             const c = document.querySelector('#chart canvas'); return r && c && r.responseEnd > 0 ? r.responseEnd : null;",
        )?;
        run_page.0.push(fp);
        run_page.1.push(fcp);
        run_page.2.push(data);
        b.close_tab(&home)?;
    }
    drop(b);

    // Ten open dashboards following a live run.
    eprintln!("first paint measured; ten dashboards on a live run...");
    let live = "bench-live";
    let mut feeder = d.tcp()?;
    let mut seq = 0u64;
    let mut post = |lines: Vec<String>| -> Result<()> {
        let (status, text) = feeder.request("POST", "/v1/events", (lines.join("\n") + "\n").as_bytes())?;
        if status != 202 {
            bail!("live post answered {status}: {}", String::from_utf8_lossy(&text));
        }
        Ok(())
    };
    let started = json!({ "v": 1, "run": live, "seq": 0, "time": stamp(0), "type": "run_started",
        "name": "live", "host": "bench", "pid": 0, "n_epochs": 1000, "batches_per_epoch": 50,
        "metric_names": [], "hyper": {} });
    post(vec![started.to_string()])?;
    seq += 1;
    // The baseline: the daemon idle after the requests above (redb's page cache and the allocator warm).
    std::thread::sleep(Duration::from_secs(2));
    let before_tabs = d.rss_kib();
    // Three browsers (4 + 3 + 3 tabs): Chromium keeps at most six connections per host, one per page's stream.
    let mut browsers = Vec::new();
    for n in 0..3 {
        let mut b = Browser::start(dir.join(format!("chromium-profile-{n}")))?;
        for k in 0..(if n == 0 { 4 } else { 3 }) {
            if k > 0 {
                b.new_tab()?;
            }
            b.goto(&if (n + k) % 2 == 0 { format!("{base}/") } else { format!("{base}/runs/{live}") })?;
        }
        browsers.push(b);
    }
    let before_live = d.rss_kib();
    let mut peak = before_live;
    let t0 = Instant::now();
    let mut batch = 0u64;
    while t0.elapsed() < Duration::from_secs(20) {
        // 50 batch points a second and an epoch end a second: every open page redraws or refetches.
        let mut lines = Vec::new();
        for _ in 0..5 {
            let e = batch / 50;
            let v = json!({ "v": 1, "run": live, "seq": seq, "time": stamp(batch * 20), "type": "batch_ended",
                "epoch": e, "batch": batch % 50, "n_batches": 50, "loss": 1.0, "smooth_loss": 1.0 / (1.0 + batch as f64), "lr": 1e-3 });
            lines.push(v.to_string());
            seq += 1;
            batch += 1;
            if batch.is_multiple_of(50) {
                let v = json!({ "v": 1, "run": live, "seq": seq, "time": stamp(batch * 20), "type": "epoch_ended",
                    "epoch": e, "n_epochs": 1000, "train_loss": 0.5, "valid_loss": 0.6, "metrics": {}, "elapsed_s": 1.0 });
                lines.push(v.to_string());
                seq += 1;
            }
        }
        post(lines)?;
        peak = peak.max(d.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    let streams = String::from_utf8_lossy(&conn.request("GET", "/v1/status", b"")?.1).into_owned();
    let live_rss = d.rss_kib();
    drop(browsers);
    drop(d);

    let ms = |v: f64| format!("{v:.1} ms");
    println!("{api}");
    for (page, (fp, fcp, data), what) in
        [("/", runs_page, "rows rendered"), ("/runs/{run}", run_page, "loss data in")]
    {
        let (fp, fpx) = median_max(fp);
        let (fcp, fcpx) = median_max(fcp);
        let (data, datax) = median_max(data);
        println!(
            "  {page:<12} ({LOADS} loads)       first paint median {} max {}; FCP median {} max {}; {what} median {} max {}   (goal first paint <= 300 ms)",
            ms(fp),
            ms(fpx),
            ms(fcp),
            ms(fcpx),
            ms(data),
            ms(datax)
        );
    }
    println!("  RSS idle, just started         {:>7.1} MB", idle_rss as f64 / 1024.0);
    println!(
        "  RSS idle after the reads above {:>7.1} MB (redb's page cache, the allocator's pools)",
        before_tabs as f64 / 1024.0
    );
    println!(
        "  RSS with 10 dashboards live    {:>7.1} MB at the end, {:.1} MB peak (+{:.1} MB over the idle daemon before them; goal <= +10 MB)",
        live_rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak as f64 - before_tabs as f64) / 1024.0
    );
    let subscribers = streams.split("\"stream_clients\":").nth(1).and_then(|r| r.split([',', '}']).next());
    if let Some(n) = subscribers {
        println!("  stream clients seen by status  {n}");
    }
    Ok(())
}

//! `cargo xtask bench daemon`: the daemon's figures, measured against the `profiling` build (release with
//! symbols) on this machine.
//!
//! - ingest throughput over HTTP and the Unix socket: four clients on keep-alive connections, single events
//!   and batches of 500 (`batch_ended` events: stored durably with their loss history, routed nowhere);
//! - latency from POST to arrival at a local webhook sink at 1 000 events/s (p50, p99);
//! - resident memory idle and with 100 000 deliveries queued (for a notifier whose endpoint is down);
//! - `herald send --direct` wall time against apprise's CLI (`apprise -b ... json://...`), same message, same
//!   local endpoint (apprise 2.2 is installed into `.venv` when missing).
//!
//! Everything runs side by side in one run (the machine is shared and noisy) with std only: a hand-written
//! HTTP/1.1 client and sink keep the bench's own overhead small and visible. Goals (issue 4): >= 50k
//! events/s batched, p99 <= 20 ms, idle RSS <= 20 MB, `send --direct` >= 20x faster than apprise.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, step};

pub(crate) const CLIENTS: usize = 4;
pub(crate) const PHASE: Duration = Duration::from_secs(3);

/// An HTTP/1.1 keep-alive connection (also used by `bench ranks`).
pub(crate) struct Conn<S: Read + Write> {
    reader: BufReader<S>,
}

impl<S: Read + Write> Conn<S> {
    pub(crate) fn new(stream: S) -> Conn<S> {
        Conn { reader: BufReader::with_capacity(64 * 1024, stream) }
    }

    /// POST or GET; returns the status and the body.
    pub(crate) fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).context("bad status line")?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            out.resize(length, 0);
            self.reader.read_exact(&mut out)?;
        }
        Ok((status, out))
    }
}

/// Request bodies with their arrival in ns since the sink's base.
pub(crate) type Bodies = Mutex<Vec<(u64, Vec<u8>)>>;

/// The local webhook sink: answers 200 to everything and records the latency marked in message texts, and, when
/// asked, every body with its arrival (`bench ranks`). It takes single notifications (a JSON object) and the
/// webhook's batches (a JSON array of them, `batch = N`).
pub(crate) struct Sink {
    pub(crate) port: u16,
    /// HTTP requests received.
    pub(crate) requests: Arc<AtomicU64>,
    /// Notifications received: one per object, the length of each array.
    pub(crate) events: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u64>>>,
    /// Every body with its arrival in ns since `base`, when started with `keep_bodies`.
    pub(crate) bodies: Arc<Bodies>,
}

pub(crate) fn start_sink(base: Instant, keep_bodies: bool) -> Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (r, e, l, b) = (requests.clone(), events.clone(), latencies.clone(), bodies.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (r, e, l, b) = (r.clone(), e.clone(), l.clone(), b.clone());
            std::thread::spawn(move || {
                let _ = serve_sink(stream, base, (&r, &e), &l, keep_bodies.then_some(&*b));
            });
        }
    });
    Ok(Sink { port, requests, events, latencies, bodies })
}

/// Notifications in a sink body: the objects of an array (each has one `idempotency_key`), else one.
pub(crate) fn notifications_in(body: &[u8]) -> u64 {
    if body.first() != Some(&b'[') {
        return 1;
    }
    String::from_utf8_lossy(body).matches("\"idempotency_key\":").count() as u64
}

/// Every `lat:<ns>:` marker in `text`, in order.
pub(crate) fn lat_marks(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split("lat:").skip(1).filter_map(|rest| rest.split(':').next()?.parse::<u64>().ok())
}

fn serve_sink(
    stream: TcpStream,
    base: Instant,
    (requests, events): (&AtomicU64, &AtomicU64),
    latencies: &Mutex<Vec<u64>>,
    bodies: Option<&Bodies>,
) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let now = base.elapsed().as_nanos() as u64;
        let text = String::from_utf8_lossy(&body);
        let marks: Vec<u64> = lat_marks(&text).map(|sent| now.saturating_sub(sent)).collect();
        if !marks.is_empty() {
            latencies.lock().expect("latency lock").extend(marks);
        }
        // Counted last, so that a reader who sees the count also sees the latencies.
        events.fetch_add(notifications_in(&body), Ordering::Relaxed);
        requests.fetch_add(1, Ordering::Relaxed);
        if let Some(bodies) = bodies {
            bodies.lock().expect("body lock").push((now, body));
        }
        writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    }
}

/// A `herald serve` of the benchmarked build (also used by `bench ranks`).
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) port: u16,
    socket: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, dir: &Path, notifier_url: &str) -> Result<Daemon> {
        let notifier = format!(
            "[[notifier]]\nname = \"sink\"\ntype = \"webhook\"\nurl = \"{notifier_url}\"\nevents = [\"message\"]\n"
        );
        Daemon::start_with(bin, dir, "", &notifier)
    }

    /// A daemon in `dir` with `daemon_keys` added to its `[daemon]` table, then `notifiers` (TOML tables).
    pub(crate) fn start_with(bin: &Path, dir: &Path, daemon_keys: &str, notifiers: &str) -> Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let socket = dir.join("herald.sock");
        let config = format!(
            "[daemon]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"{}\"\nstate_dir = \"{}\"\ndrain_timeout = \"1s\"\n{daemon_keys}\n\n{notifiers}",
            socket.display(),
            dir.join("state").display()
        );
        let path = dir.join("herald.toml");
        std::fs::write(&path, config)?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start herald serve")?;
        let d = Daemon { child, port, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the daemon did not start listening");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn tcp(&self) -> Result<Conn<TcpStream>> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        Ok(Conn::new(s))
    }

    fn unix(&self) -> Result<Conn<UnixStream>> {
        Ok(Conn::new(UnixStream::connect(&self.socket)?))
    }

    fn queued(&self) -> Result<u64> {
        let (_, body) = self.tcp()?.request("GET", "/v1/status", b"")?;
        let text = String::from_utf8_lossy(&body);
        let jobs = text
            .split("\"jobs\":")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(jobs)
    }

    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// `n` `batch_ended` events of run `run` from `first_seq`, as an NDJSON body.
pub(crate) fn batch_body(run: &str, first_seq: u64, n: usize) -> Vec<u8> {
    let mut body = String::with_capacity(n * 190);
    for i in 0..n as u64 {
        let seq = first_seq + i;
        body.push_str(&format!(
            "{{\"v\":1,\"run\":\"{run}\",\"seq\":{seq},\"time\":\"2026-11-27T10:00:00Z\",\"type\":\"batch_ended\",\"epoch\":0,\"batch\":{seq},\"n_batches\":1000000,\"loss\":0.5,\"smooth_loss\":0.4,\"lr\":0.001}}\n"
        ));
    }
    body.into_bytes()
}

/// Four clients posting batches of `batch` events for [`PHASE`]; returns events/s.
fn ingest(d: &Daemon, unix: bool, batch: usize, tag: &str) -> Result<f64> {
    ingest_bodies(d, unix, batch, tag, batch_body)
}

/// [`ingest`] of the bodies `body(run, first_seq, n)` makes (also used by `bench rules`).
pub(crate) fn ingest_bodies(
    d: &Daemon,
    unix: bool,
    batch: usize,
    tag: &str,
    body: fn(&str, u64, usize) -> Vec<u8>,
) -> Result<f64> {
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let total = total.clone();
        let run = format!("{tag}-{c}");
        let mut tcp = if unix { None } else { Some(d.tcp()?) };
        let mut uds = if unix { Some(d.unix()?) } else { None };
        threads.push(std::thread::spawn(move || -> Result<()> {
            let mut seq = 0u64;
            while start.elapsed() < PHASE {
                let body = body(&run, seq, batch);
                let (status, text) = match (&mut tcp, &mut uds) {
                    (Some(c), _) => c.request("POST", "/v1/events", &body)?,
                    (_, Some(c)) => c.request("POST", "/v1/events", &body)?,
                    _ => bail!("no connection"),
                };
                if status != 202 {
                    bail!("ingest answered {status}: {}", String::from_utf8_lossy(&text));
                }
                seq += batch as u64;
                total.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    Ok(total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// The `p` quantile of `sorted` nanoseconds, in ms.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `args`: `--no-build` uses the binary already built (the build is the slow part on a busy machine). The
/// binary is the `profiling` build: release optimisations with symbols, so a profiler can read it.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let bin = profiling_herald(root, args)?;
    let dir = std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = Instant::now();
    let sink = start_sink(base, false)?;
    let sink_url = format!("http://127.0.0.1:{}/hook", sink.port);

    let d = Daemon::start(&bin, &dir.join("a"), &sink_url)?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = d.rss_kib();
    let http_single = ingest(&d, false, 1, "hs")?;
    let http_batch = ingest(&d, false, 500, "hb")?;
    let unix_single = ingest(&d, true, 1, "us")?;
    let unix_batch = ingest(&d, true, 500, "ub")?;

    // Latency at 1 000 events/s, one event per POST, to the sink.
    let before = sink.latencies.lock().expect("lock").len();
    let mut conn = d.tcp()?;
    let n = 3000u64;
    let t0 = Instant::now();
    for i in 0..n {
        let due = t0 + Duration::from_micros(i * 1000);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = base.elapsed().as_nanos() as u64;
        let body = format!(
            "{{\"v\":1,\"run\":\"lat\",\"seq\":{i},\"time\":\"2026-11-27T10:00:00Z\",\"type\":\"message\",\"title\":\"t\",\"text\":\"lat:{sent}:\"}}"
        );
        let (status, _) = conn.request("POST", "/v1/events", body.as_bytes())?;
        if status != 202 {
            bail!("latency post answered {status}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.latencies.lock().expect("lock").len() < before + n as usize {
        if Instant::now() > deadline {
            bail!(
                "the sink got only {} of {n} messages",
                sink.latencies.lock().expect("lock").len() - before
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lat: Vec<u64> = sink.latencies.lock().expect("lock")[before..].to_vec();
    lat.sort_unstable();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let after_rss = d.rss_kib();
    d.stop();

    // 100 000 deliveries queued for a notifier whose endpoint is down.
    let dead_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let b = Daemon::start(&bin, &dir.join("b"), &format!("http://127.0.0.1:{dead_port}/down"))?;
    let mut conn = b.tcp()?;
    for r in 0..200 {
        let mut body = String::new();
        for seq in 0..500 {
            body.push_str(&format!(
                "{{\"v\":1,\"run\":\"q{r}\",\"seq\":{seq},\"time\":\"2026-11-27T10:00:00Z\",\"type\":\"message\",\"title\":\"t\",\"text\":\"queued\"}}\n"
            ));
        }
        let (status, _) = conn.request("POST", "/v1/events", body.as_bytes())?;
        if status != 202 {
            bail!("queue post answered {status}");
        }
    }
    let queued = b.queued()?;
    std::thread::sleep(Duration::from_secs(2));
    let queued_rss = b.rss_kib();
    let outbox_bytes = std::fs::metadata(dir.join("b/state/outbox.redb")).map_or(0, |m| m.len());
    b.stop();

    // herald send --direct vs apprise, same message to the same sink.
    let cfg = dir.join("direct.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n\n[[notifier]]\nname = \"sink\"\ntype = \"webhook\"\nurl = \"{sink_url}\"\n",
            dir.join("c").display()
        ),
    )?;
    let mut herald_times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&cfg)
            .args(["send", "--direct", "--title", "bench", "--text", "hello from the bench"])
            .output()?;
        herald_times.push(t.elapsed());
        if !out.status.success() {
            bail!("herald send --direct failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let apprise = ensure_apprise(root)?;
    let mut apprise_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new(&apprise)
            .args(["-t", "bench", "-b", "hello from the bench"])
            .arg(format!("json://127.0.0.1:{}/hook", sink.port))
            .output()?;
        apprise_times.push(t.elapsed());
        if !out.status.success() {
            bail!("apprise failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let (h, a) = (median(herald_times), median(apprise_times));
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\nherald daemon benchmark ({CLIENTS} clients, {} s per ingest phase, profiling build)",
        PHASE.as_secs()
    );
    println!("  ingest HTTP, single events     {:>10.0} events/s", http_single);
    println!("  ingest HTTP, batches of 500    {:>10.0} events/s   (goal >= 50000)", http_batch);
    println!("  ingest Unix, single events     {:>10.0} events/s", unix_single);
    println!("  ingest Unix, batches of 500    {:>10.0} events/s   (goal >= 50000)", unix_batch);
    println!("  POST -> sink at 1k events/s    p50 {p50:.2} ms, p99 {p99:.2} ms   (goal p99 <= 20 ms)");
    println!("  RSS idle                       {:>7.1} MB   (goal <= 20 MB)", idle_rss as f64 / 1024.0);
    println!("  RSS after the ingest phases    {:>7.1} MB", after_rss as f64 / 1024.0);
    println!(
        "  RSS with {queued} queued jobs   {:>7.1} MB   (outbox file {:.1} MB)",
        queued_rss as f64 / 1024.0,
        outbox_bytes as f64 / 1e6
    );
    println!(
        "  herald send --direct {:.1} ms vs apprise {:.1} ms (median): {:.1}x faster   (goal >= 20x)",
        h.as_secs_f64() * 1e3,
        a.as_secs_f64() * 1e3,
        a.as_secs_f64() / h.as_secs_f64()
    );
    println!(
        "  sink requests: {} ({} notifications)",
        sink.requests.load(Ordering::Relaxed),
        sink.events.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The `profiling` build of `herald`, built first unless `args` hold `--no-build`.
pub(crate) fn profiling_herald(root: &Path, args: &[String]) -> Result<PathBuf> {
    if !args.iter().any(|a| a == "--no-build") {
        step("build herald (profiling)", cargo(&["build", "--profile", "profiling", "-p", "herald"]))?;
    }
    Ok(crate::target_dir(root).join("profiling/herald"))
}

/// `.venv/bin/apprise`, installing apprise 2.2 into the venv when missing.
fn ensure_apprise(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv");
    let apprise = venv.join("bin/apprise");
    if apprise.exists() {
        return Ok(apprise);
    }
    if !venv.join("bin/python").exists() {
        step("create .venv", {
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        })?;
    }
    step("pip install apprise", {
        let mut c = Command::new(venv.join("bin/python"));
        c.args(["-m", "pip", "install", "--quiet", "apprise==2.2.0"]);
        c
    })?;
    Ok(apprise)
}

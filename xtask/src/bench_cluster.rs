//! `cargo xtask bench cluster`: cluster mode's figures beside the single machine's, in one run, against the
//! `profiling` build of `herald` and three local `nats-server`s (JetStream, R3, routes between them).
//!
//! - throughput from edge ingest to the deliverer's webhook sink: 20 000 `batch_ended` events posted in
//!   batches of 500, timed until the sink has them all (goal >= 50 000/s);
//! - latency from POST to the sink at 1 000 events/s, one `message` per POST (goal p99 <= 50 ms);
//! - failover: `kill -9` of the leading deliverer, then the time until the sink gets the next event
//!   (goal <= 2x `lease`).
//!
//! The same throughput and latency are measured through a single-machine daemon first. Std only: a small
//! HTTP/1.1 client and sink. `nats-server` comes from `.venv/bin` (`cargo xtask setup`).

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, step};

/// The deliverers' lease.
const LEASE_S: u64 = 3;
/// Events in the throughput phase.
const EVENTS: u64 = 20_000;
/// Events per POST in the throughput phase.
const BATCH: u64 = 500;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A webhook sink counting requests and the latency of bodies carrying `lat:<ns since base>:`.
struct Sink {
    port: u16,
    requests: Arc<AtomicU64>,
    /// (arrival, latency) in ns since `base`.
    latencies: Arc<Mutex<Vec<(u64, u64)>>>,
}

fn start_sink(base: Instant) -> Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let (r, l) = (requests.clone(), latencies.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (r, l) = (r.clone(), l.clone());
            std::thread::spawn(move || {
                let _ = serve_sink(stream, base, &r, &l);
            });
        }
    });
    Ok(Sink { port, requests, latencies })
}

fn serve_sink(
    stream: TcpStream,
    base: Instant,
    requests: &AtomicU64,
    latencies: &Mutex<Vec<(u64, u64)>>,
) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let (_, body) = match read_message(&mut reader)? {
            Some(m) => m,
            None => return Ok(()),
        };
        let now = base.elapsed().as_nanos() as u64;
        requests.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&body);
        if let Some(rest) = text.split("lat:").nth(1)
            && let Some(sent) = rest.split(':').next().and_then(|s| s.parse::<u64>().ok())
        {
            latencies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((now, now.saturating_sub(sent)));
        }
        writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    }
}

/// One HTTP/1.1 message: its first line and body (`None` at the end of the stream).
fn read_message(reader: &mut impl std::io::BufRead) -> Result<Option<(String, Vec<u8>)>> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
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
    Ok(Some((first, body)))
}

/// A keep-alive client of one daemon.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        Ok(Client { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    fn post(&mut self, body: &[u8]) -> Result<()> {
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        let (first, reply) = read_message(&mut self.reader)?.context("the daemon closed the connection")?;
        if !first.contains(" 202 ") {
            bail!("POST answered {}: {}", first.trim(), String::from_utf8_lossy(&reply));
        }
        Ok(())
    }
}

/// A child process (nats-server or herald) stopped with SIGKILL when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `herald serve` with `config` in `dir`, logging to `dir/log`.
fn herald(bin: &Path, dir: &Path, config: &str) -> Result<Proc> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("herald.toml");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join("log"))?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start herald serve")?;
    Ok(Proc(child))
}

fn sink_notifier(sink: &Sink) -> String {
    format!(
        "[[notifier]]\nname = \"sink\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\nevents = [\"batch_ended\", \"message\"]\n",
        sink.port
    )
}

/// `EVENTS` batch_ended events in POSTs of `BATCH`, then the time until the sink has them: events/s.
fn throughput(port: u16, sink: &Sink, run: &str) -> Result<f64> {
    let before = sink.requests.load(Ordering::Relaxed);
    let mut client = Client::connect(port)?;
    let t0 = Instant::now();
    for first in (0..EVENTS).step_by(BATCH as usize) {
        let mut body = String::new();
        for seq in first..first + BATCH {
            body.push_str(&format!(
                "{{\"v\":1,\"run\":\"{run}\",\"seq\":{seq},\"time\":\"2026-11-30T10:00:00Z\",\"type\":\"batch_ended\",\"epoch\":0,\"batch\":{seq},\"n_batches\":1000000,\"loss\":0.5,\"smooth_loss\":0.4,\"lr\":0.001}}\n"
            ));
        }
        client.post(body.as_bytes())?;
    }
    let deadline = t0 + Duration::from_secs(300);
    while sink.requests.load(Ordering::Relaxed) < before + EVENTS {
        if Instant::now() > deadline {
            bail!("the sink got {} of {EVENTS} events", sink.requests.load(Ordering::Relaxed) - before);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(EVENTS as f64 / t0.elapsed().as_secs_f64())
}

fn message(run: &str, seq: u64, sent_ns: u64) -> String {
    format!(
        "{{\"v\":1,\"run\":\"{run}\",\"seq\":{seq},\"time\":\"2026-11-30T10:00:00Z\",\"type\":\"message\",\"title\":\"t\",\"text\":\"lat:{sent_ns}:\"}}"
    )
}

/// 3 000 messages at 1 000/s, one per POST: (p50, p99) in ms from POST to the sink.
fn latency(port: u16, sink: &Sink, base: Instant, run: &str) -> Result<(f64, f64)> {
    let before = sink.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
    let mut client = Client::connect(port)?;
    let n = 3000u64;
    let t0 = Instant::now();
    for i in 0..n {
        if let Some(wait) = (t0 + Duration::from_micros(i * 1000)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        client.post(message(run, i, base.elapsed().as_nanos() as u64).as_bytes())?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = sink.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() - before;
        if got as u64 >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("the sink got {got} of {n} latency probes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ns: Vec<u64> = sink.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[before..]
        .iter()
        .map(|(_, l)| *l)
        .collect();
    ns.sort_unstable();
    let pct = |p: f64| ns[((ns.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
    Ok((pct(0.5), pct(0.99)))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if !args.iter().any(|a| a == "--no-build") {
        step("build herald (profiling)", cargo(&["build", "--profile", "profiling", "-p", "herald"]))?;
    }
    crate::nats::ensure(root)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("profiling/herald");
    let dir = std::env::temp_dir().join(format!("herald-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = Instant::now();
    let sink = start_sink(base)?;

    // The single machine, for comparison.
    let single_port = free_port()?;
    let single_dir = dir.join("single");
    let single = herald(
        &bin,
        &single_dir,
        &format!(
            "[daemon]\nlisten = \"127.0.0.1:{single_port}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\n\n{}",
            single_dir.display(),
            sink_notifier(&sink)
        ),
    )?;
    wait_port(single_port, "the single daemon")?;
    let single_tp = throughput(single_port, &sink, "single-tp")?;
    let (single_p50, single_p99) = latency(single_port, &sink, base, "single-lat")?;
    drop(single);

    // Three NATS servers, one edge, two deliverers.
    let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
    let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats://127.0.0.1:{c}")).collect();
    let mut servers = Vec::new();
    for (i, (port, cport)) in ports.iter().enumerate() {
        let store = dir.join(format!("nats{i}"));
        std::fs::create_dir_all(&store)?;
        let child = Command::new(crate::nats::server(root))
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-n", &format!("n{i}"), "-sd"])
            .arg(&store)
            .args(["--cluster_name", "bench", "--cluster", &format!("nats://127.0.0.1:{cport}"), "--routes"])
            .arg(routes.join(","))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server")?;
        servers.push(Proc(child));
    }
    for (port, _) in &ports {
        wait_port(*port, "nats-server")?;
    }
    let urls: Vec<String> = ports.iter().map(|(p, _)| format!("\"nats://127.0.0.1:{p}\"")).collect();
    let cluster = |role: &str| {
        format!("[cluster]\nservers = [{}]\nrole = \"{role}\"\nlease = \"{LEASE_S}s\"\n", urls.join(", "))
    };
    let mut deliverers = Vec::new();
    for i in 0..2 {
        let d = dir.join(format!("deliver{i}"));
        let config = format!(
            "[daemon]\nlisten = \"127.0.0.1:{}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\ndrain_timeout = \"1s\"\n\n{}\n{}",
            free_port()?,
            d.display(),
            cluster("deliver"),
            sink_notifier(&sink)
        );
        deliverers.push((herald(&bin, &d, &config)?, d));
    }
    let edge_port = free_port()?;
    let edge_dir = dir.join("edge");
    let edge_config = format!(
        "[daemon]\nlisten = \"127.0.0.1:{edge_port}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\n\n{}",
        edge_dir.display(),
        cluster("edge")
    );
    let _edge = herald(&bin, &edge_dir, &edge_config)?;
    wait_port(edge_port, "the edge")?;
    // Warm up: the stream, the consumer and a leader.
    let mut warm = Client::connect(edge_port)?;
    warm.post(message("warm", 0, base.elapsed().as_nanos() as u64).as_bytes())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.requests.load(Ordering::Relaxed) == 0 || leader(&deliverers).is_none() {
        if Instant::now() > deadline {
            bail!("no leader delivered the warm-up event");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cluster_tp = throughput(edge_port, &sink, "cluster-tp")?;
    let (cluster_p50, cluster_p99) = latency(edge_port, &sink, base, "cluster-lat")?;

    // Failover: kill -9 the leader, keep posting every 10 ms, time the first delivery sent after the kill.
    let leading = leader(&deliverers).context("no leader")?;
    let killed_ns = base.elapsed().as_nanos() as u64;
    let _ = deliverers[leading].0.0.kill();
    let mut client = Client::connect(edge_port)?;
    let deadline = Instant::now() + Duration::from_secs(10 * LEASE_S);
    let mut seq = 0;
    let failover = loop {
        client.post(message("failover", seq, base.elapsed().as_nanos() as u64).as_bytes())?;
        seq += 1;
        let first = sink
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(at, lat)| at.saturating_sub(*lat) >= killed_ns)
            .map(|(at, _)| *at)
            .min();
        if let Some(at) = first {
            break Duration::from_nanos(at - killed_ns);
        }
        if Instant::now() > deadline {
            bail!("no delivery within {}s of the leader's kill", 10 * LEASE_S);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(deliverers);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);

    println!("| Measure | single machine | cluster (3 NATS, R3) | goal |");
    println!("|---|---|---|---|");
    println!(
        "| edge ingest to sink, batches of {BATCH} | {single_tp:.0} events/s | {cluster_tp:.0} events/s | >= 50 000 |"
    );
    println!(
        "| POST to sink at 1 000 events/s | p50 {single_p50:.1} ms, p99 {single_p99:.1} ms | p50 {cluster_p50:.1} ms, p99 {cluster_p99:.1} ms | p99 <= 50 ms |"
    );
    println!(
        "| failover, kill -9 of the leader to the next delivery | | {:.2} s (lease {LEASE_S} s) | <= {} s |",
        failover.as_secs_f64(),
        2 * LEASE_S
    );
    Ok(())
}

/// The index of the deliverer that took the lease last (its log says so), if one did.
fn leader(deliverers: &[(Proc, PathBuf)]) -> Option<usize> {
    deliverers
        .iter()
        .enumerate()
        .filter_map(|(i, (_, dir))| {
            let log = std::fs::read_to_string(dir.join("log")).ok()?;
            let at = log.rfind("took the lease")?;
            let lost = log.rfind("no longer the leader").is_some_and(|l| l > at);
            (!lost).then_some(i)
        })
        .next()
}

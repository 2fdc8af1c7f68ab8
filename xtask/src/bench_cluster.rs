//! `cargo xtask bench cluster`: cluster mode's figures beside the single machine's, in one run, against the
//! `profiling` build of `herald` and three local `nats-server`s (JetStream, R3, routes between them).
//!
//! - throughput from edge ingest to the deliverer's webhook sink: 100 000 `batch_ended` events posted in
//!   batches of 500, timed until the sink has them all (goal >= 50 000/s);
//! - latency from POST to the sink at 1 000 events/s, one `message` per POST (goal p99 <= 50 ms);
//! - failover: `kill -9` of the leading deliverer, then the time until the sink gets the next event
//!   (goal <= 2x `lease`).
//!
//! The same throughput and latency are measured through a single-machine daemon first. Each is measured twice,
//! with the webhook's `batch = 1` (one POST per event, the default) and `batch = 500` (up to 500 events per
//! POST, a JSON array); failover with `batch = 500`. Std only: a small HTTP/1.1 client and sink.
//! `nats-server` comes from `.venv/bin` (`cargo xtask setup`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::daemon::{Conn, Sink, lat_marks, percentile, profiling_herald, start_sink};

/// The deliverers' lease.
const LEASE_S: u64 = 3;
/// Events in the throughput phase: enough that filling and draining the pipeline (tens of ms) weighs
/// little beside the steady rate.
const EVENTS: u64 = 100_000;
/// Events per POST in the throughput phase.
const BATCH: u64 = 500;
/// The webhook's `batch` values compared.
const WEBHOOK_BATCHES: [usize; 2] = [1, 500];

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// (arrival, latency) in ns since `base` of every `lat:<ns since base>:` marker the sink got (a batch body
/// holds several), from the `from`-th body on.
fn probes(sink: &Sink, from: usize) -> Vec<(u64, u64)> {
    let bodies = sink.bodies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    bodies
        .get(from..)
        .unwrap_or_default()
        .iter()
        .flat_map(|(at, body)| {
            let text = String::from_utf8_lossy(body);
            lat_marks(&text).map(|sent| (*at, at.saturating_sub(sent))).collect::<Vec<_>>()
        })
        .collect()
}

fn bodies(sink: &Sink) -> usize {
    sink.bodies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
}

/// Whether a body from the `from`-th on mentions `run`.
fn delivered(sink: &Sink, from: usize, run: &str) -> bool {
    let needle = format!("\"run\":\"{run}\"");
    let bodies = sink.bodies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    bodies.get(from..).unwrap_or_default().iter().any(|(_, b)| String::from_utf8_lossy(b).contains(&needle))
}

/// A keep-alive client of one daemon.
struct Client(Conn<TcpStream>);

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        Ok(Client(Conn::new(s)))
    }

    fn post(&mut self, body: &[u8]) -> Result<()> {
        let (status, reply) = self.0.request("POST", "/v1/events", body)?;
        if status != 202 {
            bail!("POST answered {status}: {}", String::from_utf8_lossy(&reply));
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

fn sink_notifier(sink: &Sink, batch: usize) -> String {
    format!(
        "[[notifier]]\nname = \"sink\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\nbatch = {batch}\nevents = [\"batch_ended\", \"message\"]\n",
        sink.port
    )
}

/// `EVENTS` batch_ended events in POSTs of `BATCH`, then the time until the sink has them: events/s, and the
/// webhook POSTs the sink got meanwhile.
fn throughput(port: u16, sink: &Sink, run: &str) -> Result<(f64, u64)> {
    let posts = sink.requests.load(Ordering::Relaxed);
    let before = sink.events.load(Ordering::Relaxed);
    // The bodies are made before the clock starts: what is timed is the daemons' work, not this client's.
    let bodies: Vec<String> = (0..EVENTS)
        .step_by(BATCH as usize)
        .map(|first| {
            (first..first + BATCH)
                .map(|seq| format!(
                    "{{\"v\":1,\"run\":\"{run}\",\"seq\":{seq},\"time\":\"2026-11-30T10:00:00Z\",\"type\":\"batch_ended\",\"epoch\":0,\"batch\":{seq},\"n_batches\":1000000,\"loss\":0.5,\"smooth_loss\":0.4,\"lr\":0.001}}\n"
                ))
                .collect()
        })
        .collect();
    let mut client = Client::connect(port)?;
    let t0 = Instant::now();
    for body in &bodies {
        client.post(body.as_bytes())?;
    }
    let deadline = t0 + Duration::from_secs(300);
    while sink.events.load(Ordering::Relaxed) < before + EVENTS {
        if Instant::now() > deadline {
            bail!("the sink got {} of {EVENTS} events", sink.events.load(Ordering::Relaxed) - before);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((EVENTS as f64 / t0.elapsed().as_secs_f64(), sink.requests.load(Ordering::Relaxed) - posts))
}

fn message(run: &str, seq: u64, sent_ns: u64) -> String {
    format!(
        "{{\"v\":1,\"run\":\"{run}\",\"seq\":{seq},\"time\":\"2026-11-30T10:00:00Z\",\"type\":\"message\",\"title\":\"t\",\"text\":\"lat:{sent_ns}:\"}}"
    )
}

/// 3 000 messages at 1 000/s, one per POST: (p50, p99) in ms from POST to the sink.
fn latency(port: u16, sink: &Sink, base: Instant, run: &str) -> Result<(f64, f64)> {
    let before = bodies(sink);
    let before_events = sink.events.load(Ordering::Relaxed);
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
        let got = sink.events.load(Ordering::Relaxed) - before_events;
        if got >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("the sink got {got} of {n} latency probes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ns: Vec<u64> = probes(sink, before).into_iter().map(|(_, l)| l).collect();
    ns.sort_unstable();
    Ok((percentile(&ns, 0.5), percentile(&ns, 0.99)))
}

/// Throughput and latency through a single-machine daemon whose webhook has `batch`.
fn single(
    bin: &Path,
    dir: &Path,
    sink: &Sink,
    base: Instant,
    batch: usize,
) -> Result<((f64, u64), f64, f64)> {
    let port = free_port()?;
    let dir = dir.join(format!("single-{batch}"));
    let daemon = herald(
        bin,
        &dir,
        &format!(
            "[daemon]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\n\n{}",
            dir.display(),
            sink_notifier(sink, batch)
        ),
    )?;
    wait_port(port, "the single daemon")?;
    let tp = throughput(port, sink, &format!("single-tp-{batch}"))?;
    let (p50, p99) = latency(port, sink, base, &format!("single-lat-{batch}"))?;
    drop(daemon);
    Ok((tp, p50, p99))
}

/// Two deliverers whose webhook has `batch`, in `dir/deliver-<batch>-<i>`, once one of them delivered a
/// warm-up event posted to the edge.
fn deliverers(
    bin: &Path,
    dir: &Path,
    cluster: &str,
    sink: &Sink,
    base: Instant,
    edge_port: u16,
    batch: usize,
) -> Result<Vec<(Proc, PathBuf)>> {
    let mut deliverers = Vec::new();
    for i in 0..2 {
        let d = dir.join(format!("deliver-{batch}-{i}"));
        let config = format!(
            "[daemon]\nlisten = \"127.0.0.1:{}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\ndrain_timeout = \"1s\"\n\n{cluster}\n{}",
            free_port()?,
            d.display(),
            sink_notifier(sink, batch)
        );
        deliverers.push((herald(bin, &d, &config)?, d));
    }
    // Warm up: the stream, the consumer and a leader.
    let from = bodies(sink);
    let run = format!("warm-{batch}");
    let mut warm = Client::connect(edge_port)?;
    warm.post(message(&run, 0, base.elapsed().as_nanos() as u64).as_bytes())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !delivered(sink, from, &run) || leader(&deliverers).is_none() {
        if Instant::now() > deadline {
            bail!("no leader delivered the warm-up event (webhook batch = {batch})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(deliverers)
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let bin = profiling_herald(root, args)?;
    crate::nats::ensure(root)?;
    let dir = std::env::temp_dir().join(format!("herald-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = Instant::now();
    let sink = start_sink(base, true)?;

    // The single machine, for comparison.
    let mut single_figures = Vec::new();
    for batch in WEBHOOK_BATCHES {
        single_figures.push(single(&bin, &dir, &sink, base, batch)?);
    }

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
    let edge_port = free_port()?;
    let edge_dir = dir.join("edge");
    let edge_config = format!(
        "[daemon]\nlisten = \"127.0.0.1:{edge_port}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\n\n{}",
        edge_dir.display(),
        cluster("edge")
    );
    let _edge = herald(&bin, &edge_dir, &edge_config)?;
    wait_port(edge_port, "the edge")?;
    let mut cluster_figures = Vec::new();
    let mut last = Vec::new();
    for batch in WEBHOOK_BATCHES {
        // The previous pair stops first (its lease lapses), so that one pair at a time delivers.
        drop(std::mem::take(&mut last));
        let pair = deliverers(&bin, &dir, &cluster("deliver"), &sink, base, edge_port, batch)?;
        let tp = throughput(edge_port, &sink, &format!("cluster-tp-{batch}"))?;
        let (p50, p99) = latency(edge_port, &sink, base, &format!("cluster-lat-{batch}"))?;
        cluster_figures.push((tp, p50, p99));
        last = pair;
    }
    let mut deliverers = last;

    // Failover: kill -9 the leader, keep posting every 10 ms, time the first delivery sent after the kill.
    let leading = leader(&deliverers).context("no leader")?;
    let failover_from = bodies(&sink);
    let killed_ns = base.elapsed().as_nanos() as u64;
    let _ = deliverers[leading].0.0.kill();
    let mut client = Client::connect(edge_port)?;
    let deadline = Instant::now() + Duration::from_secs(10 * LEASE_S);
    let mut seq = 0;
    let failover = loop {
        client.post(message("failover", seq, base.elapsed().as_nanos() as u64).as_bytes())?;
        seq += 1;
        let first = probes(&sink, failover_from)
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

    println!("| Measure | webhook | single machine | cluster (3 NATS, R3) | goal |");
    println!("|---|---|---|---|---|");
    for (batch, ((s_tp, _, _), (c_tp, _, _))) in
        WEBHOOK_BATCHES.iter().zip(single_figures.iter().zip(&cluster_figures))
    {
        println!(
            "| edge ingest to sink, batches of {BATCH} | batch = {batch} | {:.0} events/s ({} POSTs) | {:.0} events/s ({} POSTs) | >= 50 000 |",
            s_tp.0, s_tp.1, c_tp.0, c_tp.1
        );
    }
    for (batch, ((_, s50, s99), (_, c50, c99))) in
        WEBHOOK_BATCHES.iter().zip(single_figures.iter().zip(&cluster_figures))
    {
        println!(
            "| POST to sink at 1 000 events/s | batch = {batch} | p50 {s50:.1} ms, p99 {s99:.1} ms | p50 {c50:.1} ms, p99 {c99:.1} ms | p99 <= 50 ms |"
        );
    }
    println!(
        "| failover, kill -9 of the leader to the next delivery | batch = {} | | {:.2} s (lease {LEASE_S} s) | <= {} s |",
        WEBHOOK_BATCHES[WEBHOOK_BATCHES.len() - 1],
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

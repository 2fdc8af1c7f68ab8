//! `cargo xtask bench ranks`: distributed jobs' figures (issue 13), against the `profiling` build of `herald`.
//!
//! 64 simulated ranks of one job, one thread and one keep-alive HTTP connection each, post an `epoch_ended`
//! every second to one `herald serve` with a webhook notifier (a local sink). Each second the 63 other ranks
//! post together and rank 0 posts last, once the others' requests are on their way, as when a job's ranks end
//! an epoch together. Measured:
//!
//! - the daemon's CPU use over the epochs (utime + stime from `/proc`);
//! - the latency from the last rank's `epoch_ended` (rank 0's) to the job's notification at the sink (p50, p99,
//!   max; goal p99 <= 100 ms); rank 0's events are the job's stream, the other ranks' never reach the sink;
//! - the latency from the last rank's `run_finished` to the job's end (the `run_finished` the daemon makes);
//! - the Python client's cost per event on a non-zero rank (`clients/python/bench/rank_cost.py`, against the
//!   same daemon): the call on the training thread, and the process's CPU per event with the sender thread.
//!
//! `args`: `--no-build` (use the profiling binary already built), `--epochs N` (default 30).

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::daemon::{Conn, Daemon, percentile, profiling_herald, start_sink};

/// Ranks of the simulated job.
const RANKS: usize = 64;
/// Sequence numbers of daemon-made events start here.
const MADE: u64 = 1 << 48;

fn post(conn: &mut Conn<TcpStream>, event: &serde_json::Value) -> Result<()> {
    let (status, body) = conn.request("POST", "/v1/events", event.to_string().as_bytes())?;
    if status != 202 {
        bail!("ingest answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// The daemon's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: u32, tick: f64) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("a stat line")?.1.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11..13).context("utime and stime")?.iter().filter_map(|f| f.parse::<u64>().ok()).sum();
    Ok(Duration::from_secs_f64(ticks as f64 / tick))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let bin = profiling_herald(root, args)?;
    let epochs: u64 = args
        .iter()
        .position(|a| a == "--epochs")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse())
        .transpose()
        .context("--epochs takes a number")?
        .unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("herald-bench-ranks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = Instant::now();
    let sink = start_sink(base, true)?;
    let notifier = format!(
        "[[notifier]]\nname = \"sink\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\n",
        sink.port
    );
    let d = Daemon::start_with(&bin, &dir, "stall_after = \"60s\"", &notifier)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    let run_id = |rank: usize| format!("bench-rank-{rank}");

    // One connection per rank; every rank starts.
    let mut conns = Vec::new();
    for rank in 0..RANKS {
        let mut c = d.tcp()?;
        post(
            &mut c,
            &serde_json::json!({"v": 1, "run": run_id(rank), "seq": 0, "time": "2026-11-30T06:00:00Z",
                "type": "run_started", "name": "bench-ranks", "host": host, "pid": std::process::id(),
                "rank": rank, "job": "bench-job", "world_size": RANKS, "n_epochs": epochs,
                "batches_per_epoch": 100, "metric_names": []}),
        )?;
        conns.push(c);
    }

    // Each second: ranks 1..63 post together, rank 0 once the others have sent; then each rank its end.
    let tick = clock_ticks();
    let cpu0 = cpu_time(d.child.id(), tick)?;
    let t0 = Instant::now();
    let barrier = Arc::new(Barrier::new(RANKS));
    let sending = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for (rank, mut conn) in conns.into_iter().enumerate() {
        let (barrier, sending, run) = (barrier.clone(), sending.clone(), run_id(rank));
        threads.push(std::thread::spawn(move || -> Result<(Vec<u64>, Vec<u64>)> {
            let (mut sent, mut answered) = (Vec::new(), Vec::new());
            for e in 0..=epochs {
                if let Some(wait) = (t0 + Duration::from_secs(e + 1)).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                barrier.wait();
                if rank == 0 {
                    while sending.load(Ordering::Acquire) < (RANKS - 1) * (e as usize + 1) {
                        std::hint::spin_loop();
                    }
                } else {
                    sending.fetch_add(1, Ordering::Release);
                }
                let event = if e < epochs {
                    serde_json::json!({"v": 1, "run": run, "seq": e + 1, "time": "2026-11-30T06:00:01Z",
                        "type": "epoch_ended", "epoch": e, "n_epochs": epochs, "train_loss": 1.0 / (e as f64 + 1.0),
                        "elapsed_s": 1.0 + 0.001 * rank as f64})
                } else {
                    serde_json::json!({"v": 1, "run": run, "seq": e + 1, "time": "2026-11-30T06:00:02Z",
                        "type": "run_finished", "status": "completed", "reason": "done", "duration_s": epochs})
                };
                sent.push(base.elapsed().as_nanos() as u64);
                post(&mut conn, &event)?;
                answered.push(base.elapsed().as_nanos() as u64);
            }
            Ok((sent, answered))
        }));
    }
    let mut sent_by_rank = Vec::new();
    for t in threads {
        sent_by_rank.push(t.join().map_err(|_| anyhow::anyhow!("a rank's thread panicked"))??);
    }
    let wall = t0.elapsed();
    let cpu = cpu_time(d.child.id(), tick)?.saturating_sub(cpu0);
    let (zero_sent, zero_answered) = &sent_by_rank[0];
    // The share of the latency spent before the ingest is answered: the writer's group commit.
    let mut stored: Vec<u64> = zero_sent
        .iter()
        .zip(zero_answered)
        .take(epochs as usize)
        .map(|(s, a)| a.saturating_sub(*s))
        .collect();
    stored.sort_unstable();

    // Rank 0's epochs and the job's end at the sink.
    let arrivals = |kind: &str| -> Vec<(String, u64, u64)> {
        let bodies = sink.bodies.lock().expect("body lock");
        bodies
            .iter()
            .filter_map(|(at, body)| {
                let v: serde_json::Value = serde_json::from_slice(body).ok()?;
                if v["type"] != kind {
                    return None;
                }
                Some((v["run"].as_str()?.to_owned(), v["seq"].as_u64()?, *at))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (epochs_in, end) = loop {
        let epochs_in = arrivals("epoch_ended");
        let end =
            arrivals("run_finished").into_iter().find(|(run, seq, _)| *run == run_id(0) && *seq >= MADE);
        if epochs_in.len() >= epochs as usize && end.is_some() || Instant::now() > deadline {
            break (epochs_in, end);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let others = epochs_in.iter().filter(|(run, _, _)| *run != run_id(0)).count();
    let mut lat: Vec<u64> = epochs_in
        .iter()
        .filter(|(run, _, _)| *run == run_id(0))
        .filter_map(|(_, seq, at)| Some(at.saturating_sub(*zero_sent.get(usize::try_from(*seq).ok()? - 1)?)))
        .collect();
    if lat.len() < epochs as usize {
        bail!("the sink got {} of rank 0's {epochs} epochs", lat.len());
    }
    lat.sort_unstable();
    let end_ms = end.map(|(_, _, at)| at.saturating_sub(zero_sent[epochs as usize]) as f64 / 1e6);

    // The Python client on a non-zero rank, against the same daemon.
    let python = root.join(".venv/bin/python");
    let client = if python.exists() {
        let out = Command::new(&python)
            .arg(root.join("clients/python/bench/rank_cost.py"))
            .arg(format!("http://127.0.0.1:{}", d.port))
            .env("PYTHONPATH", root.join("clients/python/src"))
            .env("HERALD_SPOOL_DIR", dir.join("spool"))
            .output()
            .context("cannot run clients/python/bench/rank_cost.py")?;
        if !out.status.success() {
            bail!("rank_cost.py failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        "  (no .venv/bin/python: run `cargo xtask setup`)\n".to_owned()
    };
    d.stop();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\nherald distributed-job benchmark ({RANKS} ranks, one epoch a second each, {epochs} epochs, profiling build)"
    );
    println!(
        "  daemon CPU                                   {:>6.1}% of one core over {:.1} s",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  last rank's epoch_ended -> job notification  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms   (goal p99 <= 100 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    println!(
        "    of which rank 0's POST until answered (stored)  p50 {:.1} ms, p99 {:.1} ms",
        percentile(&stored, 0.5),
        percentile(&stored, 0.99)
    );
    match end_ms {
        Some(ms) => println!("  last rank's run_finished -> job's end        {ms:.1} ms"),
        None => println!("  last rank's run_finished -> job's end        not seen within 30 s"),
    }
    println!("  epoch_ended of other ranks at the sink       {others}   (expected 0: one stream per job)");
    println!("  Python client on rank 1 of a job:");
    print!("{client}");
    Ok(())
}

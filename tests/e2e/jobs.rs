//! Distributed jobs end to end: a real `torchrun --nproc-per-node 3` (gloo on CPU) running a plain loop with
//! `herald.run` on every rank (`jobs/train_ddp.py`), against the real `herald serve` with the fake Telegram
//! Bot API or a webhook. A healthy job is one live message edited per epoch and one finish message; a rank
//! that hangs is named by one `rank_stalled`; a rank killed with `kill -9` by a `rank_lost` with its host; a
//! rank twice as slow by exactly one `rank_slow`; and `herald stop JOB` ends all three ranks. The healthy job,
//! the stop, `kill -9` and a hang run again through Lightning's DDP strategy (`jobs/train_lightning.py`,
//! `HeraldCallback`), where a hung rank holds the others in the gradient all-reduce, so the whole job stalls
//! (a slow rank slows every rank alike there, so no rank is slower than the median).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use herald_fakes::telegram::Message;
use serde_json::{Value, json};

use crate::daemon::{Daemon, Hit, Receiver, Reply, config_text, free_port, wait_for};
use crate::telegram::{self, Bot};

/// Sequence numbers of daemon-made events start here.
const MADE: u64 = 1 << 48;
/// Three Python processes importing torch on a shared machine start slowly.
const LONG: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").to_path_buf()
}

/// The machine's host name as the daemon and the Python client see it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// One `torchrun` of `jobs/train_ddp.py`; on drop, torchrun and every rank are ended.
struct Job {
    child: Child,
    dir: PathBuf,
}

impl Job {
    fn start(dir: &Path, daemon_port: u16, mode: &str, epochs: u32, steps: u32, step_s: f64) -> Job {
        Job::start_script("train_ddp.py", dir, daemon_port, mode, epochs, steps, step_s)
    }

    /// The same with another script of `tests/e2e/jobs/` (`mode` names the job's folder for one without modes).
    fn start_script(
        script: &str,
        dir: &Path,
        daemon_port: u16,
        mode: &str,
        epochs: u32,
        steps: u32,
        step_s: f64,
    ) -> Job {
        let root = root();
        let torchrun = root.join(".venv/bin/torchrun");
        assert!(
            torchrun.exists(),
            "{} is missing: run `cargo xtask setup` (it installs torch)",
            torchrun.display()
        );
        let dir = dir.join(format!("job-{mode}"));
        std::fs::create_dir_all(&dir).expect("the job's folder");
        let log = std::fs::File::create(dir.join("torchrun.log")).expect("the job's log");
        let child = Command::new(&torchrun)
            .args(["--nproc-per-node", "3", "--master-port", &free_port().to_string()])
            .arg(root.join("tests/e2e/jobs").join(script))
            .current_dir(&dir)
            .env("HERALD_URL", format!("http://127.0.0.1:{daemon_port}"))
            .env("HERALD_SPOOL_DIR", dir.join("spool"))
            .env("JOB_DIR", &dir)
            .env("JOB_MODE", mode)
            .env("JOB_EPOCHS", epochs.to_string())
            .env("JOB_STEPS", steps.to_string())
            .env("JOB_STEP_S", step_s.to_string())
            .env("OMP_NUM_THREADS", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONPATH", root.join("clients/python/src"))
            .env_remove("HERALD_JOB")
            .env_remove("HERALD_TOKEN")
            .env_remove("TORCHELASTIC_RUN_ID")
            .env_remove("SLURM_JOB_ID")
            .env_remove("RANK")
            .env_remove("LOCAL_RANK")
            .env_remove("WORLD_SIZE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("torchrun starts");
        Job { child, dir }
    }

    /// Rank `rank`'s pid, once it wrote it.
    fn pid(&self, rank: u32) -> u32 {
        let path = self.dir.join(format!("rank{rank}.pid"));
        wait_for(&format!("rank {rank}'s pid file"), LONG, || {
            std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok())
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("torchrun.log")).unwrap_or_default()
    }

    /// Wait for torchrun to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let log = self.dir.join("torchrun.log");
        let child = &mut self.child;
        wait_for(&format!("torchrun to exit (log: {})", log.display()), limit, || {
            child.try_wait().ok().flatten()
        })
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).stderr(Stdio::null()).status();
}

impl Drop for Job {
    fn drop(&mut self) {
        // torchrun starts each rank in its own session: end the ranks themselves too.
        for rank in 0..3 {
            if let Some(pid) = std::fs::read_to_string(self.dir.join(format!("rank{rank}.pid")))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                signal(pid, "-9");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook, a daemon posting to it with `extra_daemon` keys, and a temp folder.
fn webhook_daemon(extra_daemon: &str) -> (Receiver, Daemon, tempfile::TempDir) {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let extra_notifier = r#"events = ["run_started", "epoch_ended", "run_finished", "run_failed", "run_stalled", "run_lost", "message", "rank_stalled", "rank_lost", "rank_failed", "rank_slow", "ranks_missing"]"#;
    let d = Daemon::start(
        dir.path(),
        port,
        &config_text(dir.path(), port, hook.port, extra_daemon, extra_notifier),
    );
    (hook, d, dir)
}

fn of_kind(hits: &[Hit], kind: &str) -> Vec<Hit> {
    hits.iter().filter(|h| h.kind == kind).cloned().collect()
}

/// Wait until the webhook got an event of `kind` that `check` accepts; returns everything delivered by then.
fn until(hook: &Receiver, job: &Job, kind: &str, check: impl Fn(&Value) -> bool) -> Vec<Hit> {
    wait_for(&format!("a `{kind}` at the webhook (torchrun log: {})", job.dir.display()), LONG, || {
        let hits = hook.delivered();
        hits.iter().any(|h| h.kind == kind && check(&h.body["event"])).then_some(hits)
    })
}

/// The job's end: the `run_finished` the daemon made once every rank ended.
fn job_end(hits: &[Hit]) -> Vec<Hit> {
    of_kind(hits, "run_finished").into_iter().filter(|h| h.seq >= MADE).collect()
}

#[test]
fn a_hung_rank_is_named_by_one_rank_stalled_not_one_report_per_rank() {
    let (hook, d, dir) = webhook_daemon(r#"stall_after = "3s""#);
    let job = Job::start(dir.path(), d.port, "hang", 3, 4, 0.05);
    let hits = until(&hook, &job, "rank_stalled", |_| true);
    let stalled = of_kind(&hits, "rank_stalled");
    let e = &stalled[0].body["event"];
    let ranks = e["ranks"].as_array().expect("ranks");
    assert_eq!(ranks.len(), 1, "only rank 2 is silent: {e}");
    assert_eq!(ranks[0]["rank"], 2, "{e}");
    assert_eq!(ranks[0]["host"], hostname(), "{e}");
    assert_eq!(ranks[0]["epoch"], 1, "it hung in its second epoch: {e}");
    assert_eq!(e["all"], false, "{e}");
    assert!(e["job"].as_str().is_some_and(|j| !j.is_empty()), "{e}");
    assert!(stalled[0].body["text"].as_str().is_some_and(|t| t.contains("rank 2 on")), "{}", stalled[0].body);
    // Ranks 0 and 1 finished; the job has not (rank 2 never ends), and nobody else was called stalled. A few
    // more looks of the run watch (every 0.75 s here) add nothing.
    std::thread::sleep(Duration::from_secs(3));
    let hits = hook.delivered();
    assert_eq!(of_kind(&hits, "rank_stalled").len(), 1, "one event per job");
    assert!(of_kind(&hits, "run_stalled").is_empty() && job_end(&hits).is_empty());
    assert_eq!(of_kind(&hits, "run_started").len(), 1, "rank 0's start only: {:?}", job.log());
    drop(job);
}

#[test]
fn a_hung_lightning_rank_stalls_the_whole_job_named_by_rank_stalled() {
    let (hook, d, dir) = webhook_daemon(r#"stall_after = "3s""#);
    let job = Job::start_script("train_lightning.py", dir.path(), d.port, "hang", 3, 4, 0.05);
    // Under DDP the other ranks wait for rank 2 in the next gradient all-reduce: the whole job is hung. The
    // ranks fall silent a little apart, so a first event may name some of them before one names all three.
    let hits = until(&hook, &job, "rank_stalled", |e| e["all"] == true);
    let stalled = of_kind(&hits, "rank_stalled");
    assert!(stalled.len() <= 2, "one event per job, or two as the ranks fall silent: {stalled:?}");
    let e = &stalled.last().expect("a rank_stalled").body["event"];
    let ranks: Vec<u64> =
        e["ranks"].as_array().expect("ranks").iter().filter_map(|r| r["rank"].as_u64()).collect();
    assert_eq!(ranks, [0, 1, 2], "{e}");
    let two = e["ranks"].as_array().and_then(|r| r.iter().find(|r| r["rank"] == 2)).expect("rank 2");
    assert_eq!((two["host"].as_str(), two["epoch"].as_u64()), (Some(hostname().as_str()), Some(1)), "{e}");
    assert!(of_kind(&hits, "run_stalled").is_empty() && job_end(&hits).is_empty());
    drop(job);
}

#[test]
fn a_rank_killed_with_kill_9_is_named_by_rank_lost_with_its_host() {
    rank_killed_is_named("train_ddp.py");
}

#[test]
fn a_lightning_rank_killed_with_kill_9_is_named_by_rank_lost_with_its_host() {
    rank_killed_is_named("train_lightning.py");
}

/// Rank 1 of a long `script` under torchrun is killed with `kill -9`: `rank_lost` names it with its host.
fn rank_killed_is_named(script: &str) {
    let (hook, d, dir) = webhook_daemon(r#"stall_after = "60s""#);
    let job = Job::start_script(script, dir.path(), d.port, "healthy", 500, 4, 0.05);
    until(&hook, &job, "epoch_ended", |_| true);
    let victim = job.pid(1);
    signal(victim, "-9");
    let hits = until(&hook, &job, "rank_lost", |e| e["rank"] == 1);
    let lost = of_kind(&hits, "rank_lost");
    let one = lost.iter().find(|h| h.body["event"]["rank"] == 1).expect("rank 1's rank_lost");
    let e = &one.body["event"];
    assert_eq!(
        (e["pid"].as_u64(), e["host"].as_str()),
        (Some(u64::from(victim)), Some(hostname().as_str())),
        "{e}"
    );
    assert!(one.body["text"].as_str().is_some_and(|t| t.contains("rank 1 on")), "{}", one.body);
    // torchrun ends the other ranks at once: they may be lost too, but each rank is named once.
    let mut ranks: Vec<u64> = lost.iter().filter_map(|h| h.body["event"]["rank"].as_u64()).collect();
    ranks.sort_unstable();
    ranks.dedup();
    assert_eq!(ranks.len(), lost.len(), "{lost:?}");
    assert!(of_kind(&hits, "run_lost").is_empty(), "a job's rank is not reported as a run of its own");
}

#[test]
fn a_rank_twice_as_slow_gets_exactly_one_rank_slow() {
    let (hook, d, dir) = webhook_daemon(r#"stall_after = "60s""#);
    // The job watch looks every 5 s (a quarter of the 60 s stall window, at most 5 s): rank 2 must stay slow
    // for longer than that, or the job can end between two looks. 14 epochs of 0.8 s give it about 10 s.
    let mut job = Job::start(dir.path(), d.port, "slow", 14, 4, 0.1);
    let status = job.wait(LONG);
    assert!(status.success(), "torchrun failed: {}", job.log());
    let hits = wait_for("the job's end at the webhook", LONG, || {
        let hits = hook.delivered();
        (!job_end(&hits).is_empty()).then_some(hits)
    });
    let slow = of_kind(&hits, "rank_slow");
    assert_eq!(slow.len(), 1, "{slow:?}");
    let e = &slow[0].body["event"];
    assert_eq!((e["rank"].as_u64(), e["host"].as_str()), (Some(2), Some(hostname().as_str())), "{e}");
    let (elapsed, median) = (e["elapsed_s"].as_f64().unwrap_or(0.0), e["median_s"].as_f64().unwrap_or(1.0));
    assert!(elapsed > 1.5 * median, "{e}");
    let end = job_end(&hits);
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].body["event"]["status"], "completed");
    assert_eq!(of_kind(&hits, "run_finished").len(), 1, "rank 0's own end waits for the job's");
}

#[test]
fn herald_stop_job_ends_every_rank() {
    stop_ends_every_rank("train_ddp.py");
}

#[test]
fn herald_stop_job_ends_every_rank_of_a_lightning_ddp_fit() {
    stop_ends_every_rank("train_lightning.py");
}

/// `herald stop JOB` on a long `script` under torchrun: every rank stops cleanly, the job's end says so.
fn stop_ends_every_rank(script: &str) {
    let (hook, d, dir) = webhook_daemon(r#"stall_after = "60s""#);
    let mut job = Job::start_script(script, dir.path(), d.port, "healthy", 500, 4, 0.05);
    let hits = until(&hook, &job, "epoch_ended", |_| true);
    let started = of_kind(&hits, "run_started");
    let job_id =
        started[0].body["event"]["job"].as_str().expect("rank 0's run_started names the job").to_owned();
    assert_eq!(started[0].body["event"]["world_size"], 3);
    // `herald status` shows the job: its three ranks, of three expected.
    let row = wait_for("the job in status with its 3 ranks", LONG, || {
        let status = d.status();
        let row = status["jobs"].as_array()?.iter().find(|j| j["job"] == job_id.as_str())?.clone();
        (row["ranks_seen"] == 3).then_some(row)
    });
    assert_eq!((row["world_size"].as_u64(), row["state"].as_str()), (Some(3), Some("running")), "{row}");
    assert_eq!(row["run"], started[0].run.as_str(), "{row}");
    let out = crate::herald().arg("--config").arg(&d.config).arg("status").output().expect("herald status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with(&job_id) && l.contains("running") && l.contains("3/3")),
        "{text}"
    );
    let out =
        crate::herald().arg("--config").arg(&d.config).args(["stop", &job_id]).output().expect("herald stop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = job.wait(LONG);
    assert!(status.success(), "every rank stops cleanly: {}", job.log());
    let hits = wait_for("the job's end", LONG, || {
        let hits = hook.delivered();
        (!job_end(&hits).is_empty()).then_some(hits)
    });
    let end = &job_end(&hits)[0].body["event"];
    assert_eq!(end["status"], "stopped", "{end}");
    assert!(end["reason"].as_str().is_some_and(|r| r.contains("3 stopped")), "{end}");
}

#[test]
fn a_healthy_job_is_one_live_message_edited_per_epoch_and_one_finish_message() {
    healthy_job_on_the_phone("train_ddp.py", "ddp-e2e");
}

#[test]
fn a_healthy_lightning_ddp_job_is_one_live_message_edited_per_epoch_and_one_finish_message() {
    healthy_job_on_the_phone("train_lightning.py", "lightning-e2e");
}

/// `script` (run name `name`) under torchrun, all ranks healthy, against the fake Telegram Bot API.
fn healthy_job_on_the_phone(script: &str, name: &str) {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = telegram::config_with(dir.path(), port, &bot.fake.url, "stall_after = \"60s\"");
    let d = Daemon::start(dir.path(), port, &config);
    let mut job = Job::start_script(script, dir.path(), d.port, "healthy", 3, 6, 0.25);
    let status = job.wait(LONG);
    assert!(status.success(), "torchrun failed: {}", job.log());
    let messages: Vec<Message> = wait_for("the finish message and the loss curve", LONG, || {
        let m = bot.messages();
        (m.len() >= 3 && m.iter().any(|m| m.photo.is_some())).then_some(m)
    });
    let (live, finish, photo) = (&messages[0], &messages[1], &messages[2]);
    assert_eq!(messages.len(), 3, "one live message, one finish message, one plot: {messages:?}");
    assert!(live.text.starts_with(&format!("{name}: completed\n")), "{}", live.text);
    assert!(live.text.contains("3/3 ranks"), "the job's health line: {}", live.text);
    // Rank 0's table: one row per epoch, its accuracy 0.50, 0.51, 0.52.
    for accuracy in ["0.50", "0.51", "0.52"] {
        assert!(live.text.contains(accuracy), "the epoch with accuracy {accuracy}: {}", live.text);
    }
    assert!(live.edits >= 3, "edited per epoch (at most once a second), then at the end: {live:?}");
    assert!(
        finish.text.contains("all 3 ranks of job") && finish.text.contains("3 completed"),
        "{}",
        finish.text
    );
    assert!(photo.photo.is_some_and(|size| size > 1000), "{photo:?}");
    let calls = bot.fake.calls();
    let sent = calls.iter().filter(|c| c.method == "sendMessage" && c.ok()).count();
    assert_eq!(sent, 2, "the start and the finish; no message per rank");
}

/// Cluster mode: ranks 0 and 2 of one job post to edge A (host `gpu-a`), rank 1 to edge B (`gpu-b`); the one
/// deliverer (real `nats-server`) sees the whole job: one stream (rank 0's start and epochs), rank 1 named
/// slow on `gpu-b`, and one end for the job once all three ranks ended, with no rank reported on its own.
/// A cluster for a job's ranks: one `nats-server`, two edges (A, B) and one deliverer posting to a webhook.
struct TwoEdges {
    edges: Vec<Daemon>,
    hook: Receiver,
    _deliverer: crate::cluster::Deliverer,
    _nats: crate::cluster::Nats,
    _tmp: tempfile::TempDir,
}

impl TwoEdges {
    fn start() -> TwoEdges {
        use crate::cluster::{Deliverer, Nats, edge_config};
        let tmp = tempfile::tempdir().expect("temp dir");
        let nats = Nats::single(&tmp.path().join("nats"));
        let urls = vec![nats.url()];
        let hook = Receiver::start(|_, _| Reply::Ok);
        let edges: Vec<Daemon> = ["edge-a", "edge-b"]
            .iter()
            .map(|name| {
                let dir = tmp.path().join(name);
                std::fs::create_dir_all(&dir).expect("edge dir");
                let port = free_port();
                Daemon::start(&dir, port, &edge_config(&dir, port, &urls, 1))
            })
            .collect();
        let deliverer = Deliverer::start(&tmp.path().join("deliverer"), &urls, 1, hook.port);
        TwoEdges { edges, hook, _deliverer: deliverer, _nats: nats, _tmp: tmp }
    }

    /// Post `body` to edge `edge` (0: A, 1: B).
    fn post(&self, edge: usize, body: &str) {
        let (code, reply) = self.edges[edge].post(body);
        assert_eq!(code, 202, "{reply}");
    }
}

fn rank_started(run: &str, rank: u32, host: &str, pid: u32, world_size: u32) -> String {
    let start = json!({ "name": "across", "host": host, "pid": pid, "rank": rank, "job": "xjob",
        "world_size": world_size, "n_epochs": 4, "batches_per_epoch": 10, "metric_names": [] });
    crate::daemon::event(run, 0, "run_started", start)
}

fn rank_epoch(run: &str, e: u64, elapsed_s: f64) -> String {
    let epoch = json!({ "epoch": e, "n_epochs": 4, "train_loss": 0.5, "elapsed_s": elapsed_s });
    crate::daemon::event(run, e + 1, "epoch_ended", epoch)
}

fn rank_end(run: &str, seq: u64) -> String {
    let end = json!({ "status": "completed", "reason": "done", "duration_s": 4.0 });
    crate::daemon::event(run, seq, "run_finished", end)
}

/// Cluster mode: ranks 0 and 2 of one job post to edge A (host `gpu-a`), rank 1 to edge B (`gpu-b`); the one
/// deliverer (real `nats-server`) sees the whole job: one stream (rank 0's start and epochs), rank 1 named
/// slow on `gpu-b`, and one end for the job once all three ranks ended, with no rank reported on its own.
#[test]
fn cluster_ranks_on_two_edges_are_one_job_at_the_deliverer() {
    let c = TwoEdges::start();
    let hook = &c.hook;
    // (run, rank, host, edge)
    let ranks = [("xjob-r1", 1, "gpu-b", 1), ("xjob-r2", 2, "gpu-a", 0), ("xjob-r0", 0, "gpu-a", 0)];
    for (run, rank, host, edge) in ranks {
        c.post(edge, &rank_started(run, rank, host, 4242, 3));
    }
    for e in 0..4u64 {
        for (run, rank, _, edge) in ranks {
            c.post(edge, &rank_epoch(run, e, if rank == 1 { 2.0 } else { 1.0 }));
        }
    }
    // The deliverer's job watch looks every 5 s: rank 1 is named before the job ends.
    let is_job = |h: &Hit| h.body["event"]["job"] == "xjob";
    wait_for("rank_slow from the deliverer", LONG, || {
        hook.delivered().iter().any(|h| h.kind == "rank_slow" && is_job(h)).then_some(())
    });
    for (run, _, _, edge) in ranks {
        c.post(edge, &rank_end(run, 5));
    }
    let hits = wait_for("the job's end from the deliverer", LONG, || {
        let hits = hook.delivered();
        (!job_end(&hits).is_empty()).then_some(hits)
    });
    assert!(hits.iter().all(|h| h.run == "xjob-r0"), "one stream per job: {hits:?}");
    assert_eq!(of_kind(&hits, "run_started").len(), 1);
    assert_eq!(of_kind(&hits, "epoch_ended").len(), 4);
    let slow = of_kind(&hits, "rank_slow");
    assert_eq!(slow.len(), 1, "{slow:?}");
    let e = &slow[0].body["event"];
    assert_eq!((e["rank"].as_u64(), e["host"].as_str()), (Some(1), Some("gpu-b")), "{e}");
    let end = job_end(&hits);
    assert_eq!(end.len(), 1, "{end:?}");
    let reason = end[0].body["event"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("all 3 ranks of job xjob") && reason.contains("3 completed"), "{reason}");
    assert_eq!(of_kind(&hits, "run_finished").len(), 1, "rank 0's own end waits for the job's");
    for kind in ["ranks_missing", "rank_stalled", "rank_lost", "run_stalled"] {
        assert!(of_kind(&hits, kind).is_empty(), "no {kind}: {hits:?}");
    }
}

/// Cluster mode: rank 1's process, on edge B's machine, dies: its edge's pid check names it (`rank_lost` with
/// its host and pid, forwarded); the deliverer counts it gone, says it once, and ends the job when rank 0 ends,
/// failed with one rank lost, not waiting for rank 1 nor calling it stalled.
#[test]
fn cluster_a_rank_lost_on_its_edge_is_gone_for_the_whole_job() {
    let c = TwoEdges::start();
    let mut victim = Command::new("sleep").arg("600").spawn().expect("sleep");
    let pid = victim.id();
    c.post(0, &rank_started("xjob-r0", 0, "gpu-a", 4242, 2));
    c.post(1, &rank_started("xjob-r1", 1, &hostname(), pid, 2));
    c.post(1, &rank_epoch("xjob-r1", 0, 1.0));
    c.post(0, &rank_epoch("xjob-r0", 0, 1.0));
    let _ = victim.kill();
    let _ = victim.wait();
    // Edge B's run watch looks every 5 s.
    wait_for("rank_lost from edge B through the deliverer", LONG, || {
        c.hook.delivered().iter().any(|h| h.kind == "rank_lost").then_some(())
    });
    c.post(0, &rank_end("xjob-r0", 2));
    let hits = wait_for("the job's end from the deliverer", LONG, || {
        let hits = c.hook.delivered();
        (!job_end(&hits).is_empty()).then_some(hits)
    });
    let lost = of_kind(&hits, "rank_lost");
    assert_eq!(lost.len(), 1, "said once, by rank 1's edge: {lost:?}");
    let e = &lost[0].body["event"];
    assert_eq!(
        (e["rank"].as_u64(), e["host"].as_str(), e["pid"].as_u64()),
        (Some(1), Some(hostname().as_str()), Some(u64::from(pid))),
        "{e}"
    );
    let end = &job_end(&hits)[0].body["event"];
    assert_eq!(end["status"], "failed", "{end}");
    assert!(end["reason"].as_str().is_some_and(|r| r.ends_with("1 completed, 1 lost")), "{end}");
    assert!(of_kind(&hits, "rank_stalled").is_empty() && of_kind(&hits, "run_lost").is_empty());
}

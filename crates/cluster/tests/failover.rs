//! What a new leader reads back from the events stream after a failover: a run's whole loss history (its
//! [`JetStreamOutbox`] holds only the points it read since it took over), and the events of the jobs left
//! unfinished (a job names the stream message holding its event instead of copying it). Real `nats-server`
//! (from `.venv/bin`, `cargo xtask setup` installs it) on a loopback port, storing in a temp folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_cluster::names::Names;
use herald_cluster::{JetStreamOutbox, Target, connect, ensure_stream};
use herald_daemon::Outbox;
use herald_daemon::outbox::{JobRecord, PutJob, WriteBatch};
use herald_event::{Event, Payload, decode_event};

/// `nats-server -js` on a free loopback port, killed when dropped.
struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats(dir: &Path) -> Server {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    assert!(bin.exists(), "{} is missing: run `cargo xtask setup`", bin.display());
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    Server(child, port)
}

fn event(run: &str, seq: u64) -> String {
    let body = if seq == 0 {
        r#""type": "run_started", "name": "r", "host": "elsewhere", "pid": 1, "n_epochs": 1, "batches_per_epoch": 100, "metric_names": []"#.to_owned()
    } else {
        format!(
            r#""type": "batch_ended", "epoch": 0, "batch": {b}, "n_batches": 100, "loss": 0.5, "smooth_loss": {l}, "lr": 0.01"#,
            b = seq - 1,
            l = 1.0 / seq as f64
        )
    };
    format!(r#"{{"v": 1, "run": "{run}", "seq": {seq}, "time": "2026-11-30T10:00:00Z", {body}}}"#)
}

fn decoded(run: &str, seqs: std::ops::Range<u64>) -> Vec<Event> {
    seqs.map(|s| decode_event(event(run, s).as_bytes()).expect("a valid event")).collect()
}

/// JetStream on `server`, with the events stream made.
async fn jetstream(server: &Server) -> async_nats::jetstream::Context {
    let target = Target {
        servers: vec![format!("nats://127.0.0.1:{}", server.1)],
        prefix: "herald".into(),
        replicas: 1,
        ..Target::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = connect(&target, "test").await {
            let js = async_nats::jetstream::new(client);
            if ensure_stream(&js, &target).await.is_ok() {
                return js;
            }
        }
        assert!(Instant::now() < deadline, "nats-server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_new_leader_reads_the_whole_loss_history_back_from_the_stream() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = start_nats(tmp.path());
    let js = jetstream(&server).await;
    let names = Names::new("herald");
    let run = "2026-11-30T10:00:00-1-0-1055";
    // The edge forwards the whole run: started alone, then 60 batches in packs of 20 (one message each,
    // newline-delimited).
    let mut messages = vec![event(run, 0)];
    for first in [1, 21, 41] {
        messages.push((first..first + 20).map(|s| event(run, s)).collect::<Vec<_>>().join("\n"));
    }
    for m in messages {
        js.publish(names.subject(run), m.into()).await.expect("publish").await.expect("the stream's ack");
    }
    // The first leader applied the first half, then died; the new leader read the second half.
    let first = JetStreamOutbox::open(&js, &names, 1).await.expect("the first leader's outbox");
    first.commit(WriteBatch { events: decoded(run, 0..31), ..WriteBatch::default() }).await.expect("commit");
    drop(first);
    let next = JetStreamOutbox::open(&js, &names, 1).await.expect("the new leader's outbox");
    next.commit(WriteBatch { events: decoded(run, 31..61), ..WriteBatch::default() }).await.expect("commit");
    let points = next.loss_history(run).await.expect("the loss history");
    let seqs: Vec<u64> = points.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>(), "the history covers the whole run, once, in order");
    assert!((points[0].smooth_loss - 1.0).abs() < 1e-12, "{:?}", points[0]);
    // Asked again, the same (read back once, not doubled).
    assert_eq!(next.loss_history(run).await.expect("again").len(), 60);
    // A run the stream never saw: no points, and no wait.
    let started = Instant::now();
    assert!(next.loss_history("never-heard-of").await.expect("an empty history").is_empty());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn unfinished_jobs_name_their_events_in_the_stream_and_a_new_leader_reads_them_back() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = start_nats(tmp.path());
    let js = jetstream(&server).await;
    let names = Names::new("herald");
    let run = "2026-11-30T10:00:00-1-0-10b5";
    // The edge's messages: started alone, then a pack of 20 batches.
    let pack = (1..=20).map(|s| event(run, s)).collect::<Vec<_>>().join("\n");
    let mut at = Vec::new();
    for m in [event(run, 0), pack] {
        let ack = js.publish(names.subject(run), m.into()).await.expect("publish").await.expect("ack");
        at.push(ack.sequence);
    }
    let events = decoded(run, 0..21);
    let positions = events.iter().map(|e| (e.run.clone(), e.seq, if e.seq == 0 { at[0] } else { at[1] }));
    // A daemon-made alert is in no stream message: its job keeps the event.
    let alert: Event = decode_event(
        format!(r#"{{"v": 1, "run": "{run}", "seq": 281474976710656, "time": "2026-11-30T10:00:01Z", "type": "alert", "title": "t", "text": "x", "level": "warning"}}"#)
            .as_bytes(),
    )
    .expect("an alert");
    let job = |id: u64, event: &Event| PutJob {
        notifier: "sink".into(),
        id,
        job: JobRecord {
            event: event.clone(),
            attempt: 0,
            not_before_ms: 0,
            created_ms: 1,
            last_error: None,
            digest: false,
        },
    };
    let mut jobs: Vec<PutJob> = events.iter().enumerate().map(|(i, e)| job(i as u64 + 1, e)).collect();
    jobs.push(job(100, &alert));
    let leader = JetStreamOutbox::open(&js, &names, 1).await.expect("the first leader's outbox");
    leader.note_positions(positions);
    let mut all = events.clone();
    all.push(alert.clone());
    leader
        .commit(WriteBatch { events: all, jobs, next_job_id: Some(101), ..WriteBatch::default() })
        .await
        .expect("commit");
    // The chunk names the messages; only the alert's event is copied into it.
    let bucket = js.get_key_value(names.bucket("jobs")).await.expect("the jobs bucket");
    let chunk = bucket.get("c.00000000000000000000").await.expect("read").expect("one chunk");
    let text = String::from_utf8_lossy(&chunk);
    assert_eq!(text.matches("\"event\"").count(), 1, "only the alert carries its event: {text}");
    assert!(text.contains(&format!("\"message\":{}", at[1])), "{text}");
    drop(leader);
    // A new leader has every job, each with its whole event, in id order.
    let next = JetStreamOutbox::open(&js, &names, 1).await.expect("the new leader's outbox");
    let restored = next.jobs("sink", 0, 1000).await.expect("the jobs");
    let ids: Vec<u64> = restored.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=21).chain([100]).collect::<Vec<u64>>());
    for (id, job) in &restored {
        let want = if *id == 100 { &alert } else { &events[*id as usize - 1] };
        assert_eq!(&job.event, want, "job {id}");
    }
    assert!(matches!(restored[5].1.event.payload, Payload::BatchEnded(_)));
    // Its own commits keep naming the messages: a retry of job 3 is rewritten without the event.
    let mut retry = restored[2].1.clone();
    retry.attempt = 1;
    next.commit(WriteBatch {
        jobs: vec![PutJob { notifier: "sink".into(), id: 3, job: retry }],
        ..WriteBatch::default()
    })
    .await
    .expect("commit a retry");
    let chunk = bucket.get("c.00000000000000000001").await.expect("read").expect("the retry's chunk");
    let text = String::from_utf8_lossy(&chunk);
    assert!(!text.contains("\"event\""), "{text}");
}

//! A run's loss history survives a failover: a new leader's [`JetStreamOutbox`] holds only the points it
//! read since it took over, and reads the rest back from the events stream. Real `nats-server` (from
//! `.venv/bin`, `cargo xtask setup` installs it) on a loopback port, storing in a temp folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_cluster::names::Names;
use herald_cluster::{JetStreamOutbox, Target, connect, ensure_stream};
use herald_daemon::Outbox;
use herald_daemon::outbox::WriteBatch;
use herald_event::{Event, decode_event};

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

#[tokio::test]
async fn a_new_leader_reads_the_whole_loss_history_back_from_the_stream() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = start_nats(tmp.path());
    let target = Target {
        servers: vec![format!("nats://127.0.0.1:{}", server.1)],
        prefix: "herald".into(),
        replicas: 1,
        ..Target::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let js = loop {
        if let Ok(client) = connect(&target, "test").await {
            let js = async_nats::jetstream::new(client);
            if ensure_stream(&js, &target).await.is_ok() {
                break js;
            }
        }
        assert!(Instant::now() < deadline, "nats-server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names = Names::new("herald");
    let run = "2026-11-30T10:00:00-1-0-1055";
    // The edge forwards the whole run: started and 60 batches.
    for seq in 0..=60 {
        js.publish(names.subject(run), event(run, seq).into())
            .await
            .expect("publish")
            .await
            .expect("the stream's ack");
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

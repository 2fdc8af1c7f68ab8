//! `herald watch` and the forwarder end to end: a watched command's start and end reach the webhook through
//! the daemon, and events spooled while the daemon is down are replayed when it comes back.

use std::process::Stdio;
use std::time::Duration;

use crate::daemon::{Daemon, Receiver, Reply, config_text, free_port, wait_for};
use crate::herald;

#[test]
fn watch_reports_a_failing_commands_exit_code_and_stderr_tail() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let out = herald()
        .arg("--config")
        .arg(&d.config)
        .args([
            "watch",
            "--name",
            "job",
            "--",
            "sh",
            "-c",
            "echo out; for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
        ])
        .output()
        .expect("herald watch");
    assert_eq!(out.status.code(), Some(3), "watch exits with the command's code");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "stdout passes through unchanged");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line1\n") && stderr.contains("line30\n"), "stderr passes through: {stderr}");
    let hits = hook.wait_delivered(2, Duration::from_secs(10));
    assert_eq!(hits[0].kind, "run_started");
    assert_eq!(hits[0].body["name"], "job");
    assert_eq!(hits[1].kind, "run_failed");
    let failed = &hits[1].body["event"];
    assert_eq!(failed["error"], "exited with code 3");
    let tail = failed["traceback"].as_str().expect("stderr tail");
    assert_eq!(tail.lines().count(), 20, "{tail}");
    assert!(tail.starts_with("line11") && tail.ends_with("line30"), "{tail}");

    // A command that succeeds: run_finished with the duration.
    let out =
        herald().arg("--config").arg(&d.config).args(["watch", "--", "true"]).output().expect("herald watch");
    assert_eq!(out.status.code(), Some(0));
    let hits = hook.wait_delivered(4, Duration::from_secs(10));
    assert_eq!(hits[3].kind, "run_finished");
    assert_eq!(hits[3].body["event"]["status"], "completed");
}

#[test]
fn a_first_herald_watch_says_one_line_per_fact_beside_the_commands_output() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = crate::train::first_run(home.path())
        .args(["watch", "--name", "job", "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
        .output()
        .expect("herald watch");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines: Vec<&str> = stderr.lines().collect();
    // The console's lines come from another thread: their order against the command's is not fixed.
    lines.sort_unstable();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert_eq!(lines[0], "err", "{stderr}");
    assert!(
        lines[1].starts_with("herald: job on ") && lines[1].ends_with(": exited with code 3"),
        "{stderr}"
    );
    assert!(lines[1].contains(" failed"), "{stderr}");
    assert!(lines[2].starts_with("herald: job on ") && lines[2].contains(" started (pid "), "{stderr}");
}

#[test]
fn the_forwarder_spools_while_the_daemon_is_down_and_replays() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    // A machine that has run a daemon (its outbox exists) spools rather than delivering in process.
    let mut d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    assert!(d.terminate(), "SIGTERM stops the daemon cleanly:\n{}", d.log());
    let go = dir.path().join("go");
    let mut watch = herald()
        .arg("--config")
        .arg(&d.config)
        .args(["watch", "--name", "spooled", "--", "sh", "-c"])
        .arg(format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("herald watch");
    let spool_dir = dir.path().join("state").join("spool");
    wait_for("a spool file while the daemon is down", Duration::from_secs(10), || {
        std::fs::read_dir(&spool_dir)
            .ok()?
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
    });
    assert!(hook.hits().is_empty());
    d.restart();
    std::fs::write(&go, b"").expect("let the command finish");
    let status = watch.wait().expect("watch ends");
    assert!(status.success());
    let hits = hook.wait_delivered(2, Duration::from_secs(20));
    let kinds: Vec<&str> = hits.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, vec!["run_started", "run_finished"], "replayed in order, then the rest");
    assert!(hits.iter().all(|h| h.run.starts_with("watch-spooled-")));
    wait_for("the spool to be removed", Duration::from_secs(5), || {
        let left = std::fs::read_dir(&spool_dir).map(|r| r.flatten().count()).unwrap_or(0);
        (left == 0).then_some(())
    });
}

#[test]
fn the_daemon_replays_a_spool_left_by_a_process_that_is_gone() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    // A spool written by a process that has exited since (its pid is in the name).
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let pid = gone.id();
    gone.wait().expect("reap");
    let spool_dir = dir.path().join("state").join("spool");
    std::fs::create_dir_all(&spool_dir).expect("spool dir");
    let spool = spool_dir.join(format!("spool-{pid}-1.ndjson"));
    let lines = [
        crate::daemon::started("orphan", "elsewhere", pid),
        "{this line is damaged".to_owned(),
        crate::daemon::message("orphan", 1, "left behind"),
    ];
    std::fs::write(&spool, lines.join("\n") + "\n").expect("write the spool");
    let _d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let hits = hook.wait_delivered(2, Duration::from_secs(10));
    let kinds: Vec<&str> = hits.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["run_started", "message"],
        "good lines replayed in order, the damaged one skipped"
    );
    assert!(!spool.exists(), "a replayed spool is removed");
}

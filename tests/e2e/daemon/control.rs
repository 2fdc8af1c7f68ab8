//! The daemon is controlled and guarded: stop requests, malformed input, tokens off loopback, systemd's
//! notifications, and `herald send` with and without the daemon.

use super::*;

#[test]
fn stop_requests_round_trip_to_the_next_post() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let (_, reply) = d.post(&started("train1", "h", 1));
    assert_eq!(reply["control"]["train1"]["stop"], false);
    let out = herald()
        .arg("--config")
        .arg(&d.config)
        .args(["stop", "train1", "--reason", "enough"])
        .output()
        .expect("herald stop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, reply) = d.post(&epoch("train1", 1, 0));
    assert_eq!(reply["control"]["train1"]["stop"], true, "{reply}");
    assert_eq!(reply["control"]["train1"]["reason"], "enough");
    // The HTTP endpoint, and an unknown run.
    let (code, _) = http(port, "POST", "/v1/runs/train1/stop", &[], b"");
    assert_eq!(code, 200);
    let out =
        herald().arg("--config").arg(&d.config).args(["stop", "nosuchrun"]).output().expect("herald stop");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run `nosuchrun`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn malformed_inputs_get_4xx_naming_the_problem_and_the_daemon_keeps_serving() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let big = format!("[{}]", vec![message("big", 0, &"x".repeat(1000)); 1100].join(","));
    let bad_batch = [
        message("bad", 0, "a"),
        message("bad", 1, "b"),
        r#"{"v":1,"run":"bad","seq":2,"type":"epoch_ended"}"#.to_owned(),
    ]
    .join("\n");
    let cases: Vec<Case> = vec![
        ("not json", b"{nope".to_vec(), 400, "malformed_json", Some(0)),
        ("unknown type", event("x", 0, "explode", json!({})).into_bytes(), 400, "unknown_type", Some(0)),
        ("too new", br#"{"v":99,"run":"x","seq":0,"time":"2026-11-27T10:00:00Z","type":"message","title":"t","text":"x"}"#.to_vec(), 400, "unsupported_version", Some(0)),
        ("bad element", bad_batch.into_bytes(), 400, "missing_field", Some(2)),
        ("over 1 MiB", big.into_bytes(), 413, "body_too_large", None),
        ("not utf-8", vec![0xff, 0xfe, b'{'], 400, "invalid_utf8", None),
        ("empty", Vec::new(), 400, "empty", None),
    ];
    for (what, body, status, code, index) in cases {
        let (got, text) = http(port, "POST", "/v1/events", &[], &body);
        assert_eq!(got, status, "{what}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], code, "{what}: {text}");
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty(), "{what}: {text}");
        if let Some(i) = index {
            assert_eq!(v["error"]["index"], i, "{what}: {text}");
        }
    }
    let (code, _) = http(port, "GET", "/v1/nothing", &[], b"");
    assert_eq!(code, 404);
    // Still serving; nothing from the rejected batch was stored.
    assert_eq!(d.post(&message("good", 0, "fine")).0, 202);
    let hits = hook.wait_delivered(1, Duration::from_secs(10));
    assert_eq!(hits[0].run, "good");
    let runs: Vec<String> = d.status()["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(runs, vec!["good".to_owned()], "rejected requests left nothing behind");
}

#[test]
fn a_token_is_required_off_loopback_and_checked_when_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let text = config_text(dir.path(), port, 9, "", "").replace("127.0.0.1:", "0.0.0.0:");
    std::fs::write(dir.path().join("open.toml"), &text).expect("write");
    let out = herald()
        .arg("--config")
        .arg(dir.path().join("open.toml"))
        .arg("serve")
        .output()
        .expect("herald serve");
    assert!(!out.status.success(), "a non-loopback listen without a token must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address") && err.contains("token"), "{err}");
    // A loopback daemon with a token checks it.
    let hook = Receiver::start(|_, _| Reply::Ok);
    let d =
        Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, r#"token = "s3cret""#, ""));
    let body = message("t", 0, "x");
    assert_eq!(http(port, "POST", "/v1/events", &[], body.as_bytes()).0, 401);
    assert_eq!(
        http(port, "POST", "/v1/events", &[("authorization", "Bearer wrong")], body.as_bytes()).0,
        401
    );
    assert_eq!(http(port, "GET", "/v1/status", &[], b"").0, 401);
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(
        http(port, "POST", "/v1/events", &[("authorization", "Bearer s3cret")], body.as_bytes()).0,
        202
    );
    // The CLI sends the configured token.
    let out =
        herald().arg("--config").arg(&d.config).args(["status", "--json"]).output().expect("herald status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["runs"][0]["run"], "t");
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("temp dir");
    let notify_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    systemd.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let port = free_port();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, config_text(dir.path(), port, 9, "", "")).expect("write config");
    let mut child = herald()
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .expect("herald serve");
    let mut got = Vec::new();
    let next = || {
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).expect("a datagram from the daemon");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    got.push(next());
    assert!(got[0].starts_with("READY=1"), "{got:?}");
    // The daemon answers by the time it says it is ready.
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200);
    got.push(next());
    assert_eq!(got[1], "WATCHDOG=1", "a watchdog ping every WATCHDOG_USEC/2");
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let stopping = loop {
        let m = next();
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = child.wait().expect("the daemon exits");
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
}

#[test]
fn send_check_and_plugins_work_with_and_without_the_daemon() {
    let hook = Receiver::start(|body, _| match body["title"].as_str() {
        Some(t) if t.contains("refuse") => Reply::Status(403, None),
        _ => Reply::Ok,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, config_text(dir.path(), port, hook.port, "", "")).expect("write config");
    let run = |args: &[&str]| herald().arg("--config").arg(&config).args(args).output().expect("herald runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // No daemon: --direct delivers and prints each notifier's result; without --direct it says what to do.
    let out = run(&["send", "--direct", "--title", "direct", "--text", "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("hook (webhook): ok in "), "{}", text(&out.stdout));
    let out = run(&["send", "--direct", "--title", "refuse me", "--text", "x"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("hook (webhook): failed: the webhook answered 403"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["send", "--title", "t", "--text", "x"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("herald send --direct"), "{}", text(&out.stderr));
    let out = run(&["send"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nothing to send"), "{}", text(&out.stderr));

    // check --send-test: a result table.
    let out = run(&["check", "--send-test"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("NOTIFIER") && table.contains("hook      webhook  ok") && table.contains("sent in"),
        "{table}"
    );

    // plugins lists the built-in types.
    let out = run(&["plugins"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("webhook")), "{}", text(&out.stdout));

    // With the daemon: send an event file through it.
    let d = Daemon::start(dir.path(), port, &config_text(dir.path(), port, hook.port, "", ""));
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, format!("{}\n{}\n", started("f", "h", 1), message("f", 1, "from a file")))
        .expect("write");
    let out = run(&["send", "--event", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("accepted 2 event(s)"), "{}", text(&out.stdout));
    // direct, check's test message, then the file's two events.
    let delivered = hook.wait_delivered(4, Duration::from_secs(10));
    assert!(delivered.iter().any(|h| h.run == "f" && h.kind == "message"), "{delivered:?}");
    let out = run(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("NOTIFIER"), "{}", text(&out.stdout));
    drop(d);
}

//! herald-desktop on a real D-Bus session bus (`dbus-run-session`) with python3-dbusmock's
//! `notification_daemon` template as the notification server: the logged `Notify` calls (summary, body,
//! urgency hint, `replaces_id` reuse, image), and the cases without a bus.
//!
//! Each test re-executes this test binary (the single test, `--exact`) in a child process with the
//! environment it needs: under `dbus-run-session` for a private session bus, or without
//! `DBUS_SESSION_BUS_ADDRESS`. The parent passes only when the child ran the test and it passed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_event::{RunFailed, RunFinished, RunStatus};
use herald_fakes::sample::{Run, epoch, started};
use herald_plugin::{Health, Image, Notifier, NotifierType};

const MODE: &str = "HERALD_DESKTOP_TEST_MODE";
const PYTHON: &str = "/usr/bin/python3";
const SETUP: &str = "run `cargo xtask setup` (it installs the Debian packages dbus, python3-dbusmock, \
                     python3-aiosmtpd and openssl)";

/// In the parent: run `test` in a child with `mode` set, through `prepare`, and check that it passed;
/// returns false. In the child: returns true, and the caller runs the test body.
fn in_child(test: &str, mode: &str, prepare: impl FnOnce(&mut Command)) -> bool {
    if std::env::var(MODE).as_deref() == Ok(mode) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(&exe);
    prepare(&mut cmd);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(MODE, mode);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start the child test ({e}): {SETUP}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child did not run the test:\n{stdout}\n{stderr}"
    );
    false
}

/// Run under `dbus-run-session`, which starts a private session bus for the child.
fn under_session_bus(cmd: &mut Command) {
    let program = cmd.get_program().to_owned();
    *cmd = Command::new("dbus-run-session");
    cmd.arg("--").arg(program);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// python3-dbusmock's notification daemon on the session bus, logging every call; killed when dropped.
struct MockServer {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl MockServer {
    async fn start(probe: &dyn Notifier) -> MockServer {
        let ok =
            Command::new(PYTHON).args(["-c", "import dbusmock"]).output().is_ok_and(|o| o.status.success());
        assert!(ok, "{PYTHON} cannot import dbusmock: {SETUP}");
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("notify.log");
        let child = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--session", "--template", "notification_daemon", "-l"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start dbusmock");
        let mut server = MockServer { child, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if probe.health_check().await == Health::Ok {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("dbusmock exited with {status} before serving");
            }
            assert!(
                Instant::now() < deadline,
                "dbusmock did not serve org.freedesktop.Notifications within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// Every logged `Notify` call, in order.
    fn notify_calls(&self) -> Vec<NotifyCall> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        split_entries(&log).iter().filter_map(|e| e.strip_prefix("Notify ")).map(NotifyCall::parse).collect()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log entries start with a `1234567890.123 ` timestamp; a body with newlines continues on the next lines.
fn split_entries(log: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        let stamped = line.split_once(' ').is_some_and(|(t, _)| {
            t.len() > 4
                && t.as_bytes()[t.len() - 4] == b'.'
                && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        });
        match (stamped, entries.last_mut()) {
            (true, _) | (false, None) => {
                entries.push(line.split_once(' ').map_or("", |(_, rest)| rest).to_owned())
            }
            (false, Some(last)) => {
                last.push('\n');
                last.push_str(line);
            }
        }
    }
    entries
}

/// One `Notify(app_name, replaces_id, app_icon, summary, body, actions, hints, expire_timeout)` as dbusmock
/// logs it: `"Herald" 0 "" "summary" "body" [] {"urgency": 1} -1`.
#[derive(Debug)]
struct NotifyCall {
    app: String,
    replaces_id: u32,
    summary: String,
    body: String,
    hints: String,
    timeout: i32,
}

impl NotifyCall {
    fn parse(entry: &str) -> NotifyCall {
        fn quoted(s: &str) -> (&str, &str) {
            let s = s.strip_prefix('"').unwrap_or_else(|| panic!("expected a string at {s:?}"));
            let end = s.find("\" ").unwrap_or_else(|| panic!("unterminated string at {s:?}"));
            (&s[..end], &s[end + 2..])
        }
        let (app, rest) = quoted(entry);
        let (id, rest) = rest.split_once(' ').expect("replaces_id");
        let (_icon, rest) = quoted(rest);
        let (summary, rest) = quoted(rest);
        let rest = rest.strip_prefix('"').expect("body");
        let (body, rest) = rest.rsplit_once("\" [] {").expect("body, then no actions and the hints");
        let (hints, timeout) = rest.rsplit_once("} ").expect("hints, then the timeout");
        NotifyCall {
            app: app.to_owned(),
            replaces_id: id.parse().expect("replaces_id is a number"),
            summary: summary.to_owned(),
            body: body.to_owned(),
            hints: hints.to_owned(),
            timeout: timeout.trim().parse().expect("timeout is a number"),
        }
    }
}

fn notifier(toml_text: &str) -> Box<dyn Notifier> {
    herald_desktop::DesktopConfig::from_table("desk", toml_text.parse().expect("test config is TOML"))
        .expect("valid config")
}

#[test]
fn live_notification_is_replaced_in_place() {
    if !in_child("live_notification_is_replaced_in_place", "bus", under_session_bus) {
        return;
    }
    runtime().block_on(async {
        let n = notifier("expire = '10s'");
        let server = MockServer::start(n.as_ref()).await;
        assert!(herald_desktop::session_bus_available());
        let mut run = Run::new("run-1");
        let first = run.deliver(n.as_ref(), started("digits <b>&"), None).await;
        let id = first.0["id"].as_u64().expect("the server's notification id");
        run.deliver(n.as_ref(), epoch(0), None).await;
        run.deliver(n.as_ref(), epoch(1), None).await;
        let tb = "Traceback (most recent call last):\n  File x.py";
        let last = run.deliver(n.as_ref(), RunFailed { error: "CUDA out of memory".into(), traceback: Some(tb.into()) }, None).await;
        assert_eq!(last.0["id"].as_u64(), Some(id), "the same notification all along");

        let calls = server.notify_calls();
        assert_eq!(calls.len(), 4, "{calls:#?}");
        assert!(calls.iter().all(|c| c.app == "Herald" && c.timeout == 10_000), "{calls:#?}");
        let replaces: Vec<u32> = calls.iter().map(|c| c.replaces_id).collect();
        let id = u32::try_from(id).expect("u32 id");
        assert_eq!(replaces, [0, id, id, id], "replaces_id reuses the first notification's id");

        assert_eq!(calls[0].summary, "digits <b>&: started");
        // The mock advertises body-markup, so the run name is escaped in the body.
        assert!(calls[0].body.starts_with("digits &lt;b&gt;&amp; on gpu-box started (pid 4242)"), "{:?}", calls[0].body);
        assert!(calls[0].hints.contains("\"urgency\": 1"), "normal urgency: {}", calls[0].hints);

        assert_eq!(calls[2].summary, "digits <b>&: epoch 2/3");
        assert_eq!(
            calls[2].body,
            "epoch 2/3 · train 0.250000 · valid 0.400000 · accuracy 0.900000 · 00:05\ndigits &lt;b&gt;&amp; on gpu-box"
        );
        assert!(!calls[2].body.contains("train_loss"), "no table in a popup");
        assert!(calls[2].hints.contains("\"urgency\": 0"), "low urgency for epochs: {}", calls[2].hints);

        assert_eq!(calls[3].summary, "digits <b>&: failed");
        assert!(calls[3].body.contains("CUDA out of memory"), "{:?}", calls[3].body);
        assert!(calls[3].hints.contains("\"urgency\": 2"), "critical urgency for failures: {}", calls[3].hints);
    });
}

#[test]
fn stacked_notifications_and_the_loss_curve() {
    if !in_child("stacked_notifications_and_the_loss_curve", "bus", under_session_bus) {
        return;
    }
    runtime().block_on(async {
        let n = notifier("live = false\napp_name = 'Training'");
        assert!(!n.capabilities().edit);
        let server = MockServer::start(n.as_ref()).await;
        let mut run = Run::new("run-1");
        run.deliver(n.as_ref(), epoch(0), None).await;
        let png = vec![0x89, b'P', b'N', b'G', 7, 7, 7];
        let image = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: png.clone() };
        let finished =
            RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 9.0, best: None };
        run.deliver(n.as_ref(), finished, Some(image)).await;
        let calls = server.notify_calls();
        assert_eq!(calls.len(), 2, "{calls:#?}");
        assert!(
            calls.iter().all(|c| c.replaces_id == 0 && c.app == "Training" && c.timeout == -1),
            "{calls:#?}"
        );
        let hints = &calls[1].hints;
        let path = hints
            .split("\"image-path\": \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("image-path hint in {hints}"));
        assert!(Path::new(path).ends_with("run-1-loss.png"), "{path}");
        assert_eq!(std::fs::read(path).expect("the image file"), png);
    });
}

#[test]
fn no_session_bus_is_reported_unavailable() {
    let empty = tempfile::tempdir().expect("temp dir");
    let runtime_dir = empty.path().to_owned();
    if !in_child("no_session_bus_is_reported_unavailable", "nobus", |cmd| {
        cmd.env_remove("DBUS_SESSION_BUS_ADDRESS").env("XDG_RUNTIME_DIR", &runtime_dir);
    }) {
        return;
    }
    runtime().block_on(async {
        assert!(!herald_desktop::session_bus_available());
        let n = notifier("");
        match n.health_check().await {
            Health::Unavailable { message } => {
                assert!(message.starts_with("no D-Bus session bus"), "{message}");
                assert!(message.contains("DBUS_SESSION_BUS_ADDRESS is not set"), "{message}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        let e = Run::new("run-1").note(epoch(0), None);
        let e = n.deliver(&e).await.expect_err("no bus");
        assert!(e.retryable && e.code.as_deref() == Some("no_session_bus"), "{e:?}");
        assert!(e.message.starts_with("no D-Bus session bus"), "{e}");
    });
}

#[test]
fn a_bus_that_does_not_answer_is_reported_unavailable() {
    let empty = tempfile::tempdir().expect("temp dir");
    let address = format!("unix:path={}", empty.path().join("no-bus-here").display());
    if !in_child("a_bus_that_does_not_answer_is_reported_unavailable", "deadbus", |cmd| {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &address);
    }) {
        return;
    }
    runtime().block_on(async {
        let n = notifier("");
        match n.health_check().await {
            Health::Unavailable { message } => {
                assert!(
                    message.starts_with("no D-Bus session bus") && message.contains("does not answer"),
                    "{message}"
                )
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        let e = n.deliver(&Run::new("run-1").note(epoch(0), None)).await.expect_err("dead bus");
        assert!(e.retryable && e.message.contains("no D-Bus session bus"), "{e:?}");
    });
}

#[test]
fn a_bus_without_a_notification_server_is_reported_unavailable() {
    if !in_child("a_bus_without_a_notification_server_is_reported_unavailable", "bus", under_session_bus) {
        return;
    }
    runtime().block_on(async {
        let n = notifier("");
        match n.health_check().await {
            Health::Unavailable { message } => {
                assert!(message.starts_with("no notification server on the D-Bus session bus"), "{message}")
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        let e = n.deliver(&Run::new("run-1").note(epoch(0), None)).await.expect_err("no server");
        assert!(e.retryable && e.message.contains("no notification server"), "{e:?}");
    });
}

#[test]
fn the_documented_examples_build() {
    for table in herald_fakes::docs::examples("desktop") {
        herald_desktop::DesktopConfig::from_table("docs", table.clone())
            .unwrap_or_else(|e| panic!("{e}\n{table}"));
    }
}

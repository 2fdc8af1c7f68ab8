//! Out-of-process notifier plugins end to end: the real `herald serve` hosting plugins that misbehave
//! (`tests/plugins/misbehave.py`) beside a webhook notifier, discovery of `herald-notify-<type>`, `herald
//! plugins`, and the conformance kit (`herald plugin test`) on both example plugins.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, Receiver, Reply, config_text, free_port, message, wait_for};
use crate::herald;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

fn misbehave() -> String {
    repo().join("tests/plugins/misbehave.py").display().to_string()
}

fn pyecho() -> PathBuf {
    repo().join("examples/python-plugin/herald-notify-pyecho")
}

/// A `[[notifier]]` running `misbehave.py MODE` that records its deliveries in `dir/<name>.out`.
fn plugin_table(dir: &Path, name: &str, mode: &str, extra: &str) -> String {
    format!(
        "\n[[notifier]]\nname = \"{name}\"\ntype = \"exec\"\ncommand = [\"python3\", \"{script}\", \"{mode}\", \
         \"{out}\", \"{state}\"]\nevents = [\"message\"]\n{extra}\n",
        script = misbehave(),
        out = dir.join(format!("{name}.out")).display(),
        state = dir.join(format!("{name}.state")).display(),
    )
}

/// The distinct `run:seq` a plugin recorded.
fn recorded(dir: &Path, name: &str) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join(format!("{name}.out")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The log without ANSI colour codes (`ESC [ ... m`), so fields read `notifier=crash`.
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn notifier<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["notifiers"]
        .as_array()
        .and_then(|all| all.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("notifier {name} in status: {status}"))
}

/// Plugins that crash, hang, print garbage or exit during the handshake, each beside a webhook in one daemon:
/// each is restarted until every delivery is made, and the webhook gets everything at the first attempt.
#[test]
fn misbehaving_plugins_are_isolated_restarted_and_deliver_everything() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let modes = [
        ("crash", "crash-on-3", "the plugin exited (exit status 3)"),
        ("hang", "hang-on-3", "the plugin hangs"),
        ("garbage", "garbage-on-3", "it wrote a line that is not a protocol message"),
        ("handshake", "exit-in-handshake:2", "the plugin exited during the handshake (exit status 7)"),
    ];
    let mut config = config_text(dir.path(), port, hook.port, "", "events = [\"message\"]");
    for (name, mode, _) in modes {
        config.push_str(&plugin_table(dir.path(), name, mode, "delivery_timeout = \"1s\""));
    }
    let daemon = Daemon::start(dir.path(), port, &config);
    let n = 8u64;
    let events: Vec<String> = (0..n).map(|seq| message("r1", seq, &format!("message {seq}"))).collect();
    let (code, body) = daemon.post(&format!("[{}]", events.join(",")));
    assert_eq!(code, 202, "{body}");

    let all: BTreeSet<String> = (0..n).map(|seq| format!("r1:{seq}")).collect();
    let hits = hook.wait_delivered(n as usize, Duration::from_secs(20));
    for (name, _, _) in modes {
        wait_for(&format!("every delivery through plugin `{name}`"), Duration::from_secs(90), || {
            (recorded(dir.path(), name) == all).then_some(())
        });
    }
    // The webhook was never disturbed: every message once, at the first attempt, in order.
    let hook_hits = hook.hits();
    assert_eq!(hook_hits.len(), n as usize, "no retries at the webhook: {hook_hits:?}");
    assert_eq!(hits.iter().map(|h| h.seq).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
    let status = wait_for("the outbox to empty", Duration::from_secs(20), || {
        let s = daemon.status();
        (s["outbox"]["jobs"] == 0).then_some(s)
    });
    let h = notifier(&status, "hook");
    assert_eq!((h["delivered"].as_u64(), h["failed_attempts"].as_u64()), (Some(n), Some(0)), "{h}");
    let log = without_colours(&daemon.log());
    for (name, _, error) in modes {
        let p = notifier(&status, name);
        assert_eq!(p["type"], "exec");
        assert_eq!(p["delivered"].as_u64(), Some(n), "{name}: {p}");
        assert_eq!(p["gave_up"].as_u64(), Some(0), "{name}: {p}");
        // A delivery was in flight when these failed, so the failure is the notifier's last error. (The
        // handshake plugin may be up again before the first delivery comes, so only the log is sure to tell.)
        if name != "handshake" {
            let last = p["last_error"].as_str().unwrap_or_default();
            assert!(last.contains(error), "{name}: the failure shows in status: {last}");
        }
        assert!(
            log.lines().any(|l| l.contains("plugin failed; restarting it")
                && l.contains(&format!("notifier={name}"))
                && l.contains(error)),
            "{name}: the restart and its reason are logged:\n{log}"
        );
    }
    assert!(log.contains("misbehave crash-on-3 start 2"), "plugin stderr reaches the log:\n{log}");
    // Notifiers that failed are checked again: a restarted plugin's health says so in status.
    let status =
        wait_for("the crashing plugin's health to show its restarts", Duration::from_secs(60), || {
            let s = daemon.status();
            let health = notifier(&s, "crash")["health"].clone();
            (health["state"] == "degraded").then_some(health)
        });
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("plugin restarted") && message.contains("exit status 3"), "{status}");
}

/// A plugin that speaks another major version is refused with a clear message; its notifications are given
/// up after `max_age` with the reason logged and shown, while the webhook delivers.
#[test]
fn another_major_version_is_refused_and_given_up_after_max_age() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut config = config_text(dir.path(), port, hook.port, "", "events = [\"message\"]");
    config.push_str(&plugin_table(dir.path(), "future", "version:2.0", "max_age = \"3s\""));
    let daemon = Daemon::start(dir.path(), port, &config);
    let (code, body) = daemon.post(&message("r1", 0, "hello"));
    assert_eq!(code, 202, "{body}");
    hook.wait_delivered(1, Duration::from_secs(10));
    let status = wait_for("the give-up", Duration::from_secs(30), || {
        let s = daemon.status();
        (notifier(&s, "future")["gave_up"] == 1).then_some(s)
    });
    let p = notifier(&status, "future");
    let reason = p["recent_give_ups"][0]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("refused: the plugin speaks herald-plugin protocol 2.0, this herald speaks 1.0"),
        "{p}"
    );
    let log = daemon.log();
    assert!(log.contains("giving up on a delivery"), "{log}");
    assert!(log.contains("protocol 2.0"), "{log}");
    assert!(recorded(dir.path(), "future").is_empty());
}

/// A folder holding `herald-notify-pyecho`, for PATH.
fn plugin_dir() -> tempfile::TempDir {
    let bin = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(pyecho(), bin.path().join("herald-notify-pyecho"))
        .expect("symlink the plugin");
    bin
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_owned()];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).expect("a valid PATH")
}

#[test]
fn plugins_lists_built_ins_and_discovered_plugins() {
    let bin = plugin_dir();
    let out = herald().arg("plugins").env("PATH", path_with(bin.path())).output().expect("herald runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("webhook") && l.contains("built in")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("exec") && l.contains("built in")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("pyecho") && l.contains("herald-notify-pyecho")),
        "the discovered plugin is listed: {text}"
    );
}

/// `type = "pyecho"` finds `herald-notify-pyecho` on PATH; `herald check --send-test` delivers through it, and
/// an unknown type names the executable to install.
#[test]
fn an_unknown_type_runs_the_plugin_found_on_path() {
    let bin = plugin_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    let out_file = dir.path().join("echo.jsonl");
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{}/state\"\n\n[[notifier]]\nname = \"echo\"\ntype = \"pyecho\"\npath = \"{}\"\n",
            dir.path().display(),
            out_file.display()
        ),
    )
    .expect("write config");
    let out = herald()
        .args(["--config", &config.display().to_string(), "check", "--send-test"])
        .env("PATH", path_with(bin.path()))
        .output()
        .expect("herald runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let written = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(
        written.contains("\"type\": \"message\""),
        "the test message went through the plugin: {written}\n{text}"
    );

    std::fs::write(&config, "[[notifier]]\ntype = \"carrier-pigeon\"\n").expect("write config");
    let out =
        herald().args(["--config", &config.display().to_string(), "check"]).output().expect("herald runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("unknown notifier type `carrier-pigeon`"), "{text}");
    assert!(text.contains("herald-notify-carrier-pigeon"), "the message says what to install: {text}");
}

fn plugin_test(args: &[&str]) -> (bool, String) {
    let out = herald().args(["plugin", "test"]).args(args).output().expect("herald runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn conformance_kit_passes_the_python_example_and_fails_a_broken_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("echo.jsonl");
    let (ok, text) =
        plugin_test(&["--with", &format!("path={}", out.display()), "--", &pyecho().display().to_string()]);
    assert!(ok, "{text}");
    for check in
        ["handshake", "delivery", "concurrent deliveries", "malformed input", "clean stdout", "shutdown"]
    {
        assert!(text.lines().any(|l| l.starts_with(check) && l.contains(" pass ")), "{check}: {text}");
    }
    assert!(text.contains("7/7 checks passed"), "{text}");

    let (ok, text) = plugin_test(&["--", "python3", &misbehave(), "version:2.0", &out.display().to_string()]);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL") && text.contains("protocol 2.0"), "{text}");
}

/// A fake Gotify: `POST /message?token=good` answers `{"id": n}` and records the body.
struct FakeGotify {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeGotify {
    fn start() -> FakeGotify {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind the fake");
        let port = listener.local_addr().expect("address").port();
        let app = axum::Router::new()
            .route(
                "/message",
                axum::routing::post(
                    |axum::extract::State(bodies): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                     uri: axum::http::Uri,
                     body: axum::body::Bytes| async move {
                        use axum::response::IntoResponse;
                        if uri.query() != Some("token=good") {
                            return (axum::http::StatusCode::UNAUTHORIZED, "{}").into_response();
                        }
                        let mut all = bodies.lock().expect("bodies lock");
                        all.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        axum::Json(serde_json::json!({ "id": all.len() })).into_response()
                    },
                ),
            )
            .with_state(bodies.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGotify { port, bodies, _runtime: runtime }
    }
}

/// The gotify example's binary, built beside `herald`.
fn gotify_bin() -> PathBuf {
    let bin =
        crate::herald_bin().with_file_name(format!("herald-notify-gotify{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p herald-notify-gotify` (`cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// `examples/gotify/herald.toml` passes `herald check` with the plugin on PATH: the daemon's parser takes
/// the routing and host keys, the plugin the rest, and the handshake succeeds.
#[test]
fn the_gotify_example_configuration_checks() {
    let bin = gotify_bin();
    let dir = bin.parent().expect("the binary is in a folder").to_owned();
    let config = repo().join("examples/gotify/herald.toml");
    let out = herald()
        .args(["--config", &config.display().to_string(), "check"])
        .env("PATH", path_with(&dir))
        .env("GOTIFY_APP_TOKEN", "app-token")
        .output()
        .expect("herald runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("phone") && l.contains("gotify") && l.contains("ok")),
        "{text}"
    );
}

#[test]
fn conformance_kit_passes_the_gotify_example() {
    let bin = gotify_bin();
    let gotify = FakeGotify::start();
    let (ok, text) = plugin_test(&[
        "--with",
        &format!("url=http://127.0.0.1:{}", gotify.port),
        "--with",
        "token=good",
        "--",
        &bin.display().to_string(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("7/7 checks passed"), "{text}");
    let bodies = gotify.bodies.lock().expect("bodies lock").clone();
    assert_eq!(bodies.len(), 5, "every test delivery reached the fake Gotify: {bodies:?}");
    assert!(bodies.iter().any(|b| b["priority"] == 2), "the epoch went out with the epoch priority");
}

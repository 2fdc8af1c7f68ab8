//! The Apprise plugin (`plugins/apprise`, the `herald-notify-apprise` command) end to end: the real `herald
//! serve` finds it on PATH for `type = "apprise"` and delivers through the real Apprise to recording HTTP sinks
//! on 127.0.0.1 (herald-fakes' `recording::Fake`): `json://` and `form://` with the run and its loss curve, two
//! URLs where one fails (the retry reaches only that one, also across a daemon restart), an Apprise YAML
//! configuration with tags, and a bad URL refused at start-up without showing it. Also the conformance kit,
//! `herald plugins`, and the plugin's own Python tests (`plugins/apprise/tests`).
//!
//! `cargo xtask setup` installs the plugin, editable, and Apprise into `.venv`; these tests put `.venv/bin`
//! first on the daemon's PATH and fail saying so when it is missing. Nothing reaches the internet.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_fakes::recording::{Answer, Fake, Recorded};
use serde_json::Value;

use crate::daemon::{Daemon, epoch, finished, free_port, http, message, started, wait_for};
use crate::herald;

/// A password in URLs that must never show in a log, an error or a status.
const SECRET: &str = "s3cretPassw0rd";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

/// `.venv/bin`, holding `herald-notify-apprise` (and the venv's Python).
fn venv_bin() -> PathBuf {
    let bin = repo().join(".venv/bin");
    assert!(
        bin.join("herald-notify-apprise").exists(),
        "{} is missing: run `cargo xtask setup` (it installs plugins/apprise and Apprise into .venv)",
        bin.join("herald-notify-apprise").display()
    );
    bin
}

fn path_with_venv() -> OsString {
    let mut paths = vec![venv_bin()];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).expect("a valid PATH")
}

/// Recording HTTP sinks on one small runtime that lives as long as the test.
struct Sinks {
    runtime: tokio::runtime::Runtime,
}

impl Sinks {
    fn new() -> Sinks {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Sinks { runtime }
    }

    /// A sink answering 200, or 500 while `broken` holds.
    fn start(&self, broken: Arc<AtomicBool>) -> Fake {
        self.runtime.block_on(Fake::start(move |_: &Recorded| {
            let status = if broken.load(Ordering::SeqCst) { 500 } else { 200 };
            Answer { status, headers: vec![], body: if status == 200 { "ok" } else { "broken" }.to_owned() }
        }))
    }

    fn healthy(&self) -> Fake {
        self.start(Arc::new(AtomicBool::new(false)))
    }
}

/// `scheme://127.0.0.1:PORT/path` for a sink, with `auth` (`user:pass@`) when given.
fn url(fake: &Fake, scheme: &str, path: &str, auth: &str) -> String {
    let host = fake.base.strip_prefix("http://").expect("the fake's base is http://");
    format!("{scheme}://{auth}{host}{path}")
}

fn at<'a>(requests: &'a [Recorded], path: &str) -> Vec<&'a Recorded> {
    requests.iter().filter(|r| r.path == path).collect()
}

fn json_body(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// The value of a form field: `form://` posts a urlencoded form, or multipart when there is an attachment.
fn form_field(r: &Recorded, name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(&r.body).into_owned();
    if r.header("content-type").is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
        return text.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (url_decode(k) == name).then(|| url_decode(v))
        });
    }
    let marker = format!("name=\"{name}\"\r\n\r\n");
    let start = text.find(&marker)? + marker.len();
    let end = text[start..].find("\r\n--")? + start;
    Some(text[start..end].to_owned())
}

/// `a+b%21` as `a b!` (a bad escape is kept as it is).
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
/// The start of the base64 of any PNG.
const PNG_BASE64: &str = "iVBORw0KGgo";

/// A daemon in `dir` with these `[[notifier]]` tables, `.venv/bin` first on its PATH.
fn start_daemon(dir: &Path, notifiers: &str) -> Daemon {
    let port = free_port();
    let config = format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"{dir}/herald.sock\"\nstate_dir = \"{dir}/state\"\n\
         drain_timeout = \"2s\"\n\n{notifiers}\n",
        dir = dir.display()
    );
    let config_path = dir.join("herald.toml");
    std::fs::write(&config_path, config).expect("write the config");
    let mut d = Daemon {
        child: None,
        port,
        dir: dir.to_owned(),
        config: config_path,
        socket: dir.join("herald.sock"),
    };
    spawn(&mut d);
    d
}

/// (Re)start `herald serve` for `d`, as `Daemon::restart` does, with the venv on PATH.
fn spawn(d: &mut Daemon) {
    let child = crate::daemon::serve_command(&d.config, &d.dir.join("daemon.log"))
        .env("PATH", path_with_venv())
        .env("XDG_STATE_HOME", d.dir.join("xdg-state"))
        .spawn()
        .expect("start herald serve");
    d.child = Some(child);
    let (port, dir) = (d.port, d.dir.clone());
    wait_for("the daemon to answer /healthz", Duration::from_secs(20), || {
        if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!(
                "herald serve exited early ({status}):\n{}",
                std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
            );
        }
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/healthz", &[], b"").0 == 200;
        ok.then_some(())
    });
}

fn notifier<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["notifiers"]
        .as_array()
        .and_then(|all| all.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("notifier {name} in status: {status}"))
}

/// Wait until the outbox is empty and `name` delivered `n`; returns the status. Fails with the status and the
/// daemon's log.
fn settled(d: &Daemon, name: &str, n: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = d.status();
        if s["outbox"]["jobs"] == 0 && notifier(&s, name)["delivered"].as_u64() == Some(n) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {n} deliveries by `{name}` and an empty outbox: {s}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A run (start, three epochs, end) through `json://` (with a password) and `form://`: each sink gets each
/// notification once, in order, with Herald's title, the markdown rendering, the notify type (success at the
/// end) and the loss curve attached to the end; the password shows nowhere.
#[test]
fn apprise_json_and_form_get_the_run_with_the_plot() {
    let sinks = Sinks::new();
    let sink = sinks.healthy();
    let dir = tempfile::tempdir().expect("temp dir");
    let urls = [url(&sink, "json", "/json", &format!("herald:{SECRET}@")), url(&sink, "form", "/form", "")];
    let d = start_daemon(
        dir.path(),
        &format!("[[notifier]]\nname = \"team\"\ntype = \"apprise\"\nurls = {}\n", toml_list(&urls)),
    );
    let run = [
        started("r1", "elsewhere", 1),
        epoch("r1", 1, 0),
        epoch("r1", 2, 1),
        epoch("r1", 3, 2),
        finished("r1", 4),
    ];
    let (code, body) = d.post(&format!("[{}]", run.join(",")));
    assert_eq!(code, 202, "{body}");
    let status = settled(&d, "team", 5);
    let team = notifier(&status, "team");
    assert_eq!(team["type"], "apprise", "{team}");
    assert_eq!(team["failed_attempts"].as_u64(), Some(0), "{team}");

    let requests = sink.requests();
    let json = at(&requests, "/json");
    let form = at(&requests, "/form");
    assert_eq!((json.len(), form.len()), (5, 5), "one copy of each notification per URL: {requests:?}");
    let bodies: Vec<Value> = json.iter().map(|r| json_body(r)).collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(types, ["info", "info", "info", "info", "success"], "{bodies:?}");
    assert!(bodies[0]["title"].as_str().unwrap_or_default().contains("r1"), "{}", bodies[0]);
    assert!(bodies[3]["title"].as_str().unwrap_or_default().contains("3/3"), "the last epoch: {}", bodies[3]);
    let table = bodies[3]["message"].as_str().unwrap_or_default();
    assert!(
        table.contains("```") && table.contains("valid_loss"),
        "the markdown rendering with its table: {table}"
    );
    for b in &bodies[..4] {
        assert_eq!(b["attachments"], Value::Array(vec![]), "no image before the end: {b}");
    }
    let attached = &bodies[4]["attachments"][0];
    assert!(attached["filename"].as_str().unwrap_or_default().ends_with(".png"), "{attached}");
    assert!(attached["base64"].as_str().unwrap_or_default().starts_with(PNG_BASE64), "a PNG: {attached}");
    // The same notifications as form fields, the end with the PNG as a file part.
    let titles: Vec<Option<String>> = form.iter().map(|r| form_field(r, "title")).collect();
    let json_titles: Vec<Option<String>> =
        bodies.iter().map(|b| b["title"].as_str().map(str::to_owned)).collect();
    assert_eq!(titles, json_titles);
    assert_eq!(form_field(form[4], "type").as_deref(), Some("success"));
    assert!(
        form[4].body.windows(PNG_MAGIC.len()).any(|w| w == PNG_MAGIC),
        "the plot goes to form:// as a file"
    );
    assert!(String::from_utf8_lossy(&form[4].body).contains("filename=\"loss.png\""));
    assert!(!form[3].body.windows(PNG_MAGIC.len()).any(|w| w == PNG_MAGIC));

    let log = d.log();
    assert!(
        log.contains("URL 1 (json), URL 2 (form)"),
        "the plugin names its URLs by position and scheme:\n{log}"
    );
    assert!(!log.contains(SECRET), "the password is never logged:\n{log}");
    assert!(!d.status().to_string().contains(SECRET));
}

/// Two URLs (from `urls_file`), the second failing its first two requests: the notification is retried until
/// both have it, and each ends with exactly one copy (the healthy one is not sent it again).
#[test]
fn apprise_partial_failure_retries_only_the_failed_url() {
    let sinks = Sinks::new();
    let good = sinks.healthy();
    let flaky = sinks.healthy();
    flaky.script([Answer::json(500, Value::Null), Answer::json(500, Value::Null)]);
    let dir = tempfile::tempdir().expect("temp dir");
    let urls = [url(&good, "json", "/good", &format!("u:{SECRET}@")), url(&flaky, "json", "/flaky", "")];
    // The URLs in a file, named relative to herald.toml: Herald reads it and hands the plugin its text.
    std::fs::write(dir.path().join("apprise-urls"), format!("# the team\n{}\n{}\n", urls[0], urls[1]))
        .expect("write the URL file");
    let d = start_daemon(
        dir.path(),
        "[[notifier]]\nname = \"team\"\ntype = \"apprise\"\nevents = [\"message\"]\nurls_file = \"apprise-urls\"\n",
    );
    assert_eq!(d.post(&message("r1", 0, "partial")).0, 202);
    let status = settled(&d, "team", 1);
    let team = notifier(&status, "team");
    assert_eq!(team["failed_attempts"].as_u64(), Some(2), "{team}");
    assert_eq!(good.requests().len(), 1, "the healthy URL got one copy: {:?}", good.requests());
    assert_eq!(flaky.requests().len(), 3, "two failures, then the one copy");
    for r in good.requests().iter().chain(flaky.requests().iter()) {
        assert_eq!(json_body(r)["message"].as_str().map(|m| m.contains("partial")), Some(true));
    }
    let log = d.log();
    assert!(
        log.contains("1 of 2 Apprise URLs failed: line 3 (json)") && log.contains("500"),
        "the failure names the URL by position and scheme, with Apprise's reason:\n{log}"
    );
    assert!(log.contains("the retry goes only to the failed ones"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
}

/// The healthy URL got the notification, the other failed, then the daemon is killed: the restarted daemon
/// (and plugin) retries, and only the URL that failed gets it.
#[test]
fn apprise_partial_progress_survives_a_daemon_restart() {
    let sinks = Sinks::new();
    let good = sinks.healthy();
    let broken = Arc::new(AtomicBool::new(true));
    let flaky = sinks.start(broken.clone());
    let dir = tempfile::tempdir().expect("temp dir");
    let urls = [url(&good, "json", "/good", ""), url(&flaky, "json", "/flaky", "")];
    let mut d = start_daemon(
        dir.path(),
        &format!(
            "[[notifier]]\nname = \"team\"\ntype = \"apprise\"\nevents = [\"message\"]\nurls = {}\nstate_dir = \"{}\"\n",
            toml_list(&urls),
            dir.path().join("apprise-progress").display()
        ),
    );
    assert_eq!(d.post(&message("r1", 0, "across a restart")).0, 202);
    wait_for("a failed attempt", Duration::from_secs(30), || {
        (notifier(&d.status(), "team")["failed_attempts"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    assert_eq!(good.requests().len(), 1);
    let progress =
        std::fs::read_dir(dir.path().join("apprise-progress")).expect("the progress folder").count();
    assert_eq!(progress, 1, "the plugin remembers that URL 1 has it");
    d.kill9();
    broken.store(false, Ordering::SeqCst);
    let failures = flaky.requests().len();
    spawn(&mut d);
    wait_for("the retry after the restart", Duration::from_secs(60), || {
        let s = d.status();
        (s["outbox"]["jobs"] == 0 && flaky.requests().len() > failures).then_some(())
    });
    assert_eq!(flaky.requests().len(), failures + 1, "one copy once it is healthy");
    assert_eq!(good.requests().len(), 1, "the restarted plugin did not send it to URL 1 again");
    let left = std::fs::read_dir(dir.path().join("apprise-progress")).expect("the progress folder").count();
    assert_eq!(left, 0, "the progress is dropped once both URLs have it");
}

/// `config_file` in Apprise's YAML format with `tags`: only the URLs tagged `gpu` (any of the tags) get it.
#[test]
fn apprise_yaml_config_with_tags() {
    let sinks = Sinks::new();
    let sink = sinks.healthy();
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "version: 1\nurls:\n  - {}:\n      - tag: gpu\n  - {}:\n      - tag: cpu\n  - {}:\n      - tag: team, gpu\n",
        url(&sink, "json", "/gpu", &format!("bot:{SECRET}@")),
        url(&sink, "json", "/cpu", ""),
        url(&sink, "form", "/team", ""),
    );
    let config_file = dir.path().join("apprise.yml");
    std::fs::write(&config_file, yaml).expect("write the Apprise config");
    let d = start_daemon(
        dir.path(),
        &format!(
            "[[notifier]]\nname = \"tagged\"\ntype = \"apprise\"\nevents = [\"message\"]\nconfig_file = \"{}\"\n\
             tags = [\"gpu\"]\nformat = \"text\"\n",
            config_file.display()
        ),
    );
    assert_eq!(d.post(&message("r1", 0, "only for gpu")).0, 202);
    settled(&d, "tagged", 1);
    let requests = sink.requests();
    assert_eq!(at(&requests, "/gpu").len(), 1, "{requests:?}");
    assert_eq!(at(&requests, "/team").len(), 1, "{requests:?}");
    assert!(at(&requests, "/cpu").is_empty(), "the URL without the tag gets nothing: {requests:?}");
    let gpu = json_body(at(&requests, "/gpu")[0]);
    assert!(gpu["message"].as_str().unwrap_or_default().contains("only for gpu"), "{gpu}");
    assert_eq!(form_field(at(&requests, "/team")[0], "type").as_deref(), Some("info"));
    assert!(!d.log().contains(SECRET));
}

/// A bad URL is refused at start-up: `herald check` says which one by position and scheme (never the URL)
/// and fails, and `herald serve` logs the same reason.
#[test]
fn apprise_bad_url_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = "json://127.0.0.1:9/hook".to_owned();
    let cases = [
        (
            vec![good.clone(), format!("nope://{SECRET}@example.org/x")],
            "urls: URL 2 of 2 (scheme `nope`): unknown scheme",
        ),
        (vec![format!("{SECRET}.example.org")], "urls: URL 1 of 1 is not an Apprise URL"),
        (
            vec![good.clone(), format!("discord://{SECRET}")],
            "urls: URL 2 of 2 (scheme `discord`): Apprise cannot use this URL",
        ),
        (vec![], "urls: the list is empty"),
    ];
    for (urls, expected) in &cases {
        let config = dir.path().join("herald.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nstate_dir = \"{}/state\"\n\n[[notifier]]\nname = \"team\"\ntype = \"apprise\"\nurls = {}\n",
                dir.path().display(),
                toml_list(urls)
            ),
        )
        .expect("write config");
        let out = herald()
            .args(["--config", &config.display().to_string(), "check"])
            .env("PATH", path_with_venv())
            .env("XDG_STATE_HOME", dir.path().join("xdg-state"))
            .output()
            .expect("herald runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("the plugin refused to start") && text.contains(expected),
            "{expected}: {text}"
        );
        assert!(!text.contains(SECRET), "the URL is never shown: {text}");
    }

    let urls = toml_list(&[good, format!("nope://{SECRET}@example.org/x")]);
    let d = start_daemon(
        dir.path(),
        &format!("[[notifier]]\nname = \"team\"\ntype = \"apprise\"\nurls = {urls}\n"),
    );
    let log = wait_for("the refusal in the daemon's log", Duration::from_secs(30), || {
        let log = d.log();
        log.contains("urls: URL 2 of 2 (scheme `nope`): unknown scheme").then_some(log)
    });
    assert!(!log.contains(SECRET), "{log}");
    let health = wait_for("the notifier's health", Duration::from_secs(30), || {
        let h = notifier(&d.status(), "team")["health"].clone();
        (h["state"] == "unavailable").then_some(h)
    });
    assert!(health["message"].as_str().unwrap_or_default().contains("scheme `nope`"), "{health}");
}

/// `herald plugin test` passes the plugin, delivering to a local sink.
#[test]
fn apprise_conformance_kit_passes() {
    let sinks = Sinks::new();
    let sink = sinks.healthy();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = herald()
        .args(["plugin", "test", "--with"])
        .arg(format!("urls=[\"{}\"]", url(&sink, "json", "/kit", "")))
        .arg("--with")
        .arg(format!("state_dir={}", dir.path().display()))
        .arg("--")
        .arg(venv_bin().join("herald-notify-apprise"))
        .output()
        .expect("herald runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("7/7 checks passed"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("handshake") && l.contains("capabilities: image")), "{text}");
    let requests = sink.requests();
    assert_eq!(requests.len(), 5, "every test delivery reached the sink: {requests:?}");
    let types: Vec<Value> = requests.iter().map(|r| json_body(r)["type"].clone()).collect();
    assert!(types.contains(&Value::from("success")), "the finished run is a success: {types:?}");
}

/// `herald plugins` lists `apprise` once `.venv/bin` is on PATH.
#[test]
fn apprise_is_listed_by_herald_plugins() {
    let out = herald().arg("plugins").env("PATH", path_with_venv()).output().expect("herald runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("apprise") && l.contains("herald-notify-apprise")),
        "the plugin is discovered: {text}"
    );
}

/// The plugin's own tests (configuration errors, scrubbing, the protocol against local sinks, progress across
/// a plugin restart), with the venv's Python.
#[test]
fn apprise_python_tests() {
    let python = venv_bin().join("python");
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(repo().join("plugins/apprise/tests"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("the venv's Python runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the plugin's Python tests failed ({}):\n{stderr}", out.status);
    assert!(!stderr.contains("Ran 0 tests"), "no Python test ran:\n{stderr}");
}

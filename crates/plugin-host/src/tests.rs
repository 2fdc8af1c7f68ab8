//! Tests of the `exec` host against misbehaving plugins (`tests/plugins/misbehave.py`, standard Python).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_event::{Event, Message};
use herald_plugin::{
    Capabilities, DeliveryError, Health, Host, HostError, Notification, Receipt, RunContext, RunDetail,
    RunSummary, render,
};

use super::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/plugins/misbehave.py");

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case { dir: tempfile::tempdir().expect("a temporary folder") }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn options(&self, mode: &str) -> ExecOptions {
        let args = vec![
            SCRIPT.to_owned(),
            mode.to_owned(),
            self.out().display().to_string(),
            self.dir.path().join("state").display().to_string(),
        ];
        let mut o = ExecOptions::new("python3", args);
        o.handshake_timeout = Duration::from_secs(20);
        o.delivery_timeout = Duration::from_secs(20);
        o
    }

    fn delivered(&self) -> Vec<String> {
        std::fs::read_to_string(self.out()).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

fn note(seq: u64) -> Notification {
    let event = Event::now(
        "r1",
        seq,
        Message { title: format!("m{seq}"), text: "x".into(), level: Default::default() },
    );
    render::notification(&RunContext::new("r1"), &event, None, None, 1)
}

/// Deliver like a worker would: retry retryable failures until success or the deadline; returns the
/// errors seen on the way.
async fn deliver_eventually(n: &ExecNotifier, seq: u64) -> (Receipt, Vec<DeliveryError>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut errors = Vec::new();
    loop {
        match n.deliver(&note(seq)).await {
            Ok(r) => return (r, errors),
            Err(e) => {
                assert!(e.retryable, "a plugin failure is retryable: {e}");
                assert!(std::time::Instant::now() < deadline, "seq {seq} never delivered: {errors:?}");
                errors.push(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn good_plugin_delivers_and_is_healthy() {
    let case = Case::new();
    let n = ExecNotifier::new("p", "exec", case.options("good"));
    assert!(n.capabilities().commands, "before the handshake a host must offer listen");
    assert_eq!(n.health_check().await, Health::Ok);
    assert_eq!(n.capabilities(), Capabilities::default(), "after it, what the plugin declared");
    for seq in 0..5 {
        let r = n.deliver(&note(seq)).await.expect("a good plugin delivers");
        assert_eq!(r.0["seq"], seq);
    }
    assert_eq!(case.delivered(), (0..5).map(|s| format!("r1:{s}")).collect::<Vec<_>>());
    let stats = n.stats();
    assert_eq!((stats.restarts, stats.delivered), (0, 5));
    assert!(matches!(stats.state, PluginState::Ready { ref name, .. } if name == "misbehave"));
    n.shutdown().await;
    assert_eq!(n.stats().state, PluginState::Stopped);
    assert_eq!(case.delivered().last().map(String::as_str), Some("shutdown"), "the plugin got `shutdown`");
    let err = n.deliver(&note(9)).await.expect_err("no delivery after shutdown");
    assert!(err.retryable, "{err}");
}

#[tokio::test]
async fn a_plugin_ignoring_shutdown_is_killed_after_the_grace_period() {
    let script = r#"read hello; echo '{"type":"ready","name":"x","protocol_version":"1.0"}'; trap '' TERM; while true; do sleep 1; done"#;
    let mut o = ExecOptions::new("sh", vec!["-c".into(), script.into()]);
    o.shutdown_grace = Duration::from_millis(200);
    let n = ExecNotifier::new("p", "exec", o);
    assert_eq!(n.health_check().await, Health::Ok);
    tokio::time::timeout(Duration::from_secs(20), n.shutdown())
        .await
        .expect("shutdown ends after the grace period");
    assert_eq!(n.stats().state, PluginState::Stopped);
}

#[tokio::test]
async fn answers_are_matched_by_id_with_deliveries_in_flight() {
    let case = Case::new();
    let mut o = case.options("good");
    o.concurrency = 8;
    let n = Arc::new(ExecNotifier::new("p", "exec", o));
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..64 {
        let n = n.clone();
        tasks.spawn(async move { (seq, n.deliver(&note(seq)).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let (seq, result) = done.expect("no panic");
        assert_eq!(result.expect("delivered").0["seq"], seq, "the answer of seq {seq} is its own");
    }
    assert_eq!(case.delivered().len(), 64);
}

/// Each misbehaviour on the third delivery: the plugin is restarted and every delivery is eventually made.
#[tokio::test]
async fn misbehaving_plugins_are_restarted_and_deliver_eventually() {
    for (mode, error) in [
        ("crash-on-3", "the plugin exited (exit status 3)"),
        ("hang-on-3", "the plugin hangs: no answer to a delivery within 1 s"),
        ("garbage-on-3", "it wrote a line that is not a protocol message"),
        ("unknown-id-on-3", "it answered `delivered` for unknown id `no-such-id`"),
        ("long-on-3", "it wrote a line longer than 1 MiB"),
        ("ready-on-3", "it sent `ready` after the handshake"),
    ] {
        let case = Case::new();
        let mut o = case.options(mode);
        o.delivery_timeout = Duration::from_secs(1);
        let n = ExecNotifier::new("p", "exec", o);
        let mut failures = Vec::new();
        for seq in 0..7 {
            let (receipt, errors) = deliver_eventually(&n, seq).await;
            assert_eq!(receipt.0["seq"], seq, "{mode}");
            failures.extend(errors);
        }
        let stats = n.stats();
        assert!(stats.restarts >= 2, "{mode}: restarted {} times", stats.restarts);
        let last = stats.last_error.clone().unwrap_or_default();
        assert!(last.contains(error), "{mode}: {last}");
        assert!(
            failures.iter().any(|e| e.code.as_deref() == Some("plugin_failed") && e.message.contains(error)),
            "{mode}: the in-flight delivery fails as retryable with the reason: {failures:?}"
        );
        let mut seqs: Vec<String> = case.delivered();
        seqs.dedup();
        assert_eq!(seqs, (0..7).map(|s| format!("r1:{s}")).collect::<Vec<_>>(), "{mode}");
        match n.health_check().await {
            Health::Degraded { message } => assert!(message.contains("restarted"), "{mode}: {message}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn plugin_exiting_during_the_handshake_is_restarted() {
    let case = Case::new();
    let n = ExecNotifier::new("p", "exec", case.options("exit-in-handshake:2"));
    let (receipt, errors) = deliver_eventually(&n, 0).await;
    assert_eq!(receipt.0["seq"], 0);
    assert!(n.stats().restarts >= 2);
    assert!(
        errors.iter().any(|e| e.message.contains("exited during the handshake (exit status 7)")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn another_major_version_is_refused_with_a_clear_message() {
    let case = Case::new();
    let n = ExecNotifier::new("p", "exec", case.options("version:2.0"));
    match n.health_check().await {
        Health::Unavailable { message } => assert!(
            message.contains("refused: the plugin speaks herald-plugin protocol 2.0, this herald speaks 1.0"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let err = n.deliver(&note(0)).await.expect_err("a refused plugin delivers nothing");
    assert!(err.retryable && err.message.contains("protocol 2.0"), "{err}");
    assert!(case.delivered().is_empty());
}

#[tokio::test]
async fn missing_program_is_reported() {
    let n = ExecNotifier::new("p", "exec", ExecOptions::new("/nonexistent/herald-notify-x", Vec::new()));
    match n.health_check().await {
        Health::Unavailable { message } => {
            assert!(message.contains("cannot start `/nonexistent/herald-notify-x`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[derive(Default)]
struct FakeHost {
    stops: Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl Host for FakeHost {
    async fn runs(&self) -> Vec<RunSummary> {
        Vec::new()
    }
    async fn run(&self, key: &str) -> Result<RunDetail, HostError> {
        Err(HostError::NoSuchRun(key.to_owned()))
    }
    async fn request_stop(&self, key: &str, reason: &str) -> Result<RunSummary, HostError> {
        self.stops.lock().expect("not poisoned").push((key.to_owned(), reason.to_owned()));
        Ok(RunSummary {
            number: 1,
            run: key.to_owned(),
            name: "mnist".into(),
            state: "active".into(),
            last_epoch: None,
            stop_requested: true,
        })
    }
}

#[tokio::test]
async fn commands_reach_the_host_and_are_answered() {
    let case = Case::new();
    let n = Arc::new(ExecNotifier::new("chat", "exec", case.options("commands")));
    let host = Arc::new(FakeHost::default());
    let listening = tokio::spawn({
        let n = n.clone();
        let host: Arc<dyn Host> = host.clone();
        async move { n.listen(host).await }
    });
    let receipt = n.deliver(&note(0)).await.expect("delivered");
    assert_eq!(receipt.0["command"]["type"], "command_result");
    assert_eq!(receipt.0["command"]["ok"], true);
    assert_eq!(receipt.0["command"]["message"], "stopping run mnist (r1)");
    assert_eq!(host.stops.lock().expect("not poisoned")[0].0, "r1");
    assert!(n.capabilities().commands);
    n.shutdown().await;
    listening.await.expect("no panic").expect("listen ends at shutdown");
}

#[tokio::test]
async fn a_command_without_the_capability_is_a_violation() {
    // `commands` mode declares the capability; the good plugin does not, so relaying is refused there. Here
    // the plugin declares nothing yet sends a command: simulate with a shell one-liner.
    let script = r#"read hello; echo '{"type":"ready","name":"x","protocol_version":"1.0"}'; read d; echo '{"type":"command","run":"r","action":"stop"}'; sleep 5"#;
    let mut o = ExecOptions::new("sh", vec!["-c".into(), script.into()]);
    o.delivery_timeout = Duration::from_secs(20);
    let n = ExecNotifier::new("p", "exec", o);
    let err = n.deliver(&note(0)).await.expect_err("the violation fails the delivery");
    assert!(err.message.contains("without declaring the `commands` capability"), "{err}");
    assert_eq!(err.code.as_deref(), Some("plugin_failed"));
}

#[test]
fn table_splits_host_keys_from_plugin_config() {
    let table: toml::Table = toml::from_str(
        "command = [\"python3\", \"p.py\"]\nconcurrency = 4\ndelivery_timeout = \"2s\"\nurl = \"http://x\"\npriority = 5\n",
    )
    .expect("valid TOML");
    let o = ExecOptions::from_table(table, None).expect("valid");
    assert_eq!((o.program.to_str(), o.args.as_slice()), (Some("python3"), &["p.py".to_owned()][..]));
    assert_eq!((o.concurrency, o.delivery_timeout), (4, Duration::from_secs(2)));
    assert_eq!(o.config, serde_json::json!({"url": "http://x", "priority": 5}));

    fn err(text: &str, discovered: bool) -> String {
        let table: toml::Table = toml::from_str(text).expect("valid TOML");
        let program = discovered.then(|| PathBuf::from("/p"));
        ExecOptions::from_table(table, program).expect_err(text).to_string()
    }
    assert!(err("url = 1", false).starts_with("command: missing required key"));
    assert!(err("command = []", false).starts_with("command: name the program"));
    assert!(err("command = [\"x\"]", true).starts_with("command: only `type = \"exec\"` takes a command"));
    assert!(err("command = [\"x\"]\nconcurrency = 0", false).starts_with("concurrency: must be an integer"));
    assert!(err("command = [\"x\"]\nconcurrency = \"many\"", false).starts_with("concurrency:"));
    assert!(
        err("command = [\"x\"]\nhandshake_timeout = \"0s\"", false).starts_with("handshake_timeout: must be")
    );
}

#[test]
fn discovery_finds_executables_by_prefix() {
    use std::os::unix::fs::PermissionsExt;
    let a = tempfile::tempdir().expect("a folder");
    let b = tempfile::tempdir().expect("a folder");
    let make = |dir: &std::path::Path, name: &str, mode: u32| {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    };
    let first = make(a.path(), "herald-notify-gotify", 0o755);
    make(b.path(), "herald-notify-gotify", 0o755);
    make(b.path(), "herald-notify-matrix", 0o755);
    make(b.path(), "herald-notify-notexec", 0o644);
    make(b.path(), "herald-notify-Bad", 0o755);
    make(b.path(), "other-tool", 0o755);
    let dirs = vec![a.path().to_owned(), PathBuf::from("/nonexistent"), b.path().to_owned()];
    assert_eq!(discover_in("gotify", &dirs), Some(first.clone()));
    assert_eq!(discover_in("notexec", &dirs), None);
    assert_eq!(discover_in("../gotify", &dirs), None);
    let all: Vec<String> = discover_all_in(&dirs).into_iter().map(|(k, _)| k).collect();
    assert_eq!(all, ["gotify", "matrix"]);
    assert_eq!(discover_all_in(&dirs)[0].1, first);
}

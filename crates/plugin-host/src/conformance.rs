//! The conformance kit: drives a plugin through the protocol and reports each check as passed or failed.
//! `herald plugin test -- CMD ARGS...` prints its [`Report`]; a plugin author runs it from their own
//! `cargo test` with [`check`] (`docs/writing-a-notifier.md` shows how).
//!
//! Unlike [`crate::ExecNotifier`], which forgives nothing and restarts, the kit talks to one child directly so
//! it can send what a host never sends (malformed lines) and observe exactly what comes back: the handshake,
//! one delivery, three concurrent deliveries (one with an image), malformed input the plugin must survive,
//! a clean stdout, and `shutdown`. A `failed` answer to a delivery passes (the plugin followed the protocol;
//! the service is another matter) and its message is shown. The kit does not judge what the plugin sends to
//! its service.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_event::{EpochEnded, Event, Message, Metrics, RunFinished, RunStarted, RunStatus};
use herald_plugin::protocol::{self, HostMessage, MAX_LINE, PluginMessage};
use herald_plugin::serve::{Line, read_line};
use herald_plugin::{Image, RunContext, render};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The check's name, such as `handshake` or `malformed input`.
    pub name: &'static str,
    /// Whether the plugin passed it.
    pub passed: bool,
    /// What the kit saw, or why the check failed.
    pub detail: String,
}

/// Every check, in order, and the plugin's last stderr lines.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every check, in order; one that could not run because an earlier one failed fails with `not run`.
    pub checks: Vec<Check>,
    /// The plugin's last lines on stderr (at most ten).
    pub stderr_tail: Vec<String>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The pass/fail table, as `herald plugin test` prints it.
    pub fn table(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
        let mut out = format!("{:width$}  result  detail\n", "check");
        for c in &self.checks {
            let result = if c.passed { "pass" } else { "FAIL" };
            out.push_str(&format!("{:width$}  {result:6}  {}\n", c.name, c.detail));
        }
        let passed = self.checks.iter().filter(|c| c.passed).count();
        out.push_str(&format!("{passed}/{} checks passed\n", self.checks.len()));
        if !self.passed() && !self.stderr_tail.is_empty() {
            out.push_str("\nthe plugin's last stderr lines:\n");
            for line in &self.stderr_tail {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

/// The checks in order: a check that cannot run because an earlier one failed fails with `not run`.
const CHECKS: [&str; 7] = [
    "start",
    "handshake",
    "delivery",
    "concurrent deliveries",
    "malformed input",
    "clean stdout",
    "shutdown",
];

/// What the stdout reader saw: a message, or a line that is not one.
enum Seen {
    Message(PluginMessage),
    Bad(String),
}

struct Kit {
    report: Report,
    child: Child,
    stdin: ChildStdin,
    seen: mpsc::Receiver<Seen>,
    /// Lines on stdout that were not protocol messages, and answers to ids never sent.
    stray: Vec<String>,
    timeout: Duration,
}

impl Kit {
    fn check(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) -> bool {
        self.report.checks.push(Check { name, passed, detail: detail.into() });
        passed
    }

    async fn send(&mut self, line: &[u8]) -> Result<(), String> {
        self.stdin.write_all(line).await.map_err(|e| format!("cannot write to the plugin: {e}"))?;
        self.stdin.flush().await.map_err(|e| format!("cannot write to the plugin: {e}"))
    }

    /// The next protocol message, or why there is none; bad lines are recorded and skipped.
    async fn next(&mut self) -> Result<PluginMessage, String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Err(_) => return Err(format!("no answer within {:.0} s", self.timeout.as_secs_f64())),
                Ok(None) => {
                    let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
                        Ok(Ok(s)) => s.to_string(),
                        _ => "still running".to_owned(),
                    };
                    return Err(format!("the plugin closed its stdout ({status})"));
                }
                Ok(Some(Seen::Bad(line))) => self.stray.push(line),
                Ok(Some(Seen::Message(m))) => return Ok(m),
            }
        }
    }

    /// Wait for answers to `ids` (each once); `Ok` maps id to a description of its answer.
    async fn answers(&mut self, ids: &[&str]) -> Result<BTreeMap<String, String>, String> {
        let mut got: BTreeMap<String, String> = BTreeMap::new();
        while ids.iter().any(|id| !got.contains_key(*id)) {
            let m = self.next().await.map_err(|e| {
                let missing: Vec<&str> = ids.iter().copied().filter(|id| !got.contains_key(*id)).collect();
                format!("{e}; unanswered: {}", missing.join(", "))
            })?;
            let (id, what) = match m {
                PluginMessage::Delivered { id, .. } => (id, "delivered".to_owned()),
                PluginMessage::Failed { id, message, retryable, .. } => {
                    (id, format!("failed ({}: {message})", if retryable { "retryable" } else { "permanent" }))
                }
                PluginMessage::Command { .. } => continue,
                other => return Err(format!("it sent `{}` instead of an answer", other.kind())),
            };
            if !ids.contains(&id.as_str()) {
                self.stray.push(format!("an answer for id `{id}`, which was never sent"));
                continue;
            }
            if got.insert(id.clone(), what).is_some() {
                return Err(format!("id `{id}` was answered twice"));
            }
        }
        Ok(got)
    }
}

fn notifications() -> Vec<herald_plugin::Notification> {
    let started = RunStarted {
        name: "conformance".into(),
        host: "kit".into(),
        pid: 1,
        rank: 0,
        job: None,
        world_size: None,
        n_epochs: 2,
        batches_per_epoch: 10,
        metric_names: vec!["accuracy".into()],
        hyper: BTreeMap::from([("lr".to_owned(), serde_json::json!(0.01))]),
    };
    let run = "herald-plugin-test";
    let mut ctx = RunContext::from_started(run, &started);
    let epoch = EpochEnded {
        epoch: 0,
        n_epochs: 2,
        train_loss: 0.5,
        valid_loss: Some(0.25),
        metrics: Metrics(vec![("accuracy".to_owned(), 0.875)]),
        elapsed_s: 1.5,
    };
    let events = [
        Event::now(
            run,
            0,
            Message {
                title: "herald plugin test".into(),
                text: "a test message".into(),
                level: Default::default(),
            },
        ),
        Event::now(run, 1, started),
        Event::now(run, 2, epoch),
        Event::now(
            run,
            3,
            RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 3.0, best: None },
        ),
    ];
    // The smallest valid PNG (1x1, transparent), to check that an image attachment is taken.
    const PNG: [u8; 67] = [
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00,
        0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01,
        0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let image = (i == 3).then(|| Image {
                filename: "loss.png".into(),
                mime: "image/png".into(),
                bytes: PNG.to_vec(),
            });
            let n = render::notification(&ctx, e, None, image, 1);
            ctx.apply(e);
            n
        })
        .collect()
}

fn deliver_line(id: &str, n: &herald_plugin::Notification) -> Vec<u8> {
    protocol::encode(&HostMessage::Deliver { id: id.to_owned(), notification: Box::new(n.clone()) })
        .unwrap_or_default()
}

/// How long [`check`] waits for each answer from the plugin.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the kit against `command` (the program, then its arguments), sending `config` in `hello` and waiting
/// up to [`DEFAULT_TIMEOUT`] for each answer. Needs a tokio runtime (`#[tokio::test]`); the plugin is killed
/// when the kit ends.
///
/// ```no_run
/// # async fn example() {
/// let config = serde_json::json!({ "path": "/tmp/echo.jsonl" });
/// let report = herald_plugin_host::conformance::check(&["herald-notify-pyecho"], config).await;
/// assert!(report.passed(), "{}", report.table());
/// # }
/// ```
pub async fn check<S: AsRef<str>>(command: &[S], config: serde_json::Value) -> Report {
    let Some((program, args)) = command.split_first() else {
        let mut report = Report::default();
        report.checks.push(Check { name: CHECKS[0], passed: false, detail: "the command is empty".into() });
        return not_run(report);
    };
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    run(Path::new(program.as_ref()), &args, config, DEFAULT_TIMEOUT).await
}

/// Run the kit against `program args...`, sending `config` in `hello`; `timeout` bounds each wait.
pub async fn run(program: &Path, args: &[String], config: serde_json::Value, timeout: Duration) -> Report {
    let mut report = Report::default();
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            report.checks.push(Check {
                name: CHECKS[0],
                passed: false,
                detail: format!("cannot start `{}`: {e}", program.display()),
            });
            return not_run(report);
        }
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        report.checks.push(Check {
            name: CHECKS[0],
            passed: false,
            detail: "the child's pipes were not set up".into(),
        });
        return not_run(report);
    };
    let tail: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr_task = tokio::spawn(collect_stderr(stderr, tail.clone()));
    let (tx, seen) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            let item = match read_line(&mut reader, &mut buf, MAX_LINE).await {
                Ok(Line::Eof) | Err(_) => return,
                Ok(Line::TooLong) => Seen::Bad("a line longer than 1 MiB".into()),
                Ok(Line::Line) => match serde_json::from_slice::<PluginMessage>(&buf) {
                    Ok(m) => Seen::Message(m),
                    Err(e) => {
                        Seen::Bad(format!("`{}` ({e})", String::from_utf8_lossy(&buf[..buf.len().min(80)])))
                    }
                },
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    let pid = child.id().map_or_else(|| "?".to_owned(), |p| p.to_string());
    report.checks.push(Check { name: CHECKS[0], passed: true, detail: format!("pid {pid}") });
    let mut kit = Kit { report, child, stdin, seen, stray: Vec::new(), timeout };
    steps(&mut kit, config).await;
    let _ = kit.child.start_kill();
    let _ = kit.child.wait().await;
    reader.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), stderr_task).await;
    let mut report = kit.report;
    report.stderr_tail = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    not_run(report)
}

/// Add a failed `not run` row for every check that did not run.
fn not_run(mut report: Report) -> Report {
    for name in CHECKS.iter().skip(report.checks.len()) {
        report.checks.push(Check { name, passed: false, detail: "not run: an earlier check failed".into() });
    }
    report
}

async fn collect_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(Line::Line | Line::TooLong) = read_line(&mut reader, &mut buf, 4096).await {
        let mut t = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        t.push(String::from_utf8_lossy(&buf).into_owned());
        if t.len() > 10 {
            t.remove(0);
        }
    }
}

async fn steps(kit: &mut Kit, config: serde_json::Value) {
    // Handshake.
    let hello = HostMessage::Hello {
        protocol: protocol::PROTOCOL.into(),
        version: protocol::VERSION.into(),
        name: "conformance".into(),
        config,
    };
    if let Err(e) = kit.send(&protocol::encode(&hello).unwrap_or_default()).await {
        kit.check(CHECKS[1], false, e);
        return;
    }
    let ok = match kit.next().await {
        Ok(PluginMessage::Ready { name, version, protocol_version, capabilities }) => {
            match protocol::check_version(&protocol_version) {
                Err(e) => kit.check(CHECKS[1], false, e.to_string()),
                Ok(()) if name.trim().is_empty() => {
                    kit.check(CHECKS[1], false, "`ready` has an empty `name`")
                }
                Ok(()) => {
                    let caps =
                        if capabilities.is_empty() { "none".to_owned() } else { capabilities.join(", ") };
                    kit.check(
                        CHECKS[1],
                        true,
                        format!("{name} {version}, protocol {protocol_version}, capabilities: {caps}"),
                    )
                }
            }
        }
        Ok(PluginMessage::Error { message }) => {
            kit.check(CHECKS[1], false, format!("the plugin refused: {message}"))
        }
        Ok(other) => kit.check(CHECKS[1], false, format!("answered `hello` with `{}`", other.kind())),
        Err(e) => kit.check(CHECKS[1], false, e),
    };
    if !ok {
        return;
    }
    let notes = notifications();

    // One delivery.
    let line = deliver_line("t1", &notes[0]);
    let ok = match kit.send(&line).await {
        Err(e) => kit.check(CHECKS[2], false, e),
        Ok(()) => match kit.answers(&["t1"]).await {
            Ok(got) => {
                let what = got.get("t1").cloned().unwrap_or_default();
                kit.check(CHECKS[2], true, format!("message: {what}"))
            }
            Err(e) => kit.check(CHECKS[2], false, e),
        },
    };
    if !ok {
        return;
    }

    // Three at once, answered in any order, one carrying an image.
    let mut lines = Vec::new();
    for (id, n) in [("t2", &notes[1]), ("t3", &notes[2]), ("t4", &notes[3])] {
        lines.extend(deliver_line(id, n));
    }
    let ok = match kit.send(&lines).await {
        Err(e) => kit.check(CHECKS[3], false, e),
        Ok(()) => match kit.answers(&["t2", "t3", "t4"]).await {
            Ok(got) => {
                let detail: Vec<String> = got.iter().map(|(id, what)| format!("{id} {what}")).collect();
                kit.check(
                    CHECKS[3],
                    true,
                    format!("run_started, epoch_ended, run_finished with image: {}", detail.join("; ")),
                )
            }
            Err(e) => kit.check(CHECKS[3], false, e),
        },
    };
    if !ok {
        return;
    }

    // Malformed input: the plugin must survive it and go on answering.
    let mut junk = b"this is not JSON\n{\"type\":\"no_such_message\",\"id\":\"x\"}\n[1,2,3]\n".to_vec();
    junk.extend(b"{\"type\":\"deliver\",\"id\":\"bad\"}\n");
    junk.extend(deliver_line("t5", &notes[0]));
    let ok = match kit.send(&junk).await {
        Err(e) => kit.check(CHECKS[4], false, e),
        Ok(()) => {
            // The deliver without a notification may be answered `failed` or ignored: only t5 must come.
            match kit.answers(&["t5"]).await {
                Ok(_) => kit.check(
                    CHECKS[4],
                    true,
                    "survived a non-JSON line, an unknown type, a non-object and a deliver without a notification",
                ),
                Err(e) => kit.check(CHECKS[4], false, format!("after malformed lines: {e}")),
            }
        }
    };
    if !ok {
        return;
    }
    kit.stray.retain(|s| !s.contains("id `bad`"));
    let stray = std::mem::take(&mut kit.stray);
    match stray.first() {
        None => kit.check(CHECKS[5], true, "every stdout line was a protocol message"),
        Some(first) => kit.check(
            CHECKS[5],
            false,
            format!("{} stray stdout line(s), first {first}: log to stderr, never stdout", stray.len()),
        ),
    };

    // Shutdown.
    let shutdown = protocol::encode(&HostMessage::Shutdown).unwrap_or_default();
    if let Err(e) = kit.send(&shutdown).await {
        kit.check(CHECKS[6], false, e);
        return;
    }
    match tokio::time::timeout(Duration::from_secs(5), kit.child.wait()).await {
        Ok(Ok(status)) if status.success() => kit.check(CHECKS[6], true, "exited with status 0"),
        Ok(Ok(status)) => kit.check(CHECKS[6], false, format!("exited with {status}; expected status 0")),
        Ok(Err(e)) => kit.check(CHECKS[6], false, format!("cannot wait for the plugin: {e}")),
        Err(_) => kit.check(CHECKS[6], false, "still running 5 s after `shutdown`"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/plugins/misbehave.py");

    async fn kit(mode: &str) -> (Report, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a folder");
        let args = vec![SCRIPT.to_owned(), mode.to_owned(), dir.path().join("out").display().to_string()];
        let report = run(Path::new("python3"), &args, serde_json::json!({}), Duration::from_secs(10)).await;
        (report, dir)
    }

    #[tokio::test]
    async fn a_plugin_that_chokes_on_garbage_fails_the_malformed_check() {
        // misbehave.py parses every line with json.loads and dies on garbage: the kit must say so.
        let (report, _dir) = kit("good").await;
        let table = report.table();
        assert!(!report.passed(), "{table}");
        let by = |name: &str| report.checks.iter().find(|c| c.name == name).cloned().expect("a row");
        assert!(
            by("handshake").passed && by("delivery").passed && by("concurrent deliveries").passed,
            "{table}"
        );
        assert!(!by("malformed input").passed, "{table}");
        assert_eq!(by("shutdown").detail, "not run: an earlier check failed");
        assert!(table.contains("4/7 checks passed"), "{table}");
    }

    #[tokio::test]
    async fn the_python_example_passes_every_check() {
        let dir = tempfile::tempdir().expect("a folder");
        let out = dir.path().join("out.jsonl");
        let program = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/python-plugin/herald-notify-pyecho"
        ));
        let config = serde_json::json!({ "path": out.display().to_string() });
        let report = run(program, &[], config, Duration::from_secs(10)).await;
        assert!(report.passed(), "{}", report.table());
        let written = std::fs::read_to_string(&out).expect("pyecho wrote its file");
        let types: Vec<String> = written
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines")["type"].to_string())
            .collect();
        assert_eq!(
            types,
            ["\"message\"", "\"run_started\"", "\"epoch_ended\"", "\"run_finished\"", "\"message\""]
        );
        assert!(written.contains("\"image\": \"loss.png\""), "{written}");
        // A bad table is refused at the handshake, with the key named.
        let report = run(program, &[], serde_json::json!({ "paht": "x" }), Duration::from_secs(10)).await;
        assert!(report.checks[1].detail.contains("paht: unknown key"), "{}", report.table());
    }

    /// The skeleton shown in docs/writing-a-notifier.md is a working plugin.
    #[tokio::test]
    async fn the_documented_python_skeleton_passes_every_check() {
        let doc = include_str!("../../../docs/writing-a-notifier.md");
        let code = doc
            .split("```python\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the guide shows a Python plugin");
        let dir = tempfile::tempdir().expect("a folder");
        let script = dir.path().join("plugin.py");
        std::fs::write(&script, code).expect("write the skeleton");
        let out = dir.path().join("out.jsonl");
        let args = vec![script.display().to_string()];
        let config = serde_json::json!({ "path": out.display().to_string() });
        let report = run(Path::new("python3"), &args, config, Duration::from_secs(10)).await;
        assert!(report.passed(), "{}", report.table());
        let lines = std::fs::read_to_string(&out).expect("the skeleton wrote its file").lines().count();
        assert_eq!(lines, 5);
    }

    #[tokio::test]
    async fn refusals_and_missing_programs_fail_clearly() {
        let (report, _dir) = kit("version:2.0").await;
        let handshake = &report.checks[1];
        assert!(!handshake.passed && handshake.detail.contains("protocol 2.0"), "{}", report.table());
        let report =
            run(Path::new("/nonexistent/plugin"), &[], serde_json::json!({}), Duration::from_secs(1)).await;
        assert!(report.checks[0].detail.starts_with("cannot start `/nonexistent/plugin`"));
        assert_eq!(report.checks.len(), 7);
    }
}

//! `herald train`: the fastai table on stdout, the events (JSON lines on stderr with `--events-stderr`, to a
//! running daemon, or to the notifiers from its own process), `herald stop`, the plots, MNIST folders,
//! and clear failures for bad data.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::herald;

/// A fresh folder for one test under cargo's temporary folder for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("train-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv.gz")
}

/// `herald --config <config> train` on the digits data, 50 epochs of batch size 1 on one thread: epochs of 1438
/// batches, far longer than a stop takes to travel or a page to look, so only a stop or a signal ends it in a
/// test's time. Named `name` when given; stdout discarded. The caller sets stderr and spawns.
pub(crate) fn long_train(config: &Path, name: Option<&str>) -> std::process::Command {
    let mut cmd = herald();
    cmd.arg("--config").arg(config).args(["train", "--epochs", "50", "--bs", "1", "--threads", "1"]);
    if let Some(name) = name {
        cmd.args(["--name", name]);
    }
    cmd.arg("--data").arg(digits()).stdout(std::process::Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn events(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l}: {e}")))
        .collect()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let w = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let h = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
    assert!(w > 100 && h > 100, "{w}x{h}");
}

#[test]
fn train_on_digits_prints_the_table_and_the_events_and_reaches_95_percent() {
    let dir = scratch("digits");
    let plot = dir.join("loss.png");
    let out = herald()
        .args([
            "train",
            "--events-stderr",
            "--epochs",
            "10",
            "--threads",
            "1",
            "--name",
            "e2e-digits",
            "--data",
        ])
        .arg(digits())
        .arg("--plot")
        .arg(&plot)
        .output()
        .expect("herald runs");
    assert!(out.status.success(), "herald train failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "epoch     train_loss  valid_loss  accuracy  time    ");
    assert_eq!(lines.len(), 11, "{stdout}");
    let last: Vec<&str> = lines[10].split_whitespace().collect();
    assert_eq!(last[0], "9");
    let accuracy: f64 = last[3].parse().expect("accuracy cell");
    assert!(accuracy >= 0.95, "accuracy {accuracy}\n{stdout}");

    let events = events(&out);
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"run_started"));
    assert_eq!(events[0]["name"], "e2e-digits");
    assert_eq!(types.iter().filter(|t| **t == "epoch_ended").count(), 10);
    let end = events.last().expect("events");
    assert_eq!(end["type"], "run_finished");
    assert_eq!(end["status"], "completed");
    assert_eq!(end["best"]["name"], "accuracy");

    assert_png(&plot);
    assert_png(&dir.join("loss-lr.png"));
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[test]
fn train_on_an_mnist_folder() {
    let dir = scratch("mnist");
    // 40 training and 20 test images of 3x3 pixels; the label is the brightest pixel's index.
    let make = |n: usize, offset: usize| -> (Vec<u8>, Vec<u8>) {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for i in 0..n {
            let label = (i + offset) % 9;
            images.extend((0..9).map(|p| if p == label { 250 } else { ((i * 7 + p * 13) % 40) as u8 }));
            labels.push(label as u8);
        }
        (images, labels)
    };
    let (train_x, train_y) = make(40, 0);
    let (test_x, test_y) = make(20, 3);
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx(&[40, 3, 3], &train_x)),
        ("train-labels-idx1-ubyte", idx(&[40], &train_y)),
        ("t10k-images-idx3-ubyte", idx(&[20, 3, 3], &test_x)),
        ("t10k-labels-idx1-ubyte", idx(&[20], &test_y)),
    ] {
        std::fs::write(dir.join(name), bytes).expect("write IDX");
    }
    let out = herald()
        .args(["train", "--events-stderr", "--epochs", "2", "--bs", "8", "--data"])
        .arg(&dir)
        .output()
        .expect("herald runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3);
    let events = events(&out);
    assert_eq!(events[0]["hyper"]["model"], "mlp 9-128-10");
    assert_eq!(events[0]["batches_per_epoch"], 5);
}

#[test]
fn bad_data_fails_with_the_line_and_no_events() {
    let dir = scratch("bad");
    let csv = dir.join("bad.csv");
    std::fs::write(&csv, "1,2,3\n").expect("write");
    let out = herald().args(["train", "--events-stderr", "--data"]).arg(&csv).output().expect("herald runs");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 1: 3 columns; expected 65"), "{stderr}");

    let out = herald()
        .args(["train", "--events-stderr", "--data"])
        .arg(dir.join("missing.csv"))
        .output()
        .expect("herald runs");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no such file or folder"));
}

#[test]
fn a_diverging_run_is_reported_as_run_failed() {
    // A learning rate this large overflows the weights to NaN: TerminateOnNaN ends the run with run_failed.
    let out = herald()
        .args(["train", "--events-stderr", "--epochs", "3", "--lr", "1e30", "--data"])
        .arg(digits())
        .output()
        .expect("herald runs");
    assert!(!out.status.success(), "a NaN run must fail");
    let events = events(&out);
    let end = events.last().expect("events");
    assert_eq!(end["type"], "run_failed", "{end}");
    assert!(end["error"].as_str().is_some_and(|e| e.contains("loss")), "{end}");
}

/// The webhook bodies of one type, in arrival order.
fn of_type<'a>(hits: &'a [crate::daemon::Hit], kind: &str) -> Vec<&'a crate::daemon::Hit> {
    hits.iter().filter(|h| h.kind == kind).collect()
}

#[test]
fn train_reports_to_a_running_daemon_and_herald_stop_ends_it_within_an_epoch() {
    use crate::daemon::{Daemon, Receiver, Reply, config_text, free_port, wait_for};
    use std::time::Duration;

    let dir = scratch("stop");
    let hook = Receiver::start(|_, _| Reply::Ok);
    let port = free_port();
    let daemon = Daemon::start(&dir, port, &config_text(&dir, port, hook.port, "", ""));
    // Batch size 1 makes an epoch 1438 batches long, far longer than a stop takes to travel, so "within an
    // epoch" does not depend on the machine's speed.
    let mut child = crate::KillOnDrop(
        long_train(&daemon.config, Some("e2e-stop"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start herald train"),
    );
    let first = wait_for("the first epoch at the webhook", Duration::from_secs(60), || {
        of_type(&hook.delivered(), "epoch_ended").first().map(|h| (*h).clone())
    });
    let run = first.run.clone();
    let out =
        herald().arg("--config").arg(&daemon.config).args(["stop", &run]).output().expect("herald stop");
    assert!(out.status.success(), "herald stop failed: {}", text(&out.stderr));
    let epochs_when_asked = first.body["event"]["epoch"].as_u64().expect("epoch number");

    let status = wait_for("herald train to exit after the stop", Duration::from_secs(60), || {
        child.0.try_wait().expect("poll herald train")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().expect("piped stderr"), &mut stderr)
        .expect("stderr");
    assert!(status.success(), "herald train: {status}\n{stderr}");
    assert!(stderr.contains("reporting to the daemon at"), "{stderr}");

    let finished = wait_for("run_finished at the webhook", Duration::from_secs(30), || {
        of_type(&hook.delivered(), "run_finished").first().map(|h| (*h).clone())
    });
    assert_eq!(finished.run, run);
    assert_eq!(finished.body["event"]["status"], "stopped", "{}", finished.body);
    // A stop reaches the trainer in the answer to its next post (batches are posted as they come) and ends
    // the run at the next batch end: in the epoch running when it was asked, or the one after.
    let last_epoch = of_type(&hook.delivered(), "epoch_ended")
        .iter()
        .filter_map(|h| h.body["event"]["epoch"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        last_epoch <= epochs_when_asked + 2,
        "stopped at epoch {last_epoch}, asked at {epochs_when_asked}"
    );
}

#[test]
fn train_without_a_daemon_notifies_from_its_own_process() {
    use crate::daemon::{Receiver, Reply, config_text, free_port};

    let dir = scratch("in-process");
    let hook = Receiver::start(|_, _| Reply::Ok);
    // Nothing listens on this port and the folder has no outbox: the trainer notifies by itself.
    let config = dir.join("herald.toml");
    std::fs::write(&config, config_text(&dir, free_port(), hook.port, "", "")).expect("write the config");
    let out = herald()
        .arg("--config")
        .arg(&config)
        .args(["train", "--epochs", "2", "--threads", "1", "--data"])
        .arg(digits())
        .output()
        .expect("herald train runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("notifying from this process"), "{}", text(&out.stderr));
    // The process hands its deliveries over before it exits, so everything has arrived by now.
    let kinds: Vec<String> = hook.delivered().iter().map(|h| h.kind.clone()).collect();
    assert_eq!(kinds, ["run_started", "epoch_ended", "epoch_ended", "run_finished"], "{kinds:?}");
}

/// `herald` as on a fresh machine: an empty home (no configuration file, no daemon's outbox), no
/// `$HERALD_CONFIG`, no D-Bus session bus (so the built-in default is the console alone).
pub(crate) fn first_run(home: &Path) -> std::process::Command {
    std::fs::create_dir_all(home).expect("create the empty home");
    let mut cmd = herald();
    cmd.env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("HERALD_CONFIG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    cmd
}

/// The output of a first `herald train`, stdout then stderr, as one terminal shows both.
fn first_train(name: &str, extra: &[&std::ffi::OsStr]) -> (Output, String) {
    let dir = scratch(name);
    let out = first_run(&dir.join("home"))
        .args(["train", "--epochs", "3", "--threads", "1", "--name", "first", "--data"])
        .arg(digits())
        .args(extra)
        .output()
        .expect("herald train runs");
    let terminal = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "herald train failed:\n{terminal}");
    assert!(
        terminal.contains("no daemon answers: notifying from this process"),
        "a daemon answers at 127.0.0.1:7878 on this machine; the first-run tests need none:\n{terminal}"
    );
    (out, terminal)
}

#[test]
fn a_first_herald_train_prints_the_table_once_and_a_finish_line() {
    let (out, terminal) = first_train("first-run", &[]);
    let headers = terminal.matches("epoch     train_loss").count();
    assert_eq!(headers, 1, "the table is printed once, by the trainer:\n{terminal}");
    assert_eq!(text(&out.stdout).lines().count(), 4, "the header and three rows:\n{terminal}");
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.contains(" started (pid ")).count(), 1, "{terminal}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("first on ") && l.contains(" completed after ")).count(),
        1,
        "{terminal}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("herald: best accuracy ")).count(), 1, "{terminal}");
    // Nothing per epoch: the console's blocks (`── first: epoch 1/3 ──`) and summaries stay away.
    assert!(!stderr.contains("──") && !stderr.contains("epoch 1/3 ·"), "{terminal}");
    assert_eq!(lines.len(), 4, "the link, start, finish and best lines only:\n{terminal}");
}

#[test]
fn a_first_herald_train_with_plot_says_where_the_plot_went() {
    let dir = scratch("first-run-plot");
    let plot = dir.join("loss.png");
    let (out, terminal) =
        first_train("first-run-plot-home", &[std::ffi::OsStr::new("--plot"), plot.as_os_str()]);
    assert_eq!(terminal.matches("epoch     train_loss").count(), 1, "{terminal}");
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let lr = dir.join("loss-lr.png");
    assert_eq!(
        last,
        format!("herald: loss plot: {} (learning rate: {})", plot.display(), lr.display()),
        "{terminal}"
    );
    assert_png(&plot);
    assert_png(&lr);
}

/// Ctrl-C as a terminal sends it: SIGINT to the whole process group of `child`, which `process_group(0)` made
/// its own (the `herald` it started has replaced itself with `herald-train`; a plugin it ran would be there too).
fn ctrl_c(child: &std::process::Child) {
    let group = format!("-{}", child.id());
    let out = std::process::Command::new("kill")
        .args(["-s", "INT", "--", &group])
        .output()
        .expect("run kill (procps)");
    assert!(out.status.success(), "kill -s INT -- {group}: {}", text(&out.stderr));
}

/// A child's stderr, read line by line on a thread so that a test can wait for a line.
struct StderrLines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl StderrLines {
    fn read(child: &mut std::process::Child) -> StderrLines {
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
                sink.lock().expect("lines lock").push(line);
            }
        });
        StderrLines(lines)
    }

    fn all(&self) -> String {
        self.0.lock().expect("lines lock").join("\n")
    }

    fn wait_for(&self, fragment: &str) {
        crate::daemon::wait_for(
            &format!("{fragment:?} on stderr"),
            std::time::Duration::from_secs(60),
            || self.0.lock().expect("lines lock").iter().any(|l| l.contains(fragment)).then_some(()),
        );
    }
}

#[test]
fn ctrl_c_in_herald_train_stops_after_the_batch_and_the_daemon_hears_a_stopped_run() {
    use crate::daemon::{Daemon, Receiver, Reply, config_text, free_port, wait_for};
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    let dir = scratch("sigint");
    let hook = Receiver::start(|_, _| Reply::Ok);
    let port = free_port();
    let daemon = Daemon::start(&dir, port, &config_text(&dir, port, hook.port, "", ""));
    // 1438-batch epochs (batch size 1): the run is far from its end when the signal comes.
    let mut child = crate::KillOnDrop(
        long_train(&daemon.config, Some("e2e-sigint"))
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start herald train"),
    );
    let stderr = StderrLines::read(&mut child.0);
    let first = wait_for("the first epoch at the webhook", Duration::from_secs(60), || {
        of_type(&hook.delivered(), "epoch_ended").first().map(|h| (*h).clone())
    });
    ctrl_c(&child.0);

    let status = wait_for("herald train to exit after Ctrl-C", Duration::from_secs(60), || {
        child.0.try_wait().expect("poll herald train")
    });
    assert_eq!(status.code(), Some(130), "herald train: {status}\n{}", stderr.all());
    stderr.wait_for("interrupted (Ctrl-C): the run was reported as stopped");

    let finished = wait_for("run_finished at the webhook", Duration::from_secs(30), || {
        of_type(&hook.delivered(), "run_finished").first().map(|h| (*h).clone())
    });
    assert_eq!(finished.run, first.run);
    let event = &finished.body["event"];
    assert_eq!(event["status"], "stopped", "{}", finished.body);
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("interrupted (Ctrl-C)"), "{}", finished.body);
    assert!(of_type(&hook.hits(), "run_failed").is_empty(), "a Ctrl-C is no failure");
}

#[test]
fn a_second_ctrl_c_quits_herald_train_at_once() {
    use crate::daemon::{free_port, wait_for};
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    let dir = scratch("sigint-twice");
    // No daemon, and a webhook that takes connections and never answers: after the first Ctrl-C the trainer
    // waits up to drain_timeout (ten minutes) for its deliveries, so only the second one ends it soon.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hook_port = silent.local_addr().expect("address").port();
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:{}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\n\
             drain_timeout = \"10m\"\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\n\
             url = \"http://127.0.0.1:{hook_port}/hook\"\ntimeout = \"10m\"\n",
            free_port(),
            dir.display()
        ),
    )
    .expect("write the config");
    let mut child = crate::KillOnDrop(
        long_train(&config, None)
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start herald train"),
    );
    let stderr = StderrLines::read(&mut child.0);
    stderr.wait_for("notifying from this process");
    ctrl_c(&child.0);
    stderr.wait_for("Ctrl-C again to quit at once");
    assert!(child.0.try_wait().expect("poll").is_none(), "herald train did not wait for its deliveries");
    ctrl_c(&child.0);
    let status = wait_for("herald train to quit after the second Ctrl-C", Duration::from_secs(10), || {
        child.0.try_wait().expect("poll herald train")
    });
    assert_eq!(status.code(), Some(130), "herald train: {status}\n{}", stderr.all());
    stderr.wait_for("Ctrl-C again: quitting now");
    drop(silent);
}

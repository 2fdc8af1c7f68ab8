//! `cargo xtask bench apprise`: the Apprise plugin's figures (issue 16), side by side in one run on this
//! machine, all to one local `json://` sink:
//!
//! - the delivery rate of `herald-notify-apprise` driven over the plugin protocol directly, with 1 and 4
//!   deliveries in flight, and through `herald serve` (release build) with `concurrency` 1 and 4, notifications
//!   posted to the daemon until the sink has them all (goal: >= 200 notifications/s);
//! - the plugin's resident memory idle after its handshake, and after the load;
//! - the `apprise` command run once per message, the way a shell hook would notify without Herald.
//!
//! The sink and the protocol driver are std only; the plugin and Apprise come from `.venv` (installed when
//! missing, as `cargo xtask setup` does). It checks no threshold: it prints the figures and their ratios.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, step};

/// Notifications per measured phase.
const N: u64 = 1500;
/// Messages sent with the `apprise` command.
const CLI_RUNS: usize = 15;

/// The local service: answers 200 to every request and counts them per path.
struct Sink {
    port: u16,
    counts: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    total: Arc<AtomicU64>,
}

impl Sink {
    fn start() -> Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let sink = Sink { port, counts: Arc::default(), total: Arc::default() };
        let (counts, total) = (sink.counts.clone(), sink.total.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (counts, total) = (counts.clone(), total.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &counts, &total);
                });
            }
        });
        Ok(sink)
    }

    fn count(&self, path: &str) -> u64 {
        self.counts.lock().expect("sink lock").get(path).copied().unwrap_or(0)
    }

    fn url(&self, path: &str) -> String {
        format!("json://127.0.0.1:{}{path}", self.port)
    }

    /// Wait until `path` has `n` requests; returns when the last one arrived (polled every millisecond).
    fn wait(&self, path: &str, n: u64, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if self.count(path) >= n {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("the sink got {} of {n} notifications at {path} within {limit:?}", self.count(path));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn serve(
    stream: TcpStream,
    counts: &Mutex<std::collections::HashMap<String, u64>>,
    total: &AtomicU64,
) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        *counts.lock().expect("sink lock").entry(path).or_default() += 1;
        total.fetch_add(1, Ordering::Relaxed);
        writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A notification like the daemon's for an epoch of a run, as the protocol carries it.
fn notification(run: &str, seq: u64) -> Value {
    let row = json!({"epoch": 0, "n_epochs": 10, "train_loss": 0.5, "valid_loss": 0.4,
                     "metrics": {"accuracy": 0.9}, "elapsed_s": 12.5});
    let mut event = row.clone();
    if let Some(e) = event.as_object_mut() {
        e.extend([
            ("v".to_owned(), json!(1)),
            ("run".to_owned(), json!(run)),
            ("seq".to_owned(), json!(seq)),
            ("time".to_owned(), json!("2026-11-27T10:00:00Z")),
            ("type".to_owned(), json!("epoch_ended")),
        ]);
    }
    let table =
        "epoch     train_loss  valid_loss  accuracy  time\n0         0.500000    0.400000    0.900000  00:12";
    json!({
        "run": {"run": run, "name": "bench", "host": "bench", "pid": 1, "rank": 0, "n_epochs": 10,
                "batches_per_epoch": 100, "metric_names": ["accuracy"], "hyper": {}, "epochs": [row]},
        "event": event,
        "title": "bench: epoch 1/10",
        "text": format!("epoch 1/10 · train 0.5 · valid 0.4 · accuracy 0.9 · 00:12\n\n{table}"),
        "html": format!("<b>epoch 1/10</b><pre>{table}</pre>"),
        "markdown": format!("**epoch 1/10**\n```\n{table}\n```"),
        "attempt": 1,
    })
}

/// The plugin as the daemon runs it, talked to directly.
struct Plugin {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Plugin {
    fn start(program: &Path, url: &str, state: &Path) -> Result<Plugin> {
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdin = child.stdin.take().context("the plugin's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the plugin's stdout")?);
        let mut p = Plugin { child, stdin, stdout };
        let hello = json!({"type": "hello", "protocol": "herald-plugin", "version": "1.0", "name": "bench",
                           "config": {"urls": [url], "state_dir": state}});
        p.send(&hello)?;
        let ready = p.read()?;
        if ready["type"] != "ready" {
            bail!("the plugin answered hello with {ready}");
        }
        Ok(p)
    }

    fn send(&mut self, message: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.stdin.write_all(&line)?;
        self.stdin.flush()?;
        Ok(())
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the plugin closed its stdout");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// `n` deliveries with `in_flight` at once; returns notifications/s.
    fn rate(&mut self, n: u64, in_flight: u64, tag: &str) -> Result<f64> {
        let start = Instant::now();
        let (mut sent, mut answered) = (0u64, 0u64);
        while answered < n {
            while sent < n && sent - answered < in_flight {
                let id = format!("{tag}-{sent}");
                let run = format!("{tag}-{}", sent % 8);
                self.send(&json!({"type": "deliver", "id": id, "notification": notification(&run, sent)}))?;
                sent += 1;
            }
            let answer = self.read()?;
            if answer["type"] != "delivered" {
                bail!("a delivery failed: {answer}");
            }
            answered += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }

    fn stop(mut self) -> Result<()> {
        self.send(&json!({"type": "shutdown"}))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the plugin exited with {status}");
        }
        Ok(())
    }
}

/// `herald serve` with one apprise notifier at `concurrency`; returns notifications/s from the first POST to
/// the last arrival.
fn through_daemon(bin: &Path, venv_bin: &Path, dir: &Path, sink: &Sink, concurrency: u32) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let path = format!("/daemon{concurrency}");
    let config = format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{state}\"\ndrain_timeout = \"1s\"\n\n\
         [[notifier]]\nname = \"apprise\"\ntype = \"apprise\"\nevents = [\"message\"]\nconcurrency = {concurrency}\n\
         urls = [\"{url}\"]\nstate_dir = \"{progress}\"\n",
        state = dir.join("state").display(),
        url = sink.url(&path),
        progress = dir.join("progress").display(),
    );
    let config_path = dir.join("herald.toml");
    std::fs::write(&config_path, config)?;
    let mut paths = vec![venv_bin.to_owned()];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .env("PATH", std::env::join_paths(paths)?)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start herald serve")?;
    let result = (|| -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        // Up once it answers /v1/status, with the plugin's handshake done (the daemon checks health at start).
        loop {
            if let Ok((200, body)) = request(port, "GET", "/v1/status", b"")
                && body.contains("\"state\":\"ok\"")
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("the daemon or the plugin did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut body = String::new();
        for seq in 0..N {
            body.push_str(&format!(
                "{{\"v\":1,\"run\":\"bench-{}\",\"seq\":{seq},\"time\":\"2026-11-27T10:00:00Z\",\"type\":\"message\",\"title\":\"bench\",\"text\":\"message {seq}\"}}\n",
                seq % 8
            ));
        }
        let start = Instant::now();
        let (status, answer) = request(port, "POST", "/v1/events", body.as_bytes())?;
        if status != 202 {
            bail!("the daemon answered {status}: {answer}");
        }
        let done = sink.wait(&path, N, Duration::from_secs(120))?;
        Ok(N as f64 / done.duration_since(start).as_secs_f64())
    })();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    result
}

/// One HTTP/1.1 request to the daemon; the status and the body.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// `args`: `--no-build` uses the release `herald` already built.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if !args.iter().any(|a| a == "--no-build") {
        step("build herald (release)", cargo(&["build", "--release", "-p", "herald"]))?;
    }
    let python = crate::torch::python(root);
    if !python.exists() {
        bail!("{} is missing: run `cargo xtask setup`", python.display());
    }
    crate::python::ensure_apprise(root, &python)?;
    let venv_bin = root.join(".venv/bin");
    let plugin_bin = venv_bin.join("herald-notify-apprise");
    let apprise_cli = venv_bin.join("apprise");
    let herald = crate::target_dir(root).join("release/herald");
    let dir = std::env::temp_dir().join(format!("herald-bench-apprise-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sink = Sink::start()?;

    // The plugin alone.
    let mut plugin = Plugin::start(&plugin_bin, &sink.url("/plugin"), &dir.join("progress"))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_kib(plugin.child.id());
    plugin.rate(100, 1, "warm")?;
    let alone_1 = plugin.rate(N, 1, "one")?;
    let alone_4 = plugin.rate(N, 4, "four")?;
    let loaded_rss = rss_kib(plugin.child.id());
    plugin.stop()?;

    // Through the daemon.
    let daemon_1 = through_daemon(&herald, &venv_bin, &dir.join("d1"), &sink, 1)?;
    let daemon_4 = through_daemon(&herald, &venv_bin, &dir.join("d4"), &sink, 4)?;

    // The apprise command, once per message.
    let mut times = Vec::new();
    let cli_start = Instant::now();
    for i in 0..CLI_RUNS {
        let t = Instant::now();
        let out = Command::new(&apprise_cli)
            .args(["-t", "bench: epoch 1/10", "-b", &format!("message {i}")])
            .arg(sink.url("/cli"))
            .output()
            .with_context(|| format!("cannot run {}", apprise_cli.display()))?;
        times.push(t.elapsed());
        if !out.status.success() {
            bail!("apprise failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let cli_rate = CLI_RUNS as f64 / cli_start.elapsed().as_secs_f64();
    times.sort();
    let cli_median = times[times.len() / 2];
    if sink.count("/cli") != CLI_RUNS as u64 {
        bail!("the sink got {} of {CLI_RUNS} messages from apprise", sink.count("/cli"));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let version = Command::new(&python)
        .args(["-c", "import apprise; print(apprise.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "\nherald-notify-apprise benchmark (apprise {version}, json:// to a local sink, {N} notifications a phase)"
    );
    println!("  plugin alone, 1 in flight              {alone_1:>8.0} notifications/s");
    println!("  plugin alone, 4 in flight              {alone_4:>8.0} notifications/s");
    println!("  herald serve -> plugin, concurrency 1  {daemon_1:>8.0} notifications/s   (goal >= 200)");
    println!("  herald serve -> plugin, concurrency 4  {daemon_4:>8.0} notifications/s   (goal >= 200)");
    println!(
        "  apprise command, once per message      {cli_rate:>8.1} notifications/s   (median {:.0} ms a message)",
        cli_median.as_secs_f64() * 1e3
    );
    println!("  through the daemon vs the command      {:>8.0}x (concurrency 1)", daemon_1 / cli_rate);
    println!(
        "  plugin RSS idle {:.1} MB, after {} deliveries {:.1} MB",
        idle_rss as f64 / 1024.0,
        2 * N + 100,
        loaded_rss as f64 / 1024.0
    );
    println!("  sink requests: {}", sink.total.load(Ordering::Relaxed));
    Ok(())
}

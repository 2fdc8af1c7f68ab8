//! `herald watch [--name N] -- CMD ARGS...`: run any command as a run, like knockknock's CLI. Sends
//! `run_started`, then `run_finished` with the exit code and duration, or `run_failed` with the exit status
//! or signal and the last 20 lines of stderr. stdout and stderr pass through unchanged; herald exits with the
//! command's code (128 + the signal number when a signal killed it). `herald stop RUN` sends the command
//! SIGTERM. Events go to the daemon (spooled while it is down) or, without one, straight to the notifiers
//! (with no configuration file, the console's `format = "lines"`: the command's output shares the terminal).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use herald_event::{Event, RunFailed, RunFinished, RunStarted, RunStatus};

/// Lines of stderr kept for the failure report.
const TAIL_LINES: usize = 20;

/// Run a command and report how it ends.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's name (default: the command's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    }
}

pub fn run(config_path: Option<&Path>, args: Args) -> Result<()> {
    // The command's output is on this terminal: with no configuration file, the console notifier says one
    // line per fact (started, finished, failed), not a block each.
    let config =
        herald_daemon::config::load_beside_output(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(program) = args.command.first() else { bail!("give a command to run after `--`") };
    let name = args.name.clone().unwrap_or_else(|| {
        Path::new(program).file_name().map_or_else(|| program.clone(), |f| f.to_string_lossy().into_owned())
    });
    let host = herald_daemon::local_hostname();
    let run_id = format!("watch-{}-{}-{}", name, std::process::id(), herald_daemon::now_ms());

    let child_pid: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
    let stop_reason: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let on_stop: herald_daemon::forwarder::StopCallback = {
        let (child_pid, stop_reason) = (child_pid.clone(), stop_reason.clone());
        Box::new(move |_run, reason| {
            let mut why = stop_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if why.is_some() {
                return;
            }
            *why = Some(reason.to_owned());
            let pid = *child_pid.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(pid) = pid {
                // `kill` rather than a libc call: this crate forbids unsafe code.
                let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        })
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let link = herald_daemon::spawn_link(&config, rx, on_stop)?;
    let mut seq = 0;
    let mut send = |payload: herald_event::Payload| {
        let event = Event::now(run_id.clone(), seq, payload);
        seq += 1;
        if tx.blocking_send(event).is_err() {
            tracing::error!("the notification link ended early");
        }
    };
    send(
        RunStarted {
            name: name.clone(),
            host,
            pid: std::process::id(),
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 0,
            batches_per_epoch: 0,
            metric_names: Vec::new(),
            hyper: BTreeMap::from([("command".to_owned(), serde_json::Value::from(args.command.join(" ")))]),
        }
        .into(),
    );

    let started = Instant::now();
    let spawned = Command::new(program)
        .args(&args.command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let message = format!("cannot run `{program}`: {e}");
            send(RunFailed { error: message.clone(), traceback: None }.into());
            drop(tx);
            let _ = link.finish();
            bail!(message);
        }
    };
    *child_pid.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child.id());
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let stderr_thread = child.stderr.take().map(|stderr| {
        let tail = tail.clone();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            let mut out = std::io::stderr();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let _ = out.write_all(&line);
                let _ = out.flush();
                let mut t = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned());
                line.clear();
            }
        })
    });
    let status = child.wait().context("cannot wait for the command")?;
    if let Some(t) = stderr_thread {
        let _ = t.join();
    }
    let duration_s = started.elapsed().as_secs_f64();
    let stopped = stop_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let tail_text = {
        let t = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (!t.is_empty()).then(|| t.iter().cloned().collect::<Vec<_>>().join("\n"))
    };
    let code = match (status.code(), status.signal()) {
        (Some(0), _) => {
            send(
                RunFinished {
                    status: RunStatus::Completed,
                    reason: "exit code 0".into(),
                    duration_s,
                    best: None,
                }
                .into(),
            );
            0
        }
        (_, Some(sig)) if stopped.is_some() && sig == 15 => {
            let reason = stopped.unwrap_or_default();
            send(RunFinished { status: RunStatus::Stopped, reason, duration_s, best: None }.into());
            128 + sig
        }
        (Some(code), _) => {
            send(RunFailed { error: format!("exited with code {code}"), traceback: tail_text }.into());
            code
        }
        (None, Some(sig)) => {
            send(
                RunFailed {
                    error: format!("killed by signal {sig} ({})", signal_name(sig)),
                    traceback: tail_text,
                }
                .into(),
            );
            128 + sig
        }
        (None, None) => {
            send(RunFailed { error: "ended without an exit status".into(), traceback: tail_text }.into());
            1
        }
    };
    drop(tx);
    match link.finish() {
        Ok(report) if report.forward.left_in_spool > 0 => eprintln!(
            "herald: the daemon is down; {} event(s) wait in the spool for its next start",
            report.forward.left_in_spool
        ),
        Ok(report) if report.undelivered > 0 => {
            eprintln!("herald: {} notification(s) could not be delivered in time", report.undelivered)
        }
        Ok(_) => {}
        Err(e) => eprintln!("herald: {e}"),
    }
    std::process::exit(code);
}

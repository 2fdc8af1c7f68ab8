//! The child's pipes, each served by its own task: stdout read into protocol messages ([`read_messages`]),
//! stderr logged line by line ([`log_stderr`]), lines written to stdin in bursts ([`write_lines`]); and how a
//! child exited, in words ([`exit_status`]).
//!
//! These tasks only move bytes; what a message means is the child's loop's business (`child.rs`).

use std::time::Duration;

use herald_plugin::protocol::{MAX_LINE, PluginMessage};
use herald_plugin::serve::{Line, read_line};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;

/// The longest stderr line logged, in bytes (the rest is cut).
const MAX_LOG_LINE: usize = 4096;

/// What the stdout reader hands the child's loop.
pub(crate) enum FromChild {
    Message(PluginMessage),
    Violation(String),
    Eof,
}

/// Read the child's stdout into protocol messages until the end, or the first violation.
pub(crate) async fn read_messages(stdout: ChildStdout, tx: mpsc::Sender<FromChild>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let item = match read_line(&mut reader, &mut buf, MAX_LINE).await {
            Ok(Line::Eof) | Err(_) => FromChild::Eof,
            Ok(Line::TooLong) => FromChild::Violation("it wrote a line longer than 1 MiB".to_owned()),
            Ok(Line::Line) if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Line) => match serde_json::from_slice::<PluginMessage>(&buf) {
                Ok(m) => FromChild::Message(m),
                Err(e) => FromChild::Violation(format!(
                    "it wrote a line that is not a protocol message ({e}): {}",
                    excerpt(&buf)
                )),
            },
        };
        let last = !matches!(item, FromChild::Message(_));
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

/// The start of a line, printable, for an error message.
fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(120)]);
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if line.len() > 120 {
        out.push('…');
    }
    format!("`{out}`")
}

/// Log the child's stderr, line by line, tagged with the notifier's name.
pub(crate) async fn log_stderr(stderr: ChildStderr, name: String) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        match read_line(&mut reader, &mut buf, MAX_LOG_LINE).await {
            Ok(Line::Line) => {
                let line = String::from_utf8_lossy(&buf);
                tracing::info!(target: "herald::plugin", notifier = %name, "{}", line.trim_end());
            }
            Ok(Line::TooLong) => {
                tracing::info!(target: "herald::plugin", notifier = %name, "(a log line over 4 KiB, left out)")
            }
            Ok(Line::Eof) | Err(_) => return,
        }
    }
}

/// Write lines to the child's stdin as they come, one flush per burst.
pub(crate) async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = lines.recv().await {
        if stdin.write_all(&line).await.is_err() {
            return;
        }
        while let Ok(line) = lines.try_recv() {
            if stdin.write_all(&line).await.is_err() {
                return;
            }
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Aborts a task when dropped.
pub(crate) struct Owned(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How the child exited, in words.
pub(crate) async fn exit_status(child: &mut Child, wait: Duration) -> String {
    match tokio::time::timeout(wait, child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => status.to_string(),
            }
        }
        Ok(Err(e)) => format!("its status is unknown: {e}"),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            "it closed its stdout but kept running, so it was killed".to_owned()
        }
    }
}

//! The forwarder: ships a process's events to a running daemon in batches, spools them to a file while the
//! daemon is unreachable and replays the spool (in order, before anything newer) once it answers again, and
//! hands stop requests from the daemon's `control` answer to a callback (the trainer's `StopHandle`, or
//! `herald watch` stopping its command).
//!
//! Used by `herald train` (through `embedded.rs`) and `herald watch`. A spool left behind when the process
//! ends is replayed by the daemon at its next start (`daemon.rs`); the daemon drops duplicates by
//! (run, seq), so replaying twice is harmless. Events the daemon rejects as malformed are logged and
//! dropped, never spooled: resending them would fail the same way.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_event::Event;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};

/// Events per request at most.
const BATCH: usize = 500;
/// Bytes per request at most (the daemon takes up to 1 MiB).
const BATCH_BYTES: usize = 512 * 1024;
/// Wait between replay attempts while the daemon is unreachable: from the first value doubling to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// What a forwarder did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardReport {
    /// Events the daemon accepted (live or replayed).
    pub forwarded: u64,
    /// Events written to the spool at some point.
    pub spooled: u64,
    /// Events the daemon rejected as malformed (dropped).
    pub rejected: u64,
    /// Events still in the spool at the end (the daemon replays them at its next start).
    pub left_in_spool: u64,
}

/// Receives `(run, reason)` when the daemon reports a stop request for a run.
pub type StopCallback = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Where a process spools: `<state_dir>/spool/spool-<pid>-<nanos>.ndjson`.
pub fn spool_path(state_dir: &Path) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    state_dir.join("spool").join(format!("spool-{}-{nanos}.ndjson", std::process::id()))
}

/// The pid that wrote a spool file, from its name.
pub fn spool_owner(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("spool-")?.split('-').next()?.parse().ok()
}

struct Spool {
    path: PathBuf,
    lines: u64,
}

impl Spool {
    fn append(&mut self, lines: &[String]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            crate::outbox::create_private_dir(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        f.write_all(buf.as_bytes())?;
        f.sync_data()?;
        self.lines += lines.len() as u64;
        Ok(())
    }
}

/// Run until `events` closes: forward, spool, replay. `final_wait` bounds the last replay attempts at the end.
pub async fn run(
    mut events: mpsc::Receiver<Event>,
    client: Client,
    spool_file: PathBuf,
    on_stop: StopCallback,
    final_wait: Duration,
) -> ForwardReport {
    let mut report = ForwardReport::default();
    let mut spool = Spool { path: spool_file, lines: 0 };
    let mut retry = RETRY_FIRST;
    let mut next_try = tokio::time::Instant::now();
    let mut stopped = std::collections::HashSet::new();
    let handle_reply = |reply: crate::api::IngestReply, stopped: &mut std::collections::HashSet<String>| {
        for (run, control) in reply.control {
            if control.stop && stopped.insert(run.clone()) {
                let reason = control.reason.unwrap_or_else(|| "stop requested through the daemon".into());
                tracing::info!(run = %run, reason = %reason, "stop requested");
                on_stop(&run, &reason);
            }
        }
    };
    loop {
        let first = if spool.lines > 0 {
            match tokio::time::timeout_at(next_try, events.recv()).await {
                Ok(e) => e.map(Some),
                Err(_) => Some(None),
            }
        } else {
            events.recv().await.map(Some)
        };
        let Some(first) = first else { break };
        if spool.lines > 0 && tokio::time::Instant::now() >= next_try {
            match replay(&client, &mut spool, &mut report, &mut |r| handle_reply(r, &mut stopped)).await {
                Ok(()) => retry = RETRY_FIRST,
                Err(()) => {
                    next_try = tokio::time::Instant::now() + retry;
                    retry = (retry * 2).min(RETRY_CAP);
                }
            }
        }
        let Some(first) = first else { continue };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match events.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let lines: Vec<String> = batch
            .iter()
            .filter_map(|e| match herald_event::encode_event(e) {
                Ok(l) => Some(l),
                Err(err) => {
                    tracing::warn!(run = %e.run, seq = e.seq, error = %err, "event cannot be encoded; dropped");
                    report.rejected += 1;
                    None
                }
            })
            .collect();
        if spool.lines > 0 {
            spool_lines(&mut spool, &lines, &mut report);
            continue;
        }
        for chunk in chunks(&lines) {
            match client.post_events(chunk.join("\n").into_bytes()).await {
                Ok(reply) => {
                    report.forwarded += chunk.len() as u64;
                    handle_reply(reply, &mut stopped);
                }
                Err(e) if e.is_transient() => {
                    if spool.lines == 0 {
                        tracing::warn!(error = %e, spool = %spool.path.display(), "daemon unreachable; spooling events");
                        next_try = tokio::time::Instant::now() + retry;
                    }
                    spool_lines(&mut spool, chunk, &mut report);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the daemon rejected events; dropped");
                    report.rejected += chunk.len() as u64;
                }
            }
        }
    }
    // The source is closed: try to empty the spool for a while, else leave it for the daemon's next start.
    let deadline = tokio::time::Instant::now() + final_wait;
    let mut retry = RETRY_FIRST;
    while spool.lines > 0 {
        if replay(&client, &mut spool, &mut report, &mut |r| handle_reply(r, &mut stopped)).await.is_ok() {
            break;
        }
        if tokio::time::Instant::now() + retry > deadline {
            break;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_CAP);
    }
    report.left_in_spool = spool.lines;
    if spool.lines > 0 {
        tracing::warn!(events = spool.lines, spool = %spool.path.display(), "the daemon did not come back; it will replay the spool when it starts");
    }
    report
}

fn spool_lines(spool: &mut Spool, lines: &[String], report: &mut ForwardReport) {
    match spool.append(lines) {
        Ok(()) => report.spooled += lines.len() as u64,
        Err(e) => {
            tracing::error!(error = %e, spool = %spool.path.display(), events = lines.len(), "cannot write the spool; events lost");
            report.rejected += lines.len() as u64;
        }
    }
}

/// Split lines into request bodies of at most [`BATCH`] events and about [`BATCH_BYTES`] bytes.
fn chunks(lines: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, l) in lines.iter().enumerate() {
        if i > start && (i - start >= BATCH || bytes + l.len() + 1 > BATCH_BYTES) {
            out.push(&lines[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += l.len() + 1;
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

/// Send the spool's lines in order; on success remove the file. On failure keep what was not accepted.
async fn replay(
    client: &Client,
    spool: &mut Spool,
    report: &mut ForwardReport,
    on_reply: &mut dyn FnMut(crate::api::IngestReply),
) -> Result<(), ()> {
    let text = match tokio::fs::read_to_string(&spool.path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            spool.lines = 0;
            return Ok(());
        }
        Err(e) => {
            tracing::error!(error = %e, spool = %spool.path.display(), "cannot read the spool");
            return Err(());
        }
    };
    let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
    let mut sent = 0usize;
    for chunk in chunks(&lines) {
        match client.post_events(chunk.join("\n").into_bytes()).await {
            Ok(reply) => {
                sent += chunk.len();
                report.forwarded += chunk.len() as u64;
                on_reply(reply);
            }
            Err(e) if e.is_transient() => {
                // Keep the rest, in order.
                let rest = &lines[sent..];
                let tmp = spool.path.with_extension("tmp");
                let mut body = rest.join("\n");
                body.push('\n');
                if tokio::fs::write(&tmp, body).await.is_ok()
                    && tokio::fs::rename(&tmp, &spool.path).await.is_ok()
                {
                    spool.lines = rest.len() as u64;
                }
                return Err(());
            }
            Err(e) => {
                tracing::error!(error = %e, "the daemon rejected spooled events; dropped");
                sent += chunk.len();
                report.rejected += chunk.len() as u64;
            }
        }
    }
    if let Err(e) = tokio::fs::remove_file(&spool.path).await {
        tracing::warn!(error = %e, spool = %spool.path.display(), "cannot remove the replayed spool");
    }
    tracing::info!(events = sent, "spool replayed");
    spool.lines = 0;
    Ok(())
}

/// Replay spool files that processes left behind (their owner is gone) through `ingest`; used by the daemon
/// at start. Returns the number of events replayed.
pub async fn replay_orphans(state_dir: &Path, ingest: &crate::handle::Handle) -> u64 {
    let dir = state_dir.join("spool");
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut total = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("ndjson") {
            continue;
        }
        if spool_owner(&path).is_some_and(|pid| pid != std::process::id() && crate::periodic::pid_alive(pid))
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match herald_event::decode_event(line.as_bytes()) {
                Ok(e) => events.push(e),
                Err(e) => {
                    tracing::warn!(spool = %path.display(), line = i + 1, error = %e, "bad spooled event skipped")
                }
            }
        }
        let n = events.len() as u64;
        let mut ok = true;
        for chunk in events.chunks(BATCH) {
            if let Err(e) = ingest.ingest(chunk.to_vec()).await {
                tracing::error!(spool = %path.display(), error = %e, "cannot replay a spool; kept for the next start");
                ok = false;
                break;
            }
        }
        if ok {
            total += n;
            let _ = std::fs::remove_file(&path);
            tracing::info!(spool = %path.display(), events = n, "replayed a spool left by an earlier process");
        }
    }
    total
}

/// Whether the error means the daemon is not there at all.
pub fn is_unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Unreachable { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_count_and_size() {
        let lines: Vec<String> = (0..1200).map(|i| format!("{i:04}")).collect();
        let c = chunks(&lines);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![500, 500, 200]);
        let big: Vec<String> = (0..5).map(|_| "x".repeat(200 * 1024)).collect();
        let c = chunks(&big);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn spool_names_carry_the_owner_pid() {
        let p = spool_path(Path::new("/state"));
        assert_eq!(spool_owner(&p), Some(std::process::id()));
        assert_eq!(spool_owner(Path::new("/x/other.ndjson")), None);
    }
}

//! `herald status [--json]`: what the daemon knows: distributed jobs (ranks seen of those expected, the slowest
//! rank, state), runs with their last epoch, notifiers with health and queue depth, the outbox size, recent
//! give-ups.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use herald_daemon::Status;
use herald_event::format::float6;

/// Show the daemon's runs, notifiers and outbox.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the daemon's JSON status as it is.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_path: Option<&Path>, args: Args) -> Result<()> {
    let config = crate::serve::load_config(config_path)?;
    let client = crate::serve::client(&config, Duration::from_secs(10))?;
    let status = crate::serve::runtime()?.block_on(client.status())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn ago(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> =
            row.iter().enumerate().map(|(c, cell)| format!("{cell:<w$}", w = widths[c])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The human-readable status.
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "herald daemon {} up {}; outbox: {} deliveries waiting ({} KiB)\n\n",
        s.version,
        ago(s.uptime_s),
        s.outbox.jobs,
        s.outbox.bytes / 1024
    );
    if !s.jobs.is_empty() {
        let mut rows = vec![
            ["JOB", "NAME", "STATE", "RANKS", "EPOCH", "SLOWEST", "LAST EVENT"].map(String::from).to_vec(),
        ];
        for j in &s.jobs {
            let expected = j.world_size.map_or_else(|| "?".to_owned(), |n| n.to_string());
            let slowest = j.slowest.as_ref().map_or_else(
                || "-".to_owned(),
                |r| format!("rank {} on {}, {:+.0}%", r.rank, r.host, r.above_median_pct),
            );
            rows.push(vec![
                j.job.clone(),
                j.name.clone(),
                j.state.clone(),
                format!("{}/{expected}", j.ranks_seen),
                format!("{}/{}", j.epochs_done, j.n_epochs),
                slowest,
                format!("{} ago", ago(j.silent_s)),
            ]);
        }
        out.push_str(&table(&rows));
        out.push('\n');
    }
    if s.runs.is_empty() {
        out.push_str("no runs yet\n");
    } else {
        let mut rows = vec![
            ["RUN", "NAME", "STATE", "EPOCH", "TRAIN_LOSS", "VALID_LOSS", "LAST EVENT"]
                .map(String::from)
                .to_vec(),
        ];
        for r in &s.runs {
            let (train, valid) = match &r.last_epoch {
                Some(e) => (float6(e.train_loss), e.valid_loss.map_or_else(|| "#na#".to_owned(), float6)),
                None => (r.smooth_loss.map_or_else(|| "-".to_owned(), float6), "-".to_owned()),
            };
            let mut state = r.state.clone();
            if r.stop_requested && r.state == "running" {
                state.push_str(" (stop requested)");
            }
            rows.push(vec![
                r.run.clone(),
                r.name.clone(),
                state,
                format!("{}/{}", r.epochs_done, r.n_epochs),
                train,
                valid,
                format!("{} ago", ago(r.silent_s)),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    let mut rows = vec![
        ["NOTIFIER", "TYPE", "HEALTH", "QUEUE", "SENT", "RETRIES", "GAVE UP", "LAST ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &s.notifiers {
        let health = match &n.health {
            None => "checking".to_owned(),
            Some(herald_plugin::Health::Ok) => "ok".to_owned(),
            Some(herald_plugin::Health::Degraded { message }) => format!("degraded: {message}"),
            Some(herald_plugin::Health::Unavailable { message }) => format!("unavailable: {message}"),
        };
        rows.push(vec![
            n.name.clone(),
            n.kind.clone(),
            health,
            n.queue.to_string(),
            n.delivered.to_string(),
            n.failed_attempts.to_string(),
            n.gave_up.to_string(),
            n.last_error.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&table(&rows));
    let give_ups: Vec<_> = s.notifiers.iter().flat_map(|n| n.recent_give_ups.iter()).collect();
    if !give_ups.is_empty() {
        out.push_str("\nrecent give-ups:\n");
        for g in give_ups {
            out.push_str(&format!(
                "  {} {} seq {} ({}) after {} attempt(s): {}\n",
                g.notifier, g.run, g.seq, g.kind, g.attempts, g.error
            ));
        }
    }
    if let Some(c) = &s.cluster {
        out.push_str(&render_cluster(c));
    }
    out
}

/// The cluster section: this node, the leader, and the leader's status (every edge's runs, its notifiers).
fn render_cluster(c: &herald_daemon::ClusterView) -> String {
    let mut out = format!("\ncluster: this node {} ({})", c.node, c.role);
    match (&c.leader, c.lease_renewed_s_ago) {
        (Some(leader), age) => {
            let me = if *leader == c.node { ", this node" } else { "" };
            let renewed = age.map_or_else(String::new, |a| format!(", lease renewed {} ago", ago(a)));
            out.push_str(&format!("; leader {leader}{me}{renewed}\n"));
        }
        (None, _) => out.push_str("; no leader now\n"),
    }
    if let Some(e) = &c.error {
        out.push_str(&format!("cannot read the cluster now: {e}\n"));
    }
    if let Some(status) = &c.leader_status {
        let age = c.leader_status_age_s.map_or_else(String::new, |a| format!(" (published {} ago)", ago(a)));
        out.push_str(&format!("\nthe leader's status{age}: every edge's runs and the notifiers\n"));
        for line in render(status).lines() {
            out.push_str(format!("  {line}").trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        let check = |s: f64, expected: &str| assert_eq!(ago(s), expected, "{s}");
        check(0.4, "0s");
        check(59.9, "59s");
        check(61.0, "1m01s");
        check(3600.0 * 2.0 + 65.0, "2h01m");
        check(-3.0, "0s");
    }

    #[test]
    fn the_table_shows_runs_notifiers_and_give_ups() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "uptime_s": 75.0,
            "outbox": { "jobs": 2, "bytes": 4096, "path": null },
            "runs": [{
                "run": "r1", "name": "mnist", "host": "h", "pid": 1, "rank": 0, "state": "running",
                "n_epochs": 5, "epochs_done": 2,
                "last_epoch": { "epoch": 1, "n_epochs": 5, "train_loss": 0.5, "valid_loss": 0.25,
                                "metrics": {}, "elapsed_s": 3.0 },
                "smooth_loss": 0.4, "best": {}, "events": 12, "silent_s": 3.0, "last_event_ms": 1,
                "stop_requested": true
            }],
            "notifiers": [{
                "name": "phone", "type": "telegram", "queue": 2, "delivered": 7, "failed_attempts": 1,
                "gave_up": 1, "superseded": 0, "health": { "state": "ok" }, "last_error": "429",
                "last_delivery_ms": 5,
                "recent_give_ups": [{ "notifier": "phone", "run": "r1", "seq": 3, "type": "message",
                                      "error": "bad token", "attempts": 1, "at_ms": 9 }]
            }]
        }))
        .expect("a status document");
        let text = render(&status);
        assert!(
            text.starts_with("herald daemon 0.1.0 up 1m15s; outbox: 2 deliveries waiting (4 KiB)"),
            "{text}"
        );
        assert!(text.contains("running (stop requested)"), "{text}");
        assert!(text.contains("2/5") && text.contains("0.500000") && text.contains("0.250000"), "{text}");
        assert!(text.contains("phone     telegram  ok"), "{text}");
        assert!(text.contains("phone r1 seq 3 (message) after 1 attempt(s): bad token"), "{text}");
        assert!(!text.contains("JOB"), "no jobs, no jobs table: {text}");
    }

    #[test]
    fn the_cluster_section_names_the_leader_and_shows_its_runs() {
        let leader = serde_json::json!({
            "version": "0.1.0", "uptime_s": 5.0, "outbox": { "jobs": 0, "bytes": 0, "path": null },
            "runs": [{
                "run": "r-edge2", "name": "far", "host": "h2", "pid": 1, "rank": 0, "state": "running",
                "n_epochs": 5, "epochs_done": 1, "last_epoch": null, "smooth_loss": null, "best": {},
                "events": 3, "silent_s": 1.0, "last_event_ms": 1, "stop_requested": false
            }],
            "notifiers": [{
                "name": "hook", "type": "webhook", "queue": 0, "delivered": 3, "failed_attempts": 0,
                "gave_up": 0, "superseded": 0, "health": { "state": "ok" }, "last_error": null,
                "last_delivery_ms": 5, "recent_give_ups": []
            }]
        });
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "uptime_s": 5.0, "outbox": { "jobs": 0, "bytes": 0, "path": null },
            "runs": [], "notifiers": [],
            "cluster": { "role": "edge", "node": "a/1", "leader": "b/2", "lease_renewed_s_ago": 1.0,
                         "leader_status": leader, "leader_status_age_s": 2.0, "error": null }
        }))
        .expect("a status document with a cluster section");
        let text = render(&status);
        assert!(text.contains("cluster: this node a/1 (edge); leader b/2, lease renewed 1s ago"), "{text}");
        assert!(text.contains("the leader's status (published 2s ago)"), "{text}");
        assert!(text.contains("  r-edge2") && text.contains("  hook"), "{text}");
    }

    #[test]
    fn jobs_show_ranks_seen_of_expected_the_slowest_rank_and_state() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "uptime_s": 5.0,
            "outbox": { "jobs": 0, "bytes": 0, "path": null },
            "runs": [],
            "jobs": [{
                "job": "slurm-4242.0", "name": "llm", "run": "r0", "state": "stalled", "world_size": 4,
                "ranks_seen": 3, "ranks_done": 0,
                "slowest": { "rank": 3, "host": "gpu-b", "above_median_pct": 38.4 },
                "health": "3/4 ranks · missing: 2 · slowest: rank 3 on gpu-b, +38%",
                "n_epochs": 10, "epochs_done": 2, "last_event_ms": 1, "silent_s": 75.0
            }],
            "notifiers": []
        }))
        .expect("a status document");
        let text = render(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("JOB") && lines[2].contains("SLOWEST"), "{text}");
        for cell in ["slurm-4242.0", "llm", "stalled", "3/4", "2/10", "rank 3 on gpu-b, +38%", "1m15s ago"] {
            assert!(lines[3].contains(cell), "{cell}: {text}");
        }
        // A status from a daemon without jobs reads as none.
        let old: Status = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "uptime_s": 5.0, "outbox": { "jobs": 0, "bytes": 0, "path": null },
            "runs": [], "notifiers": []
        }))
        .expect("a status document without jobs");
        assert!(old.jobs.is_empty());
    }
}

//! `herald status` in cluster mode: on any node it names the leader and shows the leader's status, which
//! holds every edge's runs. Real `nats-server` and real `herald serve` processes: two edges with two nodes
//! of `role = "both"`, and two edges with a deliver-only node (`role = "deliver"`, whose small API serves
//! `herald status` and `herald stop` and refuses events).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{LEASE_S, Nats, edge_config, leader_pid};
use crate::daemon::{Daemon, Receiver, Reply, batch, epoch, free_port, http, started, wait_for};

/// A node doing both roles: an edge's API and a deliverer with a webhook notifier to `hook_port`.
fn both_config(dir: &Path, port: u16, servers: &[String], hook_port: u16) -> String {
    edge_config(dir, port, servers, 1).replace("role = \"edge\"", "role = \"both\"")
        + &format!(
            "lease = \"{LEASE_S}s\"\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\ntimeout = \"2s\"\n"
        )
}

/// A deliver-only node: `[daemon] listen` on `port` (its small API) and a webhook notifier to `hook_port`.
fn deliver_config(dir: &Path, port: u16, servers: &[String], hook_port: u16) -> String {
    both_config(dir, port, servers, hook_port).replace("role = \"both\"", "role = \"deliver\"")
}

/// `herald status` (`--json` when asked) at the node configured by `config`: (exit code, stdout).
fn herald_status(config: &Path, json: bool) -> (i32, String) {
    let mut cmd = crate::herald();
    cmd.arg("--config").arg(config).arg("status");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run herald status");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The runs of the leader's status in a `herald status --json` document.
fn leader_runs(status: &Value) -> Vec<String> {
    status["cluster"]["leader_status"]["runs"]
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["run"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn cluster_herald_status_on_any_node_names_the_leader_and_lists_every_edges_runs() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let urls = vec![nats.url()];
    let hook = Receiver::start(|_, _| Reply::Ok);
    let node = |name: &str, both: bool| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let port = free_port();
        let config =
            if both { both_config(&dir, port, &urls, hook.port) } else { edge_config(&dir, port, &urls, 1) };
        Daemon::start(&dir, port, &config)
    };
    let edges = [node("edge0", false), node("edge1", false)];
    let boths = [node("both0", true), node("both1", true)];
    let leader = wait_for("a leader", Duration::from_secs(20), || leader_pid(&nats.url()));
    let follower = boths
        .iter()
        .find(|d| d.child.as_ref().map(std::process::Child::id) != Some(leader))
        .expect("one of the two deliverers is not the leader");
    assert!(
        boths.iter().any(|d| d.child.as_ref().map(std::process::Child::id) == Some(leader)),
        "the leader is one of the `both` nodes"
    );

    let runs = ["2026-11-30T16:00:00-1-0-57a7", "2026-11-30T16:00:00-2-0-57a7"];
    for (edge, run) in edges.iter().zip(runs) {
        assert_eq!(edge.post(&started(run, "elsewhere", 1)).0, 202);
        assert_eq!(edge.post(&epoch(run, 1, 0)).0, 202);
    }
    hook.wait_delivered(4, Duration::from_secs(30));

    // At an edge and at the deliverer that is not the leader: the leader named, both edges' runs listed.
    for (what, at) in [("an edge", &edges[0]), ("the other deliverer", follower)] {
        let status = wait_for(&format!("{what}'s status to list both runs"), Duration::from_secs(20), || {
            let (code, out) = herald_status(&at.config, true);
            assert_eq!(code, 0, "herald status --json at {what}: {out}");
            let status: Value = serde_json::from_str(&out).expect("herald status --json prints JSON");
            let listed = leader_runs(&status);
            let delivered = status["cluster"]["leader_status"]["notifiers"][0]["delivered"].as_u64();
            (runs.iter().all(|r| listed.iter().any(|l| l == r)) && delivered >= Some(4)).then_some(status)
        });
        let cluster = &status["cluster"];
        let named = cluster["leader"].as_str().unwrap_or_default();
        assert!(named.ends_with(&format!("/{leader}")), "{what} names the leader {leader}: {cluster}");
        assert_ne!(cluster["node"], cluster["leader"], "{what} is not the leader: {cluster}");
        assert!(
            cluster["lease_renewed_s_ago"].as_f64().is_some_and(|a| a < 2.0 * LEASE_S as f64),
            "{cluster}"
        );
        let age = cluster["leader_status_age_s"].as_f64().expect("the snapshot's age");
        assert!(age < 10.0, "the leader's status is {age} s old");
        let notifiers = &cluster["leader_status"]["notifiers"];
        assert_eq!(notifiers[0]["name"], "hook", "the leader's notifiers: {notifiers}");
        assert!(notifiers[0].get("health").is_some(), "the notifier's health is shown: {notifiers}");

        let (code, text) = herald_status(&at.config, false);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains(&format!("leader {named}")), "the text names the leader: {text}");
        for run in runs {
            assert!(text.contains(run), "the text lists {run}: {text}");
        }
    }
}

#[test]
fn cluster_deliver_only_node_serves_status_and_stop_and_refuses_events() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let urls = vec![nats.url()];
    let hook = Receiver::start(|_, _| Reply::Ok);
    let node = |name: &str, deliver: bool| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let port = free_port();
        let config = if deliver {
            deliver_config(&dir, port, &urls, hook.port)
        } else {
            edge_config(&dir, port, &urls, 1)
        };
        // Returns once `/healthz` answers: the deliver-only node serves it too.
        Daemon::start(&dir, port, &config)
    };
    let edges = [node("edge0", false), node("edge1", false)];
    let deliverer = node("deliver", true);
    let leader = wait_for("a leader", Duration::from_secs(20), || leader_pid(&nats.url()));
    assert_eq!(
        deliverer.child.as_ref().map(std::process::Child::id),
        Some(leader),
        "the only deliverer leads"
    );

    let runs = ["2026-11-30T17:00:00-1-0-d0d0", "2026-11-30T17:00:00-2-0-d0d0"];
    for (edge, run) in edges.iter().zip(runs) {
        assert_eq!(edge.post(&started(run, "elsewhere", 1)).0, 202);
        assert_eq!(edge.post(&epoch(run, 1, 0)).0, 202);
    }
    hook.wait_delivered(4, Duration::from_secs(30));

    // `herald status --json` at the deliver-only node: the leader named, both edges' runs, none of its own.
    let status = wait_for("the deliverer's status to list both runs", Duration::from_secs(20), || {
        let (code, out) = herald_status(&deliverer.config, true);
        assert_eq!(code, 0, "herald status --json at the deliver-only node: {out}");
        let status: Value = serde_json::from_str(&out).expect("herald status --json prints JSON");
        let listed = leader_runs(&status);
        runs.iter().all(|r| listed.iter().any(|l| l == r)).then_some(status)
    });
    let cluster = &status["cluster"];
    assert_eq!(cluster["role"], "deliver", "{cluster}");
    let named = cluster["leader"].as_str().unwrap_or_default();
    assert!(named.ends_with(&format!("/{leader}")), "names the leader {leader}: {cluster}");
    assert!(cluster["lease_renewed_s_ago"].as_f64().is_some_and(|a| a < 2.0 * LEASE_S as f64), "{cluster}");
    assert_eq!(status["runs"].as_array().map(Vec::len), Some(0), "no local runs: {status}");
    assert_eq!(cluster["leader_status"]["notifiers"][0]["name"], "hook", "{cluster}");
    let (code, text) = herald_status(&deliverer.config, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("leader {named}")), "the text names the leader: {text}");
    for run in runs {
        assert!(text.contains(run), "the text lists {run}: {text}");
    }

    // `herald stop RUN` at the deliver-only node: the edge the run reports to answers its next post with it.
    let out = crate::herald()
        .arg("--config")
        .arg(&deliverer.config)
        .args(["stop", runs[0], "--reason", "asked at the deliverer"])
        .output()
        .expect("run herald stop");
    assert!(
        out.status.success(),
        "herald stop at the deliver-only node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seq = 2;
    let control = wait_for("edge0 to hand the stop to the run", Duration::from_secs(20), || {
        let (code, reply) = edges[0].post(&batch(runs[0], seq, seq));
        seq += 1;
        assert_eq!(code, 202, "{reply}");
        let control = &reply["control"][runs[0]];
        (control["stop"] == true).then(|| control.clone())
    });
    assert_eq!(control["reason"], "asked at the deliverer", "{control}");
    // The other edge's run is not stopped.
    let (_, reply) = edges[1].post(&batch(runs[1], 2, 2));
    assert_ne!(reply["control"][runs[1]]["stop"], true, "{reply}");

    // Events posted to the deliver-only node get a clear error, not a silent drop.
    let (code, body) = http(
        deliverer.port,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        started("2026-11-30T17:00:00-3-0-d0d0", "elsewhere", 1).as_bytes(),
    );
    assert!(code == 404 || code == 405, "{code} {body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("this node is deliver-only: send events to an edge (role = \"edge\" or \"both\")"),
        "{body}"
    );
    let out = crate::herald()
        .arg("--config")
        .arg(&deliverer.config)
        .args(["send", "--text", "hello"])
        .output()
        .expect("run herald send");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("deliver-only"), "herald send at the deliverer: {err}");
}

//! Alert rules end to end: a real `herald serve` with `[[rule]]`s, events posted over HTTP, and the alerts
//! the daemon makes arriving at a webhook (once per run, re-armed when the condition clears, not again after
//! a restart), routed to the notifiers a rule names.

use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{
    Daemon, Hit, Receiver, Reply, config_text, event, finished, free_port, started, wait_for,
};

const RULES: &str = r#"
[[rule]]
name = "diverged"
kind = "nan"
notifiers = ["hook"]

[[rule]]
name = "target"
kind = "threshold"
metric = "accuracy"
op = ">="
value = 0.9

[[rule]]
name = "sweep done"
kind = "all_finished"
runs = "sweep-*"
"#;

/// Sequence numbers of daemon-made events start here.
const MADE: u64 = 1 << 48;

fn nan_batch(run: &str, seq: u64, b: u64, loss: Value) -> String {
    event(
        run,
        seq,
        "batch_ended",
        json!({ "epoch": 0, "batch": b, "n_batches": 10, "loss": loss, "smooth_loss": loss, "lr": 0.01 }),
    )
}

fn epoch_with(run: &str, seq: u64, e: u32, accuracy: f64) -> String {
    event(
        run,
        seq,
        "epoch_ended",
        json!({ "epoch": e, "n_epochs": 3, "train_loss": 0.5, "valid_loss": 0.4, "metrics": {"accuracy": accuracy}, "elapsed_s": 0.01 }),
    )
}

fn note(run: &str, seq: u64, text: &str) -> String {
    event(run, seq, "message", json!({ "title": "note", "text": text }))
}

/// The alerts among the deliveries, as (run, rule, title).
fn alerts(hits: &[Hit]) -> Vec<(String, String, String)> {
    hits.iter()
        .filter(|h| h.kind == "alert")
        .map(|h| {
            let rule = h.body["event"]["rule"].as_str().unwrap_or("").to_owned();
            (h.run.clone(), rule, h.body["title"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

/// Wait until the webhook got the message `text`; what arrived by then is in order before it.
fn until_note(hook: &Receiver, text: &str) -> Vec<Hit> {
    wait_for(&format!("the message `{text}` at the webhook"), Duration::from_secs(20), || {
        let hits = hook.delivered();
        let seen = hits.iter().any(|h| h.kind == "message" && h.body["event"]["text"] == text);
        seen.then_some(hits)
    })
}

#[test]
fn rules_fire_once_rearm_and_stay_fired_across_a_restart() {
    let hook = Receiver::start(|_, _| Reply::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = config_text(dir.path(), port, hook.port, "", "") + RULES;
    let mut d = Daemon::start(dir.path(), port, &config);
    let a = "sweep-a";
    let b = "sweep-b";
    for run in [a, b] {
        let (code, reply) = d.post(&started(run, "elsewhere", 1));
        assert_eq!(code, 202, "{reply}");
    }
    // The target is reached; then two NaN batches and an infinite one: one alert.
    let body = format!(
        "{}\n{}\n{}\n{}\n",
        epoch_with(a, 1, 0, 0.95),
        nan_batch(a, 2, 0, json!("NaN")),
        nan_batch(a, 3, 1, json!("NaN")),
        nan_batch(a, 4, 2, json!("Infinity"))
    );
    assert_eq!(d.post(&body).0, 202);
    assert_eq!(d.post(&note(a, 5, "first")).0, 202);
    let hits = until_note(&hook, "first");
    assert_eq!(
        alerts(&hits),
        [
            (a.to_owned(), "target".to_owned(), "info: sweep-a: target: accuracy >= 0.9".to_owned()),
            (a.to_owned(), "diverged".to_owned(), "error: sweep-a: diverged: NaN loss".to_owned()),
        ]
    );
    let made: Vec<u64> = hits.iter().filter(|h| h.kind == "alert").map(|h| h.seq).collect();
    assert!(made.iter().all(|s| *s >= MADE), "alerts carry daemon-made sequence numbers: {made:?}");
    let nan = hits.iter().rfind(|h| h.kind == "alert").expect("the NaN alert");
    assert_eq!(nan.body["event"]["level"], "error");
    assert_eq!(nan.body["event"]["epoch"], 0);
    assert!(nan.body["text"].as_str().unwrap_or("").contains("batch 1/10 of epoch 1"), "{}", nan.body);

    // After a restart the rules remember: a NaN of the same streak is no news, a finite batch re-arms.
    assert!(d.terminate(), "the daemon exits cleanly:\n{}", d.log());
    d.restart();
    assert_eq!(d.post(&nan_batch(a, 6, 3, json!("NaN"))).0, 202);
    assert_eq!(d.post(&note(a, 7, "second")).0, 202);
    let hits = until_note(&hook, "second");
    assert_eq!(alerts(&hits).len(), 2, "no second alert for the same NaN streak after a restart");
    let body = format!("{}\n{}\n", nan_batch(a, 8, 4, json!(0.5)), nan_batch(a, 9, 5, json!("NaN")));
    assert_eq!(d.post(&body).0, 202);
    // The sweep: a completes, then b fails, which completes the set.
    assert_eq!(d.post(&finished(a, 10)).0, 202);
    let failed = event(b, 1, "run_failed", json!({ "error": "CUDA out of memory" }));
    assert_eq!(d.post(&failed).0, 202);
    assert_eq!(d.post(&note(b, 2, "third")).0, 202);
    let hits = until_note(&hook, "third");
    let got = alerts(&hits);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[2],
        (a.to_owned(), "diverged".to_owned(), "error: sweep-a: diverged: NaN loss".to_owned())
    );
    assert_eq!(got[3].0, b);
    assert_eq!(got[3].2, "info: sweep-b: sweep done: all runs finished");
    let done = hits.iter().rfind(|h| h.kind == "alert").expect("the sweep alert");
    assert!(
        done.body["text"]
            .as_str()
            .unwrap_or("")
            .contains("all 2 runs matching `sweep-*` ended: 1 completed, 1 failed"),
        "{}",
        done.body
    );
}

#[test]
fn a_bad_rule_is_refused_with_file_line_column_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let bad = config_text(dir.path(), port, 9, "", "")
        + "\n[[rule]]\nname = \"n\"\nkind = \"plateau\"\nmetric = \"valid_loss\"\npatience = \"five\"\n";
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, &bad).expect("write the config");
    let out = crate::herald().arg("--config").arg(&path).arg("check").output().expect("run herald check");
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let line = bad.lines().position(|l| l.starts_with("patience")).expect("the line") + 1;
    let expected =
        format!("{}:{line}:12: rule[0].patience: expected an integer, found string", path.display());
    assert!(text.contains(&expected), "expected `{expected}` in:\n{text}");
}

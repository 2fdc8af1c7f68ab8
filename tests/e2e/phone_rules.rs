//! Rules and mutes from the phone end to end: the real `herald serve` with a `telegram` notifier against the
//! fake Bot API. `/watch` from the allowed chat adds a threshold rule that fires once, as an alert message,
//! when the metric crosses; the same from another chat is refused (no answer, no rule); bad input gets a
//! reply saying what is wrong; `/mute` holds back the run's epoch updates (no live edits) while its end still
//! arrives; after a daemon restart `herald rules` still lists the phone rule, the run it fired for and the
//! mute.

use herald_fakes::telegram::Message;
use serde_json::{Value, json};

use crate::daemon::{Daemon, event, free_port, wait_for};
use crate::telegram::{Bot, CHAT, LONG, OTHER_CHAT, config};

fn started(run: &str) -> String {
    event(
        run,
        0,
        "run_started",
        json!({ "name": "digits <mlp>", "host": "e2e-box", "pid": 1, "n_epochs": 10, "batches_per_epoch": 4, "metric_names": ["accuracy"] }),
    )
}

fn epoch(run: &str, e: u32, accuracy: f64) -> String {
    event(
        run,
        u64::from(e) + 1,
        "epoch_ended",
        json!({ "epoch": e, "n_epochs": 10, "train_loss": 0.5, "valid_loss": 0.4, "metrics": {"accuracy": accuracy}, "elapsed_s": 1.5 }),
    )
}

fn post(d: &Daemon, body: &str) {
    let (status, reply) = d.post(body);
    assert_eq!(status, 202, "{reply}");
}

/// `herald rules --json` against the daemon.
fn rules(d: &Daemon) -> Value {
    let out = crate::herald()
        .arg("--config")
        .arg(&d.config)
        .args(["rules", "--json"])
        .output()
        .expect("herald rules");
    assert!(out.status.success(), "herald rules: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("herald rules --json prints JSON")
}

/// The alert messages in the allowed chat.
fn alerts(m: &[Message]) -> Vec<String> {
    m.iter().filter(|x| x.text.contains("digits <mlp>: watch accuracy")).map(|x| x.text.clone()).collect()
}

#[test]
fn watch_and_mute_from_the_phone_alert_once_hold_back_epochs_and_survive_a_restart() {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut d = Daemon::start(dir.path(), port, &config(dir.path(), port, &bot.fake.url));
    wait_for("setMyCommands", LONG, || bot.fake.commands());
    let run = "phone-run-1";
    post(&d, &started(run));
    post(&d, &epoch(run, 0, 0.5));
    bot.wait("the live message", |m| m.len() == 1 && m[0].edits == 1);

    // Another chat: no answer, no rule, no mute.
    bot.fake.user_message(OTHER_CHAT, 9, "/watch 1 accuracy >= 0.7");
    bot.fake.user_message(OTHER_CHAT, 9, "/mute 1");
    // Bad input: what is wrong, and the usage.
    let bad = bot.ask("/watch 1 accuracy => 0.7", "Unknown comparison `=>`");
    assert!(bad.text.contains("\nUsage: /watch <run> <metric> <op> <value>"), "{}", bad.text);
    let bad = bot.ask("/watch 1 accuracy >= lots", "`lots` is not a number.");
    assert!(bad.text.contains("\nUsage: /watch"), "{}", bad.text);
    let bad = bot.ask("/watch 7 accuracy >= 0.7", "no run matches `7`");
    assert!(bad.text.contains("\nUsage: /watch"), "{}", bad.text);

    let ok = bot.ask("/watch 1 accuracy >= 0.7", "Watching digits <mlp>");
    assert!(
        ok.text.starts_with("Watching digits <mlp>: I will tell you once when accuracy >= 0.7."),
        "{}",
        ok.text
    );
    assert!(bot.fake.bot_messages(OTHER_CHAT).is_empty(), "no answer to a chat not allowed");
    let listed = rules(&d);
    let phone = listed["phone"].as_array().expect("phone rules");
    assert_eq!(phone.len(), 1, "only the allowed chat's rule: {listed}");
    assert_eq!(phone[0]["name"], "watch accuracy >= 0.7");
    assert_eq!((phone[0]["runs"].as_str(), phone[0]["added_by"].as_str()), (Some(run), Some("@user5")));
    assert_eq!(listed["mutes"], json!([]), "the other chat's /mute was refused");

    // The metric crosses at epoch 3: one alert, not again at epoch 4.
    post(&d, &epoch(run, 1, 0.6));
    post(&d, &epoch(run, 2, 0.75));
    let m = bot.wait("the alert", |m| !alerts(m).is_empty());
    let alert = alerts(&m);
    assert_eq!(alert.len(), 1, "{alert:?}");
    assert!(alert[0].starts_with("info: digits <mlp>: watch accuracy >= 0.7"), "{}", alert[0]);
    assert!(
        alert[0].contains("accuracy 0.75 at epoch 3/10 (watched from the phone by @user5)"),
        "{}",
        alert[0]
    );
    assert!(m.iter().all(|x| !x.silent || !x.text.contains("watch accuracy")), "an alert rings");
    post(&d, &epoch(run, 3, 0.8));
    let listed = bot.ask("/rules", "Rules");
    assert!(
        listed.text.contains("\n• digits <mlp> · accuracy >= 0.7 · fired · by @user5"),
        "{}",
        listed.text
    );
    bot.wait("the epoch 4 edit", |m| m[0].text.contains("epoch 4/10"));
    assert_eq!(alerts(&bot.fake.bot_messages(CHAT)).len(), 1, "a phone rule fires once");

    // Muted: no epoch edits; after a restart the rule, the run it fired for and the mute are still there.
    bot.ask("/mute 1", "Muted digits <mlp> until /unmute");
    let edits = bot.edits();
    assert!(d.terminate(), "the daemon stops cleanly:\n{}", d.log());
    d.restart();
    let listed = rules(&d);
    assert_eq!(listed["phone"][0]["name"], "watch accuracy >= 0.7", "{listed}");
    assert_eq!(listed["phone"][0]["fired_for"], json!([{ "run": run, "name": "digits <mlp>", "times": 1 }]));
    assert_eq!(listed["mutes"][0]["run"], run, "{listed}");
    assert_eq!(listed["mutes"][0]["until_ms"], Value::Null);
    let table = crate::herald().arg("--config").arg(&d.config).arg("rules").output().expect("herald rules");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("watch accuracy >= 0.7") && table.contains("MUTED RUN"), "{table}");

    post(&d, &epoch(run, 4, 0.85));
    post(&d, &epoch(run, 5, 0.9));
    post(
        &d,
        &event(run, 7, "run_finished", json!({ "status": "completed", "reason": "done", "duration_s": 9.0 })),
    );
    bot.wait("the end", |m| {
        m[0].text.starts_with("digits <mlp>: completed")
            && m.iter().any(|x| x.text.contains("completed after"))
    });
    assert_eq!(bot.edits(), edits + 1, "no edit for the muted epochs, one for the end");

    // /unwatch removes the phone rule.
    let gone = bot.ask("/unwatch 1 accuracy", "Removed 1 rule on accuracy of digits <mlp>.");
    assert!(gone.text.ends_with('.'));
    assert_eq!(rules(&d)["phone"], json!([]));
    assert!(bot.fake.bot_messages(OTHER_CHAT).is_empty());
}

//! Slack end to end: the real `herald serve` with a `slack` notifier in Web API mode against the fake Slack
//! (herald-fakes): one live message updated as epochs end, the start and a failure as thread replies (the
//! failure broadcast to the channel), the loss curve uploaded into the thread; and webhook mode posting
//! Block Kit.

use std::time::Duration;

use herald_fakes::slack::{FakeSlack, Message};
use serde_json::json;

use crate::daemon::{Daemon, event, free_port, wait_for};

const TOKEN: &str = "xoxb-e2e";
const LONG: Duration = Duration::from_secs(40);

struct Fake {
    slack: FakeSlack,
    _runtime: tokio::runtime::Runtime,
}

fn start_fake() -> Fake {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let slack = runtime.block_on(FakeSlack::start(TOKEN));
    Fake { slack, _runtime: runtime }
}

fn config(dir: &std::path::Path, port: u16, notifier: &str) -> String {
    format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"{dir}/herald.sock\"\nstate_dir = \"{dir}/state\"\n\
         drain_timeout = \"2s\"\n\n[[notifier]]\nname = \"team\"\ntype = \"slack\"\n{notifier}\n",
        dir = dir.display()
    )
}

fn run_events(run: &str) -> Vec<String> {
    let mut out = vec![event(
        run,
        0,
        "run_started",
        json!({ "name": "resnet <b>", "host": "box", "pid": 1, "n_epochs": 2, "batches_per_epoch": 2, "metric_names": [] }),
    )];
    let mut seq = 1;
    for e in 0..2u32 {
        for b in 0..2u64 {
            out.push(event(
                run,
                seq,
                "batch_ended",
                json!({ "epoch": e, "batch": b, "n_batches": 2, "loss": 1.0, "smooth_loss": 1.0 / (seq as f64), "lr": 0.1 }),
            ));
            seq += 1;
        }
        out.push(event(
            run,
            seq,
            "epoch_ended",
            json!({ "epoch": e, "n_epochs": 2, "train_loss": 0.5, "valid_loss": 0.4, "metrics": {}, "elapsed_s": 2.0 }),
        ));
        seq += 1;
    }
    out
}

#[test]
fn web_api_live_message_thread_replies_and_the_loss_curve() {
    let fake = start_fake();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let notifier =
        format!("token = \"{TOKEN}\"\nchannel = \"#training\"\napi_url = \"{}/api\"", fake.slack.url);
    let d = Daemon::start(dir.path(), port, &config(dir.path(), port, &notifier));
    let run = "slack-run-1";
    let mut events = run_events(run);
    events.push(event(
        run,
        99,
        "run_failed",
        json!({ "error": "CUDA <oom> & more", "traceback": "Traceback\n  File x" }),
    ));
    for e in events {
        let (status, reply) = d.post(&e);
        assert_eq!(status, 202, "{reply}");
    }
    let messages: Vec<Message> = wait_for("the failure and the plot", LONG, || {
        let m = fake.slack.messages();
        (m.len() == 3 && m[0].text.starts_with("resnet &lt;b&gt;: failed") && m[0].files.len() == 1)
            .then_some(m)
    });
    let (top, start, failure) = (&messages[0], &messages[1], &messages[2]);
    assert!(top.thread_ts.is_none());
    assert!(top.edits >= 1, "the live message was updated: {top:?}");
    assert_eq!(start.thread_ts.as_deref(), Some(top.ts.as_str()));
    assert!(start.text.contains("started"), "{start:?}");
    assert_eq!(failure.thread_ts.as_deref(), Some(top.ts.as_str()));
    assert!(failure.reply_broadcast);
    let blocks = failure.blocks.as_ref().map(|b| b.to_string()).unwrap_or_default();
    assert!(blocks.contains("CUDA &lt;oom&gt; &amp; more"), "{blocks}");
    assert!(top.files[0].2 > 1000, "a PNG loss curve: {:?}", top.files);
    assert!(fake.slack.calls().iter().all(|c| c.status == 200 && c.error.is_none()));
}

#[test]
fn webhook_mode_posts_block_kit() {
    let fake = start_fake();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let notifier = format!("webhook_url = \"{}\"", fake.slack.webhook_url());
    let d = Daemon::start(dir.path(), port, &config(dir.path(), port, &notifier));
    let run = "slack-run-2";
    for e in run_events(run) {
        assert_eq!(d.post(&e).0, 202);
    }
    let posts = wait_for("three webhook posts", LONG, || {
        let p = fake.slack.webhook_posts();
        (p.len() == 3).then_some(p)
    });
    let table = posts[2]["blocks"][1]["text"]["text"].as_str().expect("a table block");
    // Slack's default table is the compact one, for phones.
    assert!(table.starts_with("```ep  train  valid  time\n 0 0.5000 0.4000 00:02\n"), "{table}");
    assert!(
        posts[0]["blocks"][0]["text"]["text"]
            .as_str()
            .expect("title")
            .starts_with("*resnet &lt;b&gt;: started*")
    );
}

//! herald-slack against the fake Slack (herald-fakes): webhook Block Kit, the Web API live message with
//! thread replies, `reply_broadcast` for failures, the three-step plot upload,
//! mrkdwn escaping, bad tokens, and 429 with `Retry-After` without repeats.

use std::time::Duration;

use herald_event::{EpochEnded, RunFailed, RunFinished, RunStarted, RunStatus};
use herald_fakes::sample::{self, Run};
use herald_fakes::slack::{CHANNEL_ID, FakeSlack};
use herald_plugin::{Image, Notifier, NotifierType};

const TOKEN: &str = "xoxb-test-token";

fn started(name: &str) -> RunStarted {
    RunStarted { pid: 1, n_epochs: 2, batches_per_epoch: 10, ..sample::started(name) }
}

fn epoch(n: u32) -> EpochEnded {
    EpochEnded { n_epochs: 2, train_loss: 0.5, elapsed_s: 3.0, ..sample::epoch(n) }
}

fn png() -> Image {
    sample::png(&[9, 9])
}

fn api(fake: &FakeSlack, extra: &str) -> Box<dyn Notifier> {
    let text = format!("token = '{}'\nchannel = '#ml'\napi_url = '{}/api'\n{extra}", fake.token, fake.url);
    herald_slack::SlackConfig::from_table("team", text.parse().expect("TOML")).expect("valid config")
}

#[tokio::test]
async fn webhook_posts_block_kit_with_the_table_in_a_code_block() {
    let fake = FakeSlack::start(TOKEN).await;
    let text = format!("webhook_url = '{}'", fake.webhook_url());
    let n = herald_slack::SlackConfig::from_table("hook", text.parse().expect("TOML")).expect("valid");
    let mut run = Run::new("run-s");
    run.deliver(n.as_ref(), started("<!channel> & co"), None).await;
    run.deliver(n.as_ref(), epoch(0), None).await;
    let posts = fake.webhook_posts();
    assert_eq!(posts.len(), 2);
    let blocks = posts[1]["blocks"].as_array().expect("blocks");
    let first = blocks[0]["text"]["text"].as_str().expect("text");
    assert!(first.starts_with("*&lt;!channel&gt; &amp; co: epoch 1/2*\n"), "{first}");
    let table = blocks[1]["text"]["text"].as_str().expect("table");
    // The default table fits a phone; `table = "full"` is fastai's.
    assert_eq!(table, "```ep  train  valid    acc  time\n 0 0.5000 0.4000 0.9000 00:03```", "{table}");
    let full = format!("webhook_url = '{}'\ntable = 'full'", fake.webhook_url());
    let full = herald_slack::SlackConfig::from_table("hook", full.parse().expect("TOML")).expect("valid");
    full.deliver(&run.note(epoch(0), None)).await.expect("delivered");
    let posts = fake.webhook_posts();
    let table = posts[2]["blocks"][1]["text"]["text"].as_str().expect("table");
    assert!(table.starts_with("```epoch     train_loss  valid_loss  accuracy  time\n0 "), "{table}");
    assert!(!posts[0]["text"].as_str().expect("fallback").contains("<!channel>"), "no mention");
    // A 429 is retried after its Retry-After; a deleted webhook is permanent and says what to do.
    fake.fail_with_429(Some("webhook"), 1, 3);
    let note = run.note(epoch(1), None);
    let err = n.deliver(&note).await.expect_err("rate limited");
    assert_eq!((err.retryable, err.retry_after), (true, Some(Duration::from_secs(3))));
    n.deliver(&note).await.expect("the retry goes through");
    let gone = format!("webhook_url = '{}/nowhere'", fake.url);
    let gone = herald_slack::SlackConfig::from_table("hook", gone.parse().expect("TOML")).expect("valid");
    let err = gone.deliver(&note).await.expect_err("unknown path");
    assert!(!err.retryable, "{err}");
}

#[tokio::test]
async fn web_api_live_message_thread_replies_broadcast_failures_and_the_plot() {
    let fake = FakeSlack::start(TOKEN).await;
    let n = api(&fake, "");
    let mut run = Run::new("run-s");
    let r0 = run.deliver(n.as_ref(), started("digits"), None).await;
    assert_eq!(r0.0["channel"], CHANNEL_ID, "the channel id, for chat.update");
    let live = r0.0["live"].as_str().expect("live ts").to_owned();
    run.deliver(n.as_ref(), epoch(0), None).await;
    run.deliver(n.as_ref(), epoch(1), None).await;
    let failed = RunFailed { error: "CUDA <oom>".into(), traceback: Some("Traceback\n  File x".into()) };
    let r = run.deliver(n.as_ref(), failed, Some(png())).await;
    assert_eq!(r.0["live"], live.as_str());

    let methods: Vec<String> = fake.calls().iter().map(|c| c.method.clone()).collect();
    assert_eq!(
        methods,
        [
            "chat.postMessage",
            "chat.postMessage",
            "chat.update",
            "chat.update",
            "chat.update",
            "chat.postMessage",
            "files.getUploadURLExternal",
            "upload",
            "files.completeUploadExternal"
        ]
    );
    assert!(fake.calls().iter().all(|c| c.status == 200 && c.error.is_none()), "{:?}", fake.calls());
    assert_eq!(
        fake.calls_to("files.getUploadURLExternal")[0].params.encoding,
        "form",
        "Slack wants a form here"
    );
    let messages = fake.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    let (top, start, failure) = (&messages[0], &messages[1], &messages[2]);
    assert_eq!(top.ts, live);
    assert_eq!(top.edits, 3);
    assert!(top.text.starts_with("digits: failed"), "{}", top.text);
    assert_eq!(start.thread_ts.as_deref(), Some(live.as_str()));
    assert!(!start.reply_broadcast);
    assert_eq!(failure.thread_ts.as_deref(), Some(live.as_str()));
    assert!(failure.reply_broadcast, "a failure shows in the channel too");
    let blocks = failure.blocks.as_ref().expect("blocks").to_string();
    assert!(blocks.contains("CUDA &lt;oom&gt;") && blocks.contains("*traceback*"), "{blocks}");
    assert_eq!(top.files.len(), 1, "the plot is in the thread");
    assert_eq!(top.files[0].2, 6);
}

#[tokio::test]
async fn a_429_waits_retry_after_and_a_retry_repeats_nothing() {
    let fake = FakeSlack::start(TOKEN).await;
    let n = api(&fake, "");
    let mut run = Run::new("run-s");
    run.deliver(n.as_ref(), started("r"), None).await;
    fake.fail_with_429(Some("chat.update"), 1, 4);
    let note = run.note(epoch(0), None);
    let err = n.deliver(&note).await.expect_err("rate limited");
    assert_eq!(err.retry_after, Some(Duration::from_secs(4)));
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "ok".into(), duration_s: 1.0, best: None };
    // The photo upload fails once; the retry does not post the finish reply twice.
    fake.fail_with_429(Some("upload"), 1, 1);
    let note = run.note(finished, Some(png()));
    assert!(n.deliver(&note).await.is_err());
    let r = n.deliver(&note).await.expect("retried");
    let replies = fake.messages().into_iter().filter(|m| m.thread_ts.is_some()).count();
    assert_eq!(replies, 2, "start and finish, once each");
    assert!(r.0["live"].is_string());
}

#[tokio::test]
async fn a_bad_token_is_permanent_and_says_what_to_fix() {
    let fake = FakeSlack::start(TOKEN).await;
    let text = format!("token = 'xoxb-wrong'\nchannel = 'C1'\napi_url = '{}/api'", fake.url);
    let n = herald_slack::SlackConfig::from_table("s", text.parse().expect("TOML")).expect("valid");
    let mut run = Run::new("run-s");
    let note = run.note(started("r"), None);
    let err = n.deliver(&note).await.expect_err("bad token");
    assert!(!err.retryable);
    assert!(err.message.contains("invalid_auth") && err.message.contains("check the bot token"), "{err}");
    assert!(matches!(n.health_check().await, herald_plugin::Health::Unavailable { .. }));
}

//! herald-discord against a faithful local Discord webhook endpoint (an axum fake): the live message
//! posted with `?wait=true` and edited with PATCH, new messages for what should ping, the 2000-character
//! cut, attachments, and 429 with fractional `retry_after`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_event::{EpochEnded, Event, RunFailed, RunFinished, RunStarted, RunStatus};
use herald_fakes::recording::{Answer, Fake, Recorded};
use herald_fakes::sample::{self, Run};
use herald_plugin::{Health, Image, Notifier, NotifierType, RunContext};

const HOOK: &str = "/api/webhooks/123/tok-secret";

fn started() -> RunStarted {
    RunStarted { n_epochs: 300, ..sample::started("digits @everyone") }
}

fn epoch(n: u32) -> EpochEnded {
    EpochEnded { n_epochs: 300, ..sample::epoch(n) }
}

/// A fake Discord: POST answers a new message with a fresh id, PATCH answers the edited message, GET the
/// webhook.
async fn discord() -> Fake {
    let next = Arc::new(AtomicU64::new(1000));
    Fake::start(move |r: &Recorded| match r.method.as_str() {
        "POST" => {
            let id = next.fetch_add(1, Ordering::SeqCst);
            Answer::json(200, serde_json::json!({"id": id.to_string(), "channel_id": "9", "content": "..."}))
        }
        "PATCH" => {
            let id = r.path.rsplit('/').next().unwrap_or_default().to_owned();
            Answer::json(200, serde_json::json!({"id": id}))
        }
        _ => Answer::json(200, serde_json::json!({"id": "123", "type": 1, "name": "herald"})),
    })
    .await
}

fn notifier(server: &Fake, extra: &str) -> Box<dyn Notifier> {
    let text = format!("webhook_url = '{}{HOOK}'\n{extra}", server.base);
    herald_discord::DiscordConfig::from_table("chan", text.parse().expect("test config is TOML"))
        .expect("valid config")
}

fn content(r: &Recorded) -> String {
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
    body["content"].as_str().expect("content").to_owned()
}

#[tokio::test]
async fn one_live_message_edited_in_place_then_a_new_message_at_the_end() {
    let server = discord().await;
    let n = notifier(&server, "username = 'Herald'");
    let mut run = Run::new("run-1");
    let r0 = run.deliver(n.as_ref(), started(), None).await;
    assert_eq!(r0.0, serde_json::json!({"live": "1000", "message_id": "1000"}));
    run.deliver(n.as_ref(), epoch(0), None).await;
    let r2 = run.deliver(n.as_ref(), epoch(1), None).await;
    assert_eq!(r2.0, serde_json::json!({"live": "1000"}));
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 9.0, best: None };
    let r3 = run.deliver(n.as_ref(), finished, None).await;
    assert_eq!(r3.0, serde_json::json!({"live": "1000", "message_id": "1001"}));

    let requests = server.requests();
    let calls: Vec<(String, String, Option<String>)> =
        requests.iter().map(|r| (r.method.to_string(), r.path.clone(), r.query.clone())).collect();
    let post = ("POST".to_owned(), HOOK.to_owned(), Some("wait=true".to_owned()));
    let patch = ("PATCH".to_owned(), format!("{HOOK}/messages/1000"), None);
    assert_eq!(calls, vec![post.clone(), patch.clone(), patch.clone(), patch, post]);
    let body: serde_json::Value = serde_json::from_slice(&requests[2].body).expect("JSON");
    assert_eq!(body["allowed_mentions"], serde_json::json!({"parse": []}), "no @everyone from a run name");
    assert_eq!(body["username"], "Herald");
    let edited = content(&requests[2]);
    // The default table fits a phone.
    assert!(edited.ends_with("```\nep  train  valid    acc  time\n 0 0.5000 0.4000 0.9000 00:05\n 1 0.2500 0.4000 0.9000 00:05\n```"), "the table grew in place: {edited}");
    assert!(content(&requests[4]).contains("completed"), "{}", content(&requests[4]));
}

#[tokio::test]
async fn failure_edits_the_live_message_and_pings_with_a_new_one() {
    let server = discord().await;
    let n = notifier(&server, "");
    let mut run = Run::new("run-1");
    run.deliver(n.as_ref(), started(), None).await;
    run.deliver(n.as_ref(), epoch(0), None).await;
    let failed =
        RunFailed { error: "CUDA out of memory".into(), traceback: Some("Traceback\n  File x".into()) };
    run.deliver(n.as_ref(), failed, None).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!((requests[2].method.as_str(), requests[3].method.as_str()), ("PATCH", "POST"));
    let text = content(&requests[3]);
    assert!(text.contains("CUDA out of memory") && text.contains("```\nTraceback\n  File x\n```"), "{text}");
}

#[tokio::test]
async fn a_message_is_posted_beside_the_live_message() {
    let server = discord().await;
    let n = notifier(&server, "");
    let mut run = Run::new("run-1");
    run.deliver(n.as_ref(), epoch(0), None).await;
    let note =
        herald_event::Message { title: "checkpoint".into(), text: "saved".into(), level: Default::default() };
    let receipt = run.deliver(n.as_ref(), note, None).await;
    assert_eq!(receipt.0, serde_json::json!({"live": "1000", "message_id": "1001"}));
    run.deliver(n.as_ref(), epoch(1), None).await;
    let calls: Vec<(String, String)> =
        server.requests().iter().map(|r| (r.method.to_string(), r.path.clone())).collect();
    let live = format!("{HOOK}/messages/1000");
    assert_eq!(
        calls,
        [("POST".into(), HOOK.into()), ("POST".into(), HOOK.into()), ("PATCH".into(), live)],
        "the message never overwrites the live table"
    );
}

#[tokio::test]
async fn a_deleted_live_message_is_posted_again() {
    let server = discord().await;
    let n = notifier(&server, "");
    let mut run = Run::new("run-1");
    run.deliver(n.as_ref(), epoch(0), None).await;
    server.script([Answer::json(404, serde_json::json!({"message": "Unknown Message", "code": 10008}))]);
    let receipt = run.deliver(n.as_ref(), epoch(1), None).await;
    assert_eq!(receipt.0, serde_json::json!({"live": "1001", "message_id": "1001"}));
    let methods: Vec<String> = server.requests().iter().map(|r| r.method.to_string()).collect();
    assert_eq!(methods, ["POST", "PATCH", "POST"]);
}

#[tokio::test]
async fn live_off_posts_every_notification() {
    let server = discord().await;
    let n = notifier(&server, "live = false");
    assert!(!n.capabilities().edit);
    let mut run = Run::new("run-1");
    run.deliver(n.as_ref(), epoch(0), None).await;
    run.deliver(n.as_ref(), epoch(1), None).await;
    assert!(server.requests().iter().all(|r| r.method == "POST"));
}

#[tokio::test]
async fn long_tables_are_cut_to_2000_characters() {
    let server = discord().await;
    // The full table: the compact one shows ten epochs and is never this long.
    let n = notifier(&server, "table = 'full'");
    let mut run = Run::new("run-1");
    let mut wide = started();
    wide.metric_names = (0..8).map(|i| format!("metric_{i}")).collect();
    *run.context() = RunContext::from_started("run-1", &wide);
    for i in 0..200 {
        run.context().apply(&Event::now("run-1", u64::from(i), epoch(i)));
    }
    run.deliver(n.as_ref(), epoch(200), None).await;
    let text = content(&server.last());
    assert!(text.chars().count() <= herald_discord::CONTENT_LIMIT, "{}", text.chars().count());
    assert!(text.contains("```\nepoch     train_loss"), "the header stays: {text}");
    assert!(text.contains("\n200       0.002488"), "the latest row stays: {text}");
    assert!(!text.contains("\n169       "), "the oldest rows go first: {text}");
    assert!(text.ends_with("```"), "{text}");
    assert!(text.contains("earlier lines not shown)"), "rows were dropped from the top: {text}");
}

#[tokio::test]
async fn attaches_the_loss_curve_at_run_end() {
    let server = discord().await;
    let n = notifier(&server, "");
    let mut run = Run::new("run-1");
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    let image = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: png.clone() };
    let finished =
        RunFinished { status: RunStatus::Completed, reason: String::new(), duration_s: 1.0, best: None };
    let note = run.note(finished, Some(image));
    n.deliver(&note).await.expect("delivered");
    let r = server.last();
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("multipart/form-data")));
    let body = r.body.clone();
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"name=\"payload_json\""), "payload_json part");
    assert!(has(b"name=\"files[0]\"; filename=\"loss.png\""), "files[0] part");
    assert!(has(&png), "the PNG bytes");
    assert!(has(b"\"allowed_mentions\""), "the payload travels in payload_json");
}

#[tokio::test]
async fn rate_limits_use_the_fractional_retry_after() {
    let server = discord().await;
    let n = notifier(&server, "");
    server.script([
        Answer::json(429, serde_json::json!({"message": "You are being rate limited.", "retry_after": 0.35, "global": false}))
            .with_header("retry-after", "1"),
        Answer::json(401, serde_json::json!({"message": "Invalid Webhook Token", "code": 50027})),
        Answer::json(500, serde_json::json!({"message": "oops"})),
    ]);
    let mut run = Run::new("run-1");
    let note = run.note(epoch(0), None);
    let e = n.deliver(&note).await.expect_err("429");
    assert!(e.retryable && e.retry_after == Some(Duration::from_millis(350)), "{e:?}");
    let e = n.deliver(&note).await.expect_err("401");
    assert!(!e.retryable && e.message.contains("Invalid Webhook Token"), "{e}");
    let e = n.deliver(&note).await.expect_err("500");
    assert!(e.retryable, "{e:?}");
    assert!(!e.message.contains("tok-secret"), "errors never show the webhook token: {e}");
    n.deliver(&note).await.expect("recovered");
}

#[tokio::test]
async fn health_check_asks_for_the_webhook() {
    let server = discord().await;
    let n = notifier(&server, "");
    assert_eq!(n.health_check().await, Health::Ok);
    assert_eq!((server.last().method.as_str(), server.last().path.as_str()), ("GET", HOOK));
    server.script([Answer::json(404, serde_json::json!({"message": "Unknown Webhook", "code": 10015}))]);
    match n.health_check().await {
        Health::Unavailable { message } => {
            assert!(
                message.contains("does not know this webhook") && !message.contains("tok-secret"),
                "{message}"
            )
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // Nothing listening: unavailable, and the message does not leak the token.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let gone = herald_discord::DiscordConfig::from_table(
        "chan",
        format!("webhook_url = 'http://127.0.0.1:{port}{HOOK}'").parse().expect("TOML"),
    )
    .expect("valid");
    match gone.health_check().await {
        Health::Unavailable { message } => assert!(!message.contains("tok-secret"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    let mut run = Run::new("run-1");
    let e = gone.deliver(&run.note(epoch(0), None)).await.expect_err("nothing listens");
    assert!(e.retryable && !e.message.contains("tok-secret"), "{e}");
}

#[test]
fn the_documented_examples_build() {
    for table in herald_fakes::docs::examples("discord") {
        herald_discord::DiscordConfig::from_table("docs", table.clone())
            .unwrap_or_else(|e| panic!("{e}\n{table}"));
    }
}

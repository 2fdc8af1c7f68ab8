//! herald-ntfy against a faithful local ntfy server (an axum fake): what is published, how, and how the
//! notifier reads the server's answers.

use std::time::Duration;

use base64::Engine as _;
use herald_event::{Event, Payload, RunFailed, RunFinished, RunStarted, RunStatus};
use herald_fakes::recording::{Answer, Fake};
use herald_fakes::sample::{self, epoch};
use herald_plugin::{Health, Image, Notification, Notifier, NotifierType, RunContext, TableLayout, render};

fn started() -> RunStarted {
    sample::started("digits")
}

fn ctx() -> RunContext {
    RunContext::from_started("run/1", &started())
}

fn note(payload: impl Into<Payload>) -> Notification {
    render::notification(&ctx(), &Event::now("run/1", 3, payload), None, None, 1)
}

/// The text of `n` with the default, compact table: what the notifier sends unless `table = "full"`.
fn compact(n: &Notification) -> String {
    render::with_table(n, TableLayout::Compact).text.clone()
}

fn notifier(toml_text: &str) -> Box<dyn Notifier> {
    herald_ntfy::NtfyConfig::from_table("phone", toml_text.parse().expect("test config is TOML"))
        .expect("valid config")
}

async fn ok_server() -> Fake {
    Fake::start(|_| Answer::json(200, serde_json::json!({"id": "msg1", "event": "message"}))).await
}

/// Decode an RFC 2047 `=?UTF-8?B?...?=` header as ntfy does (plain values pass through).
fn decode_header(value: &str) -> String {
    match value.strip_prefix("=?UTF-8?B?").and_then(|v| v.strip_suffix("?=")) {
        Some(b64) => String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(b64).expect("valid base64 in the header"),
        )
        .expect("UTF-8 header"),
        None => value.to_owned(),
    }
}

#[tokio::test]
async fn publishes_text_with_title_priority_and_tags() {
    let server = ok_server().await;
    let n =
        notifier(&format!("server = '{}'\ntopic = 'runs'\ntags = ['robot']\ntoken = 'tk_abc'", server.base));
    let note = note(epoch(0));
    let receipt = n.deliver(&note).await.expect("delivered");
    assert_eq!(receipt.0, serde_json::json!({"id": "msg1"}));
    let r = server.last();
    assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("POST", "/runs", None));
    assert_eq!(r.text(), compact(&note));
    assert!(
        r.text().ends_with("\n\nep  train  valid    acc  time\n 0 0.5000 0.4000 0.9000 00:05"),
        "{}",
        r.text()
    );
    assert_eq!(decode_header(r.header("title").expect("title")), "digits: epoch 1/3");
    assert_eq!(r.header("priority"), Some("2"));
    assert_eq!(r.header("tags"), Some("chart_with_downwards_trend,robot"));
    assert_eq!(r.header("authorization"), Some("Bearer tk_abc"));
    assert_eq!(r.header("actions"), None, "no stop button without public_url and daemon_token");

    // `table = "full"`: fastai's table.
    let n = notifier(&format!("server = '{}'\ntopic = 'runs'\ntable = 'full'", server.base));
    n.deliver(&note).await.expect("delivered");
    assert_eq!(server.last().text(), note.text);
    assert!(note.text.contains("epoch     train_loss"), "{}", note.text);
}

#[tokio::test]
async fn priority_follows_the_event() {
    let server = ok_server().await;
    let n = notifier(&format!("server = '{}'\ntopic = 'runs'", server.base));
    let finished =
        RunFinished { status: RunStatus::Completed, reason: String::new(), duration_s: 9.0, best: None };
    let failed =
        RunFailed { error: "CUDA out of memory".into(), traceback: Some("Traceback\n  boom".into()) };
    for (payload, priority, tag) in [
        (Payload::from(started()), "3", "rocket"),
        (epoch(1).into(), "2", "chart_with_downwards_trend"),
        (finished.into(), "4", "white_check_mark"),
        (failed.into(), "5", "rotating_light"),
    ] {
        n.deliver(&note(payload)).await.expect("delivered");
        let r = server.last();
        assert_eq!((r.header("priority"), r.header("tags")), (Some(priority), Some(tag)), "{}", r.text());
    }
    assert!(server.last().text().contains("Traceback\n  boom"), "the failure carries the traceback");
    assert!(n.health_check().await == Health::Ok);
}

#[tokio::test]
async fn attaches_the_loss_curve_at_run_end() {
    let server = ok_server().await;
    let n = notifier(&format!("server = '{}/'\ntopic = 'runs'", server.base));
    let png = vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3];
    let image = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: png.clone() };
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 9.0, best: None };
    let mut context = ctx();
    context.apply(&Event::now("run/1", 1, epoch(0)));
    let note = render::notification(&context, &Event::now("run/1", 2, finished), None, Some(image), 1);
    n.deliver(&note).await.expect("delivered");
    let r = server.last();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("PUT", "/runs"));
    assert_eq!(r.body, png);
    assert_eq!(r.header("filename"), Some("loss.png"));
    assert_eq!(decode_header(r.header("message").expect("message header")), compact(&note));
    assert!(note.text.contains('\n'), "the multi-line text survives the header");
}

#[tokio::test]
async fn cuts_messages_to_4096_bytes() {
    let server = ok_server().await;
    let n = notifier(&format!("server = '{}'\ntopic = 'runs'", server.base));
    let long =
        herald_event::Message { title: "log".into(), text: "é".repeat(5000), level: Default::default() };
    n.deliver(&note(long)).await.expect("delivered");
    let body = server.last().text();
    assert!(body.len() <= herald_ntfy::MESSAGE_LIMIT_BYTES && body.len() > 4000, "{}", body.len());
    assert!(body.ends_with('…'));
}

#[tokio::test]
async fn stop_button_calls_the_daemon() {
    let server = ok_server().await;
    let n = notifier(&format!(
        "server = '{}'\ntopic = 'runs'\npublic_url = 'https://gpu1.example.org:7878/'\ndaemon_token = 'dtok'",
        server.base
    ));
    assert!(n.capabilities().commands);
    n.deliver(&note(epoch(0))).await.expect("delivered");
    assert_eq!(
        server.last().header("actions"),
        Some(
            "http, Stop run, https://gpu1.example.org:7878/v1/runs/run%2F1/stop, method=POST, \
             headers.Authorization=Bearer dtok, clear=true"
        )
    );
    let finished =
        RunFinished { status: RunStatus::Completed, reason: String::new(), duration_s: 1.0, best: None };
    n.deliver(&note(finished)).await.expect("delivered");
    assert_eq!(server.last().header("actions"), None, "no stop button once the run is over");
}

#[tokio::test]
async fn maps_server_answers_to_delivery_errors() {
    let server = ok_server().await;
    let n = notifier(&format!("server = '{}'\ntopic = 'runs'", server.base));
    server.script([
        Answer::json(
            429,
            serde_json::json!({"code": 42901, "http": 429, "error": "limit reached: too many requests"}),
        )
        .with_header("retry-after", "7"),
        Answer::json(502, serde_json::json!({"error": "bad gateway"})),
        Answer::json(403, serde_json::json!({"code": 40301, "http": 403, "error": "forbidden"})),
        Answer::json(413, serde_json::json!({"error": "message too large"})),
    ]);
    let note = note(epoch(0));
    let e = n.deliver(&note).await.expect_err("429");
    assert!(e.retryable && e.retry_after == Some(Duration::from_secs(7)), "{e:?}");
    assert!(e.message.contains("too many requests"), "{e}");
    let e = n.deliver(&note).await.expect_err("502");
    assert!(e.retryable && e.retry_after.is_none(), "{e:?}");
    let e = n.deliver(&note).await.expect_err("403");
    assert!(!e.retryable && e.message.contains("forbidden") && e.message.contains("credentials"), "{e}");
    let e = n.deliver(&note).await.expect_err("413");
    assert!(!e.retryable, "{e:?}");
    n.deliver(&note).await.expect("the server recovered");
}

#[tokio::test]
async fn unreachable_server_is_retryable_and_unhealthy() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let n = notifier(&format!("server = 'http://127.0.0.1:{port}'\ntopic = 'runs'"));
    let e = n.deliver(&note(epoch(0))).await.expect_err("nothing listens");
    assert!(e.retryable && e.code.as_deref() == Some("network"), "{e:?}");
    match n.health_check().await {
        Health::Unavailable { message } => {
            assert!(message.contains("cannot reach the ntfy server"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[test]
fn the_documented_examples_build() {
    for table in herald_fakes::docs::examples("ntfy") {
        herald_ntfy::NtfyConfig::from_table("docs", table.clone()).unwrap_or_else(|e| panic!("{e}\n{table}"));
    }
}

//! herald-pushover against a faithful local Pushover API (an axum fake): the form fields, the limits, the
//! attachment, and how the notifier reads the API's answers.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_event::{Event, Message, Payload, RunFailed, RunFinished, RunStarted, RunStatus};
use herald_fakes::recording::{Answer, Fake, Recorded};
use herald_fakes::sample::{self, epoch};
use herald_plugin::{Health, Image, Notification, Notifier, NotifierType, RunContext, TableLayout, render};

const KEYS: &str = "token = 'azGDORePK8gMaC0QOYAMyEEuzJnyUi'\nuser = 'uQiRzpo4DXghDmr9QzzfQu27cmVRsG'\n";

fn started() -> RunStarted {
    sample::started("digits")
}

fn note(payload: impl Into<Payload>, image: Option<Image>) -> Notification {
    let mut ctx = RunContext::from_started("run-1", &started());
    ctx.apply(&Event::now("run-1", 1, epoch(0)));
    render::notification(&ctx, &Event::now("run-1", 2, payload), None, image, 1)
}

/// The text of `n` with the default, compact table: what the notifier sends unless `table = "full"`.
fn compact(n: &Notification) -> String {
    render::with_table(n, TableLayout::Compact).text.clone()
}

fn notifier(server: &Fake, extra: &str) -> Box<dyn Notifier> {
    let text = format!("{KEYS}api_url = '{}/1/messages.json'\n{extra}", server.base);
    herald_pushover::PushoverConfig::from_table("phone", text.parse().expect("test config is TOML"))
        .expect("valid config")
}

async fn ok_server() -> Fake {
    Fake::start(|_| Answer::json(200, serde_json::json!({"status": 1, "request": "req-1"}))).await
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii hex");
                out.push(u8::from_str_radix(hex, 16).expect("valid percent escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 form value")
}

/// The fields of a form, urlencoded or multipart (files as their bytes, lossily).
fn form(r: &Recorded) -> BTreeMap<String, Vec<u8>> {
    let content_type = r.header("content-type").expect("content type").to_owned();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        return r
            .text()
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("key=value");
                (percent_decode(k), percent_decode(v).into_bytes())
            })
            .collect();
    }
    let boundary = content_type.split("boundary=").nth(1).expect("multipart boundary").to_owned();
    let delimiter = format!("--{boundary}");
    let body = &r.body;
    let mut fields = BTreeMap::new();
    let mut rest: &[u8] = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n").expect("part headers end");
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content = &rest[head_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes()).expect("part end");
        let name = head.split("name=\"").nth(1).and_then(|s| s.split('"').next()).expect("part name");
        fields.insert(name.to_owned(), content[..end].to_vec());
        rest = &content[end + 2..];
    }
    fields
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn field(fields: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    String::from_utf8(fields.get(name).unwrap_or_else(|| panic!("field {name} missing: {fields:?}")).clone())
        .expect("UTF-8 field")
}

#[tokio::test]
async fn sends_the_text_with_title_priority_and_monospace_table() {
    let server = ok_server().await;
    let n = notifier(&server, "sound = 'cosmic'\ndevice = 'pixel'");
    let note = note(epoch(1), None);
    let receipt = n.deliver(&note).await.expect("delivered");
    assert_eq!(receipt.0, serde_json::json!({"request": "req-1"}));
    let r = server.last();
    assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("POST", "/1/messages.json", None));
    let f = form(&r);
    assert_eq!(field(&f, "token"), "azGDORePK8gMaC0QOYAMyEEuzJnyUi");
    assert_eq!(field(&f, "user"), "uQiRzpo4DXghDmr9QzzfQu27cmVRsG");
    assert_eq!(field(&f, "message"), compact(&note));
    assert!(
        field(&f, "message").contains("\n\nep  train  valid    acc  time\n 0 "),
        "{}",
        field(&f, "message")
    );
    assert_eq!(field(&f, "title"), "digits: epoch 2/3");
    assert_eq!(field(&f, "priority"), "0");
    assert_eq!(field(&f, "monospace"), "1");
    assert_eq!(field(&f, "timestamp"), note.event.time.unix_timestamp().to_string());
    assert_eq!((field(&f, "sound"), field(&f, "device")), ("cosmic".into(), "pixel".into()));
    assert!(!f.contains_key("retry") && !f.contains_key("attachment"));

    // `table = "full"`: fastai's table, still in monospace.
    let n = notifier(&server, "table = 'full'");
    n.deliver(&note).await.expect("delivered");
    let f = form(&server.last());
    assert_eq!(field(&f, "message"), note.text);
    assert!(field(&f, "message").contains("epoch     train_loss"));
    assert_eq!(field(&f, "monospace"), "1");
}

#[tokio::test]
async fn failures_use_the_emergency_priority_with_retry_and_expire() {
    let server = ok_server().await;
    let n = notifier(&server, "failure_priority = 2\nretry = '45s'\nexpire = '2h'");
    let failed =
        RunFailed { error: "CUDA out of memory".into(), traceback: Some("Traceback\n  boom".into()) };
    n.deliver(&note(failed, None)).await.expect("delivered");
    let f = form(&server.last());
    assert_eq!(
        (field(&f, "priority"), field(&f, "retry"), field(&f, "expire")),
        ("2".into(), "45".into(), "7200".into())
    );
    assert!(field(&f, "message").contains("CUDA out of memory"));
    let error = Message { title: "disk".into(), text: "full".into(), level: herald_event::Level::Error };
    n.deliver(&note(error, None)).await.expect("delivered");
    assert_eq!(field(&form(&server.last()), "priority"), "2");
    let info = Message { title: "disk".into(), text: "fine".into(), level: herald_event::Level::Info };
    n.deliver(&note(info, None)).await.expect("delivered");
    let f = form(&server.last());
    assert_eq!(field(&f, "priority"), "0");
    assert!(!f.contains_key("retry") && !f.contains_key("monospace"));
}

#[tokio::test]
async fn cuts_message_title_and_url_to_the_api_limits() {
    let server = ok_server().await;
    let long_url = format!("https://example.org/{}", "x".repeat(600));
    let n = notifier(&server, &format!("url = '{long_url}'\nurl_title = '{}'", "t".repeat(150)));
    let long = Message { title: "é".repeat(300), text: "ü".repeat(2000), level: Default::default() };
    n.deliver(&note(long, None)).await.expect("delivered");
    let f = form(&server.last());
    for (name, limit) in [("message", 1024), ("title", 250), ("url", 512), ("url_title", 100)] {
        let value = field(&f, name);
        assert_eq!(value.chars().count(), limit, "{name}");
        assert!(value.ends_with('…'), "{name}");
    }
}

#[tokio::test]
async fn attaches_the_loss_curve_under_the_size_limit() {
    let server = ok_server().await;
    let n = notifier(&server, "");
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 9.0, best: None };
    let png: Vec<u8> =
        [0x89, b'P', b'N', b'G', b'\r', b'\n'].into_iter().chain((0..=255).cycle().take(5000)).collect();
    let image = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: png.clone() };
    let note_with_image = note(finished.clone(), Some(image));
    n.deliver(&note_with_image).await.expect("delivered");
    let r = server.last();
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("multipart/form-data")));
    let f = form(&r);
    assert_eq!(f.get("attachment"), Some(&png));
    assert_eq!(field(&f, "message"), compact(&note_with_image));
    // Over 2.5 MB: the text goes alone.
    let big = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: vec![0; 2_621_441] };
    n.deliver(&note(finished, Some(big))).await.expect("delivered");
    let r = server.last();
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")));
    assert!(!form(&r).contains_key("attachment"));
}

#[tokio::test]
async fn maps_api_answers_to_delivery_errors() {
    let server = ok_server().await;
    let n = notifier(&server, "");
    server.script([
        Answer::json(
            429,
            serde_json::json!({"status": 0, "errors": ["application is over its message limit"]}),
        )
        .with_header("retry-after", "2.5"),
        Answer::json(
            400,
            serde_json::json!({"status": 0, "errors": ["user identifier is not a valid user"]}),
        ),
        Answer::json(503, serde_json::json!({})),
        Answer::json(200, serde_json::json!({"status": 0, "errors": ["odd"]})),
    ]);
    let note = note(epoch(0), None);
    let e = n.deliver(&note).await.expect_err("429");
    assert!(e.retryable && e.retry_after == Some(Duration::from_millis(2500)), "{e:?}");
    let e = n.deliver(&note).await.expect_err("400");
    assert!(!e.retryable && e.message.contains("user identifier is not a valid user"), "{e}");
    let e = n.deliver(&note).await.expect_err("503");
    assert!(e.retryable, "{e:?}");
    let e = n.deliver(&note).await.expect_err("status 0");
    assert!(!e.retryable && e.message.contains("odd"), "{e}");
    n.deliver(&note).await.expect("recovered");
}

#[tokio::test]
async fn health_check_validates_the_keys() {
    let server = ok_server().await;
    let n = notifier(&server, "");
    assert_eq!(n.health_check().await, Health::Ok);
    assert_eq!(server.last().path, "/1/users/validate.json");
    server.script([Answer::json(400, serde_json::json!({"status": 0, "errors": ["user key is invalid"]}))]);
    match n.health_check().await {
        Health::Unavailable { message } => assert!(message.contains("user key is invalid"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(server.requests().iter().all(|r| r.path != "/1/messages.json"), "a health check sends nothing");
}

#[test]
fn the_documented_examples_build() {
    for table in herald_fakes::docs::examples("pushover") {
        herald_pushover::PushoverConfig::from_table("docs", table.clone())
            .unwrap_or_else(|e| panic!("{e}\n{table}"));
    }
}

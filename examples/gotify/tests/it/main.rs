//! The Gotify notifier against a fake Gotify server (axum on 127.0.0.1) that answers as Gotify does: by the
//! application token it gets (`good`: 200 with the message id, `bad`: 401 with Gotify's error object,
//! `busy`: 429 with `Retry-After: 3`, `down`: 503). The binary is driven over the plugin protocol too.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use herald_event::{EpochEnded, Event, Message, Metrics, RunFailed};
use herald_notify_gotify::GotifyConfig;
use herald_plugin::{Notification, Notifier, NotifierType, RunContext, render};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

mod conformance;

#[derive(Debug, Clone)]
struct Received {
    path: String,
    token: String,
    body: serde_json::Value,
}

type Log = Arc<Mutex<Vec<Received>>>;

struct Fake {
    addr: SocketAddr,
    log: Log,
}

impl Fake {
    async fn start() -> Fake {
        let log: Log = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let app = Router::new()
            .route("/message", post(message))
            .route("/gotify/message", post(message))
            .with_state(log.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake Gotify serves until the test ends");
        });
        Fake { addr, log }
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().expect("no handler panicked").clone()
    }
}

async fn message(State(log): State<Log>, uri: Uri, Json(body): Json<serde_json::Value>) -> Response {
    // The token is the only query parameter the notifier sends; it is URL-safe in these tests.
    let token = uri.query().and_then(|q| q.strip_prefix("token=")).unwrap_or_default().to_owned();
    let id = {
        let mut log = log.lock().expect("no handler panicked");
        log.push(Received { path: uri.path().to_owned(), token: token.clone(), body: body.clone() });
        log.len()
    };
    match token.as_str() {
        "good" => Json(serde_json::json!({
            "id": id, "appid": 1, "message": body["message"], "title": body["title"],
            "priority": body["priority"], "date": "2026-11-27T10:00:00Z"
        }))
        .into_response(),
        "busy" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")], "slow down").into_response(),
        "down" => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({
                "error": "Unauthorized", "errorCode": 401,
                "errorDescription": "you need to provide a valid access token or user credentials to access this api"
            })),
        )
            .into_response(),
    }
}

fn gotify(toml_text: &str) -> Result<Box<dyn Notifier>, herald_plugin::ConfigError> {
    let table: toml::Table = toml_text.parse().expect("test tables are valid TOML");
    GotifyConfig::from_table("g", table)
}

fn notifications() -> Vec<Notification> {
    let mut ctx = RunContext::new("r1");
    let events = [
        Event::now(
            "r1",
            0,
            Message { title: "hello *there*".into(), text: "x".into(), level: Default::default() },
        ),
        Event::now(
            "r1",
            1,
            EpochEnded {
                epoch: 0,
                n_epochs: 2,
                train_loss: 0.5,
                valid_loss: Some(0.4),
                metrics: Metrics(vec![("accuracy".into(), 0.9)]),
                elapsed_s: 1.0,
            },
        ),
        Event::now("r1", 2, RunFailed { error: "CUDA out of memory".into(), traceback: None }),
    ];
    events
        .iter()
        .map(|e| {
            let n = render::notification(&ctx, e, None, None, 1);
            ctx.apply(e);
            n
        })
        .collect()
}

#[tokio::test]
async fn delivers_markdown_with_a_priority_per_event() {
    let fake = Fake::start().await;
    let n = gotify(&format!("url = \"http://{}\"\ntoken = \"good\"", fake.addr)).expect("valid");
    let notes = notifications();
    let mut ids = Vec::new();
    for note in &notes {
        ids.push(n.deliver(note).await.expect("delivered").0["id"].clone());
    }
    assert_eq!(ids, [serde_json::json!(1), serde_json::json!(2), serde_json::json!(3)]);
    let got = fake.received();
    assert_eq!(
        got.iter().map(|r| r.body["priority"].as_u64()).collect::<Vec<_>>(),
        [Some(5), Some(2), Some(8)]
    );
    assert!(got.iter().all(|r| r.path == "/message" && r.token == "good"));
    assert_eq!(got[0].body["title"], notes[0].title);
    assert_eq!(got[0].body["message"], notes[0].markdown);
    assert_eq!(got[0].body["extras"]["client::display"]["contentType"], "text/markdown");
    assert_eq!(
        got[2].body["extras"]["herald"],
        serde_json::json!({"run": "r1", "seq": 2, "type": "run_failed"})
    );

    // A path prefix is kept; plain text on request; priorities configurable.
    let n = gotify(&format!(
        "url = \"http://{}/gotify\"\ntoken = \"good\"\nmarkdown = false\npriority = 4\nfailure_priority = 10",
        fake.addr
    ))
    .expect("valid");
    n.deliver(&notes[0]).await.expect("delivered");
    n.deliver(&notes[2]).await.expect("delivered");
    let got = fake.received();
    let last = &got[got.len() - 2..];
    assert!(last.iter().all(|r| r.path == "/gotify/message"));
    assert_eq!((last[0].body["priority"].as_u64(), last[1].body["priority"].as_u64()), (Some(4), Some(10)));
    assert_eq!(last[0].body["message"], notes[0].text);
    assert_eq!(last[0].body["extras"]["client::display"]["contentType"], "text/plain");
}

#[tokio::test]
async fn answers_map_to_retryable_or_permanent_errors() {
    let fake = Fake::start().await;
    let note = &notifications()[0];
    let err = |token: &str| {
        let n = gotify(&format!("url = \"http://{}\"\ntoken = \"{token}\"", fake.addr)).expect("valid");
        async move { n.deliver(note).await.expect_err("fails") }
    };
    let e = err("bad").await;
    assert!(!e.retryable, "{e}");
    assert!(e.message.contains("valid access token") && e.message.contains("application token"), "{e}");
    assert!(!e.message.contains("token=bad"), "no token in messages: {e}");
    let e = err("busy").await;
    assert!(e.retryable && e.retry_after == Some(Duration::from_secs(3)), "{e:?}");
    let e = err("down").await;
    assert!(e.retryable && e.code.as_deref() == Some("http_503"), "{e:?}");

    // Nothing listens: retryable, and the URL with its token is not in the message.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("address");
    drop(closed);
    let n = gotify(&format!("url = \"http://{addr}\"\ntoken = \"s3cret\"")).expect("valid");
    let e = n.deliver(note).await.expect_err("nothing listens");
    assert!(e.retryable && e.code.as_deref() == Some("connect"), "{e:?}");
    assert!(!e.message.contains("s3cret"), "{e}");
}

#[test]
fn configuration_errors_name_the_key() {
    fn check(text: &str, expected: &str) {
        let err = gotify(text).err().unwrap_or_else(|| panic!("{text} is invalid")).to_string();
        assert!(err.starts_with(expected), "{text}: {err}");
    }
    check("token = \"t\"", "url: missing required key");
    check("url = \"http://h\"", "token: missing required key");
    check("url = \"http://h\"\ntoken = \"\"", "token: is empty");
    check("url = \"gotify.example.com\"\ntoken = \"t\"", "url: not a valid URL");
    check("url = \"ftp://h\"\ntoken = \"t\"", "url: the URL scheme must be");
    check("url = \"http://h/?token=t\"\ntoken = \"t\"", "url: give the server's base URL without a query");
    check("url = \"http://h\"\ntoken = \"t\"\npriority = 11", "priority: must be from 0 to 10");
    check("url = \"http://h\"\ntoken = \"t\"\nepoch_priority = -1", "epoch_priority:");
    check("url = \"http://h\"\ntoken = \"t\"\ntitle = \"x\"", "title: unknown key");
    let config: GotifyConfig = toml::from_str("url = \"http://h\"\ntoken = \"s3cret\"").expect("valid");
    let shown = format!("{:?} {:?}", config, config.clone().build("g").expect("valid"));
    assert!(!shown.contains("s3cret"), "{shown}");
}

/// The example configuration's gotify table (less the host's keys: name, type, routing, plugin host keys)
/// builds.
#[test]
fn the_example_configuration_builds() {
    let text = include_str!("../../herald.toml");
    let mut doc: toml::Table = text.parse().expect("the example is valid TOML");
    let notifiers = doc.remove("notifier").expect("a [[notifier]]");
    let mut table =
        notifiers.as_array().and_then(|a| a.first()).and_then(|t| t.as_table()).cloned().expect("a table");
    assert_eq!(table.get("type").and_then(|t| t.as_str()), Some("gotify"));
    for host_key in ["name", "type", "events", "every_n_epochs", "concurrency", "delivery_timeout"] {
        table.remove(host_key);
    }
    table.insert("token".into(), toml::Value::String("t".into()));
    GotifyConfig::from_table("phone", table).expect("the example's keys are the notifier's");
}

/// The binary speaks the protocol: handshake with the table, a delivery, a refused table, shutdown.
#[tokio::test]
async fn the_binary_serves_the_protocol() {
    let fake = Fake::start().await;
    let exchange = |config: serde_json::Value, deliver: bool| async move {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-notify-gotify"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the plugin binary starts");
        let mut stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let hello = serde_json::json!({"type": "hello", "protocol": "herald-plugin", "version": "1.0", "config": config});
        stdin.write_all(format!("{hello}\n").as_bytes()).await.expect("write");
        let mut answers = Vec::new();
        let first: serde_json::Value =
            serde_json::from_str(&lines.next_line().await.expect("read").expect("a line")).expect("JSON");
        answers.push(first.clone());
        if deliver && first["type"] == "ready" {
            let deliver =
                serde_json::json!({"type": "deliver", "id": "d1", "notification": notifications()[0]});
            stdin.write_all(format!("{deliver}\n").as_bytes()).await.expect("write");
            let line = lines.next_line().await.expect("read").expect("a line");
            answers.push(serde_json::from_str(&line).expect("JSON"));
            stdin.write_all(b"{\"type\":\"shutdown\"}\n").await.expect("write");
        }
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the plugin exits")
            .expect("status");
        (answers, status.success())
    };
    let (answers, ok) =
        exchange(serde_json::json!({"url": format!("http://{}", fake.addr), "token": "good"}), true).await;
    assert_eq!(answers[0]["type"], "ready");
    assert_eq!(answers[0]["name"], "gotify");
    assert_eq!(answers[0]["protocol_version"], "1.0");
    assert_eq!(answers[1], serde_json::json!({"type": "delivered", "id": "d1", "receipt": {"id": 1}}));
    assert!(ok, "exits 0 after shutdown");
    let (answers, ok) = exchange(serde_json::json!({"url": "http://h", "tokn": "x"}), true).await;
    assert_eq!(answers[0]["type"], "error");
    assert!(
        answers[0]["message"].as_str().is_some_and(|m| m.starts_with("tokn: unknown key")),
        "{answers:?}"
    );
    assert!(!ok, "exits non-zero after refusing");
}

/// docs/writing-a-notifier.md shows the binary's source as it is.
#[test]
fn the_guide_shows_the_binary() {
    let guide = include_str!("../../../../docs/writing-a-notifier.md");
    let main = include_str!("../../src/main.rs");
    let code =
        &main[main.find("use std::process::ExitCode;").expect("main.rs starts its code with the import")..];
    assert!(guide.contains(&format!("```rust\n{code}```")), "docs/writing-a-notifier.md shows:\n{code}");
}

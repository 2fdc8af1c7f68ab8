//! The webhook notifier against a fake receiver: an axum server on 127.0.0.1 that records every request and
//! answers as the path says (`/ok`, `/rate-secs`, `/rate-date`, `/fail`, `/bad`, `/slow-reader`, `/hang`,
//! `/redirect`, `/rate-once`: 429 with `Retry-After: 1` to the first request, then 200). Batch mode is in
//! [`batch`].

mod batch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use herald_event::{EpochEnded, Event, Metrics, RunStarted};
use herald_plugin::render::notification;
use herald_plugin::{Notification, Notifier, NotifierType, RunContext};
use herald_webhook::WebhookConfig;

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
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
        let app = Router::new().route("/{*path}", post(answer)).with_state(log.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake receiver serves until the test ends");
        });
        Fake { addr, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().expect("no handler panicked").clone()
    }
}

async fn answer(
    State(log): State<Log>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    log.lock().expect("no handler panicked").push(Received { path: path.clone(), headers, body });
    match path.as_str() {
        "ok" => (StatusCode::OK, "ok").into_response(),
        "rate-once" => {
            let seen =
                log.lock().expect("no handler panicked").iter().filter(|r| r.path == "rate-once").count();
            if seen == 1 {
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response()
            } else {
                (StatusCode::OK, "ok").into_response()
            }
        }
        "rate-secs" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response(),
        "rate-date" => {
            let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", at)], "slow down").into_response()
        }
        "fail" => (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response(),
        "bad" => (StatusCode::BAD_REQUEST, "bad payload").into_response(),
        "slow-reader" => StatusCode::REQUEST_TIMEOUT.into_response(),
        "redirect" => (StatusCode::FOUND, [("location", "/ok")]).into_response(),
        "hang" => std::future::pending::<Response>().await,
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn webhook(name: &str, toml_text: &str) -> Box<dyn Notifier> {
    let table: toml::Table = toml_text.parse().expect("test tables are valid TOML");
    WebhookConfig::from_table(name, table).expect("test configurations are valid")
}

fn sample(seq: u64) -> Notification {
    let started = RunStarted {
        name: "digits <mlp>".into(),
        host: "gpu-box".into(),
        pid: 7,
        rank: 0,
        job: None,
        world_size: None,
        n_epochs: 2,
        batches_per_epoch: 10,
        metric_names: vec!["accuracy".into()],
        hyper: Default::default(),
    };
    let ctx = RunContext::from_started("run-1", &started);
    let epoch = EpochEnded {
        epoch: 0,
        n_epochs: 2,
        train_loss: 0.5,
        valid_loss: Some(f64::NAN),
        metrics: Metrics(vec![("accuracy".into(), 0.9)]),
        elapsed_s: 3.0,
    };
    notification(&ctx, &Event::now("run-1", seq, epoch), None, None, 2)
}

#[tokio::test]
async fn posts_the_envelope_rendering_and_idempotency_key() {
    let fake = Fake::start().await;
    let hook =
        webhook("hook", &format!("url = '{}'\nheaders = {{ Authorization = 'Bearer t0k' }}", fake.url("ok")));
    let n = sample(5);
    let receipt = hook.deliver(&n).await.expect("the fake answers 200");
    assert_eq!(receipt.0["status"], 200);
    let got = fake.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, "ok");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["idempotency-key"], "run-1:5:hook");
    assert_eq!(req.headers["authorization"], "Bearer t0k");
    assert_eq!(req.headers["x-herald-attempt"], "2");
    assert!(req.headers.get("x-herald-signature").is_none(), "no secret, no signature");
    let body: serde_json::Value = serde_json::from_slice(&req.body).expect("the body is JSON");
    assert_eq!(body["run"], "run-1");
    assert_eq!(body["seq"], 5);
    assert_eq!(body["type"], "epoch_ended");
    assert_eq!(body["name"], "digits <mlp>");
    assert_eq!(body["host"], "gpu-box");
    assert_eq!(body["notifier"], "hook");
    assert_eq!(body["idempotency_key"], "run-1:5:hook");
    assert_eq!(body["title"], n.title);
    assert_eq!(body["text"], n.text);
    // The event exactly as herald-event writes it, non-finite numbers included.
    let event = herald_event::decode_event(body["event"].to_string().as_bytes()).expect("the event decodes");
    assert_eq!(event.run, n.event.run);
    assert_eq!(event.seq, 5);
    assert_eq!(body["event"]["valid_loss"], "NaN");
    assert_eq!(body["event"], serde_json::to_value(&n.event).expect("events encode"));
}

#[tokio::test]
async fn signs_the_exact_body() {
    let fake = Fake::start().await;
    let hook = webhook("signed", &format!("url = '{}'\nsecret = 'shared-s3cret'", fake.url("ok")));
    hook.deliver(&sample(1)).await.expect("the fake answers 200");
    let req = fake.received().pop().expect("one request arrived");
    let sig = req.headers["x-herald-signature"].to_str().expect("ASCII header").to_owned();
    // Verify independently of the notifier's code.
    use hmac::{Hmac, Mac};
    let hex = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("lowercase hex"))
        .collect();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"shared-s3cret").expect("any key length");
    mac.update(&req.body);
    mac.clone().verify_slice(&bytes).expect("the signature verifies with the shared secret");
    let mut wrong = Hmac::<sha2::Sha256>::new_from_slice(b"other").expect("any key length");
    wrong.update(&req.body);
    assert!(wrong.verify_slice(&bytes).is_err(), "a different secret does not verify");
    // RFC 4231 test case 2, so the format is the standard one.
    assert_eq!(
        herald_webhook::signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[tokio::test]
async fn maps_answers_to_retryable_or_permanent() {
    let fake = Fake::start().await;
    struct Case {
        path: &'static str,
        retryable: bool,
        code: &'static str,
    }
    let cases = [
        Case { path: "rate-secs", retryable: true, code: "http_429" },
        Case { path: "rate-date", retryable: true, code: "http_429" },
        Case { path: "fail", retryable: true, code: "http_500" },
        Case { path: "slow-reader", retryable: true, code: "http_408" },
        Case { path: "bad", retryable: false, code: "http_400" },
        Case { path: "nowhere", retryable: false, code: "http_404" },
        Case { path: "redirect", retryable: false, code: "http_302" },
    ];
    for case in cases {
        let hook = webhook("h", &format!("url = '{}'", fake.url(case.path)));
        let err = hook.deliver(&sample(1)).await.expect_err(case.path);
        assert_eq!(
            (err.retryable, err.code.as_deref()),
            (case.retryable, Some(case.code)),
            "{}: {err}",
            case.path
        );
        match case.path {
            "rate-secs" => assert_eq!(err.retry_after, Some(Duration::from_secs(7))),
            "rate-date" => {
                let after = err.retry_after.expect("an HTTP date gives a retry_after");
                assert!(after <= Duration::from_secs(120) && after >= Duration::from_secs(115), "{after:?}");
            }
            "bad" => assert!(err.message.contains("bad payload"), "{err}"),
            "fail" => assert!(err.message.contains("database on fire"), "{err}"),
            _ => assert_eq!(err.retry_after, None, "{}", case.path),
        }
    }
    // The redirect was not followed.
    assert!(fake.received().iter().all(|r| r.path != "ok"));
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retryable_and_hide_the_url() {
    let fake = Fake::start().await;
    let hook = webhook("h", &format!("url = '{}?token=SECRET'\nrequest_timeout = '300ms'", fake.url("hang")));
    let err = hook.deliver(&sample(1)).await.expect_err("the fake never answers");
    assert!(err.retryable, "{err}");
    assert_eq!(err.code.as_deref(), Some("timeout"), "{err}");
    assert!(!err.message.contains("SECRET"), "{err}");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("a bound listener has an address")
    };
    let hook = webhook("h", &format!("url = 'http://{closed}/hook?token=SECRET'"));
    let err = hook.deliver(&sample(1)).await.expect_err("nothing listens there");
    assert!(err.retryable, "{err}");
    assert_eq!(err.code.as_deref(), Some("connect"), "{err}");
    assert!(!err.message.contains("SECRET"), "{err}");
}

#[tokio::test]
async fn health_check_sends_nothing() {
    let fake = Fake::start().await;
    let hook = webhook("h", &format!("url = '{}'", fake.url("ok")));
    assert_eq!(hook.health_check().await, herald_plugin::Health::Ok);
    assert_eq!(hook.capabilities(), herald_plugin::Capabilities::default());
    assert_eq!(hook.kind(), "webhook");
    assert!(fake.received().is_empty());
}

#[test]
fn configuration_errors_name_the_key_and_hide_secrets() {
    fn check(text: &str, key: &str, message_part: &str) {
        let table: toml::Table = text.parse().expect("test tables are valid TOML");
        let err = WebhookConfig::from_table("h", table).err().expect(text);
        assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
        assert!(err.message.contains(message_part), "{text}: {err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    check("", "url", "missing required key");
    check("url = 'not a url s3cret'", "url", "not a valid URL");
    check("url = 'ftp://host/s3cret'", "url", "`http` or `https`");
    check("url = 'http://h/'\nheaders = { 'bad header' = 'x' }", "headers.bad header", "header name");
    check("url = 'http://h/'\nheaders = { X-Token = \"s3cret\\n\" }", "headers.X-Token", "header value");
    check(
        "url = 'http://h/'\nheaders = { Idempotency-Key = 'x' }",
        "headers.Idempotency-Key",
        "sets this header",
    );
    check("url = 'http://h/'\nrequest_timeout = '0s'", "request_timeout", "more than zero");
    check("url = 'http://h/'\nrequest_timeout = 'soon'", "request_timeout", "invalid duration");
    check("url = 'http://h/'\nurll = 'x'", "urll", "unknown key");
    check("url = 'http://h/'\nsecret = 5", "secret", "string");

    let table: toml::Table = "url = 'https://h/s3cret'\nsecret = 's3cret'\nheaders = { A = 's3cret' }"
        .parse()
        .expect("valid TOML");
    let config: WebhookConfig = herald_plugin::parse_table(table).expect("valid config");
    let shown = format!("{config:?} {:?}", config.clone().build("h").expect("valid"));
    assert!(!shown.contains("s3cret"), "{shown}");
}

//! A recording stand-in for a simple HTTP service (ntfy, Pushover, Discord webhooks): records every request
//! and answers from a script (status, headers, body), then with a default answer the test gives. Binds
//! 127.0.0.1 on a free port. It keeps no service state of its own: the test's default answer plays the
//! service; services with state (Telegram, Slack) have their own fakes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The HTTP method.
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// The query string, without `?`, when there was one.
    pub query: Option<String>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body's bytes.
    pub body: Vec<u8>,
}

impl Recorded {
    /// Header `name`'s value, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An answer: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Headers to add, `(name, value)`.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// A JSON answer with this status (`content-type: application/json`).
    pub fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_owned()));
        self
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    script: VecDeque<Answer>,
}

/// The recording fake; clones share its record and script.
#[derive(Clone)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
    default: Arc<dyn Fn(&Recorded) -> Answer + Send + Sync>,
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Fake {
    /// Start the fake; `default` answers whatever the script does not.
    pub async fn start(default: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let fake = Fake {
            inner: Arc::new(Mutex::new(Inner::default())),
            default: Arc::new(default),
            base: format!("http://{addr}"),
        };
        let app = axum::Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("fake server runs") });
        fake
    }

    /// Answer the next requests with these, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().expect("fake lock").script.extend(answers);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().expect("fake lock").requests.clone()
    }

    /// The latest request; panics when none arrived (a test's failed expectation).
    pub fn last(&self) -> Recorded {
        self.requests().last().cloned().expect("the fake received a request")
    }
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: body.to_vec(),
    };
    let answer = {
        let mut inner = fake.inner.lock().expect("fake lock");
        inner.requests.push(recorded.clone());
        inner.script.pop_front()
    };
    let answer = answer.unwrap_or_else(|| (fake.default)(&recorded));
    let mut response =
        (StatusCode::from_u16(answer.status).expect("scripted status is valid"), answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().expect("scripted header is valid"));
    }
    response
}

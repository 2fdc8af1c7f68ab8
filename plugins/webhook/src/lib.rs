//! The `webhook` notifier: POSTs each notification as JSON to a URL, optionally signed.
//!
//! The body holds the event envelope (`run`, `seq`, `type`), the whole event as herald-event writes it
//! (`event`), the run's `name` and `host`, the rendered `title` and `text`, the notifier's name and an
//! `idempotency_key` (`<run>:<seq>:<notifier>`), also sent as the `Idempotency-Key` header so a receiver can
//! drop the duplicates that at-least-once delivery produces. With `secret` set, `X-Herald-Signature:
//! sha256=<hex>` carries the HMAC-SHA256 of the exact body bytes. HTTP answers are mapped to retryable or
//! permanent errors by the SDK's one policy ([`herald_plugin::http::AnswerPolicy`], read by
//! [`herald_http::check_response`]). One attempt per `deliver`: retries, rate
//! limits and the overall per-delivery deadline belong to the host. Redirects are not followed (a POST
//! would turn into a GET); the URL and header values are secrets and never appear in errors or logs.
//!
//! With `batch = N` (N > 1) the host hands up to N ready notifications at once ([`Notifier::deliver_batch`])
//! and they go in one POST whose body is a JSON array of the same objects, in the host's order (each run's
//! in order). The whole POST succeeds or fails as one: a failure answers the same error for every
//! notification, so the host retries them all, in order, by the same rules (`Retry-After` included).

use std::collections::BTreeMap;
use std::time::Duration;

use herald_plugin::http::AnswerPolicy;
use herald_plugin::{
    ConfigError, DeliveryError, Health, Notification, Notifier, NotifierType, Receipt, Renderings, Secret,
};
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::Sha256;

/// Headers Herald sets itself; `headers` may not replace them.
const RESERVED_HEADERS: [&str; 6] =
    ["content-type", "content-length", "host", "idempotency-key", "x-herald-signature", "x-herald-attempt"];

/// How the receiver's answers are read.
const ANSWERS: AnswerPolicy<'static> = AnswerPolicy::new("the webhook");

fn default_request_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_batch() -> usize {
    1
}

/// The largest `batch` accepted.
pub const MAX_BATCH: usize = 1000;

/// The notifier's configuration table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (`http://` or `https://`); a secret, since such URLs often carry a token.
    pub url: Secret,
    /// Extra request headers, such as `Authorization`; values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Shared secret: when set, `X-Herald-Signature: sha256=<hex HMAC-SHA256 of the body>` is sent.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Timeout of one HTTP request (connect, send, answer), default `20s`.
    #[serde(default = "default_request_timeout", deserialize_with = "herald_plugin::duration::deserialize")]
    pub request_timeout: Duration,
    /// Notifications per POST: 1 (the default) POSTs each as one JSON object; more sends up to that many at
    /// once as a JSON array of the same objects. At most [`MAX_BATCH`].
    #[serde(default = "default_batch")]
    pub batch: usize,
}

/// POSTs notifications to one URL.
pub struct Webhook {
    name: String,
    url: reqwest::Url,
    headers: HeaderMap,
    secret: Option<Secret>,
    batch: usize,
    client: reqwest::Client,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &"***")
            .field("headers", &self.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>())
            .field("secret", &self.secret)
            .field("batch", &self.batch)
            .finish()
    }
}

impl NotifierType for WebhookConfig {
    const KIND: &'static str = "webhook";
    const DESCRIPTION: &'static str = "POSTs each notification as JSON to a URL, optionally HMAC-signed";
    type Notifier = Webhook;

    /// Check the configuration and build the HTTP client.
    fn build(self, name: &str) -> Result<Webhook, ConfigError> {
        let config = self;
        let url = herald_http::parse_http_url(config.url.expose(), "https://example.com/hook")
            .map_err(|m| ConfigError::for_key("url", m))?;
        let mut headers = HeaderMap::new();
        for (key, value) in &config.headers {
            let header = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                ConfigError::for_key(format!("headers.{key}"), "not a valid HTTP header name")
            })?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(ConfigError::for_key(
                    format!("headers.{key}"),
                    "Herald sets this header itself; remove it from `headers`",
                ));
            }
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                ConfigError::for_key(
                    format!("headers.{key}"),
                    "not a valid HTTP header value (visible ASCII only, no line breaks)",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        if config.request_timeout.is_zero() {
            return Err(ConfigError::for_key("request_timeout", "must be more than zero, such as `20s`"));
        }
        if config.batch == 0 || config.batch > MAX_BATCH {
            return Err(ConfigError::for_key(
                "batch",
                format!("must be 1 to {MAX_BATCH} notifications per request, found {}", config.batch),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Webhook {
            name: name.to_owned(),
            url,
            headers,
            secret: config.secret,
            batch: config.batch,
            client,
        })
    }
}

/// The JSON object POSTed for one notification (its keys in alphabetical order).
#[derive(serde::Serialize)]
struct Body<'a> {
    event: &'a herald_event::Event,
    host: &'a str,
    idempotency_key: String,
    name: &'a str,
    notifier: &'a str,
    run: &'a str,
    seq: u64,
    text: &'a str,
    title: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

impl Webhook {
    /// `<run>:<seq>:<notifier name>`: the same for every attempt at the same delivery.
    pub fn idempotency_key(&self, n: &Notification) -> String {
        format!("{}:{}:{}", n.event.run, n.event.seq, self.name)
    }

    /// The exact bytes POSTed for a notification.
    pub fn body(&self, n: &Notification) -> Result<Vec<u8>, DeliveryError> {
        serde_json::to_vec(&self.object(n)?).map_err(|e| {
            DeliveryError::permanent(format!("cannot encode the body as JSON: {e}")).with_code("encode")
        })
    }

    /// The exact bytes POSTed for a batch: a JSON array of each notification's object, in order.
    pub fn batch_body(&self, ns: &[Notification]) -> Result<Vec<u8>, DeliveryError> {
        let objects = ns.iter().map(|n| self.object(n)).collect::<Result<Vec<_>, _>>()?;
        serde_json::to_vec(&objects).map_err(|e| {
            DeliveryError::permanent(format!("cannot encode the body as JSON: {e}")).with_code("encode")
        })
    }

    /// The JSON object sent for one notification: borrowed from it, encoded without an intermediate value.
    fn object<'a>(&'a self, n: &'a Notification) -> Result<Body<'a>, DeliveryError> {
        Ok(Body {
            event: &n.event,
            host: &n.run.host,
            idempotency_key: self.idempotency_key(n),
            name: &n.run.name,
            notifier: &self.name,
            run: &n.event.run,
            seq: n.event.seq,
            text: &n.text,
            title: &n.title,
            kind: n.event.kind().as_str(),
        })
    }

    /// One POST of `body`: the status on a 2xx answer.
    async fn post(&self, body: Vec<u8>, key: Option<&str>, attempt: u32) -> Result<u16, DeliveryError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Herald-Attempt", attempt.to_string());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(secret) = &self.secret {
            request = request.header("X-Herald-Signature", signature(secret.expose().as_bytes(), &body));
        }
        let response = request.body(body).send().await.map_err(network_error)?;
        let status = response.status().as_u16();
        herald_http::check_response(response, &ANSWERS).await?;
        Ok(status)
    }
}

/// `sha256=<lowercase hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of every length (RFC 2104)");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A network failure as a retryable error, without the URL (a secret) in the message.
fn network_error(err: reqwest::Error) -> DeliveryError {
    let code = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "network"
    };
    let what = match code {
        "timeout" => "the webhook did not answer in time",
        "connect" => "cannot connect to the webhook",
        _ => "the request to the webhook failed",
    };
    let err = err.without_url();
    let detail = herald_plugin::error_chain(&err);
    DeliveryError::retryable(format!("{what} ({detail}); will retry")).with_code(code)
}

#[async_trait::async_trait]
impl Notifier for Webhook {
    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        if self.batch > 1 {
            // Batch mode: even one notification goes as an array, so the receiver sees one shape.
            return self.deliver_batch(std::slice::from_ref(n)).await.pop().unwrap_or_else(|| {
                Err(DeliveryError::permanent("no result for the notification").with_code("internal"))
            });
        }
        let body = self.body(n)?;
        let key = self.idempotency_key(n);
        let status = self.post(body, Some(&key), n.attempt).await?;
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, status, "webhook delivered");
        Ok(Receipt(serde_json::json!({ "status": status })))
    }

    /// The body carries the title and the plain text only.
    fn renderings(&self) -> Renderings {
        Renderings::Text
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    /// With `batch` > 1, one POST of a JSON array; its answer is every notification's (a failure fails them
    /// all, which keeps each run's order). With `batch = 1`, one POST per notification as `deliver` does.
    async fn deliver_batch(&self, ns: &[Notification]) -> Vec<Result<Receipt, DeliveryError>> {
        if self.batch <= 1 {
            let mut out = Vec::with_capacity(ns.len());
            let mut failed: Vec<&str> = Vec::new();
            for n in ns {
                if failed.contains(&n.event.run.as_str()) {
                    out.push(Err(DeliveryError::retryable(
                        "an earlier event of the run failed in this batch",
                    )));
                    continue;
                }
                let result = self.deliver(n).await;
                if result.is_err() {
                    failed.push(n.event.run.as_str());
                }
                out.push(result);
            }
            return out;
        }
        if ns.is_empty() {
            return Vec::new();
        }
        let attempt = ns.iter().map(|n| n.attempt).max().unwrap_or(1);
        let result = match self.batch_body(ns) {
            Ok(body) => self.post(body, None, attempt).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(status) => {
                tracing::debug!(notifier = %self.name, count = ns.len(), status, "webhook delivered a batch");
                ns.iter()
                    .map(|_| Ok(Receipt(serde_json::json!({ "status": status, "batch": ns.len() }))))
                    .collect()
            }
            Err(e) => ns.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Always `Ok`: checking would mean sending a request the receiver would take as a notification.
    async fn health_check(&self) -> Health {
        Health::Ok
    }
}

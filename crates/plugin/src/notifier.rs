//! The [`Notifier`] trait and the data that crosses it.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_event::{EpochEnded, Event};
use serde::{Deserialize, Serialize};

/// What a notifier can do beyond sending a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Edits an earlier message in place (one live message per run).
    pub edit: bool,
    /// Sends images (the loss curve at run end).
    pub images: bool,
    /// Takes commands from the user (such as a stop request from a phone).
    pub commands: bool,
}

/// The renderings a notifier's deliveries carry ([`Notifier::renderings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Renderings {
    /// `title`, `text`, `html` and `markdown`.
    #[default]
    All,
    /// `title` and `text` only (`html` and `markdown` empty), as the webhook sends.
    Text,
    /// None, and a bare run context holding only the run's id ([`crate::render::bare`]): for a notifier that
    /// passes on only [`Notification::event`], as cluster mode's forwarder does.
    None,
}

/// Whether a notifier can deliver right now, as `herald check` and `/v1/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// Ready to deliver.
    Ok,
    /// Working, with a caveat worth showing.
    Degraded {
        /// The caveat, to show the user.
        message: String,
    },
    /// Cannot deliver; the message says why and what to do.
    Unavailable {
        /// Why it cannot deliver and what to do about it.
        message: String,
    },
}

/// Opaque data a notifier returns after a delivery (a message id, a chat id, ...). It is stored with the job
/// and handed back in the next [`Notification`] for the same run and notifier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Receipt(pub serde_json::Value);

impl Receipt {
    /// A receipt that records nothing.
    pub fn none() -> Receipt {
        Receipt(serde_json::Value::Null)
    }
}

/// Why a delivery did not happen. Serialisable: it crosses the out-of-process plugin boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// What went wrong, lowercase, saying what the user can do where possible.
    pub message: String,
    /// A short machine-readable code (`http_429`, `timeout`, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Whether trying again later may succeed.
    pub retryable: bool,
    /// When the service asked to be retried, if it said (honoured exactly).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "secs_opt")]
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    /// A failure that a later retry may fix (network error, 5xx, rate limit).
    pub fn retryable(message: impl Into<String>) -> DeliveryError {
        DeliveryError { message: message.into(), code: None, retryable: true, retry_after: None }
    }

    /// A failure no retry will fix (bad credentials, a rejected payload).
    pub fn permanent(message: impl Into<String>) -> DeliveryError {
        DeliveryError { message: message.into(), code: None, retryable: false, retry_after: None }
    }

    /// The same error with a machine-readable code, such as `http_429` or `timeout`.
    pub fn with_code(mut self, code: impl Into<String>) -> DeliveryError {
        self.code = Some(code.into());
        self
    }

    /// The same error, retryable, after the delay the service asked for.
    pub fn with_retry_after(mut self, after: Duration) -> DeliveryError {
        self.retry_after = Some(after);
        self.retryable = true;
        self
    }
}

/// An error and its causes, `: `-separated, each cause left out when the text so far already says it: for
/// [`DeliveryError`] messages, since client libraries (reqwest, lettre) keep the useful part in the sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// An image attached to a notification (the loss curve at run end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// File name to show, such as `loss.png`.
    pub filename: String,
    /// MIME type, such as `image/png`.
    pub mime: String,
    /// The bytes; base64 on the wire.
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

/// What is known of a run when one of its events is delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    /// Run id.
    pub run: String,
    /// Human name (the run id when the run never said).
    pub name: String,
    /// Host the run trains on.
    pub host: String,
    /// Process id of the training process on `host`.
    pub pid: u32,
    /// Distributed rank; 0 for single-process runs.
    pub rank: u32,
    /// Epochs planned.
    pub n_epochs: u32,
    /// Training batches per epoch.
    pub batches_per_epoch: u64,
    /// Metric names in column order.
    pub metric_names: Vec<String>,
    /// Hyperparameters the run announced (lr, bs, model, ...), any JSON values.
    pub hyper: BTreeMap<String, serde_json::Value>,
    /// Every `epoch_ended` so far, in order: the results table.
    pub epochs: Vec<EpochEnded>,
    /// For rank 0 of a distributed job, the job's health as the daemon sees it, one line
    /// (`4/4 ranks · slowest: rank 3 on gpu-b, +38%`); shown under the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// What one notifier is asked to send for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The run's context, including the results table so far.
    pub run: RunContext,
    /// The triggering event (envelope and payload).
    pub event: Event,
    /// A short title, such as `digits-mlp: epoch 3/10`.
    pub title: String,
    /// Plain-text rendering (summary line, then the results table).
    pub text: String,
    /// HTML rendering: user-supplied strings escaped, the table in `<pre>`.
    pub html: String,
    /// Markdown rendering: the table in a code block.
    pub markdown: String,
    /// An image to attach, if any (the loss curve at run end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// The receipt of this run's previous successful delivery to this notifier, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Receipt>,
    /// 1 for the first try, counting up on retries.
    pub attempt: u32,
}

/// A notifier: sends notifications to one destination.
///
/// Implementations must not panic on anything a service answers; they map every failure to a
/// [`DeliveryError`]. The host enforces a per-delivery timeout, retries and rate limits, so `deliver` makes
/// one attempt and returns.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// The notifier's type name (`console`, `webhook`, ...). A notifier built from its [`NotifierType`]
    /// (the registry, [`crate::serve_type`]) answers its type's `KIND` without implementing this; one made
    /// some other way says `custom` unless it implements it.
    ///
    /// [`NotifierType`]: crate::NotifierType
    fn kind(&self) -> &str {
        "custom"
    }

    /// What it can do beyond sending.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Make one delivery attempt.
    async fn deliver(&self, notification: &Notification) -> Result<Receipt, DeliveryError>;

    /// Which renderings its deliveries need ([`Renderings::All`] by default); the host skips the others and
    /// leaves them empty.
    fn renderings(&self) -> Renderings {
        Renderings::All
    }

    /// How many notifications [`Notifier::deliver_batch`] takes at once; 1 (the default) means the host
    /// calls [`Notifier::deliver`] one at a time.
    fn max_batch(&self) -> usize {
        1
    }

    /// Make one attempt at each of `notifications` (at most [`Notifier::max_batch`], a run's in order),
    /// answering one result per notification, in the same order. A notifier that overrides it must keep
    /// each run's order: once one of a run's notifications fails, its later ones in the batch must fail too.
    /// The default delivers them one by one, stopping a run at its first failure.
    async fn deliver_batch(&self, notifications: &[Notification]) -> Vec<Result<Receipt, DeliveryError>> {
        let mut failed: Vec<&str> = Vec::new();
        let mut out = Vec::with_capacity(notifications.len());
        for n in notifications {
            if failed.contains(&n.event.run.as_str()) {
                out.push(Err(DeliveryError::retryable("an earlier event of the run failed in this batch")));
                continue;
            }
            let result = self.deliver(n).await;
            if result.is_err() {
                failed.push(n.event.run.as_str());
            }
            out.push(result);
        }
        out
    }

    /// For notifiers that take commands ([`Capabilities::commands`]): listen for them until the host shuts
    /// down, answering through `host`. The host spawns this once per notifier, owns the task and aborts it
    /// at shutdown; returning ends listening (the host logs an error and may restart it). The default does
    /// nothing.
    async fn listen(&self, host: std::sync::Arc<dyn crate::Host>) -> Result<(), DeliveryError> {
        let _ = host;
        Ok(())
    }

    /// Whether it can deliver right now (cheap; no message is sent). The default says [`Health::Ok`].
    async fn health_check(&self) -> Health {
        Health::Ok
    }
}

mod secs_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        match v {
            None => Ok(None),
            Some(s) if (0.0..1e9).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
            Some(s) => {
                Err(serde::de::Error::custom(format!("retry_after must be 0..1e9 seconds, found {s}")))
            }
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

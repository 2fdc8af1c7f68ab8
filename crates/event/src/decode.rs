//! Decoding untrusted bytes into events, and encoding events.
//!
//! Every error is a typed [`DecodeError`] that names the problem; nothing here panics on any input. Unknown
//! extra fields are ignored so that older readers accept newer writers' additions; a `v` newer than
//! [`PROTOCOL_VERSION`] is refused since its meaning may have changed.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{Event, EventKind, PROTOCOL_VERSION, Payload};

/// Why bytes are not a valid event or batch of events.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not UTF-8.
    #[error("body is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The body holds no event: empty, only whitespace, or an empty array.
    #[error("body holds no event")]
    Empty,
    /// The body is not well-formed JSON.
    #[error("malformed JSON: {message}")]
    Syntax {
        /// serde_json's description, with line and column.
        message: String,
    },
    /// An event is a JSON value other than an object.
    #[error("an event must be a JSON object, found {found}")]
    NotAnObject {
        /// What it is instead (`an array`, `a string`, `null`, ...).
        found: &'static str,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// The absent field's name.
        field: String,
    },
    /// `v` is newer than this build reads.
    #[error(
        "protocol version {found} is newer than {supported}, the newest this build reads: upgrade herald"
    )]
    UnsupportedVersion {
        /// The event's `v`.
        found: u64,
        /// The newest version this build reads ([`PROTOCOL_VERSION`]).
        supported: u32,
    },
    /// `type` names no known event.
    #[error("unknown event type `{found}`")]
    UnknownType {
        /// The `type` as sent.
        found: String,
    },
    /// A field has the wrong type or value (a string for a number, NaN where it must be finite).
    #[error("invalid `{kind}` event: {message}")]
    Invalid {
        /// The event's `type`, or `envelope` for the common fields.
        kind: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// An element of a batch is bad; the whole batch is refused.
    #[error("event {index}: {source}")]
    AtIndex {
        /// The element's index in the batch, 0-based.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<DecodeError>,
    },
}

impl DecodeError {
    /// The index of the bad element in a batch, if the error is about one.
    pub fn index(&self) -> Option<usize> {
        match self {
            DecodeError::AtIndex { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// An event could not be encoded (a field that must be finite was not).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode event: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

/// Encode one event as a single line of JSON (no trailing newline).
pub fn encode_event(event: &Event) -> Result<String, EncodeError> {
    Ok(serde_json::to_string(event)?)
}

/// Decode one event from untrusted bytes.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    let text = utf8(bytes)?;
    let raw: &RawValue = serde_json::from_str(text).map_err(syntax)?;
    decode_raw(raw)
}

/// Decode a batch: a JSON array of events, or one or more events separated by whitespace (newline-delimited
/// JSON, or a single object). An error names the index of the first bad element; the batch is all or nothing.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let text = utf8(bytes)?;
    let trimmed = text.trim_start();
    let mut events = Vec::new();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(syntax)?;
        events.reserve(items.len());
        for (index, raw) in items.into_iter().enumerate() {
            events.push(decode_raw(raw).map_err(|e| at(index, e))?);
        }
    } else {
        let stream = serde_json::Deserializer::from_str(trimmed).into_iter::<&RawValue>();
        for (index, raw) in stream.enumerate() {
            let raw = raw.map_err(|e| at(index, syntax(e)))?;
            events.push(decode_raw(raw).map_err(|e| at(index, e))?);
        }
    }
    if events.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(events)
}

fn at(index: usize, e: DecodeError) -> DecodeError {
    DecodeError::AtIndex { index, source: Box::new(e) }
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 { offset: e.valid_up_to() })
}

fn syntax(e: serde_json::Error) -> DecodeError {
    if e.is_eof() && e.line() == 1 && e.column() == 0 {
        return DecodeError::Empty;
    }
    DecodeError::Syntax { message: e.to_string() }
}

/// The envelope fields read first, to give typed errors for the version and the type.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default, borrow)]
    v: Option<&'a RawValue>,
    #[serde(default, rename = "type", borrow)]
    ty: Option<&'a RawValue>,
}

fn decode_raw(raw: &RawValue) -> Result<Event, DecodeError> {
    let text = raw.get();
    let found = match text.as_bytes().first() {
        Some(b'{') => None,
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        _ => Some("a number"),
    };
    if let Some(found) = found {
        return Err(DecodeError::NotAnObject { found });
    }
    let probe: Probe<'_> = serde_json::from_str(text).map_err(syntax)?;
    let v = probe.v.ok_or_else(|| missing("v"))?;
    let v: u64 = serde_json::from_str(v.get()).map_err(|_| DecodeError::Invalid {
        kind: "envelope".into(),
        message: format!("`v` must be a non-negative integer, found {}", clip(v.get())),
    })?;
    if v > u64::from(PROTOCOL_VERSION) {
        return Err(DecodeError::UnsupportedVersion { found: v, supported: PROTOCOL_VERSION });
    }
    if v == 0 {
        return Err(DecodeError::Invalid {
            kind: "envelope".into(),
            message: format!("`v` must be between 1 and {PROTOCOL_VERSION}, found 0"),
        });
    }
    let ty = probe.ty.ok_or_else(|| missing("type"))?;
    let ty: String = serde_json::from_str(ty.get()).map_err(|_| DecodeError::Invalid {
        kind: "envelope".into(),
        message: format!("`type` must be a string, found {}", clip(ty.get())),
    })?;
    let kind = EventKind::from_name(&ty).ok_or_else(|| DecodeError::UnknownType { found: clip(&ty) })?;
    // The envelope and the payload are read from the same object, each ignoring the other's fields: no
    // buffering, and errors that name the field.
    let envelope: Envelope = field_errors(kind, text)?;
    let payload = match kind {
        EventKind::RunStarted => Payload::RunStarted(field_errors(kind, text)?),
        EventKind::EpochStarted => Payload::EpochStarted(field_errors(kind, text)?),
        EventKind::BatchEnded => Payload::BatchEnded(field_errors(kind, text)?),
        EventKind::EpochEnded => Payload::EpochEnded(field_errors(kind, text)?),
        EventKind::RunFinished => Payload::RunFinished(field_errors(kind, text)?),
        EventKind::RunFailed => Payload::RunFailed(field_errors(kind, text)?),
        EventKind::Message => Payload::Message(field_errors(kind, text)?),
        EventKind::Heartbeat => Payload::Heartbeat(field_errors(kind, text)?),
        EventKind::RunStalled => Payload::RunStalled(field_errors(kind, text)?),
        EventKind::RunLost => Payload::RunLost(field_errors(kind, text)?),
        EventKind::Alert => Payload::Alert(field_errors(kind, text)?),
        EventKind::RankStalled => Payload::RankStalled(field_errors(kind, text)?),
        EventKind::RankLost => Payload::RankLost(field_errors(kind, text)?),
        EventKind::RankFailed => Payload::RankFailed(field_errors(kind, text)?),
        EventKind::RankSlow => Payload::RankSlow(field_errors(kind, text)?),
        EventKind::RanksMissing => Payload::RanksMissing(field_errors(kind, text)?),
    };
    Ok(Event { v: PROTOCOL_VERSION, run: envelope.run, seq: envelope.seq, time: envelope.time, payload })
}

/// The envelope fields other than `v` and `type`.
#[derive(Deserialize)]
struct Envelope {
    run: String,
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    time: time::OffsetDateTime,
}

/// Deserialize `T` from `text`, naming the offending field in the error.
///
/// Valid input takes the plain path; only a failure is read again with the field's path tracked (which
/// allocates for every key), so the error can name it.
fn field_errors<T: serde::de::DeserializeOwned>(kind: EventKind, text: &str) -> Result<T, DecodeError> {
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some(field) = rest.split('`').next()
        {
            return missing(field);
        }
        let message = if path == "." { message } else { format!("`{path}`: {message}") };
        DecodeError::Invalid { kind: kind.as_str().to_owned(), message }
    })
}

fn missing(field: &str) -> DecodeError {
    DecodeError::MissingField { field: field.to_owned() }
}

/// Cut a piece of untrusted input for an error message.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

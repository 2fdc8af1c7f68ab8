//! A run's loss history read back from the events stream, so that it survives a failover.
//!
//! The leader keeps loss points (`batch_ended`) in memory only; a new leader has those it read since it
//! took over. The stream still holds every `batch_ended` event of the run (subject
//! `<prefix>.events.<run>`), so the first time a leader needs a run's history it reads that subject once,
//! with an ordered consumer filtered by it, up to the last message the subject held when asked.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream::LastRawMessageErrorKind};
use futures_util::StreamExt;
use herald_event::{Event, Payload, decode_batch};

use crate::error::ClusterError;
use crate::names::Names;

/// How long one message of the read may take before the read gives up.
const READ_WAIT: Duration = Duration::from_secs(5);

/// Every `batch_ended` event of `run` in the stream, in stream order.
pub async fn batch_ended_events(
    js: &jetstream::Context,
    names: &Names,
    run: &str,
) -> Result<Vec<Event>, ClusterError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| ClusterError::nats(what, e);
    let stream = js.get_stream(names.stream()).await.map_err(|e| fail("cannot open the stream", &e))?;
    let subject = names.subject(run);
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m.sequence,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
        Err(e) => return Err(fail("cannot read the stream", &e)),
    };
    let config = consumer::pull::OrderedConfig { filter_subject: subject, ..Default::default() };
    let reader = stream
        .create_consumer(config)
        .await
        .map_err(|e| fail("cannot read a run's events from the stream", &e))?;
    let mut messages = reader.messages().await.map_err(|e| fail("cannot read the stream", &e))?;
    let mut out = Vec::new();
    loop {
        let m = match tokio::time::timeout(READ_WAIT, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(fail("cannot read the stream", &e)),
            Ok(None) => break,
            Err(_) => return Err(fail("reading a run's events from the stream", &"timed out")),
        };
        // A message is one event or a pack of them (`pack.rs`).
        let events = decode_batch(&m.payload).unwrap_or_default();
        out.extend(events.into_iter().filter(|e| matches!(e.payload, Payload::BatchEnded(_))));
        let seq = m.info().map_or(u64::MAX, |i| i.stream_sequence);
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

//! The edge's forwarding: one more notifier slot, [`Forwarder`], that publishes each event to JetStream.
//!
//! Because forwarding is a notifier, the daemon's worker machinery gives it persistence (the job waits in
//! the local outbox), per-run order (a run's next event waits for the previous one's ack) and retries with
//! backoff for free. A delivery publishes the event as JSON to `<prefix>.events.<run token>` with the header
//! `Nats-Msg-Id: <run>/<seq>`, so that a replay within the stream's duplicate window is dropped by the
//! server, and succeeds only once JetStream has acknowledged it (stored on a quorum of replicas). The worker
//! hands it up to [`MAX_BATCH`] ready events at once: all are published, then their acknowledgements are
//! awaited together, so forwarding costs one round trip per batch, not per event. While NATS
//! is unreachable every attempt fails as retryable, asking to be retried within a second, and the trainer's
//! posts are answered as usual: training never waits for NATS. The edge's own daemon-made events get
//! sequence numbers of their own range in the stream ([`stream_seq`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;
use herald_daemon::runs::MADE_SEQ_BASE;
use herald_event::{EventKind, encode_event};
use herald_plugin::{
    ConfigError, DeliveryError, Health, Notification, Notifier, Receipt, Renderings, parse_table,
};
use tokio::sync::OnceCell;

use crate::connect::{Target, connect, ensure_stream};
use crate::error::ClusterError;
use crate::pack::{self, Bounds};

/// The forwarder's notifier type (and slot name).
pub const KIND: &str = "cluster";
/// What `herald plugins` would say of it.
pub const DESCRIPTION: &str = "forwards every event to the cluster's JetStream stream (cluster mode)";
/// How soon a failed publish is tried again: NATS coming back should not wait for a long backoff.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Events published before their acknowledgements are awaited together.
const MAX_BATCH: usize = 1000;

fn retry(what: &str, e: &dyn std::fmt::Display) -> DeliveryError {
    let message = match e.to_string() {
        e if e.is_empty() => what.to_owned(),
        e => format!("{what}: {e}"),
    };
    DeliveryError::retryable(message).with_retry_after(RETRY_AFTER)
}

/// One publish of a batch: its acknowledgement to await, or why it did not go out.
enum Pending {
    Ack(jetstream::context::PublishAckFuture),
    Failed(DeliveryError),
}

/// Publishes events to the cluster's stream.
pub struct Forwarder {
    target: Target,
    link: OnceCell<(async_nats::Client, jetstream::Context)>,
    /// The packs published whose outcome is not known: they go again as they were.
    replay: Mutex<pack::Replay>,
}

impl Forwarder {
    /// A forwarder to `target`; it connects at its first delivery.
    pub fn new(target: Target) -> Forwarder {
        Forwarder { target, link: OnceCell::new(), replay: Mutex::default() }
    }

    /// The registry's constructor: the table is a serialized [`Target`].
    pub fn from_table(_name: &str, table: toml::Table) -> Result<Box<dyn Notifier>, ConfigError> {
        let target: Target = parse_table(table)?;
        Ok(Box::new(Forwarder::new(target)))
    }

    fn replay(&self) -> std::sync::MutexGuard<'_, pack::Replay> {
        self.replay.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection, made (with the stream checked) the first time it is needed.
    async fn link(&self) -> Result<&(async_nats::Client, jetstream::Context), ClusterError> {
        self.link
            .get_or_try_init(|| async {
                let client = connect(&self.target, "herald-edge").await?;
                let js = jetstream::new(client.clone());
                ensure_stream(&js, &self.target).await?;
                Ok((client, js))
            })
            .await
    }
}

/// Where an edge's daemon-made events (`run_lost`, alerts: sequence numbers from [`MADE_SEQ_BASE`]) go in
/// the stream: [`MADE_SEQ_BASE`] + 2^40 up, apart from those the leader makes itself (from
/// [`MADE_SEQ_BASE`]), so the leader never takes one for the other.
pub const EDGE_MADE_BASE: u64 = MADE_SEQ_BASE + (1 << 40);

/// The sequence number an event has in the stream.
pub fn stream_seq(seq: u64) -> u64 {
    match seq.checked_sub(MADE_SEQ_BASE) {
        Some(n) if seq < EDGE_MADE_BASE => EDGE_MADE_BASE.saturating_add(n),
        _ => seq,
    }
}

/// The event types an edge forwards: all of them but `run_stalled`, which the leader makes (it sees every
/// edge's runs; an edge's own stall watch would report a run twice).
pub fn forwarded_events() -> Vec<EventKind> {
    EventKind::ALL.into_iter().filter(|k| *k != EventKind::RunStalled).collect()
}

#[async_trait::async_trait]
impl Notifier for Forwarder {
    fn kind(&self) -> &str {
        KIND
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        self.deliver_batch(std::slice::from_ref(n))
            .await
            .pop()
            .unwrap_or_else(|| Err(retry("no answer", &"")))
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// Only the event is published: no renderings needed.
    fn renderings(&self) -> Renderings {
        Renderings::None
    }

    /// Publish every event, in packs of one run's consecutive events (`pack.rs`), then await the
    /// acknowledgements together: one round trip for the batch. A run's packs go out in order on the one
    /// connection; once one of a run's packs fails, its later packs in the batch are reported failed too, to
    /// be published again after it, with the same bounds (a copy already stored is dropped by the stream's
    /// duplicate window).
    async fn deliver_batch(&self, notifications: &[Notification]) -> Vec<Result<Receipt, DeliveryError>> {
        let js = match self.link().await {
            Ok((_, js)) => js,
            Err(e) => return notifications.iter().map(|_| Err(retry("not connected to NATS", &e))).collect(),
        };
        let names = self.target.names();
        let mut out: Vec<Option<Result<Receipt, DeliveryError>>> = vec![None; notifications.len()];
        // Each run's events, encoded, in order: (index in the batch, stream sequence number, JSON).
        let mut runs: Vec<(&str, Vec<(usize, u64, String)>)> = Vec::new();
        let mut run_index: HashMap<&str, usize> = HashMap::new();
        for (i, n) in notifications.iter().enumerate() {
            let mut event = n.event.clone();
            event.seq = stream_seq(event.seq);
            match encode_event(&event) {
                Ok(json) => {
                    let run = n.event.run.as_str();
                    let slot = *run_index.entry(run).or_insert_with(|| {
                        runs.push((run, Vec::new()));
                        runs.len() - 1
                    });
                    runs[slot].1.push((i, event.seq, json));
                }
                Err(e) => {
                    out[i] = Some(Err(DeliveryError::permanent(format!("cannot encode the event: {e}"))))
                }
            }
        }
        // Publish every run's packs: (run, bounds, the batch's indices, the acknowledgement to await).
        let mut sent: Vec<(usize, Bounds, Vec<usize>, Pending)> = Vec::new();
        let mut kept: Vec<Vec<Bounds>> = Vec::with_capacity(runs.len());
        for (r, (run, events)) in runs.iter().enumerate() {
            // Read, not taken: should this attempt be cancelled (the worker's timeout), they still stand.
            let remembered = self.replay().remembered(run).to_vec();
            let sizes: Vec<(u64, usize)> = events.iter().map(|(_, seq, json)| (*seq, json.len())).collect();
            let plan = pack::plan(&sizes, &remembered);
            for (i, _, _) in &events[plan.deferred..] {
                out[*i] = Some(Err(retry("waiting to publish a pack of unknown outcome again whole", &"")));
            }
            kept.push(plan.kept);
            for range in plan.packs {
                let part = &events[range];
                let (first, last) = (part[0].1, part[part.len() - 1].1);
                let mut payload = String::with_capacity(part.iter().map(|(_, _, j)| j.len() + 1).sum());
                for (k, (_, _, json)) in part.iter().enumerate() {
                    if k > 0 {
                        payload.push('\n');
                    }
                    payload.push_str(json);
                }
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", pack::msg_id(run, first, last).as_str());
                let pending = match js
                    .publish_with_headers(names.subject(run), headers, payload.into_bytes().into())
                    .await
                {
                    Ok(ack) => Pending::Ack(ack),
                    Err(e) => Pending::Failed(retry("cannot publish to JetStream", &e)),
                };
                sent.push((r, (first, last), part.iter().map(|(i, _, _)| *i).collect(), pending));
            }
        }
        // Await every acknowledgement, then settle each run's packs in order (`pack::Replay`).
        let mut acked: Vec<Vec<(Bounds, Vec<usize>, Result<(), DeliveryError>)>> =
            runs.iter().map(|_| Vec::new()).collect();
        for (r, bounds, indices, pending) in sent {
            let result = match pending {
                Pending::Ack(ack) => {
                    ack.await.map(|_| ()).map_err(|e| retry("JetStream did not acknowledge", &e))
                }
                Pending::Failed(e) => Err(e),
            };
            acked[r].push((bounds, indices, result));
        }
        let mut replay = self.replay();
        for (r, packs) in acked.into_iter().enumerate() {
            let outcomes: Vec<(Bounds, bool)> =
                packs.iter().map(|(b, _, result)| (*b, result.is_ok())).collect();
            let stored = replay.settle(runs[r].0, &outcomes, std::mem::take(&mut kept[r]));
            for ((_, indices, result), stored) in packs.into_iter().zip(stored) {
                let result = match result {
                    Ok(()) if stored => Ok(Receipt::none()),
                    Ok(()) => Err(retry("an earlier event of the run was not stored", &"")),
                    Err(e) => Err(e),
                };
                for i in indices {
                    out[i] = Some(result.clone());
                }
            }
        }
        drop(replay);
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(retry("no answer", &"")))).collect()
    }

    async fn health_check(&self) -> Health {
        match self.link.get() {
            None => Health::Degraded { message: "not connected to NATS yet".into() },
            Some((client, _)) => match client.connection_state() {
                async_nats::connection::State::Connected => Health::Ok,
                state => Health::Unavailable {
                    message: format!("NATS connection {state}: events wait in the outbox"),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edges_made_events_never_meet_the_leaders() {
        assert_eq!(stream_seq(0), 0);
        assert_eq!(stream_seq(MADE_SEQ_BASE - 1), MADE_SEQ_BASE - 1, "a sender's events keep their numbers");
        assert_eq!(stream_seq(MADE_SEQ_BASE), EDGE_MADE_BASE);
        assert_eq!(stream_seq(MADE_SEQ_BASE + 3), EDGE_MADE_BASE + 3);
        assert_eq!(stream_seq(EDGE_MADE_BASE + 3), EDGE_MADE_BASE + 3, "already mapped: kept");
        assert!(!forwarded_events().contains(&EventKind::RunStalled), "the leader makes run_stalled");
        assert!(forwarded_events().contains(&EventKind::BatchEnded));
    }
}

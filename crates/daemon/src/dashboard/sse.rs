//! `GET /v1/stream`: Server-Sent Events for the dashboard, one `event:` per Herald event type (`epoch_ended`,
//! `batch_ended`, `run_finished`, ...) with the event's JSON as `data:`, `status` when the notifiers' or the
//! outbox's figures change, and `resync` when the client missed events and should read the API again.
//!
//! The [`Hub`] is the one subscriber of the writer's broadcast of committed events: it numbers each event
//! (`id:` is `<daemon start ms>-<n>`), keeps the latest [`RING`] in a ring for resume, and fans them out to
//! every open stream. A reconnecting client sends `Last-Event-ID` and gets what it missed from the ring,
//! or `resync` when that is gone (or the daemon restarted).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use herald_event::Event;
use tokio::sync::{broadcast, watch};

use super::Dash;
use crate::Handle;

/// Stream items kept for resume.
pub const RING: usize = 4096;
/// Items waiting per stream before a slow client is told to resync.
const FANOUT: usize = 1024;
/// How often the hub looks for changed notifier figures.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// One numbered item of the stream.
#[derive(Debug)]
pub struct Item {
    pub id: u64,
    pub kind: &'static str,
    data: Data,
}

/// An item's `data:`: a committed event is encoded the first time a stream sends it, so that a daemon
/// nobody watches spends nothing on encoding.
#[derive(Debug)]
enum Data {
    Text(String),
    Event(Box<Event>, OnceLock<String>),
}

impl Item {
    fn data(&self) -> &str {
        match &self.data {
            Data::Text(text) => text,
            Data::Event(event, json) => json.get_or_init(|| {
                serde_json::to_string(event).unwrap_or_else(|e| {
                    tracing::debug!(run = %event.run, error = %e, "event not streamed");
                    "null".to_owned()
                })
            }),
        }
    }
}

/// Numbers committed events, keeps the latest for resume, and fans them out.
pub struct Hub {
    /// Tells this daemon's ids from an earlier one's.
    epoch: u64,
    ring: Mutex<VecDeque<Arc<Item>>>,
    tx: broadcast::Sender<Arc<Item>>,
    /// Turns true when the daemon shuts down: open streams end.
    done: watch::Sender<bool>,
    /// The latest `status` item: a new stream starts with it.
    status: Mutex<Option<Arc<Item>>>,
}

impl Hub {
    pub fn new(epoch: u64) -> Hub {
        Hub {
            epoch,
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            tx: broadcast::channel(FANOUT).0,
            done: watch::channel(false).0,
            status: Mutex::new(None),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Item>>> {
        // Every update is a whole push or pop: a panic while held leaves it usable.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number an item, keep it and send it to the open streams.
    fn push(&self, kind: &'static str, data: Data) {
        let mut ring = self.ring();
        let id = ring.back().map_or(1, |last| last.id + 1);
        let item = Arc::new(Item { id, kind, data });
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(item.clone());
        if kind == "status" {
            *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(item.clone());
        }
        // Sent under the lock so that streams see ids in order; no receiver is fine.
        let _ = self.tx.send(item);
    }

    /// The id a stream puts on `item`.
    fn sse_id(&self, n: u64) -> String {
        format!("{}-{n}", self.epoch)
    }

    /// Feed the hub until `stop` turns true: the writer's committed events, and notifier figures when they
    /// change.
    pub async fn run(
        self: Arc<Hub>,
        handle: Handle,
        events: broadcast::Receiver<Event>,
        stop: watch::Receiver<bool>,
    ) {
        self.feed(handle, events, stop).await;
        self.done.send_replace(true);
    }

    async fn feed(
        &self,
        handle: Handle,
        mut events: broadcast::Receiver<Event>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = String::new();
        loop {
            tokio::select! {
                got = events.recv() => match got {
                    Ok(event) => self.push(event.kind().as_str(), Data::Event(Box::new(event), OnceLock::new())),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.push("resync", Data::Text(format!("{{\"missed\":{n}}}")))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let status = status_data(&handle);
                    if status != last_status {
                        self.push("status", Data::Text(status.clone()));
                        last_status = status;
                    }
                }
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// The items of `ring` after `last`, when `last` is this daemon's (`epoch`) and the ring still has them all.
fn missed(ring: &VecDeque<Arc<Item>>, epoch: u64, last: &str) -> Option<Vec<Arc<Item>>> {
    let (e, n) = last.split_once('-')?;
    let n: u64 = n.parse().ok()?;
    if e.parse::<u64>().ok()? != epoch {
        return None;
    }
    let newest = ring.back().map_or(0, |i| i.id);
    let oldest = ring.front().map_or(newest + 1, |i| i.id);
    if n > newest || n + 1 < oldest {
        return None;
    }
    Some(ring.iter().filter(|i| i.id > n).cloned().collect())
}

/// The notifiers' rows and the outbox of status, as JSON (what the Deliveries page shows live).
fn status_data(handle: &Handle) -> String {
    let s = handle.status();
    serde_json::json!({ "notifiers": s.notifiers, "outbox": s.outbox }).to_string()
}

/// `GET /v1/stream`.
pub async fn stream(State(dash): State<Dash>, headers: HeaderMap) -> Response {
    let hub = dash.hub.clone();
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Subscribe and read the ring under its lock (items are numbered and sent under it): nothing falls
    // between the two, and nothing comes twice.
    let (rx, sent, resumed) = {
        let ring = hub.ring();
        let rx = hub.tx.subscribe();
        let newest = ring.back().map_or(0, |i| i.id);
        (rx, newest, last.as_deref().map(|l| missed(&ring, hub.epoch, l)))
    };
    let mut first: VecDeque<SseEvent> = VecDeque::new();
    match resumed {
        Some(Some(items)) => first.extend(items.iter().map(|item| sse(&hub, item))),
        Some(None) => first.push_back(SseEvent::default().event("resync").data("{}")),
        None => {
            if let Some(item) = hub.status.lock().unwrap_or_else(PoisonError::into_inner).clone() {
                first.push_back(sse(&hub, &item));
            }
        }
    }
    let done = hub.done.subscribe();
    let state = Open { first, rx, sent, hub, done };
    let stream = futures_util::stream::unfold(state, |mut open| async move {
        let e = open.next().await?;
        Some((Ok::<_, Infallible>(e), open))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One open stream.
struct Open {
    /// What a resume sends first.
    first: VecDeque<SseEvent>,
    rx: broadcast::Receiver<Arc<Item>>,
    /// The id of the latest item sent.
    sent: u64,
    hub: Arc<Hub>,
    done: watch::Receiver<bool>,
}

impl Open {
    /// The next event to send; `None` when the daemon shuts down.
    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(e) = self.first.pop_front() {
            return Some(e);
        }
        loop {
            let got = tokio::select! {
                got = self.rx.recv() => got,
                _ = self.done.wait_for(|done| *done) => return None,
            };
            match got {
                Ok(item) if item.id <= self.sent => continue,
                Ok(item) => {
                    self.sent = item.id;
                    return Some(sse(&self.hub, &item));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some(SseEvent::default().event("resync").data("{}"));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn sse(hub: &Hub, item: &Item) -> SseEvent {
    SseEvent::default().event(item.kind).id(hub.sse_id(item.id)).data(item.data())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since(hub: &Hub, last: &str) -> Option<Vec<Arc<Item>>> {
        missed(&hub.ring(), hub.epoch, last)
    }

    #[test]
    fn resume_gives_what_was_missed_or_asks_for_a_resync() {
        let hub = Hub::new(77);
        for i in 0..(RING + 10) {
            hub.push("epoch_ended", Data::Text(format!("{i}")));
        }
        let newest = (RING + 10) as u64;
        let ids = |v: Option<Vec<Arc<Item>>>| v.map(|v| v.iter().map(|i| i.id).collect::<Vec<_>>());
        assert_eq!(ids(since(&hub, &format!("77-{}", newest - 2))), Some(vec![newest - 1, newest]));
        assert_eq!(ids(since(&hub, &format!("77-{newest}"))), Some(vec![]), "nothing missed");
        assert_eq!(since(&hub, "77-10").map(|v| v.len()), Some(RING), "the oldest kept is the next one");
        assert_eq!(ids(since(&hub, "77-5")), None, "fell out of the ring");
        assert_eq!(ids(since(&hub, &format!("76-{newest}"))), None, "another daemon's id");
        assert_eq!(ids(since(&hub, &format!("77-{}", newest + 1))), None, "from the future");
        assert_eq!(ids(since(&hub, "garbage")), None);
        assert_eq!(hub.sse_id(5), "77-5");
    }
}

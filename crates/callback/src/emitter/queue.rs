//! The channel between the training thread and its consumer: a tokio unbounded mpsc plus a shared atomic
//! count of unread `batch_ended` events, so sending never waits and memory stays bounded (see
//! [`super`] for the policy). The [`EventEmitter`](super::EventEmitter) is its main sender.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use herald_event::{Event, EventKind};
use tokio::sync::mpsc;

#[derive(Debug)]
struct Shared {
    max_pending: usize,
    pending: AtomicUsize,
    dropped: AtomicU64,
}

/// A channel for one or more runs' events: `batch_ended` events beyond `max_pending_batches` unread are
/// dropped and counted; lifecycle events always go through. See the module docs.
pub fn channel(max_pending_batches: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        max_pending: max_pending_batches,
        pending: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
    });
    (EventSender { tx, shared: shared.clone() }, EventReceiver { rx, shared })
}

/// Why [`EventSender::send`] did not deliver an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A `batch_ended` was dropped: too many are unread.
    #[error("batch_ended dropped: the receiver is behind by the maximum number of unread batch events")]
    Full,
    /// The receiver is gone.
    #[error("the event receiver is gone; nothing will read this event")]
    Closed,
}

/// The sending side of [`channel`]. Cloneable; never blocks.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
}

impl EventSender {
    /// Sends one event without blocking. A `batch_ended` is dropped (and counted) when more than
    /// `max_pending_batches` would be unread; any other event goes through while the receiver lives.
    pub fn send(&self, event: Event) -> Result<(), SendError> {
        let batch = event.kind() == EventKind::BatchEnded;
        if batch && !self.reserve_batch() {
            return Err(SendError::Full);
        }
        self.push(event, batch)
    }

    /// Takes one of the `max_pending_batches` slots, or counts a drop.
    pub(super) fn reserve_batch(&self) -> bool {
        let s = &self.shared;
        if s.pending.fetch_add(1, Ordering::AcqRel) >= s.max_pending {
            s.pending.fetch_sub(1, Ordering::AcqRel);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Pushes an event whose slot (if a batch) is reserved.
    pub(super) fn push(&self, event: Event, batch: bool) -> Result<(), SendError> {
        if self.tx.send(event).is_err() {
            if batch {
                self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(SendError::Closed);
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// `batch_ended` events dropped so far by every sender of this channel.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// `batch_ended` events sent and not yet received.
    pub fn pending_batches(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }
}

/// Why [`EventReceiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is waiting; senders remain.
    #[error("no event is waiting")]
    Empty,
    /// No event is waiting and none will come.
    #[error("every sender is gone and no event is waiting")]
    Disconnected,
}

/// The receiving side of [`channel`], usually on a tokio task (the dispatcher or the daemon client).
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
}

impl EventReceiver {
    /// The next event; `None` once every sender is gone and the channel is empty.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        self.received(event.as_ref());
        event
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        match self.rx.try_recv() {
            Ok(event) => {
                self.received(Some(&event));
                Ok(event)
            }
            Err(mpsc::error::TryRecvError::Empty) => Err(TryRecvError::Empty),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(TryRecvError::Disconnected),
        }
    }

    /// The next event, blocking this thread (never call it inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        let event = self.rx.blocking_recv();
        self.received(event.as_ref());
        event
    }

    fn received(&self, event: Option<&Event>) {
        if event.is_some_and(|e| e.kind() == EventKind::BatchEnded) {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `batch_ended` events dropped so far because this receiver was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// `batch_ended` events sent and not yet received.
    pub fn pending_batches(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use herald_event::{BatchEnded, EpochStarted};

    use super::*;

    #[test]
    fn send_drops_only_batches_past_the_limit() {
        let (tx, mut rx) = channel(1);
        let batch = || {
            Event::now(
                "r",
                0,
                BatchEnded { epoch: 0, batch: 0, n_batches: 1, loss: 1.0, smooth_loss: 1.0, lr: 0.1 },
            )
        };
        assert_eq!(tx.send(batch()), Ok(()));
        assert_eq!(tx.send(batch()), Err(SendError::Full));
        assert_eq!(tx.send(Event::now("r", 1, EpochStarted { epoch: 0 })), Ok(()));
        assert_eq!((tx.dropped(), rx.dropped(), rx.pending_batches()), (1, 1, 1));
        assert_eq!(rx.try_recv().map(|e| e.kind()), Ok(EventKind::BatchEnded));
        assert_eq!(rx.pending_batches(), 0);
        drop(rx);
        assert_eq!(tx.send(batch()), Err(SendError::Closed));
        assert_eq!(tx.pending_batches(), 0, "a batch that could not be delivered frees its slot");
        assert_eq!(tx.send(Event::now("r", 2, EpochStarted { epoch: 1 })), Err(SendError::Closed));
        assert!(tx.is_closed());
    }
}

//! The deliver role: compete for the lease; while leading, run the daemon's [`Dispatcher`] over the
//! [`JetStreamOutbox`] with the configured notifiers, fed from the stream.
//!
//! The leader reads `<prefix>-events` through the durable pull consumer `<prefix>-deliver` (ack policy
//! `all`), hands each fetched batch to [`Handle::ingest`] (which commits it to the buckets) and acknowledges
//! the batch only then: a leader killed in between leaves the batch unacknowledged, the next leader reads it
//! again, and `known` drops what was applied. A new leader re-creates the consumer from its acknowledged
//! floor, so it does not wait for the dead leader's acknowledgement timeout. Only the leader's dispatcher
//! runs, so only it polls Telegram's `getUpdates` and makes `run_stalled`; it does not look for lost
//! processes (`run_lost` comes from the edge on the run's machine). The leader writes the stop requests
//! its dispatcher gets (Telegram's `/stop`) to the stops bucket for the edges at once, through the
//! daemon's stop hook (`stops.rs`), and publishes its status for every node's `herald status`
//! (`status.rs`). Losing the lease
//! stops the dispatcher at once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use herald_daemon::config::Config;
use herald_daemon::{Dispatcher, Handle, Options, build_notifiers};
use herald_event::decode_batch;
use herald_plugin::Registry;
use tokio::sync::watch;

use crate::connect::{Target, connect, ensure_stream};
use crate::error::ClusterError;
use crate::lease;
use crate::outbox::JetStreamOutbox;
use crate::stops;

/// Messages fetched at once (a message is one event or a pack of one run's events, `pack.rs`).
const BATCH: usize = 500;
/// Bytes fetched at once, which bounds the events handed to the dispatcher together (about 4,000 of
/// `batch_ended`).
const BATCH_BYTES: usize = 1 << 20;
/// How long one fetch waits for events.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// How a term as leader ended.
enum Term {
    /// Asked to stop: the node shuts down.
    Stopped,
    /// The lease was lost (or the term failed): compete again.
    Lost,
}

/// Compete for the lease and deliver while leading, until `stop` turns true.
pub async fn run(
    config: Config,
    registry: Registry,
    target: Target,
    lease: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    // A deliverer without its notifiers is useless: build them once now, so a mistake stops the start.
    build_notifiers(&config, &registry)?;
    let client = connect(&target, "herald-deliver").await?;
    let js = jetstream::new(client);
    // A JetStream cluster just started may still be electing its leader: wait for it a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ensure_stream(&js, &target).await {
            Ok(()) => break,
            Err(e @ ClusterError::Nats { .. }) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream does not answer yet; waiting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let names = target.names();
    let store = lease::bucket(&js, &names, target.replicas, lease).await?;
    let node = crate::status::node_id();
    tracing::info!(node = %node, "deliverer ready; competing for the lease");
    herald_daemon::sdnotify::notify("READY=1\nSTATUS=competing for the lease");
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let sent = std::time::Instant::now();
        let revision = match lease::try_acquire(&store, &node).await {
            Ok(revision) => revision,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the lease; trying again");
                None
            }
        };
        let Some(revision) = revision else {
            tokio::select! {
                _ = tokio::time::sleep(lease / 10) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        tracing::info!(node = %node, "took the lease: leading");
        let fence = lease::Fence::new(sent, lease);
        match lead(&config, &registry, &target, &js, &store, &node, (revision, fence), lease, &mut stop).await
        {
            Ok(Term::Stopped) => return Ok(()),
            Ok(Term::Lost) => tracing::warn!("no longer the leader"),
            Err(e) => {
                tracing::error!(error = %e, "leading failed; giving the lease back");
                let _ = store.delete_expect_revision("leader", Some(revision)).await;
                tokio::select! {
                    _ = tokio::time::sleep(lease / 3) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// One term as leader.
#[allow(clippy::too_many_arguments)]
async fn lead(
    config: &Config,
    registry: &Registry,
    target: &Target,
    js: &jetstream::Context,
    store: &async_nats::jetstream::kv::Store,
    node: &str,
    (revision, fence): (u64, lease::Fence),
    lease: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<Term, ClusterError> {
    let (lost_tx, mut lost) = watch::channel(false);
    let (release_tx, release) = watch::channel(false);
    let holder = tokio::spawn(lease::hold(
        store.clone(),
        node.to_owned(),
        revision,
        lease,
        fence.clone(),
        lost_tx,
        release,
    ));
    let names = target.names();
    let outbox =
        Arc::new(JetStreamOutbox::open(js, &names, target.replicas).await?.with_fence(fence.clone()));
    let notifiers = build_notifiers(config, registry)?;
    let (hook, requests) = stops::hook();
    let mut options = Options::new(config.daemon.stall_after).with_stop_hook(Some(hook));
    // Lost processes are the edges' to see: the leader's machine is not the runs'.
    options.hostname = String::new();
    let dispatcher = Dispatcher::start(outbox.clone(), notifiers, options).await?;
    let handle = dispatcher.handle();
    let (done_tx, done) = watch::channel(false);
    let publisher = match stops::bucket(js, &names, target.replicas).await {
        Ok(store) => Some(tokio::spawn(stops::publish(store, requests, done.clone()))),
        Err(e) => {
            tracing::warn!(error = %e, "stop requests from here cannot reach the edges");
            None
        }
    };
    let shower = match crate::status::bucket(js, &names, target.replicas).await {
        Ok(store) => {
            Some(tokio::spawn(crate::status::publish(store, handle.clone(), fence.clone(), done.clone())))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the leader's status cannot reach the other nodes");
            None
        }
    };
    let consumer = consumer_from_floor(js, &names).await;
    let term = match consumer {
        Ok(consumer) => loop {
            tokio::select! {
                _ = stop.changed() => if *stop.borrow() { break Ok(Term::Stopped) },
                _ = lost.changed() => break Ok(Term::Lost),
                fetched = fetch(&consumer), if fence.holds() => match fetched {
                    Ok(batch) => {
                        if let Err(e) = ingest(&handle, &outbox, batch).await {
                            tracing::warn!(error = %e, "cannot apply a batch from the stream; it will be read again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the stream; trying again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        },
        Err(e) => Err(e),
    };
    let drain = match term {
        Ok(Term::Stopped) => config.daemon.drain_timeout,
        _ => Duration::ZERO,
    };
    let _ = done_tx.send(true);
    if let Some(publisher) = publisher {
        let _ = publisher.await;
    }
    if let Some(shower) = shower {
        let _ = shower.await;
    }
    dispatcher.shutdown(drain).await;
    let _ = release_tx.send(matches!(term, Ok(Term::Stopped)));
    drop(release_tx);
    let _ = holder.await;
    term
}

/// The durable consumer, re-created to start after what was acknowledged (a dead leader's unacknowledged
/// batch comes again at once, not after the acknowledgement timeout).
async fn consumer_from_floor(
    js: &jetstream::Context,
    names: &crate::names::Names,
) -> Result<consumer::PullConsumer, ClusterError> {
    let stream =
        js.get_stream(names.stream()).await.map_err(|e| ClusterError::nats("cannot open the stream", &e))?;
    let name = names.consumer();
    let deliver_policy = match stream.consumer_info(&name).await {
        Ok(info) => {
            let floor = info.ack_floor.stream_sequence;
            let _ = stream.delete_consumer(&name).await;
            consumer::DeliverPolicy::ByStartSequence { start_sequence: floor + 1 }
        }
        Err(_) => consumer::DeliverPolicy::All,
    };
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 20_000,
        deliver_policy,
        ..consumer::pull::Config::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| ClusterError::nats(&format!("cannot create the consumer {name}"), &e))
}

/// Up to [`BATCH`] messages or [`BATCH_BYTES`] (at least one message), waiting at most [`FETCH_WAIT`].
async fn fetch(consumer: &consumer::PullConsumer) -> Result<Vec<jetstream::Message>, ClusterError> {
    let mut batch = consumer
        .fetch()
        .max_messages(BATCH)
        .max_bytes(BATCH_BYTES)
        .expires(FETCH_WAIT)
        .messages()
        .await
        .map_err(|e| ClusterError::nats("cannot fetch from the stream", &e))?;
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        match m {
            Ok(m) => out.push(m),
            Err(e) => {
                tracing::debug!(error = %e, "fetch ended");
                break;
            }
        }
    }
    Ok(out)
}

/// Commit one batch (its messages' events and packs of events) through the dispatcher, with where each
/// event is in the stream, then acknowledge it (its last message acknowledges all).
async fn ingest(
    handle: &Handle,
    outbox: &JetStreamOutbox,
    batch: Vec<jetstream::Message>,
) -> Result<(), ClusterError> {
    let Some(last) = batch.last() else { return Ok(()) };
    let mut events = Vec::with_capacity(batch.len());
    let mut positions = Vec::new();
    for m in &batch {
        match decode_batch(&m.payload) {
            Ok(pack) => {
                // Where each event is, so that its jobs name the message instead of copying the event.
                if let Ok(info) = m.info() {
                    let at = info.stream_sequence;
                    positions.extend(pack.iter().map(|e| (e.run.clone(), e.seq, at)));
                }
                events.extend(pack)
            }
            Err(e) => {
                tracing::warn!(subject = %m.subject, error = %e, "skipping a message that is not Herald events")
            }
        }
    }
    if !events.is_empty() {
        outbox.note_positions(positions);
        handle.ingest(events).await?;
    }
    last.ack().await.map_err(|e| ClusterError::nats("cannot acknowledge a batch", &e))
}

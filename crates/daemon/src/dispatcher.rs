//! The dispatcher: the part of the daemon that turns accepted events into deliveries. This module starts and
//! stops it; the parts live beside it, each depending only on the ones below it:
//!
//! - `shared.rs`: the state every part shares (runs, notifier slots, phase, write operations);
//! - `writer.rs`: the only writer of the outbox, with group commit;
//! - `worker.rs`: one supervised worker per notifier, delivering in order with rate limits and retries;
//! - `periodic.rs`: the run watch (stalled and lost runs), health checks and compaction;
//! - `handle.rs`: the [`Handle`] the API, the in-process link and phone commands use;
//! - `outbox/`: the storage seam ([`Outbox`]) with its file and in-memory implementations.
//!
//! `herald serve` wraps it in HTTP (`server.rs`); `herald train` embeds it when no daemon answers
//! (`embedded.rs`). It does not parse configuration files or speak HTTP.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::error::DaemonError;
use crate::handle::Handle;
use crate::limits;
use crate::outbox::Outbox;
use crate::periodic;
use crate::shared::{NotifierSpec, Options, Phase, Shared, Slot, Stats, WriteOp, now_ms};
use crate::worker;

/// Depth of the writer's channel.
const WRITER_QUEUE: usize = 1024;

/// The running dispatcher.
pub struct Dispatcher {
    handle: Handle,
    phase: watch::Sender<Phase>,
    /// One supervised worker per notifier.
    workers: JoinSet<()>,
    /// The periodic tasks.
    tasks: JoinSet<()>,
    /// Command listeners of notifiers that take commands (`host.rs`); aborted at shutdown.
    listeners: JoinSet<()>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Dispatcher {
    /// Read the outbox, then start the writer, one worker per notifier, the periodic tasks and the command
    /// listeners. Call inside a tokio runtime.
    pub async fn start(
        outbox: Arc<dyn Outbox>,
        notifiers: Vec<NotifierSpec>,
        options: Options,
    ) -> Result<Dispatcher, DaemonError> {
        let runs = outbox.runs().await?;
        let counts = outbox.job_counts().await?;
        let next_id = outbox.next_job_id().await?;
        let slots: Vec<Arc<Slot>> = notifiers.into_iter().map(|spec| slot(spec, &counts)).collect();
        let shared = Arc::new(Shared {
            outbox,
            runs: Mutex::new(runs),
            slots,
            options,
            started: Instant::now(),
            started_ms: now_ms(),
            events: tokio::sync::broadcast::channel(crate::shared::EVENTS_BROADCAST).0,
        });
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer = tokio::spawn(crate::writer::run(shared.clone(), rx, next_id));
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let handle = Handle::new(shared.clone(), tx);
        let mut workers = JoinSet::new();
        for index in 0..shared.slots.len() {
            workers.spawn(worker::supervise(
                index,
                shared.clone(),
                handle.writer().clone(),
                phase_rx.clone(),
            ));
        }
        let mut tasks = JoinSet::new();
        let h = handle.clone();
        let watch_every = periodic::watch_period(shared.options.stall_after);
        tasks.spawn(periodic::every(watch_every, phase_rx.clone(), move || {
            let h = h.clone();
            async move { periodic::watch_runs(&h).await }
        }));
        let health = shared.clone();
        let failures_seen = Arc::new(tokio::sync::Mutex::new(vec![None; shared.slots.len()]));
        tasks.spawn(periodic::every(periodic::HEALTH_RECHECK, phase_rx.clone(), move || {
            let (health, failures_seen) = (health.clone(), failures_seen.clone());
            async move {
                periodic::check_health(&health, &mut failures_seen.lock().await).await;
                true
            }
        }));
        let h = handle.clone();
        tasks.spawn(periodic::every(Duration::from_secs(3600), phase_rx, move || {
            let h = h.clone();
            async move { periodic::forget_old_runs(&h).await }
        }));
        let mut listeners = JoinSet::new();
        let host: Arc<dyn herald_plugin::Host> = Arc::new(crate::host::DaemonHost::new(handle.clone()));
        for slot in shared.slots.iter().filter(|s| s.notifier.capabilities().commands) {
            listeners.spawn(crate::host::listen(slot.name.clone(), slot.notifier.clone(), host.clone()));
        }
        Ok(Dispatcher { handle, phase, workers, tasks, listeners, writer: Some(writer) })
    }

    /// A handle for submitting events and reading status.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stop: deliver what is ready for up to `drain`, then leave the rest in the outbox for the next start.
    /// Returns the deliveries left in the outbox.
    pub async fn shutdown(mut self, drain: Duration) -> u64 {
        // No more commands once shutting down.
        self.listeners.abort_all();
        while self.listeners.join_next().await.is_some() {}
        let _ = self.phase.send(Phase::Draining);
        let deadline = tokio::time::Instant::now() + drain;
        tracing::info!(queued = self.handle.queued(), drain_s = drain.as_secs_f64(), "draining deliveries");
        // The workers end on their own once nothing is ready; the periodic tasks end at Draining.
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.workers.join_next()).await {}
        let _ = self.phase.send(Phase::Stopped);
        while self.workers.join_next().await.is_some() {}
        while self.tasks.join_next().await.is_some() {}
        let _ = self.handle.writer().send(WriteOp::Exit).await;
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        let left = self.handle.queued();
        tracing::info!(left, "dispatcher stopped");
        left
    }
}

/// A notifier's slot: its rate (configured, or its type's default) and its jobs already waiting.
fn slot(spec: NotifierSpec, counts: &HashMap<String, u64>) -> Arc<Slot> {
    let rate = match (spec.routing.rate_per_s, spec.routing.burst) {
        (Some(r), b) => Some((r, b.unwrap_or(1))),
        (None, Some(b)) => limits::default_rate(&spec.kind).map(|(r, _)| (r, b)),
        (None, None) => limits::default_rate(&spec.kind),
    };
    let stats = Stats::default();
    stats.queued.store(counts.get(&spec.name).copied().unwrap_or(0), Ordering::Relaxed);
    Arc::new(Slot {
        name: spec.name,
        kind: spec.kind,
        notifier: Arc::from(spec.notifier),
        routing: spec.routing,
        rate,
        wake: Notify::new(),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use herald_event::{EpochEnded, Message, Metrics, RunStarted};
    use herald_plugin::{DeliveryError, Notification};

    use super::*;
    use crate::api::RunControl;
    use crate::config::Routing;
    use crate::outbox::{MemoryOutbox, RedbOutbox};
    use crate::periodic::stall_threshold;
    use herald_event::{Event, EventKind};
    use herald_plugin::{Notifier, Receipt};

    fn memory() -> Arc<dyn Outbox> {
        Arc::new(MemoryOutbox::new())
    }

    fn disk(dir: &std::path::Path) -> Arc<dyn Outbox> {
        Arc::new(RedbOutbox::open(dir).expect("store"))
    }

    #[derive(Clone, Copy)]
    enum Behaviour {
        Ok,
        Panic,
        Hang,
        FailRetryable,
    }

    struct Fake {
        behaviour: Behaviour,
        seen: Arc<Mutex<Vec<(String, u64, EventKind)>>>,
    }

    #[async_trait::async_trait]
    impl Notifier for Fake {
        fn kind(&self) -> &str {
            "fake"
        }

        async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
            match self.behaviour {
                Behaviour::Ok => {}
                Behaviour::Panic => panic!("fake notifier bug"),
                Behaviour::Hang => std::future::pending::<()>().await,
                Behaviour::FailRetryable => {
                    return Err(DeliveryError::retryable("down").with_retry_after(Duration::from_millis(300)));
                }
            }
            self.seen.lock().expect("seen lock").push((n.event.run.clone(), n.event.seq, n.event.kind()));
            Ok(Receipt(serde_json::json!({ "seq": n.event.seq })))
        }
    }

    type Seen = Arc<Mutex<Vec<(String, u64, EventKind)>>>;

    fn spec(name: &str, behaviour: Behaviour, tweak: impl FnOnce(&mut Routing)) -> (NotifierSpec, Seen) {
        let seen: Seen = Arc::default();
        let mut routing = Routing { timeout: Duration::from_millis(200), ..Routing::default() };
        tweak(&mut routing);
        let notifier = Box::new(Fake { behaviour, seen: seen.clone() });
        (NotifierSpec { name: name.into(), kind: "fake".into(), notifier, routing }, seen)
    }

    fn options() -> Options {
        Options {
            stall_after: Duration::from_secs(3600),
            hostname: "test-host".into(),
            rules: Vec::new(),
            slow_rank_factor: 1.5,
            clock: Default::default(),
            on_stop: None,
        }
    }

    fn message(run: &str, seq: u64) -> Event {
        Event::now(run, seq, Message { title: "t".into(), text: "x".into(), level: Default::default() })
    }

    fn started(run: &str) -> Event {
        Event::now(
            run,
            0,
            RunStarted {
                name: run.into(),
                host: "elsewhere".into(),
                pid: 1,
                rank: 0,
                job: None,
                world_size: None,
                n_epochs: 6,
                batches_per_epoch: 1,
                metric_names: vec![],
                hyper: Default::default(),
            },
        )
    }

    fn epoch(run: &str, e: u32) -> Event {
        Event::now(
            run,
            u64::from(e) + 1,
            EpochEnded {
                epoch: e,
                n_epochs: 6,
                train_loss: 1.0,
                valid_loss: None,
                metrics: Metrics::default(),
                elapsed_s: 0.01,
            },
        )
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn seqs(seen: &Seen) -> Vec<u64> {
        seen.lock().expect("seen lock").iter().map(|s| s.1).collect()
    }

    #[test]
    fn the_stall_threshold_is_never_under_three_epochs() {
        let check = |after_s: u64, longest: f64, expected_s: f64| {
            let got = stall_threshold(Duration::from_secs(after_s), longest);
            assert!((got.as_secs_f64() - expected_s).abs() < 1e-6, "{after_s} {longest}: {got:?}");
        };
        check(900, 0.0, 900.0);
        check(900, 100.0, 900.0);
        check(900, 400.0, 1200.0);
        check(60, f64::NAN, 60.0);
        check(60, f64::INFINITY, 60.0);
        check(60, -5.0, 60.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_or_hanging_notifier_never_stalls_the_others() {
        let (ok, seen) = spec("ok", Behaviour::Ok, |_| {});
        let (boom, _) = spec("boom", Behaviour::Panic, |_| {});
        let (hang, _) = spec("hang", Behaviour::Hang, |_| {});
        let d = Dispatcher::start(memory(), vec![boom, hang, ok], options()).await.expect("start");
        let h = d.handle();
        let reply = h.ingest((0..3).map(|s| message("r", s)).collect()).await.expect("ingest");
        assert_eq!(reply.accepted, 3);
        until("three deliveries to the healthy notifier", || seqs(&seen).len() == 3).await;
        assert_eq!(seqs(&seen), vec![0, 1, 2]);
        until("the panics recorded as give-ups", || h.status().notifiers[0].gave_up == 3).await;
        let status = h.status();
        let boom = &status.notifiers[0];
        assert!(boom.recent_give_ups[0].error.contains("panicked"), "{:?}", boom.recent_give_ups);
        until("the hanging notifier's timeouts", || h.status().notifiers[1].failed_attempts >= 1).await;
        let hang = &h.status().notifiers[1];
        assert!(hang.last_error.as_deref().unwrap_or("").contains("no answer within"), "{hang:?}");
        assert_eq!(hang.queue, 3, "timed-out jobs wait for their retry");
        d.shutdown(Duration::from_millis(100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn min_interval_sends_the_latest_epoch_never_a_backlog() {
        let (ok, seen) = spec("ok", Behaviour::Ok, |r| r.min_interval = Duration::from_millis(300));
        let d = Dispatcher::start(memory(), vec![ok], options()).await.expect("start");
        let h = d.handle();
        let mut events = vec![started("r")];
        events.extend((0..5).map(|e| epoch("r", e)));
        h.ingest(events).await.expect("ingest");
        until("run_started and the latest epoch", || seqs(&seen).len() == 2).await;
        assert_eq!(seqs(&seen), vec![0, 5], "epochs 0..3 superseded by epoch 4 (seq 5)");
        assert_eq!(h.status().notifiers[0].superseded, 4);
        // The next epoch waits for min_interval after the last send.
        let sent = Instant::now();
        h.ingest(vec![epoch("r", 5)]).await.expect("ingest");
        until("the next epoch", || seqs(&seen).len() == 3).await;
        assert!(sent.elapsed() >= Duration::from_millis(150), "{:?}", sent.elapsed());
        d.shutdown(Duration::from_millis(100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_jobs_survive_a_restart_and_delivered_ones_are_not_resent() {
        let dir = tempfile::tempdir().expect("temp dir");
        // First life: one delivery succeeds, the notifier of the second job is down.
        {
            let (ok, seen) = spec("hook", Behaviour::Ok, |_| {});
            let d = Dispatcher::start(disk(dir.path()), vec![ok], options()).await.expect("start");
            d.handle().ingest(vec![message("r", 0)]).await.expect("ingest");
            until("the first delivery", || seqs(&seen) == vec![0]).await;
            until("its outcome recorded", || d.handle().queued() == 0).await;
            d.shutdown(Duration::from_millis(100)).await;
        }
        {
            let (down, _) = spec("hook", Behaviour::FailRetryable, |_| {});
            let d = Dispatcher::start(disk(dir.path()), vec![down], options()).await.expect("start");
            let reply = d.handle().ingest(vec![message("r", 0), message("r", 1)]).await.expect("ingest");
            assert_eq!(reply.accepted, 2, "a duplicate is accepted and not queued again");
            until("a failed attempt", || d.handle().status().notifiers[0].failed_attempts >= 1).await;
            assert_eq!(d.handle().queued(), 1);
            assert_eq!(d.shutdown(Duration::from_millis(100)).await, 1, "the job stays in the outbox");
        }
        // Third life: the job is delivered, once; the first message is not sent again.
        let (ok, seen) = spec("hook", Behaviour::Ok, |_| {});
        let d = Dispatcher::start(disk(dir.path()), vec![ok], options()).await.expect("start");
        until("the kept job", || seqs(&seen) == vec![1]).await;
        until("the outbox emptied", || d.handle().queued() == 0).await;
        assert_eq!(seqs(&seen), vec![1]);
        assert_eq!(d.shutdown(Duration::from_millis(100)).await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unencodable_event_is_dropped_alone_not_with_its_batch() {
        let (ok, seen) = spec("ok", Behaviour::Ok, |r| r.events.push(EventKind::BatchEnded));
        let d = Dispatcher::start(memory(), vec![ok], options()).await.expect("start");
        let bad = Event::now(
            "r",
            1,
            herald_event::BatchEnded {
                epoch: 0,
                batch: 0,
                n_batches: 1,
                loss: 1.0,
                smooth_loss: 1.0,
                lr: f64::NAN,
            },
        );
        let reply = d.handle().ingest(vec![message("r", 0), bad, message("r", 2)]).await.expect("ingest");
        assert_eq!(reply.accepted, 2);
        until("the two good events", || seqs(&seen).len() == 2).await;
        assert_eq!(seqs(&seen), vec![0, 2]);
        d.shutdown(Duration::from_millis(100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_requests_come_back_in_control_and_unknown_runs_are_refused() {
        let (ok, _) = spec("ok", Behaviour::Ok, |_| {});
        let d = Dispatcher::start(memory(), vec![ok], options()).await.expect("start");
        let h = d.handle();
        assert!(!h.request_stop("nope", "x").await.expect("stop"));
        let reply = h.ingest(vec![started("r")]).await.expect("ingest");
        assert!(!reply.control["r"].stop);
        assert!(h.request_stop("r", "from the phone").await.expect("stop"));
        let reply = h.ingest(vec![epoch("r", 0)]).await.expect("ingest");
        assert_eq!(reply.control["r"], RunControl { stop: true, reason: Some("from the phone".into()) });
        d.shutdown(Duration::from_millis(100)).await;
    }
}

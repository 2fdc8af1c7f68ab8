//! Distributed jobs through the dispatcher: one stream per job (rank 0's events and the job events), the job's
//! end made as its last rank ends with the worst status, a non-zero rank's failure as `rank_failed`, the health
//! line in rank 0's context, and a stop request for the job reaching every rank still running.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_daemon::{Dispatcher, MemoryOutbox, NotifierSpec, Options};
use herald_event::{EpochEnded, Event, Payload, RunFailed, RunFinished, RunStarted, RunStatus};
use herald_plugin::{DeliveryError, Notification, Notifier, Receipt};

const MADE: u64 = 1 << 48;

type Seen = Arc<Mutex<Vec<Event>>>;

struct Recorder(Seen);

#[async_trait::async_trait]
impl Notifier for Recorder {
    fn kind(&self) -> &str {
        "recorder"
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        self.0.lock().expect("seen lock").push(n.event.clone());
        Ok(Receipt(serde_json::json!({})))
    }
}

async fn start() -> (Dispatcher, Seen) {
    let seen: Seen = Arc::default();
    let spec = NotifierSpec {
        name: "phone".into(),
        kind: "recorder".into(),
        notifier: Box::new(Recorder(seen.clone())),
        routing: Default::default(),
    };
    let options = Options { hostname: "here".into(), ..Options::new(Duration::from_secs(3600)) };
    let d = Dispatcher::start(Arc::new(MemoryOutbox::new()), vec![spec], options).await.expect("dispatcher");
    (d, seen)
}

fn run(rank: u32) -> String {
    format!("job-7-r{rank}")
}

fn started(rank: u32) -> Event {
    let s = RunStarted {
        name: "ddp".into(),
        host: format!("gpu-{rank}"),
        pid: 1,
        rank,
        job: Some("job-7".into()),
        world_size: Some(3),
        n_epochs: 2,
        batches_per_epoch: 1,
        metric_names: vec![],
        hyper: Default::default(),
    };
    Event::now(run(rank), 0, s)
}

fn epoch(rank: u32, e: u32, elapsed_s: f64) -> Event {
    let p = EpochEnded {
        epoch: e,
        n_epochs: 2,
        train_loss: 0.5,
        valid_loss: None,
        metrics: Default::default(),
        elapsed_s,
    };
    Event::now(run(rank), u64::from(e) + 1, p)
}

fn finished(rank: u32, status: RunStatus) -> Event {
    Event::now(run(rank), 9, RunFinished { status, reason: "done".into(), duration_s: 2.0, best: None })
}

/// Wait until the notifier saw an event `done` accepts; everything seen by then.
async fn until(seen: &Seen, what: &str, done: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = seen.lock().expect("seen lock").clone();
        if events.iter().any(&done) {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} never arrived; seen {events:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_job_is_one_stream_ending_once_every_rank_ended_with_the_worst_status() {
    let (d, seen) = start().await;
    let h = d.handle();
    for rank in 0..3 {
        h.ingest(vec![started(rank)]).await.expect("stored");
    }
    for e in 0..2 {
        for rank in 0..3 {
            h.ingest(vec![epoch(rank, e, if rank == 2 { 2.0 } else { 1.0 })]).await.expect("stored");
        }
    }
    let health =
        h.run_states().into_iter().find(|(id, _)| *id == run(0)).and_then(|(_, st)| st.context.health);
    assert_eq!(health.as_deref(), Some("3/3 ranks · slowest: rank 2 on gpu-2, +100%"));
    let failed = Event::now(run(1), 9, RunFailed { error: "CUDA out of memory".into(), traceback: None });
    h.ingest(vec![finished(0, RunStatus::Completed), failed, finished(2, RunStatus::Stopped)])
        .await
        .expect("stored");
    let events =
        until(&seen, "the job's end", |e| e.seq >= MADE && matches!(e.payload, Payload::RunFinished(_)))
            .await;
    // Nothing of ranks 1 and 2 themselves; rank 0's start and epochs; its own end held for the job's.
    assert!(events.iter().all(|e| e.run == run(0)), "{events:?}");
    let own: Vec<_> = events.iter().filter(|e| e.seq < MADE).map(Event::kind).collect();
    use herald_event::EventKind as K;
    assert_eq!(own, vec![K::RunStarted, K::EpochEnded, K::EpochEnded]);
    let ends: Vec<&RunFinished> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::RunFinished(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "{events:?}");
    assert_eq!(ends[0].status, RunStatus::Failed, "the worst of completed, failed and stopped");
    assert!(ends[0].reason.contains("1 completed, 1 stopped, 1 failed"), "{}", ends[0].reason);
    let events = until(&seen, "rank 1's rank_failed", |e| matches!(e.payload, Payload::RankFailed(_))).await;
    let failed = events.iter().find_map(|e| match &e.payload {
        Payload::RankFailed(f) => Some(f.clone()),
        _ => None,
    });
    let failed = failed.expect("rank_failed");
    assert_eq!(
        (failed.rank, failed.host.as_str(), failed.error.as_str()),
        (1, "gpu-1", "CUDA out of memory")
    );
    d.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_stop_for_the_job_or_any_rank_reaches_every_rank_still_running() {
    let (d, _) = start().await;
    let h = d.handle();
    for rank in 0..3 {
        h.ingest(vec![started(rank)]).await.expect("stored");
    }
    h.ingest(vec![finished(2, RunStatus::Completed)]).await.expect("stored");
    assert!(h.request_stop("job-7", "enough").await.expect("stored"), "the job id is known");
    let stops: Vec<bool> = (0..3).map(|r| h.control(&run(r)).stop).collect();
    assert_eq!(stops, vec![true, true, false], "rank 2 had ended already");
    assert_eq!(h.control(&run(1)).reason.as_deref(), Some("enough"));
    assert!(!h.request_stop("no-such-job", "x").await.expect("answered"));
    d.shutdown(Duration::from_secs(2)).await;

    // `/stop` for rank 0's run (the job's stream on the phone) reaches the other ranks too.
    let (d, _) = start().await;
    let h = d.handle();
    for rank in 0..2 {
        h.ingest(vec![started(rank)]).await.expect("stored");
    }
    assert!(h.request_stop(&run(0), "from the phone").await.expect("stored"));
    assert!(h.control(&run(1)).stop);
    d.shutdown(Duration::from_secs(2)).await;
}

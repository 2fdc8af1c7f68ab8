//! Quiet hours and digests through the dispatcher, with its clock set by the test: during quiet hours only
//! failures and `error` alerts go out, the rest waits in the outbox and goes out as one digest when they end
//! (also after a restart, over the redb and the memory outbox), `digest = "1h"` sends one per period, and a
//! failed digest is retried, a refused one given up with its jobs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_daemon::config::Routing;
use herald_daemon::quiet::schedule::zone;
use herald_daemon::quiet::{Clock, Quiet};
use herald_daemon::{Dispatcher, MemoryOutbox, NotifierSpec, Options, Outbox, RedbOutbox};
use herald_event::{
    Alert, Best, EpochEnded, Event, EventKind, Level, Payload, RunFailed, RunFinished, RunStarted, RunStatus,
};
use herald_plugin::{DeliveryError, Notification, Notifier, Receipt};

type Seen = Arc<Mutex<Vec<Notification>>>;

/// Records what it gets; fails each digest while `fail` holds errors for it (one per attempt).
struct Recorder(Seen, Arc<Mutex<Vec<DeliveryError>>>);

#[async_trait::async_trait]
impl Notifier for Recorder {
    fn kind(&self) -> &str {
        "recorder"
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        self.0.lock().expect("seen lock").push(n.clone());
        if n.event.run == "digest"
            && let Some(err) = self.1.lock().expect("fail lock").pop()
        {
            return Err(err);
        }
        Ok(Receipt(serde_json::json!({})))
    }
}

/// Milliseconds of an RFC 3339 instant.
fn ms(s: &str) -> u64 {
    let t: jiff::Timestamp = s.parse().expect("test instants are valid");
    u64::try_from(t.as_millisecond()).expect("after 1970")
}

fn quiet(hours: Option<&str>, digest: Option<Duration>) -> Quiet {
    let (zone, zone_name) = zone(Some("Europe/Berlin")).expect("tzdata is installed (cargo xtask setup)");
    Quiet { hours: hours.map(|h| h.parse().expect("a valid window")), digest, zone, zone_name }
}

async fn start(outbox: Arc<dyn Outbox>, quiet: Quiet, clock: &Clock) -> (Dispatcher, Seen) {
    start_failing(outbox, quiet, clock, Vec::new()).await
}

/// A dispatcher whose notifier fails its digests with `fail`'s errors, last first, then delivers them.
async fn start_failing(
    outbox: Arc<dyn Outbox>,
    quiet: Quiet,
    clock: &Clock,
    fail: Vec<DeliveryError>,
) -> (Dispatcher, Seen) {
    let seen: Seen = Arc::default();
    let spec = NotifierSpec {
        name: "phone".into(),
        kind: "recorder".into(),
        notifier: Box::new(Recorder(seen.clone(), Arc::new(Mutex::new(fail)))),
        routing: Routing { quiet: Some(quiet), ..Routing::default() },
    };
    let options = Options { clock: clock.clone(), ..Options::new(Duration::from_secs(24 * 3600)) };
    let d = Dispatcher::start(outbox, vec![spec], options).await.expect("dispatcher");
    (d, seen)
}

fn started(run: &str) -> Event {
    let s = RunStarted {
        name: run.into(),
        host: "gpu-1".into(),
        pid: 1,
        rank: 0,
        job: None,
        world_size: None,
        n_epochs: 3,
        batches_per_epoch: 1,
        metric_names: vec![],
        hyper: Default::default(),
    };
    Event::now(run, 0, s)
}

fn epoch(run: &str, e: u32, valid: f64) -> Event {
    let p = EpochEnded {
        epoch: e,
        n_epochs: 3,
        train_loss: 0.5 / f64::from(e + 1),
        valid_loss: Some(valid),
        metrics: Default::default(),
        elapsed_s: 1.0,
    };
    Event::now(run, u64::from(e) + 1, p)
}

fn alert(run: &str, seq: u64, level: Level, title: &str) -> Event {
    Event::now(run, seq, Alert { rule: None, title: title.into(), text: "look".into(), level, epoch: None })
}

fn finished(run: &str, seq: u64) -> Event {
    let best = Some(Best { name: "valid_loss".into(), value: 0.125, epoch: 2 });
    Event::now(
        run,
        seq,
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 3.0, best },
    )
}

/// Wait until the notifier got a notification `done` accepts; everything it got by then.
async fn until(seen: &Seen, what: &str, done: impl Fn(&Notification) -> bool) -> Vec<Notification> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = seen.lock().expect("seen lock").clone();
        if got.iter().any(&done) {
            return got;
        }
        let kinds: Vec<_> = got.iter().map(|n| n.title.clone()).collect();
        assert!(tokio::time::Instant::now() < deadline, "{what} never arrived; got {kinds:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the outbox holds `n` jobs.
async fn queued(d: &Dispatcher, n: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.handle().queued() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} jobs queued, not {n}",
            d.handle().queued()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_digest(n: &Notification) -> bool {
    n.event.run == "digest" && matches!(n.event.payload, Payload::Message(_))
}

/// The night: run `a` trains and finishes, `b` fails, alerts of two levels; what arrives at once.
async fn night(d: &Dispatcher, seen: &Seen) -> Vec<Notification> {
    let h = d.handle();
    h.ingest(vec![started("a"), epoch("a", 0, 0.5), epoch("a", 1, 0.25)]).await.expect("stored");
    h.ingest(vec![alert("a", 4, Level::Warning, "valid_loss plateau"), epoch("a", 2, 0.125)])
        .await
        .expect("stored");
    h.ingest(vec![
        started("b"),
        Event::now("b", 1, RunFailed { error: "CUDA out of memory".into(), traceback: None }),
    ])
    .await
    .expect("stored");
    h.ingest(vec![alert("a", 5, Level::Error, "loss is NaN"), finished("a", 6)]).await.expect("stored");
    until(
        seen,
        "the error alert",
        |n| matches!(&n.event.payload, Payload::Alert(a) if a.level == Level::Error),
    )
    .await
}

fn check_digest(digest: &Notification) {
    assert_eq!(
        digest.title, "digest: 7 notifications held from 2 runs, 1 finished, 1 alert",
        "{}",
        digest.text
    );
    for part in [
        "Held during quiet hours 22:30-07:00 (Europe/Berlin).",
        "a: completed after 00:03 · best valid_loss 0.125000 (epoch 3) · final train 0.166667 · valid 0.125000",
        "  3 epochs held",
        "  warning: valid_loss plateau (look)",
        "b: started",
    ] {
        assert!(digest.text.contains(part), "{part:?} in:\n{}", digest.text);
    }
}

#[tokio::test]
async fn quiet_hours_let_failures_through_and_send_the_rest_as_one_digest_when_they_end() {
    let clock = Clock::default();
    // 23:00 in Berlin (UTC+1 in January).
    clock.set_ms(ms("2026-01-14T22:00:00Z"));
    let (d, seen) = start(Arc::new(MemoryOutbox::new()), quiet(Some("22:30-07:00"), None), &clock).await;
    let got = night(&d, &seen).await;
    let kinds: Vec<EventKind> = got.iter().map(|n| n.event.kind()).collect();
    assert_eq!(kinds, [EventKind::RunFailed, EventKind::Alert], "only the urgent ones during quiet hours");
    queued(&d, 7, "the rest waits in the outbox").await;
    // 06:59:59 in Berlin: still quiet. A worker looks at the digest before anything else, so once a later
    // urgent alert is through, no digest went before it.
    clock.set_ms(ms("2026-01-15T05:59:59Z"));
    d.handle().ingest(vec![alert("z", 0, Level::Error, "probe")]).await.expect("stored");
    let got = until(&seen, "the probe", |n| n.event.run == "z").await;
    assert_eq!(got.len(), 3, "no digest before 07:00");
    // 07:00: the digest goes on its timer, without any new event.
    clock.set_ms(ms("2026-01-15T06:00:00Z"));
    let got = until(&seen, "the digest", is_digest).await;
    assert_eq!(
        got.len(),
        4,
        "one digest for everything held: {:?}",
        got.iter().map(|n| &n.title).collect::<Vec<_>>()
    );
    check_digest(&got[3]);
    queued(&d, 0, "the digested jobs leave the outbox").await;
    // After the quiet hours, notifications go at once again.
    d.handle().ingest(vec![started("c")]).await.expect("stored");
    until(&seen, "c's start", |n| n.event.run == "c").await;
    d.shutdown(Duration::from_secs(1)).await;
}

/// Held deliveries survive a restart: a dispatcher stopped in the night, started again after it.
async fn held_jobs_survive_a_restart(outbox: impl Fn() -> Arc<dyn Outbox>) {
    let clock = Clock::default();
    clock.set_ms(ms("2026-01-14T22:00:00Z"));
    let (d, seen) = start(outbox(), quiet(Some("22:30-07:00"), None), &clock).await;
    night(&d, &seen).await;
    d.shutdown(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().expect("seen lock").len(), 2, "nothing held went out at shutdown");
    clock.set_ms(ms("2026-01-15T08:00:00Z"));
    let (d, seen) = start(outbox(), quiet(Some("22:30-07:00"), None), &clock).await;
    let got = until(&seen, "the digest after the restart", is_digest).await;
    assert_eq!(got.len(), 1, "only the digest: {:?}", got.iter().map(|n| &n.title).collect::<Vec<_>>());
    check_digest(&got[0]);
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn held_jobs_survive_a_restart_in_redb() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().to_owned();
    held_jobs_survive_a_restart(move || Arc::new(RedbOutbox::open(&path).expect("the outbox opens"))).await;
}

#[tokio::test]
async fn held_jobs_survive_a_restart_in_memory() {
    let outbox = Arc::new(MemoryOutbox::new());
    held_jobs_survive_a_restart(move || outbox.clone() as Arc<dyn Outbox>).await;
}

#[tokio::test]
async fn a_digest_period_sends_one_digest_per_period_on_its_timer() {
    let clock = Clock::default();
    // 10:20 in Berlin: the period ends at 11:00 (10:00 UTC).
    clock.set_ms(ms("2026-01-14T09:20:00Z"));
    let (d, seen) =
        start(Arc::new(MemoryOutbox::new()), quiet(None, Some(Duration::from_secs(3600))), &clock).await;
    let h = d.handle();
    h.ingest(vec![started("a"), epoch("a", 0, 0.5)]).await.expect("stored");
    h.ingest(vec![Event::now("b", 0, RunFailed { error: "boom".into(), traceback: None })])
        .await
        .expect("stored");
    let got = until(&seen, "the failure", |n| n.event.kind() == EventKind::RunFailed).await;
    assert_eq!(got.len(), 1, "a failure goes at once in digest mode too");
    clock.set_ms(ms("2026-01-14T10:00:00Z"));
    let got = until(&seen, "the first digest", is_digest).await;
    assert_eq!(got.len(), 2);
    assert!(got[1].text.starts_with("Held for the digest (every 1:00:00)."), "{}", got[1].text);
    assert!(got[1].text.contains("a: epoch 1/3"), "{}", got[1].text);
    // The next period's notifications make the next digest, at 12:00 (11:00 UTC).
    h.ingest(vec![epoch("a", 1, 0.25), epoch("a", 2, 0.125)]).await.expect("stored");
    clock.set_ms(ms("2026-01-14T10:59:00Z"));
    h.ingest(vec![Event::now("c", 0, RunFailed { error: "probe".into(), traceback: None })])
        .await
        .expect("stored");
    let got = until(&seen, "the probe", |n| n.event.run == "c").await;
    assert_eq!(got.len(), 3, "no digest before the period ends");
    clock.set_ms(ms("2026-01-14T11:00:00Z"));
    let got = until(&seen, "the second digest", |n| is_digest(n) && n.text.contains("2 epochs held")).await;
    assert_eq!(got.len(), 4, "{:?}", got.iter().map(|n| (&n.title, &n.text)).collect::<Vec<_>>());
    assert!(got[3].text.contains("2 epochs held"), "{}", got[3].text);
    assert_ne!(got[1].event.seq, got[3].event.seq, "two digests never share a sequence number");
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failed_digest_is_retried_with_backoff_and_a_refused_one_given_up() {
    let clock = Clock::default();
    clock.set_ms(ms("2026-01-14T22:00:00Z"));
    let fail = vec![DeliveryError::retryable("service unavailable")];
    let (d, seen) =
        start_failing(Arc::new(MemoryOutbox::new()), quiet(Some("22:30-07:00"), None), &clock, fail).await;
    night(&d, &seen).await;
    clock.set_ms(ms("2026-01-15T06:00:00Z"));
    let got = until(&seen, "the first try of the digest", is_digest).await;
    assert_eq!(got.last().map(|n| n.attempt), Some(1));
    // The retry waits for its backoff (a second or more), then goes as the same digest.
    clock.advance(Duration::from_secs(600));
    let got = until(&seen, "the retry", |n| is_digest(n) && n.attempt == 2).await;
    assert_eq!(got.iter().filter(|n| is_digest(n)).count(), 2);
    assert_eq!(got[2].event.seq, got[3].event.seq, "a retry keeps the digest's sequence number");
    check_digest(&got[3]);
    queued(&d, 0, "the jobs leave the outbox once the digest is through").await;
    d.shutdown(Duration::from_secs(1)).await;

    // A permanent error gives the digest and its jobs up.
    let fail = vec![DeliveryError::permanent("unknown recipient")];
    clock.set_ms(ms("2026-01-15T22:00:00Z"));
    let (d, seen) =
        start_failing(Arc::new(MemoryOutbox::new()), quiet(Some("22:30-07:00"), None), &clock, fail).await;
    night(&d, &seen).await;
    clock.set_ms(ms("2026-01-16T06:00:00Z"));
    until(&seen, "the refused digest", is_digest).await;
    queued(&d, 0, "the given-up jobs leave the outbox").await;
    let status = d.handle().status();
    let gave_up = status.notifiers.iter().map(|n| n.gave_up).sum::<u64>();
    assert_eq!(gave_up, 7, "every held job is given up with the digest");
    d.shutdown(Duration::from_secs(1)).await;
}

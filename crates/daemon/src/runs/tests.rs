//! Tests of the run records, their routing and the phone's changes.

use std::time::Duration;

use herald_event::{
    BatchEnded, EpochStarted, EventKind, Message, Metrics, RunFailed, RunFinished, RunStarted,
};

use super::*;
use crate::config::Routing;

fn routing() -> Routing {
    Routing {
        events: vec![
            EventKind::RunStarted,
            EventKind::EpochEnded,
            EventKind::RunFinished,
            EventKind::RunFailed,
            EventKind::RunStalled,
            EventKind::RunLost,
            EventKind::Message,
        ],
        every_n_epochs: 1,
        min_interval: Duration::ZERO,
        only_on_improvement: None,
        rate_per_s: None,
        burst: None,
        timeout: Duration::from_secs(30),
        max_age: Duration::from_secs(86400),
        quiet: None,
        all_ranks: false,
    }
}

fn started(rank: u32) -> Event {
    Event::now(
        "r",
        0,
        RunStarted {
            name: "mnist".into(),
            host: "h".into(),
            pid: 1,
            rank,
            job: None,
            world_size: None,
            n_epochs: 4,
            batches_per_epoch: 10,
            metric_names: vec!["accuracy".into()],
            hyper: BTreeMap::new(),
        },
    )
}

fn epoch(epoch: u32, valid_loss: f64, accuracy: f64) -> Event {
    Event::now(
        "r",
        u64::from(epoch) + 1,
        EpochEnded {
            epoch,
            n_epochs: 4,
            train_loss: 1.0,
            valid_loss: Some(valid_loss),
            metrics: Metrics(vec![("accuracy".into(), accuracy)]),
            elapsed_s: 2.0,
        },
    )
}

fn run_after(events: &[Event]) -> RunState {
    let mut st = RunState::new("r");
    for e in events {
        st.apply(e, false, 1);
    }
    st
}

#[test]
fn default_events_skip_batches_and_epoch_starts() {
    let r = routing();
    let st = run_after(&[started(0)]);
    let batch = Event::now(
        "r",
        1,
        BatchEnded { epoch: 0, batch: 0, n_batches: 10, loss: 1.0, smooth_loss: 1.0, lr: 0.1 },
    );
    assert!(!accepts(&r, &st, &batch));
    assert!(!accepts(&r, &st, &Event::now("r", 1, EpochStarted { epoch: 0 })));
    assert!(accepts(&r, &st, &epoch(0, 1.0, 0.5)));
    let msg = Event::now("r", 2, Message { title: "t".into(), text: "x".into(), level: Default::default() });
    assert!(accepts(&r, &st, &msg));
}

#[test]
fn only_rank_zero_starts_epochs_and_finishes_but_any_rank_fails() {
    let r = routing();
    let st = run_after(&[started(1)]);
    assert!(!accepts(&r, &RunState::new("r"), &started(1)));
    assert!(!accepts(&r, &st, &epoch(0, 1.0, 0.5)));
    let finished = Event::now(
        "r",
        9,
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None },
    );
    assert!(!accepts(&r, &st, &finished));
    let failed = Event::now("r", 9, RunFailed { error: "oom".into(), traceback: None });
    assert!(accepts(&r, &st, &failed));
    assert!(accepts(&r, &run_after(&[started(0)]), &finished));
}

#[test]
fn every_n_epochs_sends_each_nth_and_the_last() {
    let mut r = routing();
    r.every_n_epochs = 3;
    let st = run_after(&[started(0)]);
    let sent: Vec<u32> = (0..4).filter(|&e| accepts(&r, &st, &epoch(e, 1.0, 0.5))).collect();
    assert_eq!(sent, vec![2, 3]);
}

#[test]
fn only_on_improvement_follows_the_metric_direction() {
    let check = |metric: &str, epochs: &[(f64, f64)], expected: &[bool]| {
        let mut r = routing();
        r.only_on_improvement = Some(metric.to_owned());
        let mut st = run_after(&[started(0)]);
        let mut got = Vec::new();
        for (i, (vl, acc)) in epochs.iter().enumerate() {
            let e = epoch(i as u32, *vl, *acc);
            got.push(accepts(&r, &st, &e));
            st.apply(&e, false, 2);
        }
        assert_eq!(got, expected, "{metric}");
    };
    check("valid_loss", &[(1.0, 0.5), (0.8, 0.4), (0.9, 0.6), (0.7, 0.6)], &[true, true, false, true]);
    check("accuracy", &[(1.0, 0.5), (0.8, 0.4), (0.9, 0.6), (0.7, 0.6)], &[true, false, true, false]);
    check("accuracy", &[(1.0, f64::NAN), (1.0, 0.1)], &[false, true]);
    check("missing", &[(1.0, 0.5)], &[false]);
}

#[test]
fn a_run_state_after_a_nan_batch_survives_a_restart() {
    let mut st = run_after(&[started(0)]);
    let nan =
        BatchEnded { epoch: 0, batch: 3, n_batches: 10, loss: f64::NAN, smooth_loss: f64::NAN, lr: 0.1 };
    st.apply(&Event::now("r", 1, nan), false, 2);
    let stored = serde_json::to_vec(&st).expect("a run state encodes");
    let back: RunState = serde_json::from_slice(&stored).expect("a run state with a NaN loss decodes");
    let (epoch, batch, n, loss) = back.last_batch.expect("the batch is kept");
    assert_eq!((epoch, batch, n), (0, 3, 10));
    assert!(loss.is_nan());
}

#[test]
fn a_later_event_clears_the_stalled_and_lost_flags() {
    let mut st = run_after(&[started(0)]);
    let stalled =
        Event::now("r", MADE_SEQ_BASE, herald_event::RunStalled { silent_s: 10.0, stall_after_s: 5.0 });
    st.apply(&stalled, true, 5);
    assert!(st.stalled);
    assert_eq!(st.last_event_ms, 1, "a made event is no sign of life");
    assert_eq!(st.state_word(), "stalled");
    st.apply(&epoch(0, 1.0, 0.5), false, 6);
    assert!(!st.stalled);
    assert_eq!(st.longest_epoch_s, 2.0);
    assert_eq!(st.state_word(), "running");
}

#[test]
fn a_muted_run_holds_back_routine_updates_only_until_the_mute_ends() {
    let mut r = routing();
    r.events.extend([EventKind::BatchEnded, EventKind::EpochStarted, EventKind::Heartbeat, EventKind::Alert]);
    let mut st = run_after(&[started(0)]);
    st.change(RunChange::Mute(Mute { until_ms: Some(1_000), by: "@me".into() }));
    let batch = Event::now(
        "r",
        1,
        BatchEnded { epoch: 0, batch: 0, n_batches: 10, loss: 1.0, smooth_loss: 1.0, lr: 0.1 },
    );
    let finished = Event::now(
        "r",
        9,
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None },
    );
    let failed = Event::now("r", 9, RunFailed { error: "oom".into(), traceback: None });
    let alert = Event::now(
        "r",
        MADE_SEQ_BASE,
        herald_event::Alert {
            rule: Some("t".into()),
            title: "t".into(),
            text: "x".into(),
            level: Default::default(),
            epoch: None,
        },
    );
    let stalled =
        Event::now("r", MADE_SEQ_BASE, herald_event::RunStalled { silent_s: 10.0, stall_after_s: 5.0 });
    let lost = Event::now("r", MADE_SEQ_BASE, herald_event::RunLost { pid: 1, reason: "gone".into() });
    let msg = Event::now("r", 2, Message { title: "t".into(), text: "x".into(), level: Default::default() });
    let heartbeat = Event::now("r", 3, herald_event::Heartbeat {});
    let sent = |st: &RunState, events: &[&Event], now: u64| -> Vec<bool> {
        events.iter().map(|e| accepts(&r, st, e) && !muted(st, e, now)).collect()
    };
    let routine = [&epoch(0, 1.0, 0.5), &batch, &Event::now("r", 1, EpochStarted { epoch: 0 }), &heartbeat];
    assert_eq!(sent(&st, &routine, 999), [false; 4], "muted");
    assert_eq!(sent(&st, &routine, 1_000), [true; 4], "the mute has ended");
    let always = [&finished, &failed, &alert, &stalled, &lost, &msg];
    assert_eq!(sent(&st, &always, 999), [true; 6], "never muted");
    // Until unmuted: no end; /unmute ends it, and a second /unmute changes nothing.
    st.change(RunChange::Mute(Mute { until_ms: None, by: "@me".into() }));
    assert_eq!(sent(&st, &routine, u64::MAX), [false; 4]);
    assert_eq!(st.change(RunChange::Unmute), 1);
    assert_eq!(st.change(RunChange::Unmute), 0);
    assert_eq!(sent(&st, &routine, 0), [true; 4]);
}

#[test]
fn phone_rules_are_added_replaced_and_removed_by_metric_and_survive_a_restart() {
    let mut st = run_after(&[started(0)]);
    let watch = |metric: &str, op: &str, value: f64| Watch {
        metric: metric.into(),
        op: op.into(),
        value,
        by: "@me".into(),
        added_ms: 1,
        fired: None,
    };
    assert_eq!(st.change(RunChange::Watch(watch("accuracy", ">=", 0.9))), 1);
    assert_eq!(st.change(RunChange::Watch(watch("accuracy", ">=", 0.9))), 1, "the same rule replaces");
    assert_eq!(st.change(RunChange::Watch(watch("accuracy", ">=", 0.95))), 1);
    assert_eq!(st.change(RunChange::Watch(watch("valid_loss", "<", 0.1))), 1);
    st.change(RunChange::Mute(Mute { until_ms: None, by: "@me".into() }));
    assert_eq!(st.watches.len(), 3);
    assert_eq!(st.watches[0].name(), "watch accuracy >= 0.9");
    let stored = serde_json::to_vec(&st).expect("encodes");
    let mut back: RunState = serde_json::from_slice(&stored).expect("decodes");
    assert_eq!((back.watches.clone(), back.mute.clone()), (st.watches.clone(), st.mute.clone()));
    assert_eq!(back.change(RunChange::Unwatch { metric: Some("accuracy".into()) }), 2);
    assert_eq!(back.change(RunChange::Unwatch { metric: Some("accuracy".into()) }), 0);
    assert_eq!(back.change(RunChange::Unwatch { metric: None }), 1);
    assert!(back.watches.is_empty());
    for i in 0..MAX_WATCHES + 1 {
        back.change(RunChange::Watch(watch("accuracy", ">", i as f64)));
    }
    assert_eq!(back.watches.len(), MAX_WATCHES, "bounded");
}

#[test]
fn a_run_counts_the_alerts_each_rule_made_for_it() {
    let mut st = run_after(&[started(0)]);
    let alert = |rule: Option<&str>| herald_event::Alert {
        rule: rule.map(str::to_owned),
        title: "t".into(),
        text: "x".into(),
        level: Default::default(),
        epoch: None,
    };
    st.apply(&Event::now("r", MADE_SEQ_BASE, alert(Some("target"))), true, 2);
    st.apply(&Event::now("r", MADE_SEQ_BASE + 1, alert(Some("target"))), true, 2);
    st.apply(&Event::now("r", 5, alert(Some("client's own"))), false, 2);
    st.apply(&Event::now("r", MADE_SEQ_BASE + 2, alert(None)), true, 2);
    assert_eq!(st.alerted, BTreeMap::from([("target".to_owned(), 2)]));
}

#[test]
fn a_job_streams_rank_zero_and_job_events_and_holds_rank_zeros_end_for_the_job() {
    let mut r = routing();
    r.events.extend([EventKind::RankLost, EventKind::RankStalled]);
    let job_start = |rank: u32| {
        let mut e = started(rank);
        if let Payload::RunStarted(s) = &mut e.payload {
            s.job = Some("j".into());
            s.world_size = Some(3);
        }
        e
    };
    let end = Event::now(
        "r",
        9,
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None },
    );
    let failed = Event::now("r", 9, RunFailed { error: "oom".into(), traceback: None });
    // Rank 0: start and epochs go out, its own end waits for the job's (a made run_finished).
    let zero = run_after(&[job_start(0)]);
    assert!(zero.job.is_some());
    assert!(accepts(&r, &RunState::new("r"), &job_start(0)));
    assert!(accepts(&r, &zero, &epoch(0, 1.0, 0.5)));
    assert!(!accepts(&r, &zero, &end));
    assert!(accepts(&r, &zero, &Event { seq: MADE_SEQ_BASE, ..end.clone() }));
    assert!(accepts(&r, &zero, &failed), "rank 0's failure is the job stream's");
    let lost =
        herald_event::RankLost { job: "j".into(), rank: 1, host: "h".into(), pid: 2, reason: "gone".into() };
    assert!(accepts(&r, &zero, &Event::now("r", MADE_SEQ_BASE + 1, lost)));
    // Rank 1: nothing of its own, not even its failure (that is a rank_failed on rank 0's run).
    let one = run_after(&[job_start(1)]);
    assert!(!accepts(&r, &RunState::new("r"), &job_start(1)));
    assert!(!accepts(&r, &one, &failed));
    // Without a job, rank 1's failure goes out as before.
    assert!(accepts(&r, &run_after(&[started(1)]), &failed));
    // The cluster's edge forwards every rank's own events, and of its job events only rank_lost.
    let edge = Routing { all_ranks: true, ..r.clone() };
    for (st, event) in [(&RunState::new("r"), &job_start(1)), (&one, &failed), (&one, &epoch(0, 1.0, 0.5))] {
        assert!(accepts(&edge, st, event), "{event:?}");
    }
    assert!(accepts(&edge, &zero, &end), "rank 0's own end goes to the leader");
    assert!(!accepts(&edge, &zero, &Event { seq: MADE_SEQ_BASE, ..end.clone() }), "the leader ends the job");
    let stalled = herald_event::RankStalled { job: "j".into(), ranks: vec![], all: true, stall_after_s: 1.0 };
    assert!(!accepts(&edge, &zero, &Event::now("r", MADE_SEQ_BASE + 2, stalled)));
    let lost =
        herald_event::RankLost { job: "j".into(), rank: 1, host: "h".into(), pid: 2, reason: "gone".into() };
    assert!(accepts(&edge, &one, &Event::now("r", MADE_SEQ_BASE, lost)), "its pid check is the edge's");
}

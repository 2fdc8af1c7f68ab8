//! The event emitter driven by `fit`: what it emits, its drop policy, the stop handle, and how runs end.

use std::sync::mpsc as std_mpsc;

use herald_callback::{
    CallbackHandler, EarlyStopping, EventEmitter, EventReceiver, OneCycleScheduler, RunInfo, StopHandle,
    TerminateOnNaN, channel, fit,
};
use herald_event::{Event, EventKind, Payload, RunStatus};

use crate::sim::Sim;

fn drain(rx: &mut EventReceiver) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(Event::kind).collect()
}

/// A handler with these metrics and an emitter on a channel of `max_pending` batches.
fn handler(metrics: &[&str], max_pending: usize, stop: StopHandle) -> (CallbackHandler, EventReceiver) {
    let (tx, rx) = channel(max_pending);
    let mut handler = CallbackHandler::new(metrics.iter().map(|m| m.to_string()).collect());
    let info = RunInfo::new("mnist").hyper("bs", 64).rank(0);
    handler.add(EventEmitter::new(tx, info, stop));
    (handler, rx)
}

fn assert_seq_without_gaps(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (0..events.len() as u64).collect();
    assert_eq!(seqs, expected);
    let run = &events[0].run;
    assert!(events.iter().all(|e| &e.run == run), "one run id for the whole run");
}

fn finished(events: &[Event]) -> &herald_event::RunFinished {
    match &events.last().expect("events arrived").payload {
        Payload::RunFinished(f) => f,
        other => panic!("the run should end with run_finished, not {other:?}"),
    }
}

fn failed(events: &[Event]) -> &herald_event::RunFailed {
    match &events.last().expect("events arrived").payload {
        Payload::RunFailed(f) => f,
        other => panic!("the run should end with run_failed, not {other:?}"),
    }
}

#[test]
fn a_run_is_reported_event_by_event() {
    let (mut h, mut rx) = handler(&["accuracy"], 1000, StopHandle::new());
    h.add(OneCycleScheduler::new(1e-2));
    let mut sim = Sim::new(5, 2).valid(|e, _| (4, 0.5 - 0.1 * f64::from(e), vec![0.8 + 0.05 * f64::from(e)]));
    fit(&mut h, &mut sim, 2).expect("the simulation does not fail");
    let events = drain(&mut rx);
    use EventKind::*;
    let mut expected = vec![RunStarted];
    for _ in 0..2 {
        expected.push(EpochStarted);
        expected.extend([BatchEnded; 5]);
        expected.push(EpochEnded);
    }
    expected.push(RunFinished);
    assert_eq!(kinds(&events), expected);
    assert_seq_without_gaps(&events);
    let emitter = h.get::<EventEmitter>().expect("added above");
    assert_eq!(events[0].run, emitter.run_id());
    assert_eq!(emitter.dropped(), 0);

    let Payload::RunStarted(started) = &events[0].payload else { panic!("first is run_started") };
    assert_eq!((started.name.as_str(), started.pid, started.rank), ("mnist", std::process::id(), 0));
    assert_eq!((started.n_epochs, started.batches_per_epoch), (2, 5));
    assert_eq!(started.metric_names, ["accuracy"]);
    assert_eq!(started.hyper.get("bs"), Some(&serde_json::json!(64)));
    assert!(!started.host.is_empty());

    // batch_ended carries the lr the batch used (one cycle: 4e-4 first), loss and smoothed loss
    let batches: Vec<&herald_event::BatchEnded> = events
        .iter()
        .filter_map(|e| if let Payload::BatchEnded(b) = &e.payload { Some(b) } else { None })
        .collect();
    let rec = h.recorder();
    for (i, b) in batches.iter().enumerate() {
        assert_eq!((b.epoch, b.batch, b.n_batches), (i as u32 / 5, i as u64 % 5, 5));
        assert_eq!(b.lr, rec.lrs[i]);
        assert_eq!(b.smooth_loss, rec.losses[i]);
        assert_eq!(b.loss, 1.0 / (1.0 + i as f64));
    }
    assert_eq!(batches[0].lr, 4e-4);

    // epoch_ended is the recorder's table row
    let rows: Vec<&herald_event::EpochEnded> = events
        .iter()
        .filter_map(|e| if let Payload::EpochEnded(x) = &e.payload { Some(x) } else { None })
        .collect();
    assert_eq!(rows.len(), 2);
    for (row, recorded) in rows.iter().zip(&rec.epochs) {
        assert_eq!(
            (row.epoch, row.train_loss, row.valid_loss),
            (recorded.epoch, recorded.train_loss, recorded.valid_loss)
        );
        assert_eq!(row.metrics, recorded.metrics);
    }
    assert_eq!(rows[1].train_loss, rec.losses[9]);

    let end = finished(&events);
    assert_eq!(end.status, RunStatus::Completed);
    assert_eq!(end.reason, "completed 2 of 2 epochs");
    let best = end.best.as_ref().expect("accuracy was measured");
    assert_eq!((best.name.as_str(), best.epoch), ("accuracy", 1));
    assert!((best.value - 0.85).abs() < 1e-12);
}

#[test]
fn best_follows_valid_loss_without_metrics_and_minimises_error_like_names() {
    for (metrics, name, epoch) in [(&[][..], "valid_loss", 1), (&["error_rate"][..], "error_rate", 1)] {
        let (mut h, mut rx) = handler(metrics, 100, StopHandle::new());
        let values = [0.5, 0.2, 0.3];
        let n = metrics.len();
        let mut sim = Sim::new(1, 1).valid(move |e, _| (1, values[e as usize], vec![values[e as usize]; n]));
        fit(&mut h, &mut sim, 3).expect("the simulation does not fail");
        let events = drain(&mut rx);
        let best = finished(&events).best.clone().expect("values were finite");
        assert_eq!((best.name.as_str(), best.value, best.epoch), (name, 0.2, epoch));
    }
}

#[test]
fn batch_ended_past_max_pending_is_dropped_and_counted_lifecycle_never() {
    let (mut h, mut rx) = handler(&[], 3, StopHandle::new());
    let mut sim = Sim::new(10, 1);
    // nobody reads during the run: only 3 batch_ended fit
    fit(&mut h, &mut sim, 4).expect("the simulation does not fail");
    assert_eq!(rx.pending_batches(), 3);
    let events = drain(&mut rx);
    assert_eq!(rx.pending_batches(), 0, "receiving frees the slots");
    use EventKind::*;
    let lifecycle: Vec<EventKind> = kinds(&events).into_iter().filter(|k| *k != BatchEnded).collect();
    let mut expected = vec![RunStarted];
    for _ in 0..4 {
        expected.extend([EpochStarted, EpochEnded]);
    }
    expected.push(RunFinished);
    assert_eq!(lifecycle, expected, "every lifecycle event arrives");
    let batches: Vec<u64> = events
        .iter()
        .filter_map(|e| if let Payload::BatchEnded(b) = &e.payload { Some(b.batch) } else { None })
        .collect();
    assert_eq!(batches, [0, 1, 2], "the first three were kept");
    assert_eq!(h.get::<EventEmitter>().map(EventEmitter::dropped), Some(37));
    assert_eq!(rx.dropped(), 37);
    assert_seq_without_gaps(&events);
}

#[test]
fn a_reader_keeping_up_gets_every_batch() {
    let (mut h, mut rx) = handler(&[], 4, StopHandle::new());
    let (done_tx, done_rx) = std_mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut events = Vec::new();
        while let Some(event) = rx.blocking_recv() {
            let is_batch = event.kind() == EventKind::BatchEnded;
            events.push(event);
            if is_batch {
                // tell the training thread this batch was read
                if done_tx.send(()).is_err() {
                    break;
                }
            }
            if events.last().is_some_and(|e| e.kind().is_terminal()) {
                break;
            }
        }
        events
    });
    // the training thread waits until the reader received each batch, so nothing is ever pending
    let mut sim = Sim::new(20, 0);
    sim.on_forward = Some(Box::new(move |e, b, _| {
        if e > 0 || b > 0 {
            done_rx.recv().expect("the reader acknowledges each batch");
        }
    }));
    fit(&mut h, &mut sim, 2).expect("the simulation does not fail");
    drop(h);
    let events = reader.join().expect("the reader does not panic");
    assert_eq!(kinds(&events).iter().filter(|k| **k == EventKind::BatchEnded).count(), 40);
    assert_seq_without_gaps(&events);
}

#[test]
fn stop_handle_set_from_another_thread_stops_at_the_next_batch_end() {
    let stop = StopHandle::new();
    let (mut h, mut rx) = handler(&[], 1000, stop.clone());
    let (asked_tx, asked_rx) = std_mpsc::channel::<()>();
    let (set_tx, set_rx) = std_mpsc::channel::<()>();
    let remote = stop.clone();
    let phone = std::thread::spawn(move || {
        if asked_rx.recv().is_ok() {
            remote.request("stopped from the phone");
            let _ = set_tx.send(());
        }
    });
    let mut sim = Sim::new(6, 2);
    // mid-epoch 1, during batch 2's forward pass, the other thread sets the handle and we wait until it has
    sim.on_forward = Some(Box::new(move |e, b, train| {
        if train && e == 1 && b == 2 {
            asked_tx.send(()).expect("the phone thread waits");
            set_rx.recv().expect("the phone thread sets the handle");
        }
    }));
    fit(&mut h, &mut sim, 4).expect("a stop is not a failure");
    phone.join().expect("the phone thread does not panic");
    let events = drain(&mut rx);
    assert_seq_without_gaps(&events);
    let last_batch = events
        .iter()
        .rev()
        .find_map(|e| if let Payload::BatchEnded(b) = &e.payload { Some((b.epoch, b.batch)) } else { None });
    assert_eq!(last_batch, Some((1, 2)), "the batch in flight finishes, then the loop breaks");
    assert_eq!(h.recorder().nb_batches, [6, 3]);
    assert_eq!(h.recorder().valid_losses, [Some(0.5), None], "validation is skipped");
    let end = finished(&events);
    assert_eq!(end.status, RunStatus::Stopped);
    assert_eq!(end.reason, "stop requested: stopped from the phone (after 2 of 4 epochs)");
    let ended: Vec<u32> = events
        .iter()
        .filter_map(|e| if let Payload::EpochEnded(x) = &e.payload { Some(x.epoch) } else { None })
        .collect();
    assert_eq!(ended, [0, 1], "the cut epoch still reports its row");
}

#[test]
fn stop_requested_during_validation_takes_effect_at_epoch_end() {
    let stop = StopHandle::new();
    let (mut h, mut rx) = handler(&[], 1000, stop.clone());
    let mut sim = Sim::new(2, 3);
    let remote = stop.clone();
    sim.on_forward = Some(Box::new(move |e, b, train| {
        if !train && e == 0 && b == 1 {
            remote.request("");
        }
    }));
    fit(&mut h, &mut sim, 3).expect("a stop is not a failure");
    let events = drain(&mut rx);
    // validation of epoch 0 completes (its mean is over every batch), then training stops
    assert_eq!(h.recorder().valid_losses, [Some(0.5)]);
    assert_eq!(h.recorder().nb_batches, [2]);
    let end = finished(&events);
    assert_eq!(
        (end.status, end.reason.as_str()),
        (RunStatus::Stopped, "stop requested (after 1 of 3 epochs)")
    );
}

#[test]
fn early_stopping_ends_the_run_as_stopped() {
    let (mut h, mut rx) = handler(&[], 100, StopHandle::new());
    h.add(EarlyStopping::new("valid_loss", 0.0, 0));
    let mut sim = Sim::new(1, 1).valid(|e, _| (1, [0.5, 0.6, 0.4][e as usize], vec![]));
    fit(&mut h, &mut sim, 3).expect("a stop is not a failure");
    let events = drain(&mut rx);
    let end = finished(&events);
    assert_eq!(end.status, RunStatus::Stopped);
    assert_eq!(
        end.reason,
        "early stopping: valid_loss did not improve on 0.500000 for 1 epoch (patience 0) (after 2 of 3 epochs)"
    );
}

#[test]
fn terminate_on_nan_ends_the_run_as_failed() {
    let (mut h, mut rx) = handler(&[], 100, StopHandle::new());
    h.add(TerminateOnNaN);
    let mut sim = Sim::new(3, 1).losses(|_, b| if b == 1 { f64::NAN } else { 1.0 });
    fit(&mut h, &mut sim, 2).expect("stopping is not a failure of fit");
    let events = drain(&mut rx);
    assert_eq!(
        failed(&events).error,
        "training terminated after 1 of 2 epochs: non-finite loss: loss NaN at epoch 0, training batch 1"
    );
    assert_seq_without_gaps(&events);
}

#[test]
fn a_failing_step_ends_the_run_with_run_failed() {
    let (mut h, mut rx) = handler(&[], 100, StopHandle::new());
    let mut sim = Sim::new(3, 1);
    sim.fail = Some(("forward", 0, 1));
    let err = fit(&mut h, &mut sim, 2).expect_err("the step fails");
    let events = drain(&mut rx);
    assert_eq!(failed(&events).error, err.to_string());
    assert_eq!(kinds(&events)[..3], [EventKind::RunStarted, EventKind::EpochStarted, EventKind::BatchEnded]);
}

#[test]
fn a_gone_receiver_makes_emission_a_counted_no_op() {
    let (mut h, rx) = handler(&[], 100, StopHandle::new());
    drop(rx);
    fit(&mut h, &mut Sim::new(3, 1), 2).expect("training goes on without a receiver");
    let emitter = h.get::<EventEmitter>().expect("added above");
    // run_started, 2 x (epoch_started, 3 batch_ended, epoch_ended), run_finished
    assert_eq!(emitter.undelivered(), 12);
    assert_eq!(emitter.next_seq(), 0, "undelivered events take no seq");
}

#[test]
fn each_fit_is_a_new_run_with_seq_from_zero() {
    let (mut h, mut rx) = handler(&[], 100, StopHandle::new());
    fit(&mut h, &mut Sim::new(1, 0), 1).expect("the simulation does not fail");
    let first = drain(&mut rx);
    fit(&mut h, &mut Sim::new(1, 0), 1).expect("the simulation does not fail");
    let second = drain(&mut rx);
    assert_seq_without_gaps(&first);
    assert_seq_without_gaps(&second);
    assert_ne!(first[0].run, second[0].run);
}

#[test]
fn a_panicking_training_loop_still_reports_run_failed() {
    let (tx, mut rx) = channel(100);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut h = CallbackHandler::new(vec![]);
        h.add(EventEmitter::new(tx, RunInfo::new("panics"), StopHandle::new()));
        let mut sim = Sim::new(2, 0);
        sim.on_forward = Some(Box::new(|_, b, _| assert!(b < 1, "scripted panic in the training loop")));
        let _ = fit(&mut h, &mut sim, 1);
    }));
    assert!(result.is_err());
    let events = drain(&mut rx);
    assert_eq!(failed(&events).error, "the training loop panicked");
    assert_seq_without_gaps(&events);
}

#[tokio::test]
async fn async_receiver_gets_the_run() {
    let (mut h, mut rx) = handler(&[], 100, StopHandle::new());
    let training = std::thread::spawn(move || fit(&mut h, &mut Sim::new(2, 1), 1));
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        let end = event.kind().is_terminal();
        events.push(event);
        if end {
            break;
        }
    }
    training.join().expect("training does not panic").expect("the simulation does not fail");
    assert_eq!(events.len(), 6);
    assert_seq_without_gaps(&events);
}

#[test]
fn alert_goes_out_with_the_epoch_it_was_raised_in() {
    use herald_callback::{Callback, State};
    use herald_event::Level;
    let (tx, mut rx) = channel(10);
    let mut emitter = EventEmitter::new(tx, RunInfo::new("mnist"), StopHandle::new());
    emitter.alert("before", "no epoch yet", Level::Info);
    let mut state = State::new(vec![]);
    state.epoch = 3;
    emitter.on_epoch_begin(&mut state).expect("the emitter never fails an epoch");
    emitter.alert("loss spike", "train loss doubled", Level::Error);
    let events = drain(&mut rx);
    let alerts: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Alert(a) => Some((e.seq, a.title.as_str(), a.level, a.epoch, a.rule.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        alerts,
        [(0, "before", Level::Info, None, None), (2, "loss spike", Level::Error, Some(3), None)]
    );
}

#[test]
fn run_info_reads_rank_job_and_world_size_in_the_documented_order() {
    fn check(vars: &[(&str, &str)], expected: (u32, Option<&str>, Option<u32>)) {
        let info = RunInfo::from_env("n", |k| vars.iter().find(|(v, _)| *v == k).map(|(_, x)| x.to_string()));
        assert_eq!((info.rank, info.job.as_deref(), info.world_size), expected, "{vars:?}");
    }
    let all = [
        ("HERALD_JOB", "mine"),
        ("SLURM_JOB_ID", "4242"),
        ("SLURM_STEP_ID", "0"),
        ("TORCHELASTIC_RUN_ID", "rdzv"),
        ("RANK", "2"),
        ("WORLD_SIZE", "3"),
    ];
    check(&all, (2, Some("mine"), Some(3)));
    check(&all[1..], (2, Some("4242.0"), Some(3)));
    check(
        &[("SLURM_JOB_ID", "4242"), ("SLURM_PROCID", "1"), ("SLURM_NTASKS", "8")],
        (1, Some("4242"), Some(8)),
    );
    check(&all[3..], (2, Some("rdzv"), Some(3)));
    check(&[("TORCHELASTIC_RUN_ID", "none"), ("RANK", "1"), ("WORLD_SIZE", "2")], (1, None, Some(2)));
    check(&[("RANK", "x"), ("HERALD_JOB", " ")], (0, None, None));
}

#[test]
fn a_non_zero_rank_of_a_job_sends_start_epochs_and_end_only() {
    for (info, expected_batches) in [
        (RunInfo::from_env("ddp", |_| None).rank(1).job("j").world_size(2), 0),
        // Without a job every event goes out, as before (the daemon keeps them off the phone).
        (RunInfo::from_env("ddp", |_| None).rank(1), 10),
    ] {
        let (tx, mut rx) = channel(1000);
        let mut h = CallbackHandler::new(vec![]);
        let job = info.job.clone();
        let mut emitter = EventEmitter::new(tx, info, StopHandle::new());
        emitter.message("t", "x", herald_event::Level::Info);
        h.add(emitter);
        fit(&mut h, &mut Sim::new(5, 2), 2).expect("the simulation does not fail");
        let events = drain(&mut rx);
        let batches = events.iter().filter(|e| e.kind() == EventKind::BatchEnded).count();
        assert_eq!(batches, expected_batches, "{job:?}");
        if job.is_some() {
            use EventKind::*;
            assert_eq!(kinds(&events), vec![RunStarted, EpochEnded, EpochEnded, RunFinished]);
            let Payload::RunStarted(s) = &events[0].payload else { panic!("{:?}", events[0]) };
            assert_eq!((s.rank, s.job.as_deref(), s.world_size), (1, Some("j"), Some(2)));
            assert_seq_without_gaps(&events);
        }
    }
}

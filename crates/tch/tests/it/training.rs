//! Training end to end on real data: accuracy, the events a run emits, the Recorder, saving the best model,
//! plots, and stopping from another thread.

use herald_callback::{Callback, CallbackResult, SaveEvery, State, StopHandle};
use herald_event::{EventKind, Payload, RunStatus};
use herald_tch::Metric;

use crate::support::{digits, drain, kinds, synthetic, with_events};

#[test]
fn digits_train_to_95_percent_with_the_fastai_table_and_events() {
    let (mut learner, mut rx, _stop) =
        with_events(digits(32), &[64, 128, 10], |b| b.metrics([Metric::accuracy()]));
    learner.fit_one_cycle(10, 1e-2).expect("trains");
    let rec = learner.recorder();
    assert_eq!(rec.epochs.len(), 10);
    let accuracy = rec.epochs[9].metrics.get("accuracy").expect("accuracy column");
    assert!(accuracy >= 0.95, "accuracy {accuracy} after 10 epochs");
    assert_eq!(rec.losses.len(), 10 * 45);
    assert_eq!(rec.nb_batches, vec![45; 10]);
    assert!(rec.table().starts_with("epoch     train_loss  valid_loss  accuracy  time"));

    let events = drain(&mut rx);
    let k = kinds(&events);
    assert_eq!(k[0], EventKind::RunStarted);
    assert_eq!(k[1], EventKind::EpochStarted);
    assert_eq!(k.iter().filter(|&&k| k == EventKind::BatchEnded).count(), 450);
    assert_eq!(k.iter().filter(|&&k| k == EventKind::EpochEnded).count(), 10);
    let Payload::RunFinished(end) = &events.last().expect("events").payload else {
        panic!("last event is {:?}", k.last());
    };
    assert_eq!(end.status, RunStatus::Completed);
    let best = end.best.as_ref().expect("best accuracy");
    assert_eq!(best.name, "accuracy");
    assert!(best.value >= accuracy);
    // seq numbers have no gaps
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    // the run_started event carries the shape of the run
    let Payload::RunStarted(start) = &events[0].payload else { unreachable!() };
    assert_eq!((start.n_epochs, start.batches_per_epoch), (10, 45));
    assert_eq!(start.metric_names, ["accuracy"]);
}

#[test]
fn valid_metrics_are_weighted_over_the_whole_set() {
    let (mut learner, _rx, _stop) =
        with_events(digits(32), &[64, 32, 10], |b| b.metrics([Metric::accuracy(), Metric::error_rate()]));
    learner.fit(1, 1e-3).expect("trains");
    let row = learner.recorder().epochs[0].clone();
    let (acc, err) = (row.metrics.get("accuracy").expect("acc"), row.metrics.get("error_rate").expect("err"));
    assert!((acc + err - 1.0).abs() < 1e-9);
    // 359 validation examples: the weighted accuracy is a whole number of correct answers over 359.
    assert_eq!(learner.data().valid().len(), 359);
    let correct = acc * 359.0;
    assert!((correct - correct.round()).abs() < 1e-3, "{correct} is not a count");
    let (loss, metrics) = learner.validate().expect("validates");
    assert!((loss - row.valid_loss.expect("valid loss")).abs() < 1e-6);
    assert!((metrics[0] - acc).abs() < 1e-9);
}

#[test]
fn save_model_keeps_the_best_weights_and_they_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("best.ot");
    let (mut learner, _rx, _stop) =
        with_events(digits(64), &[64, 16, 10], |b| b.metrics([Metric::accuracy()]));
    learner.save_model(SaveEvery::Improvement { monitor: "accuracy".into() }, &path);
    learner.fit_one_cycle(4, 1e-2).expect("trains");
    assert!(path.is_file());
    let best = learner
        .recorder()
        .epochs
        .iter()
        .filter_map(|e| e.metrics.get("accuracy"))
        .fold(f64::NEG_INFINITY, f64::max);
    // Wipe the weights, then load the saved ones back.
    herald_tch::tch::no_grad(|| {
        for mut v in learner.vs().trainable_variables() {
            let _ = v.f_zero_().expect("zero");
        }
    });
    assert!(learner.validate().expect("validates").1[0] < 0.5);
    learner.load(&path).expect("loads");
    let (_, metrics) = learner.validate().expect("validates");
    assert!(
        (metrics[0] - best).abs() < 1e-9,
        "loaded weights give {} but the best epoch had {best}",
        metrics[0]
    );
}

#[test]
fn save_model_every_epoch_and_a_failing_save_fails_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("every.ot");
    let (mut learner, _rx, _stop) = with_events(digits(128), &[64, 10], |b| b);
    learner.save_model(SaveEvery::Epoch, &path);
    learner.fit(1, 1e-3).expect("trains");
    assert!(path.is_file());

    let (mut learner, mut rx, _stop) = with_events(digits(128), &[64, 10], |b| b);
    learner.save_model(SaveEvery::Epoch, dir.path().join("no/such/folder/m.ot"));
    let err = learner.fit(1, 1e-3).expect_err("cannot save").to_string();
    assert!(err.contains("saving the model failed"), "{err}");
    let events = drain(&mut rx);
    let Payload::RunFailed(failed) = &events.last().expect("events").payload else { panic!("no run_failed") };
    assert!(failed.error.contains("no/such/folder"), "{}", failed.error);
}

#[test]
fn plots_from_the_recorder_are_pngs() {
    let (mut learner, mut rx, _stop) = with_events(digits(64), &[64, 10], |b| b);
    learner.fit_one_cycle(2, 1e-2).expect("trains");
    for png in [
        herald_plot::plot_losses(&learner.loss_history()).expect("loss plot"),
        herald_plot::plot_lr(&learner.lr_history()).expect("lr plot"),
        herald_plot::plot_losses(&herald_plot::LossHistory::from_events(&drain(&mut rx)))
            .expect("from events"),
    ] {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let w = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
        let h = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
        assert_eq!((w, h), (800, 500));
    }
    let history = learner.loss_history();
    assert_eq!(history.train.len(), 2 * 23);
    assert_eq!(history.valid.iter().map(|p| p.0).collect::<Vec<_>>(), [23.0, 46.0]);
}

/// Requests a stop at the start of a given training batch, as a phone would mid-epoch.
struct StopAt {
    stop: StopHandle,
    epoch: u32,
    batch: u64,
}

impl Callback for StopAt {
    fn name(&self) -> &str {
        "stop_at"
    }
    fn on_batch_begin(&mut self, s: &mut State) -> CallbackResult {
        if s.train && s.epoch == self.epoch && s.num_batch == self.batch {
            self.stop.request("stop pressed on the phone");
        }
        Ok(())
    }
}

#[test]
fn stop_mid_epoch_ends_at_the_next_batch_end_and_reports_stopped() {
    let (mut learner, mut rx, stop) = with_events(digits(32), &[64, 10], |b| b.metrics([Metric::accuracy()]));
    learner.add_callback(StopAt { stop, epoch: 1, batch: 3 });
    learner.fit_one_cycle(5, 1e-2).expect("a stop is not an error");
    let rec = learner.recorder();
    assert_eq!(rec.nb_batches, [45, 4], "epoch 1 stops after batch 3");
    let events = drain(&mut rx);
    let Payload::RunFinished(end) = &events.last().expect("events").payload else {
        panic!("no run_finished")
    };
    assert_eq!(end.status, RunStatus::Stopped);
    assert!(end.reason.contains("stop pressed on the phone"), "{}", end.reason);
}

#[test]
fn stop_from_another_thread() {
    let (x, y) = synthetic(256, 8, 4, 2);
    let data = herald_tch::DataLoaders::from_tensors(x, y, 0.25, 16, 1).expect("loaders");
    let (mut learner, mut rx, stop) = with_events(data, &[8, 4], |b| b);
    // The watcher reads events as the daemon would and presses stop at the 5th batch it sees.
    let watcher = std::thread::spawn(move || {
        let mut seen = 0;
        while let Some(event) = rx.blocking_recv() {
            if event.kind() == EventKind::BatchEnded {
                seen += 1;
                if seen == 5 {
                    stop.request("watcher");
                }
            }
            if let Payload::RunFinished(end) = &event.payload {
                return Some(end.status);
            }
        }
        None
    });
    learner.fit(10_000, 1e-3).expect("stops cleanly");
    let epochs = learner.recorder().nb_batches.len();
    assert!(epochs < 10_000, "stopped after {epochs} epochs");
    drop(learner);
    assert_eq!(watcher.join().expect("watcher thread"), Some(RunStatus::Stopped));
}

#[test]
fn the_bare_loop_does_the_same_work_as_fit_one_cycle() {
    // The benchmark's no-callback loop must train identically, or the hook overhead it measures is wrong.
    let (mut with_callbacks, _rx, _stop) =
        with_events(digits(32), &[64, 32, 10], |b| b.metrics([Metric::accuracy()]));
    with_callbacks.fit_one_cycle(2, 1e-2).expect("trains");
    let expected = with_callbacks.validate().expect("validates");
    let (mut bare, _rx, _stop) = with_events(digits(32), &[64, 32, 10], |b| b.metrics([Metric::accuracy()]));
    let last = bare.fit_one_cycle_bare(2, 1e-2).expect("trains");
    assert_eq!(last, expected);
    assert!(bare.recorder().losses.is_empty(), "the bare loop fires no callback");
}

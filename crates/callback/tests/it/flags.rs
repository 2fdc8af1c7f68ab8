//! The flag rules of REFERENCE §1: what each flag does and when it is reset.

use herald_callback::{CallbackHandler, Hook, fit};

use crate::sim::{Log, Probe, Sim, train_batch, valid_batch};

/// Runs `epochs` epochs of a (n_train, n_valid) simulation with a probe acting by `act`; returns the log.
fn run(
    n_train: u64,
    n_valid: u64,
    epochs: u32,
    act: impl FnMut(Hook, &mut herald_callback::State) -> herald_callback::CallbackResult + Send + 'static,
) -> (Vec<String>, CallbackHandler) {
    let log = Log::default();
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(Probe::new(&log).act(act));
    let mut sim = Sim::new(n_train, n_valid).with_log(&log);
    fit(&mut handler, &mut sim, epochs).expect("the simulation does not fail");
    (log.entries(), handler)
}

fn count(log: &[String], entry: &str) -> usize {
    log.iter().filter(|e| *e == entry).count()
}

/// The training batches each epoch ran, from the recorder.
fn batches_per_epoch(handler: &CallbackHandler) -> Vec<u64> {
    handler.recorder().nb_batches.clone()
}

#[test]
fn stop_epoch_breaks_the_training_loop_and_resets_each_batch() {
    let (log, handler) = run(4, 1, 2, |hook, s| {
        if hook == Hook::BatchEnd && s.train && s.epoch == 0 && s.num_batch == 1 {
            s.stop_epoch = true;
        }
        Ok(())
    });
    // epoch 0 stops after batch 1, still validates; epoch 1 runs all four batches
    assert_eq!(batches_per_epoch(&handler), [2, 4]);
    assert_eq!(count(&log, "metrics"), 2);
    assert_eq!(count(&log, "epoch_end"), 2);
}

#[test]
fn stop_epoch_breaks_the_validation_loop() {
    let (log, _) = run(1, 3, 1, |hook, s| {
        if hook == Hook::BatchEnd && !s.train && s.num_batch == 0 {
            s.stop_epoch = true;
        }
        Ok(())
    });
    assert_eq!(count(&log, "metrics"), 1);
    assert_eq!(count(&log, "epoch_end"), 1);
}

#[test]
fn stop_training_stops_after_epoch_end_and_train_end_still_fires() {
    let (log, handler) = run(3, 1, 5, |hook, s| {
        if hook == Hook::BatchBegin && s.train && s.epoch == 1 && s.num_batch == 0 {
            s.stop_training = true;
        }
        Ok(())
    });
    // epoch 1 still runs all its batches, its validation and its on_epoch_end, then training stops
    assert_eq!(batches_per_epoch(&handler), [3, 3]);
    assert_eq!(count(&log, "epoch_end"), 2);
    assert_eq!(count(&log, "metrics"), 2);
    let tail: Vec<&str> = log.iter().rev().take(2).map(String::as_str).collect();
    assert_eq!(tail, ["train_end", "epoch_end"]);
}

#[test]
fn stop_training_is_reset_at_epoch_begin() {
    // set before any epoch began: the reset at epoch begin clears it, so every epoch runs
    let (log, handler) = run(1, 0, 3, |hook, s| {
        if hook == Hook::TrainBegin {
            s.stop_training = true;
        }
        if hook == Hook::EpochBegin {
            assert!(!s.stop_training, "stop_training is reset before on_epoch_begin fires");
        }
        Ok(())
    });
    assert_eq!(count(&log, "epoch_end"), 3);
    assert_eq!(handler.recorder().epochs.len(), 3);
}

#[test]
fn skip_validate_skips_every_later_validation() {
    let (log, handler) = run(2, 2, 3, |hook, s| {
        if hook == Hook::BatchEnd && s.train && s.epoch == 1 {
            s.skip_validate = true;
        }
        Ok(())
    });
    // epoch 0 validates; epochs 1 and 2 do not (never reset)
    assert_eq!(count(&log, "metrics"), 2);
    assert_eq!(handler.recorder().valid_losses, [Some(0.5), None, None]);
    let table = handler.recorder().table();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(rows[0].contains("0.500000"), "{table}");
    assert!(rows[1].contains("#na#") && rows[2].contains("#na#"), "{table}");
}

#[test]
fn skip_bwd_step_zero_skip_one_batch_each() {
    let (log, _) = run(4, 0, 1, |hook, s| {
        match (hook, s.num_batch) {
            (Hook::BackwardBegin, 0) => s.skip_bwd = true,
            (Hook::BackwardEnd, 1) => s.skip_step = true,
            (Hook::StepEnd, 2) => s.skip_zero = true,
            (Hook::BatchBegin, _) => {
                assert!(
                    !s.skip_bwd && !s.skip_step && !s.skip_zero,
                    "per-batch flags reset before batch_begin"
                )
            }
            _ => {}
        }
        Ok(())
    });
    let batches: Vec<Vec<String>> =
        log.split(|e| e == "batch_begin").skip(1).map(<[String]>::to_vec).collect();
    let body = |skip: Option<&str>| -> Vec<String> {
        train_batch().into_iter().skip(1).filter(|e| Some(*e) != skip).map(String::from).collect()
    };
    assert_eq!(batches[0], body(Some("backward")));
    assert_eq!(batches[1], body(Some("step")));
    assert_eq!(batches[2], body(Some("zero_grad")));
    let mut last = body(None);
    last.extend(["epoch_end", "train_end"].map(String::from));
    assert_eq!(batches[3], last);
    assert_eq!(count(&log, "zero_grad"), 3);
    assert_eq!(count(&log, "backward"), 3);
    assert_eq!(count(&log, "step"), 3);
}

#[test]
fn validation_fires_only_batch_begin_loss_begin_batch_end() {
    let (log, _) = run(0, 2, 1, |_, _| Ok(()));
    let mut expected = vec!["train_begin", "epoch_begin", "begin_epoch"];
    expected.extend(valid_batch());
    expected.extend(valid_batch());
    expected.extend(["epoch_end", "train_end"]);
    assert_eq!(log, expected);
}

#[test]
fn the_optimizer_gets_the_state_hypers() {
    let log = Log::default();
    let mut handler = CallbackHandler::new(vec![]);
    handler.state_mut().lr = 0.25;
    handler.add(Probe::new(&log).act(|hook, s| {
        if hook == Hook::BackwardEnd && s.num_batch == 1 {
            s.lr = 0.5;
            s.mom = 0.75;
        }
        Ok(())
    }));
    let mut sim = Sim::new(3, 0);
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    assert_eq!(sim.steps, [(0.25, 0.9), (0.5, 0.75), (0.5, 0.75)]);
    assert_eq!(handler.recorder().lrs, [0.25, 0.25, 0.5]);
}

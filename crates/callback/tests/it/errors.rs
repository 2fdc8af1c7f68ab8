//! Failures: `on_train_end` always fires and carries the error, whether a step or a callback failed.

use herald_callback::{CallbackError, CallbackHandler, Hook, TrainErrorKind, fit};

use crate::sim::{Log, Probe, Sim};

#[test]
fn a_failing_step_ends_training_and_train_end_carries_the_error() {
    let log = Log::default();
    let probe = Probe::new(&log);
    let seen = probe.train_end_error.clone();
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(probe);
    let mut sim = Sim::new(3, 1).with_log(&log);
    sim.fail = Some(("backward", 1, 2));
    let err = fit(&mut handler, &mut sim, 3).expect_err("the step fails in epoch 1");
    let text = "training step `backward` failed at epoch 1, training batch 2: scripted failure in backward";
    assert_eq!(err.to_string(), text);
    assert!(matches!(err.kind(), TrainErrorKind::Step { during: "backward", .. }));
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen, Some(Some(text.to_owned())));
    // nothing runs after the failing call but on_train_end
    let entries = log.entries();
    assert_eq!(entries[entries.len() - 2..], ["backward", "train_end"]);
}

#[test]
fn a_failing_callback_ends_training_and_later_callbacks_miss_that_event() {
    let log = Log::default();
    let failing = Probe::tagged(&log, "failing", 0).act(|hook, s| {
        if hook == Hook::EpochEnd && s.epoch == 0 {
            return Err(CallbackError::new("cannot write the checkpoint; free some disk space"));
        }
        Ok(())
    });
    let seen = failing.train_end_error.clone();
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(failing).add(Probe::tagged(&log, "after", 1));
    let mut sim = Sim::new(1, 0);
    let err = fit(&mut handler, &mut sim, 2).expect_err("the callback fails");
    let text = "callback `failing` failed in on_epoch_end at epoch 0: cannot write the checkpoint; free some disk space";
    assert_eq!(err.to_string(), text);
    assert!(
        matches!(err.kind(), TrainErrorKind::Callback { hook: Hook::EpochEnd, name, .. } if name == "failing")
    );
    assert_eq!(seen.lock().expect("not poisoned").clone(), Some(Some(text.to_owned())));
    let entries = log.entries();
    assert!(!entries.contains(&"after.epoch_end".to_owned()), "{entries:?}");
    assert!(
        entries.ends_with(&["failing.train_end".to_owned(), "after.train_end".to_owned()]),
        "{entries:?}"
    );
}

#[test]
fn a_failing_train_begin_still_fires_train_end() {
    let log = Log::default();
    let failing = Probe::tagged(&log, "failing", 0).act(|hook, _| {
        if hook == Hook::TrainBegin {
            return Err("bad configuration".into());
        }
        Ok(())
    });
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(failing);
    let mut sim = Sim::new(1, 0).with_log(&log);
    let err = fit(&mut handler, &mut sim, 1).expect_err("train begin fails");
    assert_eq!(err.message(), "bad configuration");
    assert_eq!(log.entries(), ["failing.train_begin", "failing.train_end"]);
}

#[test]
fn every_train_end_runs_even_when_one_fails_and_the_first_error_is_returned() {
    let log = Log::default();
    let mut handler = CallbackHandler::new(vec![]);
    handler
        .add(
            Probe::tagged(&log, "a", 0)
                .act(|hook, _| if hook == Hook::TrainEnd { Err("a failed".into()) } else { Ok(()) }),
        )
        .add(
            Probe::tagged(&log, "b", 0)
                .act(|hook, _| if hook == Hook::TrainEnd { Err("b failed".into()) } else { Ok(()) }),
        );
    let mut sim = Sim::new(1, 0);
    let err = fit(&mut handler, &mut sim, 1).expect_err("train end fails");
    assert_eq!(err.message(), "a failed");
    let entries = log.entries();
    assert!(entries.ends_with(&["a.train_end".to_owned(), "b.train_end".to_owned()]), "{entries:?}");
}

#[test]
fn metric_count_mismatch_is_a_clear_error() {
    let mut handler = CallbackHandler::new(vec!["accuracy".into(), "f1".into()]);
    let mut sim = Sim::new(1, 1).valid(|_, _| (4, 0.5, vec![0.9]));
    let err = fit(&mut handler, &mut sim, 1).expect_err("one metric value for two names");
    assert_eq!(
        err.to_string(),
        "training step `metrics` failed at epoch 0, validation batch 0: it returned 1 metric values but the \
         handler has 2 metric names (accuracy, f1); make Step::metrics push one value per name, in order"
    );
}

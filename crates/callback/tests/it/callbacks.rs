//! The stock callbacks driven by `fit`: EarlyStopping, TerminateOnNaN, CsvLogger, SaveModel.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use herald_callback::{
    CallbackHandler, CsvLogger, EarlyStopping, SaveEvery, SaveModel, SaveWhy, StopReason, TerminateOnNaN, fit,
};

use crate::sim::Sim;

/// A fresh folder under the system temp folder for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-callback-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A simulation whose validation loss in epoch `e` is `valid[e]`, with an accuracy of `1 - valid[e]`.
fn with_valid_losses(valid: &'static [f64]) -> Sim {
    Sim::new(2, 1).valid(move |e, _| (4, valid[e as usize], vec![1.0 - valid[e as usize]]))
}

#[test]
fn early_stopping_waits_patience_epochs() {
    fn epochs_run(valid: &'static [f64], stopper: EarlyStopping) -> (usize, Option<StopReason>) {
        let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
        handler.add(stopper);
        let mut sim = with_valid_losses(valid);
        fit(&mut handler, &mut sim, valid.len() as u32).expect("the simulation does not fail");
        (handler.recorder().epochs.len(), handler.state().stop_reason.clone())
    }
    const LOSSES: &[f64] = &[1.0, 0.9, 0.95, 0.97, 0.99, 0.5];
    // improvement at epoch 1, then none: epoch 2 waits 1, epoch 3 waits 2 > patience 1
    let (ran, reason) = epochs_run(LOSSES, EarlyStopping::new("valid_loss", 0.0, 1));
    assert_eq!(ran, 4);
    assert_eq!(
        reason,
        Some(StopReason::EarlyStopping(
            "valid_loss did not improve on 0.900000 for 2 epochs (patience 1)".into()
        ))
    );
    assert_eq!(epochs_run(LOSSES, EarlyStopping::new("valid_loss", 0.0, 3)).0, 6);
    // accuracy = 1 - loss is maximised: the same shape
    assert_eq!(epochs_run(LOSSES, EarlyStopping::new("accuracy", 0.0, 1)).0, 4);
    // min_delta: 1.0 -> 0.9 is not an improvement of more than 0.2, so nothing improves after epoch 0
    assert_eq!(epochs_run(LOSSES, EarlyStopping::new("valid_loss", 0.2, 0)).0, 2);
}

#[test]
fn early_stopping_rejects_an_unknown_monitor() {
    let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
    handler.add(EarlyStopping::new("valid_acc", 0.0, 1));
    let err =
        fit(&mut handler, &mut Sim::new(1, 1).valid(|_, _| (1, 0.5, vec![0.5])), 2).expect_err("bad monitor");
    assert_eq!(
        err.to_string(),
        "callback `early_stopping` failed in on_train_begin at epoch 0: early stopping monitors `valid_acc`, \
         which this run does not have; use one of: train_loss, valid_loss, accuracy"
    );
}

#[test]
fn terminate_on_nan_stops_everything_at_the_bad_batch() {
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(TerminateOnNaN);
    let mut sim = Sim::new(4, 2).losses(|e, b| if e == 1 && b == 1 { f64::NAN } else { 1.0 });
    fit(&mut handler, &mut sim, 3).expect("stopping is not a failure of fit");
    let rec = handler.recorder();
    assert_eq!(rec.nb_batches, [4, 2], "epoch 1 breaks after its batch 1, and no epoch 2 runs");
    assert_eq!(rec.valid_losses, [Some(0.5), None], "validation is skipped");
    assert_eq!(
        handler.state().stop_reason,
        Some(StopReason::NonFiniteLoss("loss NaN at epoch 1, training batch 1".into()))
    );
}

#[test]
fn terminate_on_nan_sees_validation_losses_too() {
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(TerminateOnNaN);
    let mut sim = Sim::new(1, 3).valid(|_, b| (2, if b == 1 { f64::INFINITY } else { 0.5 }, vec![]));
    fit(&mut handler, &mut sim, 2).expect("stopping is not a failure of fit");
    assert_eq!(handler.recorder().epochs.len(), 1);
    assert!(matches!(handler.state().stop_reason, Some(StopReason::NonFiniteLoss(_))));
}

#[test]
fn csv_logger_writes_header_and_one_row_per_epoch() {
    let dir = temp_dir("csv");
    let path = dir.join("nested/history.csv");
    let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
    handler.add(CsvLogger::new(&path));
    let mut sim = Sim::new(3, 2).losses(|_, b| [2.0, 1.0, 0.5][b as usize]).valid(|e, b| match (e, b) {
        (0, 0) => (3, 1.0, vec![0.5]),
        (0, _) => (1, 0.0, vec![1.0]),
        _ => (4, 0.25, vec![0.75]),
    });
    fit(&mut handler, &mut sim, 2).expect("the simulation does not fail");
    let text = std::fs::read_to_string(&path).expect("the logger wrote the file");
    let second_train = format!("{:.6}", handler.recorder().losses[5]);
    assert_eq!(
        text,
        format!(
            "epoch,train_loss,valid_loss,accuracy,time\n\
             0,1.156577,0.750000,0.625000,00:00\n\
             1,{second_train},0.250000,0.750000,00:00\n"
        )
    );

    // a second fit overwrites; with append it adds a header and rows
    let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
    handler.add(CsvLogger::new(&path).append(true));
    fit(&mut handler, &mut Sim::new(1, 0), 1).expect("the simulation does not fail");
    let text = std::fs::read_to_string(&path).expect("the logger wrote the file");
    assert_eq!(text.lines().count(), 5, "{text}");
    assert_eq!(text.lines().nth(4).map(|l| l.split(',').nth(2)), Some(Some("#na#")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn csv_logger_that_cannot_write_fails_training_with_a_clear_message() {
    let dir = temp_dir("csv-blocked");
    std::fs::create_dir_all(&dir).expect("temp folder is writable");
    let blocker = dir.join("file");
    std::fs::write(&blocker, "not a folder").expect("temp folder is writable");
    let path = blocker.join("history.csv");
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(CsvLogger::new(&path));
    let err = fit(&mut handler, &mut Sim::new(1, 0), 1).expect_err("a file is in the way");
    let text = err.to_string();
    assert!(text.starts_with("callback `csv_logger` failed in on_train_begin at epoch 0: cannot "), "{text}");
    assert!(text.contains("history.csv") && text.contains("check that the folder is writable"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn save_model_every_epoch_and_on_improvement() {
    const LOSSES: &[f64] = &[1.0, 0.8, 0.9, 0.7];
    let saved = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (saved.clone(), saved.clone());
    let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
    handler
        .add(SaveModel::new(SaveEvery::Epoch, move |why, _| {
            a.lock().map_err(|e| e.to_string())?.push(why);
            Ok(())
        }))
        .add(SaveModel::new(SaveEvery::Improvement { monitor: "valid_loss".into() }, move |why, s| {
            assert_eq!(s.valid_loss, Some(LOSSES[s.epoch as usize]));
            b.lock().map_err(|e| e.to_string())?.push(why);
            Ok(())
        }));
    fit(&mut handler, &mut with_valid_losses(LOSSES), 4).expect("the simulation does not fail");
    let saved = saved.lock().expect("not poisoned").clone();
    let improvement =
        |value: f64, epoch: u32| SaveWhy::Improvement { monitor: "valid_loss".into(), value, epoch };
    assert_eq!(
        saved,
        [
            SaveWhy::Epoch { epoch: 0 },
            improvement(1.0, 0),
            SaveWhy::Epoch { epoch: 1 },
            improvement(0.8, 1),
            SaveWhy::Epoch { epoch: 2 },
            SaveWhy::Epoch { epoch: 3 },
            improvement(0.7, 3),
        ]
    );
}

#[test]
fn save_model_failure_fails_training() {
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(SaveModel::new(SaveEvery::Epoch, |_, _| Err("disk full".to_owned())));
    let err = fit(&mut handler, &mut Sim::new(1, 0), 2).expect_err("saving fails");
    assert_eq!(err.message(), "saving the model failed: disk full");
}

//! Failures end the run with `run_failed` carrying the error text, and nothing panics or hangs: libtorch
//! errors in the model and in the loss, and a NaN loss under TerminateOnNaN.

use herald_callback::TerminateOnNaN;
use herald_event::{Event, Payload};
use herald_tch::tch::{Kind, Tensor};
use herald_tch::{DataLoaders, Error};

use crate::support::{drain, synthetic, with_events};

fn run_failed(events: &[Event]) -> String {
    match &events.last().expect("at least one event").payload {
        Payload::RunFailed(f) => f.error.clone(),
        other => panic!("the run ended with {other:?}"),
    }
}

#[test]
fn shape_mismatch_fails_the_run_with_the_libtorch_text() {
    let (x, y) = synthetic(64, 6, 3, 1);
    let data = DataLoaders::from_tensors(x, y, 0.25, 16, 1).expect("loaders");
    // The model expects 5 features; the data has 6.
    let (mut learner, mut rx, _stop) = with_events(data, &[5, 3], |b| b);
    let err = learner.fit_one_cycle(2, 1e-2).expect_err("shape mismatch");
    assert!(matches!(err, Error::Train(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("training step `forward` failed at epoch 0, training batch 0"), "{text}");
    assert!(text.contains("cannot be multiplied"), "{text}");
    let error = run_failed(&drain(&mut rx));
    assert!(error.contains("cannot be multiplied"), "{error}");
    assert!(!error.contains("Exception raised from"), "{error}");
}

#[test]
fn target_out_of_range_fails_in_the_loss() {
    let (x, _) = synthetic(32, 4, 3, 1);
    let y = Tensor::f_full([32], 7, (Kind::Int64, herald_tch::tch::Device::Cpu)).expect("targets");
    let data = DataLoaders::from_tensors(x, y, 0.0, 8, 1).expect("loaders");
    let (mut learner, mut rx, _stop) = with_events(data, &[4, 3], |b| b);
    let text = learner.fit(1, 1e-3).expect_err("class 7 of 3").to_string();
    assert!(text.contains("training step `loss` failed"), "{text}");
    assert!(text.to_lowercase().contains("out of bounds"), "{text}");
    assert!(run_failed(&drain(&mut rx)).to_lowercase().contains("out of bounds"));
}

#[test]
fn nan_loss_terminates_with_run_failed() {
    let (x, y) = synthetic(64, 4, 3, 1);
    let x = x.f_index_fill(0, &Tensor::f_from_slice(&[10i64]).expect("index"), f64::NAN).expect("nan row");
    let data = DataLoaders::from_tensors(x, y, 0.25, 8, 1).expect("loaders");
    let (mut learner, mut rx, _stop) = with_events(data, &[4, 3], |b| b.callback(TerminateOnNaN));
    let err = learner.fit(3, 1e-3).expect_err("NaN loss");
    assert!(matches!(err, Error::NonFiniteLoss(_)), "{err:?}");
    assert!(err.to_string().contains("loss NaN at epoch 0, training batch"), "{err}");
    // It stopped in the first epoch, without validating.
    assert_eq!(learner.recorder().nb_batches.len(), 1);
    let error = run_failed(&drain(&mut rx));
    assert!(error.contains("loss NaN"), "{error}");
}

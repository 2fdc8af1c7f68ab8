//! The Recorder through `fit`: smoothed losses, weighted validation results and the results table.

use herald_callback::{CallbackHandler, fit};
use herald_event::format::{Table, results_table};

use crate::sim::Sim;

fn six(values: &[f64]) -> Vec<String> {
    values.iter().map(|v| format!("{v:.6}")).collect()
}

#[test]
fn smoothed_losses_follow_the_reference_vector_and_the_table_uses_the_last() {
    // REFERENCE §1: losses 2.0, 1.0, 0.5 give smooth 2.0, 1.494949, 1.156577.
    let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
    let mut sim = Sim::new(3, 2).losses(|_, b| [2.0, 1.0, 0.5][b as usize]).valid(|_, b| match b {
        0 => (3, 1.0, vec![0.5]),
        _ => (1, 0.0, vec![1.0]),
    });
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    let rec = handler.recorder();
    assert_eq!(six(&rec.losses), ["2.000000", "1.494949", "1.156577"]);
    // the table's train_loss is the smoothed loss after the last batch, not the epoch mean (1.166667)
    let row = rec.last_row().expect("one epoch ran");
    assert!(row.starts_with("0         1.156577    0.750000    0.625000  00:00"), "{row:?}");
    assert_eq!(rec.epochs[0].train_loss, rec.losses[2]);
}

#[test]
fn validation_loss_and_metrics_are_batch_size_weighted() {
    // sizes 3 and 1: loss (3 * 1.0 + 1 * 0.0) / 4 = 0.75; metric (3 * 0.5 + 1 * 1.0) / 4 = 0.625
    let mut handler = CallbackHandler::new(vec!["accuracy".into(), "error_rate".into()]);
    let mut sim = Sim::new(1, 2).valid(|_, b| match b {
        0 => (3, 1.0, vec![0.5, 0.5]),
        _ => (1, 0.0, vec![1.0, 0.0]),
    });
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    let rec = handler.recorder();
    assert_eq!(rec.valid_losses, [Some(0.75)]);
    assert_eq!(rec.metrics, [vec![Some(0.625), Some(0.375)]]);
    assert_eq!(handler.state().valid_loss, Some(0.75));
    assert_eq!(handler.state().last_metrics, [Some(0.625), Some(0.375)]);
}

#[test]
fn smoother_is_not_reset_between_epochs() {
    let mut handler = CallbackHandler::new(vec![]);
    let mut sim = Sim::new(1, 0).losses(|e, _| [2.0, 1.0, 0.5][e as usize]);
    fit(&mut handler, &mut sim, 3).expect("the simulation does not fail");
    let rec = handler.recorder();
    assert_eq!(six(&rec.losses), ["2.000000", "1.494949", "1.156577"]);
    let train: Vec<f64> = rec.epochs.iter().map(|e| e.train_loss).collect();
    assert_eq!(six(&train), ["2.000000", "1.494949", "1.156577"]);
}

#[test]
fn table_rows_match_herald_event_format() {
    let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
    let mut sim = Sim::new(4, 2).valid(|e, _| (8, 0.1 * f64::from(e + 1), vec![0.9 + 0.01 * f64::from(e)]));
    fit(&mut handler, &mut sim, 3).expect("the simulation does not fail");
    let rec = handler.recorder();
    assert_eq!(rec.names(), ["epoch", "train_loss", "valid_loss", "accuracy", "time"]);
    assert_eq!(rec.table(), results_table(&["accuracy"], &rec.epochs));
    let text = rec.table();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "epoch     train_loss  valid_loss  accuracy  time    ");
    assert_eq!(lines.len(), 4);
    let table = Table::for_metrics(&["accuracy"]);
    for (line, epoch) in lines[1..].iter().zip(&rec.epochs) {
        assert_eq!(*line, table.epoch_row(epoch));
    }
    assert_eq!(
        lines[3].trim_end(),
        format!("2         {:.6}    0.300000    0.920000  00:00", rec.losses[11])
    );
    assert_eq!(rec.nb_batches, [4, 4, 4]);
    assert_eq!(rec.lrs.len(), 12);
    assert_eq!(rec.moms.len(), 12);
}

//! Firing order: the exact sequence of events and step calls, what the state says at each, and callback
//! ordering.

use herald_callback::{CallbackHandler, Hook, fit};

use crate::sim::{Log, Probe, Sim};

#[test]
fn two_epochs_of_three_train_and_two_valid_batches_fire_in_fastai_order() {
    let log = Log::default();
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(Probe::new(&log));
    let mut sim = Sim::new(3, 2).with_log(&log);
    fit(&mut handler, &mut sim, 2).expect("the simulation does not fail");

    let train = [
        "batch_begin",
        "forward",
        "loss_begin",
        "loss",
        "backward_begin",
        "backward",
        "backward_end",
        "step",
        "step_end",
        "zero_grad",
        "batch_end",
    ];
    let valid = ["batch_begin", "forward", "loss_begin", "loss", "metrics", "batch_end"];
    let mut expected = vec!["train_begin"];
    for _epoch in 0..2 {
        expected.extend(["epoch_begin", "begin_epoch"]);
        expected.extend(train);
        expected.extend(train);
        expected.extend(train);
        expected.extend(valid);
        expected.extend(valid);
        expected.push("epoch_end");
    }
    expected.push("train_end");
    assert_eq!(log.entries(), expected);
    assert_eq!(expected.len(), 2 + 2 * (3 + 3 * 11 + 2 * 6));
}

#[test]
fn state_at_each_event() {
    let log = Log::default();
    let mut handler = CallbackHandler::new(vec!["accuracy".into()]);
    let seen = log.clone();
    handler.add(Probe::new(&Log::default()).act(move |hook, s| {
        let entry = match hook {
            Hook::BatchBegin | Hook::LossBegin | Hook::BatchEnd => format!(
                "{} e{} {}{} it{} bs{}",
                hook.as_str(),
                s.epoch,
                if s.train { "t" } else { "v" },
                s.num_batch,
                s.iteration,
                s.batch_size
            ),
            Hook::EpochEnd => format!(
                "{} e{} valid={:?} metrics={:?} smooth={}",
                hook.as_str(),
                s.epoch,
                s.valid_loss,
                s.last_metrics,
                s.smooth_loss.is_some()
            ),
            Hook::TrainBegin => {
                format!("{} {} {} {}", hook.as_str(), s.n_epochs, s.n_batches, s.n_valid_batches)
            }
            _ => return Ok(()),
        };
        seen.push(entry);
        Ok(())
    }));
    let mut sim = Sim::new(2, 1).valid(|_, _| (5, 0.25, vec![0.5]));
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    assert_eq!(
        log.entries(),
        [
            "on_train_begin 1 2 1",
            // batch_size is the previous batch's until the forward pass reports this one's
            "on_batch_begin e0 t0 it0 bs0",
            "on_loss_begin e0 t0 it0 bs8",
            "on_batch_end e0 t0 it0 bs8",
            "on_batch_begin e0 t1 it1 bs8",
            "on_loss_begin e0 t1 it1 bs8",
            "on_batch_end e0 t1 it1 bs8",
            "on_batch_begin e0 v0 it2 bs8",
            "on_loss_begin e0 v0 it2 bs5",
            "on_batch_end e0 v0 it2 bs5",
            "on_epoch_end e0 valid=Some(0.25) metrics=[Some(0.5)] smooth=true",
        ]
    );
}

#[test]
fn callbacks_fire_by_order_then_by_insertion() {
    let log = Log::default();
    let mut handler = CallbackHandler::new(vec![]);
    handler
        .add(Probe::tagged(&log, "late", 5))
        .add(Probe::tagged(&log, "first_zero", 0))
        .add(Probe::tagged(&log, "early", -20))
        .add(Probe::tagged(&log, "second_zero", 0));
    assert_eq!(handler.names(), ["early", "recorder", "first_zero", "second_zero", "late"]);
    let mut sim = Sim::new(1, 0);
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    let batch_end: Vec<String> = log.entries().into_iter().filter(|e| e.ends_with(".batch_end")).collect();
    assert_eq!(
        batch_end,
        ["early.batch_end", "first_zero.batch_end", "second_zero.batch_end", "late.batch_end"]
    );
    let train_end: Vec<String> = log.entries().into_iter().filter(|e| e.ends_with(".train_end")).collect();
    assert_eq!(
        train_end,
        ["early.train_end", "first_zero.train_end", "second_zero.train_end", "late.train_end"]
    );
}

#[test]
fn hand_written_loop_uses_the_same_handler_methods() {
    // A loop that cannot hand control to `fit` calls the handler itself.
    let log = Log::default();
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(Probe::new(&log));
    handler.on_train_begin(1, 1, 0).expect("no callback fails");
    handler.on_epoch_begin(0).expect("no callback fails");
    handler.on_batch_begin(0, true).expect("no callback fails");
    handler.on_loss_begin(16).expect("no callback fails");
    assert!(!handler.on_backward_begin(2.0).expect("no callback fails"));
    assert!(!handler.on_backward_end().expect("no callback fails"));
    assert!(!handler.on_step_end().expect("no callback fails"));
    assert!(!handler.on_batch_end(2.0).expect("no callback fails"));
    assert!(!handler.on_epoch_end(None, &[]).expect("no callback fails"));
    handler.on_train_end(None).expect("no callback fails");
    assert_eq!(handler.recorder().losses, [2.0]);
    assert_eq!(log.entries().len(), 10);
}

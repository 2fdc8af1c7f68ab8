//! Schedules driven by the real `fit`: the one-cycle reference vectors reach the optimizer step.

use herald_callback::{CallbackHandler, ConstantLr, OneCycle, OneCycleScheduler, fit};

use crate::sim::Sim;

// REFERENCE §1, n = 10, max_lr = 1e-2, pct_start = 0.3: lr and momentum used by batches 0..9.
const LRS: [f64; 10] =
    [4e-4, 2.8e-3, 7.6e-3, 1e-2, 9.50485e-3, 8.11746e-3, 6.11262e-3, 3.88742e-3, 1.88258e-3, 4.95194e-4];
const MOMS: [f64; 10] = [0.95, 0.925, 0.875, 0.85, 0.855, 0.8688, 0.8889, 0.9111, 0.9312, 0.945];

fn check_reference(steps: &[(f64, f64)]) {
    assert_eq!(steps.len(), 10);
    for (i, ((lr, mom), (elr, emom))) in steps.iter().zip(LRS.iter().zip(MOMS)).enumerate() {
        // the reference gives lr to 6 significant digits, momentum to 4
        assert!((lr - elr).abs() <= 5e-6 * elr, "lr of batch {i}: {lr} vs {elr}");
        assert!((mom - emom).abs() <= 5e-5, "momentum of batch {i}: {mom} vs {emom}");
    }
}

#[test]
fn one_cycle_through_fit_gives_the_reference_vectors() {
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(OneCycleScheduler::new(1e-2));
    let mut sim = Sim::new(10, 1);
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    check_reference(&sim.steps);
    let rec = handler.recorder();
    let recorded: Vec<(f64, f64)> = rec.lrs.iter().copied().zip(rec.moms.iter().copied()).collect();
    assert_eq!(recorded, sim.steps, "the recorder keeps what the optimizer got");
}

#[test]
fn one_cycle_spans_all_epochs() {
    // 2 epochs of 5 batches are the same n = 10 cycle
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(OneCycleScheduler::with(OneCycle::new(1e-2, 0).pct_start(0.3)));
    let mut sim = Sim::new(5, 0);
    fit(&mut handler, &mut sim, 2).expect("the simulation does not fail");
    check_reference(&sim.steps);
    assert_eq!(handler.get::<OneCycleScheduler>().map(|s| s.cycle().total_batches), Some(10));
}

#[test]
fn skipped_steps_still_advance_the_schedule() {
    // the schedule follows batches, not optimizer steps: a skipped step does not shift later values
    use crate::sim::{Log, Probe};
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(OneCycleScheduler::new(1e-2));
    handler.add(Probe::new(&Log::default()).act(|hook, s| {
        if hook == herald_callback::Hook::BackwardEnd && s.num_batch == 4 {
            s.skip_step = true;
        }
        Ok(())
    }));
    let mut sim = Sim::new(10, 0);
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    assert_eq!(sim.steps.len(), 9);
    let lrs = &handler.recorder().lrs;
    assert!((lrs[5] - LRS[5]).abs() <= 5e-6 * LRS[5]);
    assert!((sim.steps[4].0 - LRS[5]).abs() <= 5e-6 * LRS[5]);
}

#[test]
fn constant_lr_sets_the_hypers_at_train_begin() {
    let mut handler = CallbackHandler::new(vec![]);
    handler.add(ConstantLr(0.05));
    handler.state_mut().mom = 0.8;
    let mut sim = Sim::new(2, 0);
    fit(&mut handler, &mut sim, 1).expect("the simulation does not fail");
    assert_eq!(sim.steps, [(0.05, 0.8), (0.05, 0.8)]);
}

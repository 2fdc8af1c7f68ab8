//! Hyperparameter schedules: fastai v1's annealing functions, the one-cycle policy and the callbacks that
//! apply them to [`State::lr`] and [`State::mom`].
//!
//! The trainer reads `state.lr` and `state.mom` at every optimizer step ([`crate::Step::step`]), so a
//! schedule is just a callback that writes them: [`OneCycleScheduler`] at `on_train_begin` and after each
//! training batch (`on_batch_end`), [`ConstantLr`] once at `on_train_begin`. Without a scheduler the
//! state keeps whatever the user set before `fit` (fastai's defaults, 3e-3 and 0.9, on a new handler). This
//! module does not touch an optimizer.

use std::f64::consts::PI;

use crate::callback::{Callback, CallbackResult};
use crate::state::State;

/// `end + (start - end) / 2 * (cos(pi * pct) + 1)`.
pub fn annealing_cos(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
}

/// `start + pct * (end - start)`.
pub fn annealing_linear(start: f64, end: f64, pct: f64) -> f64 {
    start + pct * (end - start)
}

/// `start * (end / start)^pct`.
pub fn annealing_exp(start: f64, end: f64, pct: f64) -> f64 {
    start * (end / start).powf(pct)
}

/// `start`, whatever the progress (fastai's `annealing_no`).
pub fn annealing_const(start: f64, _end: f64, _pct: f64) -> f64 {
    start
}

/// An annealing function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anneal {
    /// [`annealing_cos`].
    Cos,
    /// [`annealing_linear`].
    Linear,
    /// [`annealing_exp`].
    Exp,
    /// [`annealing_const`].
    Const,
}

impl Anneal {
    /// The value at progress `pct` (0 to 1) from `start` to `end`.
    pub fn at(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => annealing_cos(start, end, pct),
            Anneal::Linear => annealing_linear(start, end, pct),
            Anneal::Exp => annealing_exp(start, end, pct),
            Anneal::Const => annealing_const(start, end, pct),
        }
    }
}

/// fastai v1's `Scheduler`: `n_iter` steps from `start` to `end`; each [`Scheduler::step`] advances one and
/// returns `anneal(start, end, steps / n_iter)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    /// The value at step 0.
    pub start: f64,
    /// The value after the last step.
    pub end: f64,
    n_iter: u64,
    n: u64,
    anneal: Anneal,
}

impl Scheduler {
    /// A phase of `n_iter` steps (at least 1, as fastai has it).
    pub fn new(start: f64, end: f64, n_iter: u64, anneal: Anneal) -> Scheduler {
        Scheduler { start, end, n_iter: n_iter.max(1), n: 0, anneal }
    }

    /// Advances one step and returns the value there.
    pub fn step(&mut self) -> f64 {
        self.n += 1;
        self.anneal.at(self.start, self.end, self.n as f64 / self.n_iter as f64)
    }

    /// Whether all `n_iter` steps were taken.
    pub fn is_done(&self) -> bool {
        self.n >= self.n_iter
    }
}

/// The one-cycle policy (`fit_one_cycle`, fastai v1 defaults): warm up from `max_lr / div_factor` to `max_lr`
/// over `floor(n * pct_start)` batches while momentum goes from `moms.0` to `moms.1`, then anneal to
/// `max_lr / final_div` while momentum goes back, both with cosine annealing.
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycle {
    /// The peak learning rate.
    pub max_lr: f64,
    /// Training batches in the whole fit.
    pub total_batches: u64,
    /// The starting lr is `max_lr / div_factor`.
    pub div_factor: f64,
    /// The share of batches spent warming up.
    pub pct_start: f64,
    /// The final lr is `max_lr / final_div`.
    pub final_div: f64,
    /// Momentum at the start (and end) and at the peak of the lr.
    pub moms: (f64, f64),
}

impl OneCycle {
    /// `max_lr` over `total_batches` training batches, with `div_factor` 25, `pct_start` 0.3, `final_div`
    /// 25e4 (`div_factor * 1e4`) and `moms` (0.95, 0.85).
    pub fn new(max_lr: f64, total_batches: u64) -> OneCycle {
        OneCycle {
            max_lr,
            total_batches,
            div_factor: 25.0,
            pct_start: 0.3,
            final_div: 25e4,
            moms: (0.95, 0.85),
        }
    }

    /// Sets `div_factor`.
    pub fn div_factor(mut self, v: f64) -> OneCycle {
        self.div_factor = v;
        self
    }

    /// Sets `pct_start`.
    pub fn pct_start(mut self, v: f64) -> OneCycle {
        self.pct_start = v;
        self
    }

    /// Sets `final_div`.
    pub fn final_div(mut self, v: f64) -> OneCycle {
        self.final_div = v;
        self
    }

    /// Sets the momentum at the start and end (`start`) and at the peak of the lr (`middle`).
    pub fn moms(mut self, start: f64, middle: f64) -> OneCycle {
        self.moms = (start, middle);
        self
    }

    /// Sets the number of training batches in the whole fit.
    pub fn total_batches(mut self, n: u64) -> OneCycle {
        self.total_batches = n;
        self
    }

    /// Warm-up and annealing lengths: `a1 = floor(n * pct_start)`, `a2 = n - a1`.
    pub fn phases(&self) -> (u64, u64) {
        let a1 = ((self.total_batches as f64) * self.pct_start).floor() as u64;
        let a1 = a1.min(self.total_batches);
        (a1, self.total_batches - a1)
    }

    /// The per-step schedules `(lr, mom)` for both phases.
    fn schedulers(&self) -> [(Scheduler, Scheduler); 2] {
        let (a1, a2) = self.phases();
        let low = self.max_lr / self.div_factor;
        let (m0, m1) = self.moms;
        [
            (Scheduler::new(low, self.max_lr, a1, Anneal::Cos), Scheduler::new(m0, m1, a1, Anneal::Cos)),
            (
                Scheduler::new(self.max_lr, self.max_lr / self.final_div, a2, Anneal::Cos),
                Scheduler::new(m1, m0, a2, Anneal::Cos),
            ),
        ]
    }

    /// The `(lr, mom)` each of the `total_batches` training batches uses, in order.
    pub fn values(&self) -> Vec<(f64, f64)> {
        let mut run = OneCycleRun::new(self);
        let mut out = Vec::with_capacity(usize::try_from(self.total_batches).unwrap_or(0));
        for _ in 0..self.total_batches {
            out.push(run.current);
            run.advance();
        }
        out
    }
}

/// A one-cycle schedule being stepped.
#[derive(Debug, Clone)]
struct OneCycleRun {
    phases: [(Scheduler, Scheduler); 2],
    idx: usize,
    current: (f64, f64),
}

impl OneCycleRun {
    fn new(cycle: &OneCycle) -> OneCycleRun {
        let phases = cycle.schedulers();
        let current = (phases[0].0.start, phases[0].1.start);
        OneCycleRun { phases, idx: 0, current }
    }

    /// One step after a training batch; `false` once the schedule is exhausted.
    fn advance(&mut self) -> bool {
        let Some((lr, mom)) = self.phases.get_mut(self.idx) else { return false };
        self.current = (lr.step(), mom.step());
        if lr.is_done() {
            self.idx += 1;
        }
        true
    }
}

/// Applies a [`OneCycle`] schedule: at `on_train_begin` it sizes the cycle to `n_epochs * n_batches` and sets
/// the start values; after each training batch (`on_batch_end`) it steps. Like fastai, it stops training if
/// more training batches run than the schedule has. Order 0.
#[derive(Debug, Clone)]
pub struct OneCycleScheduler {
    cycle: OneCycle,
    run: Option<OneCycleRun>,
}

impl OneCycleScheduler {
    /// One cycle to `max_lr` with fastai's defaults.
    pub fn new(max_lr: f64) -> OneCycleScheduler {
        OneCycleScheduler::with(OneCycle::new(max_lr, 0))
    }

    /// This cycle's parameters; its `total_batches` is replaced at train begin.
    pub fn with(cycle: OneCycle) -> OneCycleScheduler {
        OneCycleScheduler { cycle, run: None }
    }

    /// The cycle's parameters.
    pub fn cycle(&self) -> &OneCycle {
        &self.cycle
    }
}

impl Callback for OneCycleScheduler {
    fn name(&self) -> &str {
        "one_cycle_scheduler"
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        self.cycle.total_batches = u64::from(s.n_epochs).saturating_mul(s.n_batches);
        let run = OneCycleRun::new(&self.cycle);
        (s.lr, s.mom) = run.current;
        self.run = Some(run);
        Ok(())
    }

    fn on_batch_end(&mut self, s: &mut State) -> CallbackResult {
        if !s.train {
            return Ok(());
        }
        let Some(run) = &mut self.run else { return Ok(()) };
        if run.advance() {
            (s.lr, s.mom) = run.current;
        } else {
            s.stop_epoch = true;
            s.stop_training = true;
        }
        Ok(())
    }
}

/// Sets a constant learning rate at `on_train_begin`. Equivalent to setting `handler.state_mut().lr` before
/// `fit` (momentum likewise through `state_mut().mom`); use whichever reads better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConstantLr(pub f64);

impl Callback for ConstantLr {
    fn name(&self) -> &str {
        "constant_lr"
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        s.lr = self.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, expected: f64, rel: f64) -> bool {
        (got - expected).abs() <= rel * expected.abs()
    }

    #[test]
    fn annealing_functions() {
        fn check(a: Anneal, pct: f64, expected: f64) {
            let got = a.at(1.0, 0.25, pct);
            assert!(close(got, expected, 1e-12), "{a:?} at {pct}: {got} != {expected}");
        }
        check(Anneal::Cos, 0.0, 1.0);
        check(Anneal::Cos, 0.5, 0.625);
        check(Anneal::Cos, 1.0, 0.25);
        check(Anneal::Linear, 0.5, 0.625);
        check(Anneal::Linear, 1.0, 0.25);
        check(Anneal::Exp, 0.5, 0.5);
        check(Anneal::Exp, 1.0, 0.25);
        check(Anneal::Const, 0.7, 1.0);
    }

    #[test]
    fn one_cycle_reference_vectors() {
        // ../shared/REFERENCE.md §1 (n = 10, max_lr = 1e-2, pct_start = 0.3).
        let lrs = [
            4e-4, 2.8e-3, 7.6e-3, 1e-2, 9.50485e-3, 8.11746e-3, 6.11262e-3, 3.88742e-3, 1.88258e-3,
            4.95194e-4,
        ];
        let moms = [0.95, 0.925, 0.875, 0.85, 0.855, 0.8688, 0.8889, 0.9111, 0.9312, 0.945];
        let cycle = OneCycle::new(1e-2, 10);
        assert_eq!(cycle.phases(), (3, 7));
        let values = cycle.values();
        assert_eq!(values.len(), 10);
        for (i, ((lr, mom), (elr, emom))) in values.iter().zip(lrs.iter().zip(moms)).enumerate() {
            assert!(close(*lr, *elr, 5e-6), "lr of batch {i}: {lr} != {elr}");
            assert!(close(*mom, emom, 1e-4), "mom of batch {i}: {mom} != {emom}");
        }
    }

    #[test]
    fn one_cycle_tiny_runs_do_not_divide_by_zero() {
        let v = OneCycle::new(1e-2, 1).values();
        assert_eq!(v, [(4e-4, 0.95)]);
        assert!(OneCycle::new(1e-2, 0).values().is_empty());
        let v = OneCycle::new(1e-2, 2).values();
        assert!(v.iter().all(|(lr, m)| lr.is_finite() && m.is_finite()));
    }
}

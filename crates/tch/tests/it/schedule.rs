//! fit_one_cycle's learning rate and momentum, read back from what the libtorch optimizer actually did.
//!
//! With SGD (momentum m, no dampening, no weight decay) libtorch updates `buf = m * buf + g` (`buf = g` at the
//! first step) and `p -= lr * buf`. Observing each step's gradient and parameter change in double precision
//! gives back `lr` and `m` exactly: step 0 `delta = lr * g`; later `delta = (lr * m) * buf_prev + lr * g`, a
//! two-unknown least-squares fit.

use herald_callback::{Callback, CallbackResult, State};
use herald_tch::tch::nn::VarStore;
use herald_tch::tch::{Device, Kind, Tensor};
use herald_tch::{DataLoaders, Learner, OptimizerKind, mlp};

use crate::support::synthetic;

/// REFERENCE §1 (n = 10, max_lr = 1e-2).
const LRS: [f64; 10] =
    [4e-4, 2.8e-3, 7.6e-3, 1e-2, 9.50485e-3, 8.11746e-3, 6.11262e-3, 3.88742e-3, 1.88258e-3, 4.95194e-4];
const MOMS: [f64; 10] = [0.95, 0.925, 0.875, 0.85, 0.855, 0.8688, 0.8889, 0.9111, 0.9312, 0.945];

/// Records, per training step, the parameters and gradients before the step and the parameters after.
struct Observer {
    params: Vec<Tensor>,
    steps: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    pending: Option<(Vec<f64>, Vec<f64>)>,
}

fn flat(ts: impl Iterator<Item = Tensor>) -> Vec<f64> {
    ts.flat_map(|t| Vec::<f64>::try_from(t.f_flatten(0, -1).expect("flat")).expect("f64 values")).collect()
}

impl Callback for Observer {
    fn name(&self) -> &str {
        "observer"
    }
    fn on_backward_end(&mut self, _: &mut State) -> CallbackResult {
        let p = flat(self.params.iter().map(|t| t.detach().copy()));
        let g = flat(self.params.iter().map(|t| t.grad().copy()));
        self.pending = Some((p, g));
        Ok(())
    }
    fn on_step_end(&mut self, _: &mut State) -> CallbackResult {
        let after = flat(self.params.iter().map(|t| t.detach().copy()));
        let (before, grad) = self.pending.take().ok_or("step without backward")?;
        self.steps.push((before, grad, after));
        Ok(())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The (lr, momentum) of each SGD step, from the observed updates (momentum of step 0 is not observable).
fn inferred(steps: &[(Vec<f64>, Vec<f64>, Vec<f64>)]) -> Vec<(f64, Option<f64>)> {
    let mut out = Vec::new();
    let mut buf: Vec<f64> = Vec::new();
    for (before, g, after) in steps {
        let delta: Vec<f64> = before.iter().zip(after).map(|(b, a)| b - a).collect();
        let (lr, mom) = if buf.is_empty() {
            (dot(&delta, g) / dot(g, g), None)
        } else {
            // delta = a * buf + b * g: normal equations.
            let (bb, bg, gg) = (dot(&buf, &buf), dot(&buf, g), dot(g, g));
            let (bd, gd) = (dot(&buf, &delta), dot(g, &delta));
            let det = bb * gg - bg * bg;
            let a = (bd * gg - gd * bg) / det;
            let b = (gd * bb - bd * bg) / det;
            (b, Some(a / b))
        };
        buf = delta.iter().map(|d| d / lr).collect();
        out.push((lr, mom));
    }
    out
}

/// A double-precision linear model on 80 examples in 10 batches of 8, no validation set.
fn sgd_learner() -> (Learner, Vec<Tensor>) {
    let (x, y) = synthetic(80, 5, 3, 1);
    let x = x.f_to_kind(Kind::Double).expect("double");
    let data = DataLoaders::from_tensors(x, y, 0.0, 8, 3).expect("loaders");
    assert_eq!(data.n_train_batches(), 10);
    let mut vs = VarStore::new(Device::Cpu);
    let model = mlp(&vs.root(), &[5, 3]).expect("model");
    vs.double();
    let params = vs.trainable_variables();
    let learner = Learner::builder(vs, model, data).opt(OptimizerKind::sgd()).build().expect("learner");
    (learner, params)
}

#[test]
fn one_cycle_lr_and_momentum_read_back_from_the_optimizer() {
    let (mut learner, params) = sgd_learner();
    learner.add_callback(Observer { params, steps: Vec::new(), pending: None });
    learner.fit_one_cycle(1, 1e-2).expect("trains");
    let observer = learner.handler().get::<Observer>().expect("added");
    let got = inferred(&observer.steps);
    assert_eq!(got.len(), 10);
    for (i, (lr, mom)) in got.iter().enumerate() {
        assert!((lr - LRS[i]).abs() <= 1e-5 * LRS[i], "batch {i}: lr {lr} != {}", LRS[i]);
        if let Some(mom) = mom {
            assert!((mom - MOMS[i]).abs() <= 1e-4, "batch {i}: momentum {mom} != {}", MOMS[i]);
        }
    }
    // The optimizer's own record and the Recorder agree.
    assert!((learner.optimizer().lr() - LRS[9]).abs() <= 1e-5 * LRS[9]);
    assert!((learner.optimizer().mom() - MOMS[9]).abs() < 1e-4);
    let rec = learner.recorder();
    for (i, (lr, mom)) in rec.lrs.iter().zip(&rec.moms).enumerate() {
        assert!((lr - LRS[i]).abs() <= 1e-5 * LRS[i], "recorder lr {i}");
        assert!((mom - MOMS[i]).abs() <= 1e-4, "recorder mom {i}");
    }
}

#[test]
fn fit_uses_a_constant_lr() {
    let (mut learner, params) = sgd_learner();
    learner.add_callback(Observer { params, steps: Vec::new(), pending: None });
    learner.fit(1, 0.05).expect("trains");
    let got = inferred(&learner.handler().get::<Observer>().expect("added").steps);
    for (i, (lr, mom)) in got.iter().enumerate() {
        assert!((lr - 0.05).abs() < 1e-9, "batch {i}: lr {lr}");
        if let Some(mom) = mom {
            assert!((mom - herald_callback::DEFAULT_MOM).abs() < 1e-6, "batch {i}: momentum {mom}");
        }
    }
}

#[test]
fn adam_beta1_follows_the_schedule() {
    let (x, y) = synthetic(80, 5, 3, 1);
    let data = DataLoaders::from_tensors(x, y, 0.0, 8, 3).expect("loaders");
    let vs = VarStore::new(Device::Cpu);
    let model = mlp(&vs.root(), &[5, 3]).expect("model");
    let mut learner = Learner::builder(vs, model, data).build().expect("learner");
    assert_eq!(learner.optimizer().kind(), OptimizerKind::adam());
    learner.fit_one_cycle(1, 1e-2).expect("trains");
    // The last step used the schedule's last values.
    assert!((learner.optimizer().lr() - LRS[9]).abs() <= 1e-5 * LRS[9]);
    assert!((learner.optimizer().mom() - MOMS[9]).abs() <= 1e-4);
}

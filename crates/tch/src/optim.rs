//! The optimizers a [`crate::Learner`] can use, on libtorch's C++ implementations (tch's `COptimizer`), with
//! the learning rate and momentum settable before every step and readable afterwards.
//!
//! fastai's default is AdamW-style Adam: betas (0.9, 0.99), decoupled weight decay 1e-2, eps 1e-5 (fastai
//! 2.x's `Adam` default; v1 used PyTorch's 1e-8). With Adam the "momentum" of the one-cycle schedule is beta1.
//! SGD takes the momentum as is. Parameter groups, per-layer learning rates and gradient clipping are not
//! offered here.

use tch::{COptimizer, Tensor, nn::VarStore};

use crate::error::Result;

/// Which optimizer, with its fixed hyper-parameters; the learning rate and momentum come from the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay (AdamW). `beta1` is the schedule's momentum.
    Adam {
        /// The decay rate of the second-moment estimate (fastai: 0.99).
        beta2: f64,
        /// Decoupled weight decay, applied to the weights directly (fastai: 1e-2).
        wd: f64,
        /// Added to the denominator for numerical stability (fastai: 1e-5).
        eps: f64,
    },
    /// SGD with momentum (the schedule's), coupled L2 weight decay `wd`.
    Sgd {
        /// L2 weight decay added to the gradients (default 0).
        wd: f64,
        /// Nesterov momentum instead of classical momentum (default false).
        nesterov: bool,
    },
}

impl OptimizerKind {
    /// fastai's default: AdamW-style Adam, betas (0.9, 0.99), wd 1e-2, eps 1e-5.
    pub fn adam() -> OptimizerKind {
        OptimizerKind::Adam { beta2: 0.99, wd: 1e-2, eps: 1e-5 }
    }

    /// SGD with momentum, no weight decay.
    pub fn sgd() -> OptimizerKind {
        OptimizerKind::Sgd { wd: 0.0, nesterov: false }
    }

    /// The same kind with weight decay `wd`.
    pub fn wd(self, wd: f64) -> OptimizerKind {
        match self {
            OptimizerKind::Adam { beta2, eps, .. } => OptimizerKind::Adam { beta2, wd, eps },
            OptimizerKind::Sgd { nesterov, .. } => OptimizerKind::Sgd { wd, nesterov },
        }
    }
}

impl Default for OptimizerKind {
    fn default() -> Self {
        OptimizerKind::adam()
    }
}

/// A libtorch optimizer over a VarStore's trainable variables, remembering the hyper-parameters it was last
/// given so they are set only when they change and can be read back.
#[derive(Debug)]
pub struct Optimizer {
    inner: COptimizer,
    kind: OptimizerKind,
    lr: f64,
    mom: f64,
}

impl Optimizer {
    /// An optimizer for `vs`'s trainable variables, starting at `lr` and momentum `mom`.
    pub fn new(kind: OptimizerKind, vs: &VarStore, lr: f64, mom: f64) -> Result<Optimizer> {
        let mut inner = match kind {
            OptimizerKind::Adam { beta2, wd, eps } => COptimizer::adamw(lr, mom, beta2, wd, eps, false)?,
            OptimizerKind::Sgd { wd, nesterov } => COptimizer::sgd(lr, mom, 0.0, wd, nesterov)?,
        };
        for var in vs.trainable_variables() {
            inner.add_parameters(&var, 0)?;
        }
        Ok(Optimizer { inner, kind, lr, mom })
    }

    /// Which optimizer this is, with its fixed hyper-parameters.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// The learning rate the last step used (or will use).
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The momentum (beta1 for Adam) the last step used (or will use).
    pub fn mom(&self) -> f64 {
        self.mom
    }

    /// Sets the hyper-parameters in libtorch when they changed.
    pub fn set_hypers(&mut self, lr: f64, mom: f64) -> Result<()> {
        if lr != self.lr {
            self.inner.set_learning_rate(lr)?;
            self.lr = lr;
        }
        if mom != self.mom {
            self.inner.set_momentum(mom)?;
            self.mom = mom;
        }
        Ok(())
    }

    /// Updates the variables from their gradients at the current lr and momentum.
    pub fn step(&mut self) -> Result<()> {
        Ok(self.inner.step()?)
    }

    /// Sets every trainable variable's gradient to zero, before the next backward pass.
    pub fn zero_grad(&mut self) -> Result<()> {
        Ok(self.inner.zero_grad()?)
    }
}

/// Shallow handles on `vs`'s variables by name, sharing storage with the model (for saving while the
/// Learner owns the VarStore).
pub(crate) fn named_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

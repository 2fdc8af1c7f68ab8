//! [`Learner`]: fastai's Learner on tch. It owns the model, its VarStore, the data, the loss, the metrics,
//! the optimizer and a [`CallbackHandler`], and trains with herald-callback's generic driver
//! ([`herald_callback::fit`]) through [`TchStep`], its implementation of [`Step`].
//!
//! [`Learner::fit`] trains at a constant learning rate; [`Learner::fit_one_cycle`] with fastai v1's one-cycle
//! schedule, setting the optimizer's learning rate and momentum (beta1 for Adam) before every training batch.
//! Every libtorch failure is an error value: the run ends with `run_failed` carrying the text, and `fit`
//! returns [`Error::Train`]. Nothing here spawns threads or does I/O besides what callbacks do.
//!
//! Per training batch the loop takes one value back from the device (the loss, as fastai does); batches are
//! views cut once per epoch, already on the device.

use std::path::{Path, PathBuf};

use herald_callback::{
    Callback, CallbackHandler, CallbackResult, OneCycle, OneCycleScheduler, Recorder, SaveEvery, SaveModel,
    SaveWhy, State, Step, StopReason,
};
use herald_plot::{LossHistory, LrHistory};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use crate::data::DataLoaders;
use crate::error::{Error, Result};
use crate::metrics::Metric;
use crate::model;
use crate::optim::{Optimizer, OptimizerKind, named_variables};
use crate::progress::{Progress, ProgressMode};

/// A loss function: the model's output and the targets of a batch to a scalar loss tensor.
pub type LossFn = fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>;

/// Builds a [`Learner`]; see [`Learner::builder`].
pub struct LearnerBuilder {
    vs: VarStore,
    model: Box<dyn ModuleT>,
    data: DataLoaders,
    loss: LossFn,
    metrics: Vec<Metric>,
    callbacks: Vec<Box<dyn Callback>>,
    opt: OptimizerKind,
    device: Option<Device>,
    progress: Option<ProgressMode>,
}

impl LearnerBuilder {
    /// The loss (default: [`model::cross_entropy`]).
    pub fn loss(mut self, loss: LossFn) -> Self {
        self.loss = loss;
        self
    }

    /// The validation metrics, in table-column order.
    pub fn metrics(mut self, metrics: impl IntoIterator<Item = Metric>) -> Self {
        self.metrics = metrics.into_iter().collect();
        self
    }

    /// Adds a callback (the Recorder is always there).
    pub fn callback(mut self, cb: impl Callback) -> Self {
        self.callbacks.push(Box::new(cb));
        self
    }

    /// Adds callbacks.
    pub fn callbacks(mut self, cbs: impl IntoIterator<Item = Box<dyn Callback>>) -> Self {
        self.callbacks.extend(cbs);
        self
    }

    /// The optimizer (default: [`OptimizerKind::adam`], fastai's).
    pub fn opt(mut self, opt: OptimizerKind) -> Self {
        self.opt = opt;
        self
    }

    /// Trains on `device`: moves the VarStore and the data there (default: where the VarStore is).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Console progress: the bar and table ([`ProgressMode`]); default none (a library stays quiet unless
    /// asked).
    pub fn progress(mut self, mode: ProgressMode) -> Self {
        self.progress = Some(mode);
        self
    }

    /// Builds the Learner: moves the VarStore and the data to the device and creates the optimizer.
    pub fn build(self) -> Result<Learner> {
        let LearnerBuilder { mut vs, model, mut data, loss, metrics, callbacks, opt, device, progress } =
            self;
        let device = device.unwrap_or_else(|| vs.device());
        if device != vs.device() {
            model::guarded(|| {
                vs.set_device(device);
                Ok(())
            })?;
        }
        data.set_device(device)?;
        let names: Vec<String> = metrics.iter().map(|m| m.name.clone()).collect();
        let mut handler = CallbackHandler::new(names);
        handler.add(Schedule::default());
        if let Some(mode) = progress {
            handler.add(Progress::new(mode));
        }
        for cb in callbacks {
            handler.add_boxed(cb);
        }
        let state = handler.state();
        let optimizer = Optimizer::new(opt, &vs, state.lr, state.mom)?;
        let step = TchStep {
            model,
            data,
            loss,
            metrics,
            opt: optimizer,
            output: None,
            targets: None,
            loss_value: None,
        };
        Ok(Learner { vs, step, handler })
    }
}

/// fastai's Learner: see the module docs.
pub struct Learner {
    vs: VarStore,
    step: TchStep,
    handler: CallbackHandler,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner").field("handler", &self.handler).finish_non_exhaustive()
    }
}

impl Learner {
    /// A builder for `model` (any tch module whose variables live in `vs`) trained on `data`.
    pub fn builder(vs: VarStore, model: impl ModuleT + 'static, data: DataLoaders) -> LearnerBuilder {
        LearnerBuilder {
            vs,
            model: Box::new(model),
            data,
            loss: model::cross_entropy,
            metrics: Vec::new(),
            callbacks: Vec::new(),
            opt: OptimizerKind::default(),
            device: None,
            progress: None,
        }
    }

    /// Trains `epochs` epochs at the constant learning rate `lr` (momentum: the state's, 0.9 by default).
    pub fn fit(&mut self, epochs: u32, lr: f64) -> Result<()> {
        self.handler.state_mut().lr = lr;
        self.run(epochs)
    }

    /// Trains `epochs` epochs with fastai v1's one-cycle schedule up to `max_lr` (div 25, pct_start 0.3,
    /// final div 25e4, momentum 0.95 -> 0.85 -> 0.95).
    pub fn fit_one_cycle(&mut self, epochs: u32, max_lr: f64) -> Result<()> {
        self.fit_one_cycle_with(epochs, OneCycle::new(max_lr, 0))
    }

    /// [`Learner::fit_one_cycle`] with this cycle's parameters (its `total_batches` is set from the data).
    pub fn fit_one_cycle_with(&mut self, epochs: u32, cycle: OneCycle) -> Result<()> {
        self.schedule().0 = Some(OneCycleScheduler::with(cycle));
        let result = self.run(epochs);
        self.schedule().0 = None;
        result
    }

    /// The one-cycle loop of [`Learner::fit_one_cycle`] with no callback machinery at all: no handler, no
    /// Recorder, no events, no table; the same [`TchStep`] calls in the same order with the same schedule.
    /// It exists to measure what the callbacks cost (`cargo xtask bench trainer`); it returns the last
    /// epoch's validation loss and metrics.
    pub fn fit_one_cycle_bare(&mut self, epochs: u32, max_lr: f64) -> Result<(f64, Vec<f64>)> {
        let n_batches = self.step.n_train_batches();
        let schedule = OneCycle::new(max_lr, u64::from(epochs) * n_batches).values();
        let mut hypers = schedule.iter();
        let mut last = (f64::NAN, Vec::new());
        for epoch in 0..epochs {
            self.step.begin_epoch(epoch)?;
            for batch in 0..n_batches {
                let Some(&(lr, mom)) = hypers.next() else { break };
                self.step.forward(batch, true)?;
                self.step.loss(true)?;
                self.step.backward()?;
                self.step.step(lr, mom)?;
                self.step.zero_grad()?;
            }
            last = self.step.validate()?;
        }
        Ok(last)
    }

    fn schedule(&mut self) -> &mut Schedule {
        self.handler
            .get_mut::<Schedule>()
            .expect("Learner::build adds the Schedule callback and none is removed")
    }

    fn run(&mut self, epochs: u32) -> Result<()> {
        herald_callback::fit(&mut self.handler, &mut self.step, epochs)?;
        match &self.handler.state().stop_reason {
            Some(StopReason::NonFiniteLoss(text)) => Err(Error::NonFiniteLoss(text.clone())),
            _ => Ok(()),
        }
    }

    /// The Recorder: losses, metrics, learning rates and momentums of the runs so far.
    pub fn recorder(&self) -> &Recorder {
        self.handler.recorder()
    }

    /// The callback handler driving training (with its built-in schedule callback).
    pub fn handler(&self) -> &CallbackHandler {
        &self.handler
    }

    /// The callback handler, to add, find or change callbacks between fits.
    pub fn handler_mut(&mut self) -> &mut CallbackHandler {
        &mut self.handler
    }

    /// The training state callbacks see: epoch, iteration, losses, metrics, lr, momentum, stop reason.
    pub fn state(&self) -> &State {
        self.handler.state()
    }

    /// The VarStore holding the model's variables (to save or load weights).
    pub fn vs(&self) -> &VarStore {
        &self.vs
    }

    /// The training and validation data, on the training device.
    pub fn data(&self) -> &DataLoaders {
        &self.step.data
    }

    /// The optimizer, to read back the learning rate and momentum the last step used.
    pub fn optimizer(&self) -> &Optimizer {
        &self.step.opt
    }

    /// Adds a callback after building.
    pub fn add_callback(&mut self, cb: impl Callback) {
        self.handler.add(cb);
    }

    /// Saves the model's weights to `path` (libtorch's format; `.safetensors` for safetensors).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.vs.save(path).map_err(|e| Error::file(path, crate::error::torch_message(&e)))
    }

    /// Loads weights saved by [`Learner::save`] or [`Learner::save_model`]'s callback.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.vs.load(path).map_err(|e| Error::file(path, crate::error::torch_message(&e)))
    }

    /// fastai's `SaveModelCallback`: saves the weights to `path` after every epoch, or after each epoch where
    /// the monitored value improved (then `path` holds the best weights; [`Learner::load`] them after
    /// training). A failed save fails the run with the reason.
    pub fn save_model(&mut self, every: SaveEvery, path: impl Into<PathBuf>) {
        let path = path.into();
        let vars = named_variables(&self.vs);
        let save = move |why: SaveWhy, _: &State| -> Result<(), String> {
            let named: Vec<(&str, &Tensor)> = vars.iter().map(|(n, t)| (n.as_str(), t)).collect();
            Tensor::save_multi(&named, &path)
                .map_err(|e| format!("{}: {}", path.display(), crate::error::torch_message(&e)))?;
            tracing::debug!(path = %path.display(), ?why, "saved model");
            Ok(())
        };
        self.handler.add(SaveModel::new(every, save));
    }

    /// Validation loss and metrics of the current weights, batch-size-weighted, without training.
    pub fn validate(&mut self) -> Result<(f64, Vec<f64>)> {
        self.step.validate()
    }

    /// The loss curve's data (for [`herald_plot::plot_losses`]).
    pub fn loss_history(&self) -> LossHistory {
        recorder_loss_history(self.recorder())
    }

    /// The schedule's data (for [`herald_plot::plot_lr`]).
    pub fn lr_history(&self) -> LrHistory {
        let r = self.recorder();
        LrHistory { lrs: r.lrs.clone(), moms: r.moms.clone() }
    }
}

/// A Recorder's smoothed losses and validation losses as a [`LossHistory`].
pub fn recorder_loss_history(r: &Recorder) -> LossHistory {
    LossHistory::from_recorder(&r.losses, &r.nb_batches, &r.valid_losses)
}

/// The scheduler slot: holds the one-cycle scheduler during `fit_one_cycle` and nothing otherwise (the
/// handler never removes callbacks, so the Learner swaps what this one delegates to). Order 0.
#[derive(Debug, Default)]
struct Schedule(Option<OneCycleScheduler>);

impl Callback for Schedule {
    fn name(&self) -> &str {
        "schedule"
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        self.0.as_mut().map_or(Ok(()), |c| c.on_train_begin(s))
    }

    fn on_batch_end(&mut self, s: &mut State) -> CallbackResult {
        self.0.as_mut().map_or(Ok(()), |c| c.on_batch_end(s))
    }
}

/// The tch side of the training loop: herald-callback's [`Step`] over a model, data loaders, a loss, metrics
/// and an optimizer. [`Learner`] drives it; a hand-written loop can too (the benchmark's no-callback loop).
pub struct TchStep {
    model: Box<dyn ModuleT>,
    data: DataLoaders,
    loss: LossFn,
    metrics: Vec<Metric>,
    opt: Optimizer,
    output: Option<Tensor>,
    targets: Option<Tensor>,
    loss_value: Option<Tensor>,
}

impl TchStep {
    fn batch(&self, batch: u64, train: bool) -> Result<(Tensor, Tensor)> {
        let found = if train { self.data.train_batch(batch) } else { self.data.valid_batch(batch) };
        let (x, y) = found.ok_or_else(|| {
            let set = if train { "training" } else { "validation" };
            Error::Data(format!("no {set} batch {batch}; the loop asked for more batches than the data has"))
        })?;
        Ok((x.shallow_clone(), y.shallow_clone()))
    }

    /// The whole validation set with the current weights: weighted loss and metrics.
    fn validate(&mut self) -> Result<(f64, Vec<f64>)> {
        let (mut n, mut loss) = (0usize, 0.0);
        let mut sums = vec![0.0; self.metrics.len()];
        let mut values = Vec::new();
        for b in 0..self.data.n_valid_batches() {
            let bs = Step::forward(self, b, false)?;
            let l = Step::loss(self, false)?;
            values.clear();
            Step::metrics(self, &mut values)?;
            n += bs;
            loss += l * bs as f64;
            for (s, v) in sums.iter_mut().zip(&values) {
                *s += v * bs as f64;
            }
        }
        let n = n.max(1) as f64;
        Ok((loss / n, sums.into_iter().map(|s| s / n).collect()))
    }
}

impl Step for TchStep {
    type Error = Error;

    fn n_train_batches(&self) -> u64 {
        self.data.n_train_batches()
    }

    fn n_valid_batches(&self) -> u64 {
        self.data.n_valid_batches()
    }

    fn begin_epoch(&mut self, epoch: u32) -> Result<()> {
        self.data.shuffle_for_epoch(epoch)
    }

    fn forward(&mut self, batch: u64, train: bool) -> Result<usize> {
        let (x, y) = self.batch(batch, train)?;
        let bs = x.size().first().copied().unwrap_or(0) as usize;
        let output = if train {
            model::forward(self.model.as_ref(), &x, true)?
        } else {
            let _guard = tch::no_grad_guard();
            model::forward(self.model.as_ref(), &x, false)?
        };
        self.output = Some(output);
        self.targets = Some(y);
        Ok(bs)
    }

    fn loss(&mut self, train: bool) -> Result<f64> {
        let (Some(output), Some(targets)) = (&self.output, &self.targets) else {
            return Err(Error::Config("loss asked for before a forward pass".into()));
        };
        let loss = if train {
            (self.loss)(output, targets)?
        } else {
            let _guard = tch::no_grad_guard();
            (self.loss)(output, targets)?
        };
        let value = loss.f_double_value(&[])?;
        self.loss_value = Some(loss);
        Ok(value)
    }

    fn backward(&mut self) -> Result<()> {
        let loss = self.loss_value.as_ref().ok_or_else(|| Error::Config("backward before a loss".into()))?;
        model::guarded(|| Ok(loss.f_backward()?))
    }

    fn step(&mut self, lr: f64, mom: f64) -> Result<()> {
        self.opt.set_hypers(lr, mom)?;
        self.opt.step()
    }

    fn zero_grad(&mut self) -> Result<()> {
        self.opt.zero_grad()
    }

    fn metrics(&mut self, out: &mut Vec<f64>) -> Result<()> {
        let (Some(output), Some(targets)) = (&self.output, &self.targets) else {
            return Err(Error::Config("metrics asked for before a forward pass".into()));
        };
        let _guard = tch::no_grad_guard();
        for m in &self.metrics {
            out.push((m.f)(output, targets)?);
        }
        Ok(())
    }
}

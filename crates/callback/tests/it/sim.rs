//! The simulated training loop: a scripted [`Step`] that logs every call, and a [`Probe`] callback that logs
//! every event into the same log and can act on the state.

use std::sync::{Arc, Mutex};

use herald_callback::{Callback, CallbackResult, Hook, State, Step, TrainError};

/// A shared, ordered log of what happened.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().expect("no test thread panics while holding the log").push(entry.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().expect("no test thread panics while holding the log").clone()
    }
}

type LossFn = Box<dyn FnMut(u32, u64) -> f64 + Send>;
type ValidFn = Box<dyn FnMut(u32, u64) -> (usize, f64, Vec<f64>) + Send>;
type ForwardHook = Box<dyn FnMut(u32, u64, bool) + Send>;

/// A scripted training step: losses and validation results come from closures of (epoch, batch).
pub struct Sim {
    pub n_train: u64,
    pub n_valid: u64,
    pub train_batch_size: usize,
    pub train_loss: LossFn,
    pub valid: ValidFn,
    /// Fail in this operation at this (epoch, batch, train).
    pub fail: Option<(&'static str, u32, u64)>,
    /// Called at each forward, before anything else.
    pub on_forward: Option<ForwardHook>,
    pub log: Log,
    /// (lr, mom) given to each optimizer step.
    pub steps: Vec<(f64, f64)>,
    epoch: u32,
    batch: u64,
    train: bool,
}

impl Sim {
    /// `n_train` training batches of 8 with losses `1 / (1 + global batch)`, `n_valid` validation batches of 4
    /// with loss 0.5 and no metrics.
    pub fn new(n_train: u64, n_valid: u64) -> Sim {
        Sim {
            n_train,
            n_valid,
            train_batch_size: 8,
            train_loss: Box::new(move |e, b| 1.0 / (1.0 + (u64::from(e) * n_train + b) as f64)),
            valid: Box::new(|_, _| (4, 0.5, Vec::new())),
            fail: None,
            on_forward: None,
            log: Log::default(),
            steps: Vec::new(),
            epoch: 0,
            batch: 0,
            train: true,
        }
    }

    pub fn losses(mut self, f: impl FnMut(u32, u64) -> f64 + Send + 'static) -> Sim {
        self.train_loss = Box::new(f);
        self
    }

    pub fn valid(mut self, f: impl FnMut(u32, u64) -> (usize, f64, Vec<f64>) + Send + 'static) -> Sim {
        self.valid = Box::new(f);
        self
    }

    pub fn with_log(mut self, log: &Log) -> Sim {
        self.log = log.clone();
        self
    }

    fn op(&mut self, name: &'static str) -> Result<(), String> {
        self.log.push(name);
        if self.fail == Some((name, self.epoch, self.batch)) {
            return Err(format!("scripted failure in {name}"));
        }
        Ok(())
    }
}

impl Step for Sim {
    type Error = String;

    fn n_train_batches(&self) -> u64 {
        self.n_train
    }

    fn n_valid_batches(&self) -> u64 {
        self.n_valid
    }

    fn begin_epoch(&mut self, epoch: u32) -> Result<(), String> {
        self.epoch = epoch;
        self.batch = 0;
        self.op("begin_epoch")
    }

    fn forward(&mut self, batch: u64, train: bool) -> Result<usize, String> {
        self.batch = batch;
        self.train = train;
        if let Some(hook) = &mut self.on_forward {
            hook(self.epoch, batch, train);
        }
        self.op("forward")?;
        Ok(if train { self.train_batch_size } else { (self.valid)(self.epoch, batch).0 })
    }

    fn loss(&mut self, train: bool) -> Result<f64, String> {
        self.op("loss")?;
        Ok(if train {
            (self.train_loss)(self.epoch, self.batch)
        } else {
            (self.valid)(self.epoch, self.batch).1
        })
    }

    fn backward(&mut self) -> Result<(), String> {
        self.op("backward")
    }

    fn step(&mut self, lr: f64, mom: f64) -> Result<(), String> {
        self.steps.push((lr, mom));
        self.op("step")
    }

    fn zero_grad(&mut self) -> Result<(), String> {
        self.op("zero_grad")
    }

    fn metrics(&mut self, out: &mut Vec<f64>) -> Result<(), String> {
        self.op("metrics")?;
        out.extend((self.valid)(self.epoch, self.batch).2);
        Ok(())
    }
}

type Act = Box<dyn FnMut(Hook, &mut State) -> CallbackResult + Send>;

/// A callback that logs each event (`batch_end`, or `tag.batch_end` when tagged) and may act on the state.
pub struct Probe {
    pub tag: Option<&'static str>,
    pub order: i32,
    pub log: Log,
    pub act: Option<Act>,
    /// The error text `on_train_end` carried.
    pub train_end_error: Arc<Mutex<Option<Option<String>>>>,
}

impl Probe {
    pub fn new(log: &Log) -> Probe {
        Probe { tag: None, order: 0, log: log.clone(), act: None, train_end_error: Arc::default() }
    }

    pub fn tagged(log: &Log, tag: &'static str, order: i32) -> Probe {
        Probe { tag: Some(tag), order, ..Probe::new(log) }
    }

    pub fn act(mut self, f: impl FnMut(Hook, &mut State) -> CallbackResult + Send + 'static) -> Probe {
        self.act = Some(Box::new(f));
        self
    }

    fn event(&mut self, hook: Hook, s: &mut State) -> CallbackResult {
        let name = hook.as_str().trim_start_matches("on_");
        match self.tag {
            Some(tag) => self.log.push(format!("{tag}.{name}")),
            None => self.log.push(name),
        }
        match &mut self.act {
            Some(act) => act(hook, s),
            None => Ok(()),
        }
    }
}

impl Callback for Probe {
    fn name(&self) -> &str {
        self.tag.unwrap_or("probe")
    }
    fn order(&self) -> i32 {
        self.order
    }
    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::TrainBegin, s)
    }
    fn on_epoch_begin(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::EpochBegin, s)
    }
    fn on_batch_begin(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::BatchBegin, s)
    }
    fn on_loss_begin(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::LossBegin, s)
    }
    fn on_backward_begin(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::BackwardBegin, s)
    }
    fn on_backward_end(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::BackwardEnd, s)
    }
    fn on_step_end(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::StepEnd, s)
    }
    fn on_batch_end(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::BatchEnd, s)
    }
    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        self.event(Hook::EpochEnd, s)
    }
    fn on_train_end(&mut self, s: &mut State, error: Option<&TrainError>) -> CallbackResult {
        *self.train_end_error.lock().expect("no test thread panics while holding it") =
            Some(error.map(ToString::to_string));
        self.event(Hook::TrainEnd, s)
    }
}

/// The log entries of one training batch, as `fit` runs it with no flag set.
pub fn train_batch() -> Vec<&'static str> {
    vec![
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
    ]
}

/// The log entries of one validation batch.
pub fn valid_batch() -> Vec<&'static str> {
    vec!["batch_begin", "forward", "loss_begin", "loss", "metrics", "batch_end"]
}

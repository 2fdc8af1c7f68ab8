//! Shared helpers: small data sets, a learner with an event channel, and draining events.

use herald_callback::{EventEmitter, EventReceiver, RunInfo, StopHandle, channel};
use herald_event::{Event, EventKind};
use herald_tch::tch::nn::VarStore;
use herald_tch::tch::{Device, Kind, Tensor};
use herald_tch::{DataLoaders, Learner, LearnerBuilder, datasets, mlp};

/// The shipped digits data set, 80/20 split with seed 42.
pub fn digits(bs: usize) -> DataLoaders {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits.csv.gz");
    let d = datasets::load_digits_csv(path).expect("data/digits.csv.gz loads");
    DataLoaders::from_tensors(d.x, d.y, 0.2, bs, 42).expect("loaders")
}

/// `n` random examples of `features` inputs with labels from a fixed linear rule (learnable).
pub fn synthetic(n: i64, features: i64, classes: i64, seed: i64) -> (Tensor, Tensor) {
    herald_tch::tch::manual_seed(seed);
    let x = Tensor::f_randn([n, features], (Kind::Float, Device::Cpu)).expect("randn");
    let w = Tensor::f_randn([features, classes], (Kind::Float, Device::Cpu)).expect("randn");
    let y = x.f_matmul(&w).expect("matmul").f_argmax(-1, false).expect("argmax");
    (x, y)
}

/// A learner for an MLP with these sizes on `data`, with an event emitter; returns the receiver and the
/// stop handle too.
pub fn with_events(
    data: DataLoaders,
    sizes: &[i64],
    build: impl FnOnce(LearnerBuilder) -> LearnerBuilder,
) -> (Learner, EventReceiver, StopHandle) {
    herald_tch::tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = mlp(&vs.root(), sizes).expect("model");
    let (tx, rx) = channel(100_000);
    let stop = StopHandle::new();
    let emitter = EventEmitter::new(tx, RunInfo::new("test"), stop.clone());
    let learner = build(Learner::builder(vs, model, data).callback(emitter)).build().expect("learner builds");
    (learner, rx, stop)
}

/// Every event waiting in `rx`.
pub fn drain(rx: &mut EventReceiver) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

pub fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(Event::kind).collect()
}

//! herald-tch: a fastai-style [`Learner`] on tch (libtorch), built on herald-callback.
//!
//! Give it a tch model, its `VarStore` and [`DataLoaders`]; call [`Learner::fit`] or
//! [`Learner::fit_one_cycle`]. The callbacks fire exactly as herald-callback's driver defines (fastai v1's
//! order and flags), the Recorder keeps the losses, schedule and results table, [`Progress`] prints the
//! fastprogress console, and an `EventEmitter` callback sends the run's events to the daemon without ever
//! blocking the loop. libtorch errors become `run_failed` events with the error text, never panics.
//!
//! Also here: the loaders for the digits CSV and MNIST IDX data ([`datasets`]), tensor metrics
//! ([`Metric::accuracy`], [`Metric::error_rate`]) and the MLP `herald train` uses ([`mlp`]). This crate does
//! not talk to the network or the daemon, and does not pick a device for you (`Device::cuda_if_available()`
//! is one call away).
//!
//! ```no_run
//! use herald_tch::{DataLoaders, Learner, Metric, ProgressMode, datasets, mlp};
//! use tch::{Device, nn::VarStore};
//!
//! # fn main() -> herald_tch::Result<()> {
//! let digits = datasets::load_digits_csv("data/digits.csv.gz")?;
//! let data = DataLoaders::from_tensors(digits.x, digits.y, 0.2, 32, 42)?;
//! let vs = VarStore::new(Device::Cpu);
//! let model = mlp(&vs.root(), &[64, 128, 10])?;
//! let mut learn = Learner::builder(vs, model, data)
//!     .metrics([Metric::accuracy()])
//!     .progress(ProgressMode::Auto)
//!     .build()?;
//! learn.fit_one_cycle(10, 1e-2)?;
//! # Ok(())
//! # }
//! ```

mod data;
pub mod datasets;
mod error;
mod learner;
mod metrics;
mod model;
mod optim;
mod progress;

pub use data::{DataLoaders, Dataset};
pub use error::{Error, Result, torch_message};
pub use learner::{Learner, LearnerBuilder, LossFn, TchStep, recorder_loss_history};
pub use metrics::{Metric, MetricFn, accuracy, error_rate};
pub use model::{cross_entropy, forward, mlp};
pub use optim::{Optimizer, OptimizerKind};
pub use progress::{Progress, ProgressMode};

/// Re-exported so users name the same tch as this crate.
pub use tch;

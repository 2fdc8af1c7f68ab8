//! Validation metrics on tensors: fastai's `accuracy` and `error_rate`, or your own function.
//!
//! A metric gives one value per validation batch (a batch mean); the driver averages them weighted by batch
//! size, so the epoch value is exact over the whole validation set. Computed on the device; one scalar comes
//! back per batch.

use tch::{Kind, Tensor};

use crate::error::Result;

/// A metric's function: the model's output and the targets of one batch to the batch's value.
pub type MetricFn = fn(&Tensor, &Tensor) -> Result<f64>;

/// A named metric: the name is its column in the results table.
#[derive(Debug, Clone)]
pub struct Metric {
    /// The metric's column header in the results table (`accuracy`).
    pub name: String,
    /// Computes the metric's value for one validation batch.
    pub f: MetricFn,
}

impl Metric {
    /// A metric named `name` computed by `f`.
    pub fn new(name: impl Into<String>, f: MetricFn) -> Metric {
        Metric { name: name.into(), f }
    }

    /// Share of argmax predictions equal to the target.
    pub fn accuracy() -> Metric {
        Metric::new("accuracy", accuracy)
    }

    /// `1 - accuracy`.
    pub fn error_rate() -> Metric {
        Metric::new("error_rate", error_rate)
    }
}

/// Share of rows of `output` (`[n, classes]`) whose argmax equals `targets` (`[n]`).
pub fn accuracy(output: &Tensor, targets: &Tensor) -> Result<f64> {
    let predicted = output.f_argmax(-1, false)?;
    Ok(predicted.f_eq_tensor(targets)?.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?.f_double_value(&[])?)
}

/// `1 - accuracy`.
pub fn error_rate(output: &Tensor, targets: &Tensor) -> Result<f64> {
    Ok(1.0 - accuracy(output, targets)?)
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    #[test]
    fn accuracy_and_error_rate() {
        let out = Tensor::f_from_slice(&[0.1f32, 0.9, 0.8, 0.2, 0.3, 0.7, 0.6, 0.4])
            .expect("tensor")
            .f_view([4, 2])
            .expect("view");
        let targets =
            Tensor::f_from_slice(&[1i64, 0, 0, 0]).expect("tensor").f_to_device(Device::Cpu).expect("cpu");
        assert_eq!(accuracy(&out, &targets).expect("accuracy"), 0.75);
        assert_eq!(error_rate(&out, &targets).expect("error rate"), 0.25);
        // The same numbers as herald-callback's slice version.
        let scores = [0.1f32, 0.9, 0.8, 0.2, 0.3, 0.7, 0.6, 0.4];
        assert_eq!(herald_callback::accuracy(&scores, 2, &[1, 0, 0, 0]), 0.75);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let out = Tensor::f_zeros([4, 2], (Kind::Float, Device::Cpu)).expect("zeros");
        let targets = Tensor::f_zeros([3], (Kind::Int64, Device::Cpu)).expect("zeros");
        assert!(accuracy(&out, &targets).is_err());
    }
}

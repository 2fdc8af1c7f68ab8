//! Metrics on plain slices, and batch-size-weighted averaging over a validation set.
//!
//! [`accuracy`] and [`error_rate`] work on row-major scores (one row of `n_classes` per sample) and integer
//! targets, so any framework can call them after copying a batch's output to the host; herald-tch computes
//! the same on the device. [`AverageMetric`] is fastai v1's weighting: `sum(n_i * x_i) / sum(n_i)` over
//! batches of size `n_i`. Nothing here knows about tensors.

/// Share of samples whose highest score (first on ties) is at the target class. 0 for no samples.
///
/// `scores` holds `targets.len()` rows of `n_classes` scores; extra scores are ignored, missing rows count
/// as wrong, and a target outside `0..n_classes` counts as wrong.
pub fn accuracy(scores: &[f32], n_classes: usize, targets: &[i64]) -> f64 {
    if targets.is_empty() || n_classes == 0 {
        return 0.0;
    }
    let correct = targets
        .iter()
        .enumerate()
        .filter(|&(i, &t)| {
            let Some(row) = scores.get(i * n_classes..(i + 1) * n_classes) else { return false };
            argmax(row).is_some_and(|p| i64::try_from(p).is_ok_and(|p| p == t))
        })
        .count();
    correct as f64 / targets.len() as f64
}

/// `1 - accuracy`.
pub fn error_rate(scores: &[f32], n_classes: usize, targets: &[i64]) -> f64 {
    1.0 - accuracy(scores, n_classes, targets)
}

/// Index of the largest value, the first on ties; NaN never wins. `None` for an empty or all-NaN row.
fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// A batch-size-weighted mean: `sum(n_i * x_i) / sum(n_i)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AverageMetric {
    sum: f64,
    count: u64,
}

impl AverageMetric {
    /// An empty mean.
    pub fn new() -> AverageMetric {
        AverageMetric::default()
    }

    /// Adds a batch of `batch_size` samples whose mean value is `value`.
    pub fn add(&mut self, value: f64, batch_size: usize) {
        let n = batch_size as u64;
        self.sum += value * n as f64;
        self.count += n;
    }

    /// The mean so far; `None` before any sample.
    pub fn value(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Samples added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        *self = AverageMetric::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_error_rate() {
        fn check(scores: &[f32], n_classes: usize, targets: &[i64], expected: f64) {
            assert_eq!(accuracy(scores, n_classes, targets), expected, "{scores:?} {targets:?}");
            assert_eq!(error_rate(scores, n_classes, targets), 1.0 - expected);
        }
        check(&[0.1, 0.9, 0.8, 0.2], 2, &[1, 0], 1.0);
        check(&[0.1, 0.9, 0.8, 0.2], 2, &[0, 0], 0.5);
        check(&[0.1, 0.9, 0.8, 0.2], 2, &[0, 1], 0.0);
        // ties go to the first index, as torch's argmax does on CPU
        check(&[0.5, 0.5, 0.0], 3, &[0], 1.0);
        check(&[f32::NAN, 0.1, 0.0], 3, &[1], 1.0);
        // targets out of range and missing rows count as wrong
        check(&[0.1, 0.9], 2, &[7], 0.0);
        check(&[0.1, 0.9], 2, &[1, 1], 0.5);
        check(&[0.1, 0.9], 2, &[-1], 0.0);
        check(&[], 2, &[], 0.0);
    }

    #[test]
    fn average_is_weighted_by_batch_size() {
        let mut m = AverageMetric::new();
        assert_eq!(m.value(), None);
        m.add(1.0, 3);
        m.add(0.0, 1);
        assert_eq!(m.value(), Some(0.75));
        assert_eq!(m.count(), 4);
        m.add(5.0, 0);
        assert_eq!(m.value(), Some(0.75));
        m.reset();
        assert_eq!(m.value(), None);
    }
}

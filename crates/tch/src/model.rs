//! What the [`crate::Learner`] trains: any tch [`ModuleT`], run so that a libtorch error becomes an error
//! value instead of a panic; and [`mlp`], the multi-layer perceptron `herald train` uses.
//!
//! tch's infallible tensor methods (`matmul`, `relu`, the `nn` layers) panic with the libtorch message when
//! libtorch fails. [`forward`] catches that panic on the training thread, silences the default panic message
//! for it, and returns the message as [`Error::Torch`], so the run ends with `run_failed` carrying the text. A
//! model written with tch's fallible `f_` methods behaves the same without the catch.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use tch::nn::{self, ModuleT};
use tch::{TchError, Tensor};

use crate::error::{Error, Result, shorten};

thread_local! {
    /// Set while [`guarded`] runs a closure on this thread: its panic is reported as an error, not printed.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Installs, once, a panic hook that stays quiet for panics inside [`guarded`] and defers to the previous
/// hook otherwise.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic (tch's way of reporting a libtorch error from an infallible method) into
/// [`Error::Torch`] with the panic's message.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_quiet_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("the model panicked");
            Err(Error::Torch(clean_panic_text(text)))
        }
    }
}

/// tch's panics read ``called `Result::unwrap()` on an `Err` value: Torch("...")``; keep the libtorch text.
fn clean_panic_text(text: &str) -> String {
    let inner = text
        .split_once("Torch(\"")
        .map(|(_, rest)| rest.rsplit_once("\")").map_or(rest, |(inner, _)| inner))
        .unwrap_or(text);
    shorten(&inner.replace("\\n", "\n").replace("\\\"", "\""))
}

/// Runs `model` on `xs`; a libtorch failure is an [`Error::Torch`], never a panic.
pub fn forward(model: &dyn ModuleT, xs: &Tensor, train: bool) -> Result<Tensor> {
    guarded(|| Ok(model.forward_t(xs, train)))
}

/// A multi-layer perceptron: `sizes[0]` inputs, ReLU between the linear layers, `sizes[last]` outputs
/// (logits). `mlp(&vs.root(), &[64, 128, 10])` is `herald train`'s model. Layers are named `lin0`, `lin1`, ...
pub fn mlp(path: &nn::Path<'_>, sizes: &[i64]) -> Result<nn::Sequential> {
    if sizes.len() < 2 || sizes.iter().any(|&s| s <= 0) {
        return Err(Error::Config(format!("an MLP needs at least two positive layer sizes, got {sizes:?}")));
    }
    let mut seq = nn::seq();
    let last = sizes.len() - 2;
    for (i, pair) in sizes.windows(2).enumerate() {
        let layer =
            guarded(|| Ok(nn::linear(path / format!("lin{i}"), pair[0], pair[1], Default::default())))?;
        seq = seq.add(layer);
        if i < last {
            seq = seq.add_fn(|xs| xs.relu());
        }
    }
    Ok(seq)
}

/// A fallible cross-entropy on logits `[n, classes]` and targets `[n]`: fastai's default loss for
/// classification (mean over the batch).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
    logits.f_cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Mean, -100, 0.0)
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn shape_errors_become_error_values() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = mlp(&vs.root(), &[4, 3, 2]).expect("model");
        let ok = Tensor::f_zeros([5, 4], (Kind::Float, Device::Cpu)).expect("zeros");
        assert_eq!(forward(&model, &ok, false).expect("forward").size(), [5, 2]);
        let wrong = Tensor::f_zeros([5, 7], (Kind::Float, Device::Cpu)).expect("zeros");
        let err = forward(&model, &wrong, true).expect_err("7 features into a 4-input layer").to_string();
        assert!(err.starts_with("libtorch: "), "{err}");
        assert!(err.contains("cannot be multiplied"), "{err}");
        assert!(!err.contains("Exception raised from"), "backtrace kept: {err}");
        assert!(!err.contains("unwrap"), "panic wrapper kept: {err}");
    }

    #[test]
    fn panic_text_cleaning() {
        let t = r#"called `Result::unwrap()` on an `Err` value: Torch("mat1 and mat2 shapes cannot be multiplied (5x7 and 4x3)\nException raised from meta at x.cpp:1 (most recent call first):\nframe #0")"#;
        assert_eq!(clean_panic_text(t), "mat1 and mat2 shapes cannot be multiplied (5x7 and 4x3)");
        assert_eq!(clean_panic_text("plain"), "plain");
    }

    #[test]
    fn mlp_rejects_bad_sizes() {
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(mlp(&vs.root(), &[4]).is_err());
        assert!(mlp(&vs.root(), &[4, 0, 2]).is_err());
    }
}

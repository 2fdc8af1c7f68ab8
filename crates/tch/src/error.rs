//! herald-tch's error type. libtorch errors are shortened to their first line (libtorch appends a C++
//! backtrace that helps nobody reading a phone notification).

use std::path::PathBuf;

/// What can go wrong in herald-tch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch reported an error (a shape mismatch, an out-of-memory, a bad device).
    #[error("libtorch: {0}")]
    Torch(String),
    /// The data is unusable as given.
    #[error("{0}")]
    Data(String),
    /// A data file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file, as given.
        path: PathBuf,
        /// What is wrong with it, with the line or header field when known.
        message: String,
    },
    /// The Learner was configured inconsistently.
    #[error("{0}")]
    Config(String),
    /// `TerminateOnNaN` stopped training at a NaN or infinite loss (the run reported `run_failed`).
    #[error("training stopped: {0}; lower the learning rate or look for NaN in the data")]
    NonFiniteLoss(String),
    /// Training failed; the text says where and why (it is what `run_failed` carries).
    #[error(transparent)]
    Train(#[from] herald_callback::TrainError),
}

/// `std::result::Result` with herald-tch's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Error {
        Error::Torch(torch_message(&e))
    }
}

/// The useful part of a libtorch error: the text before libtorch's C++ backtrace.
pub fn torch_message(e: &tch::TchError) -> String {
    let text = match e {
        tch::TchError::Torch(s) => s.clone(),
        other => other.to_string(),
    };
    shorten(&text)
}

/// Cuts libtorch's backtrace (`Exception raised from ...`) and trailing whitespace off an error text.
pub(crate) fn shorten(text: &str) -> String {
    let cut = text.find("\nException raised from").unwrap_or(text.len());
    text[..cut].trim().to_owned()
}

impl Error {
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::File { path: path.into(), message: message.into() }
    }
}

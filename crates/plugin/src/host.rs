//! What the host (the daemon) offers notifiers that take commands from people.
//!
//! A notifier whose [`crate::Capabilities::commands`] is set gets a [`Host`] through
//! [`crate::Notifier::listen`]: a chat notifier polls its service for messages such as `/runs` or
//! `/stop 2` and answers them with what the host knows. The host decides what a stop request means (it sets
//! the run's stop flag, which reaches the trainer in the answer to its next post). This module defines the
//! interface only; the daemon implements it.

use herald_event::EpochEnded;
use serde::{Deserialize, Serialize};

use crate::notifier::{Image, RunContext};

/// One run as a list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// A short number for typing on a phone (`/stop 2`), stable while the host runs.
    pub number: u32,
    /// The run id.
    pub run: String,
    /// The run's name.
    pub name: String,
    /// `active`, `stalled`, `lost`, `completed`, `stopped` or `failed`.
    pub state: String,
    /// The last finished epoch, if any.
    pub last_epoch: Option<EpochEnded>,
    /// Whether a stop has been requested and not yet answered by the run.
    pub stop_requested: bool,
}

/// One run in full: its context (the results table so far) and its current loss curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run as the list shows it (number, name, state, last epoch).
    pub summary: RunSummary,
    /// What notifiers know of the run, including the results table so far.
    pub context: RunContext,
    /// The loss curve drawn from the run's history, when there is any history to draw.
    pub plot: Option<Image>,
}

/// Why the host refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing matches the given run id, name or number (the text as given).
    #[error("no run matches `{0}`: send /runs for the list")]
    NoSuchRun(String),
    /// The run (its name) has already ended, so there is nothing left to stop.
    #[error("run `{0}` has already ended")]
    Ended(String),
    /// Anything else, with the message to show the user.
    #[error("{0}")]
    Other(String),
}

/// The daemon's side of user commands.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Active runs first, then recently ended ones.
    async fn runs(&self) -> Vec<RunSummary>;

    /// A run by id, name or short number.
    async fn run(&self, key: &str) -> Result<RunDetail, HostError>;

    /// Ask a run (by id, name or short number) to stop; answers the run that will be stopped.
    async fn request_stop(&self, key: &str, reason: &str) -> Result<RunSummary, HostError>;
}

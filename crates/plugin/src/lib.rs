//! The notifier SDK: what a notifier is, what it is asked to send, and how it answers.
//!
//! Every notifier, built in (`plugins/*`) or out of process, implements [`Notifier`]. The daemon (and the
//! in-process dispatcher) builds one [`Notification`] per (event, notifier) with [`render::notification`]:
//! the run's context, the triggering event, ready-made renderings and the [`Receipt`] of the previous
//! delivery to the same notifier for the same run, so a notifier can edit its earlier message in place. A
//! notifier answers with a new [`Receipt`] or a [`DeliveryError`] that says whether a retry may help and
//! when. Notifier types are registered in a [`Registry`] by `type` name; each parses its own TOML table with
//! [`parse_table`] and wraps tokens in [`Secret`].
//!
//! Out of process, a notifier is a child process speaking the JSON-lines [`protocol`]; [`serve`] runs any
//! [`Notifier`] that way (the only I/O this crate does: stdin and stdout).
//!
//! Plugins depend on this crate only, never on the daemon.

mod context;
pub mod duration;
mod host;
pub mod http;
mod notifier;
pub mod protocol;
mod registry;
pub mod render;
mod secret;
pub mod serve;

pub use duration::{format_duration, parse_duration};
pub use host::{Host, HostError, RunSummary, RunView};
pub use notifier::{Capabilities, DeliveryError, Health, Image, Notification, Notifier, Receipt, RunContext};
pub use registry::{ConfigError, Constructor, Registry, parse_table};
pub use secret::Secret;
pub use serve::{ServeError, serve, serve_constructor};

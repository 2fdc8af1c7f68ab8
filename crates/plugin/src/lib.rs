//! The notifier SDK: what a notifier is, what it is asked to send, and how it answers.
//!
//! Every notifier, built in (`plugins/*`) or out of process, implements [`Notifier`]. The daemon (and the
//! in-process dispatcher) builds one [`Notification`] per (event, notifier) with [`render::notification`]:
//! the run's context, the triggering event, ready-made renderings and the [`Receipt`] of the previous
//! delivery to the same notifier for the same run, so a notifier can edit its earlier message in place. A
//! notifier answers with a new [`Receipt`] or a [`DeliveryError`] that says whether a retry may help and
//! when. A notifier type is a [`NotifierType`]: its config struct (parsed from the TOML table with
//! [`parse_table`], tokens wrapped in [`Secret`]) with the type's name, description and `build`; a
//! [`Registry`] holds the types by name (`Registry::add`). HTTP notifiers share one [`http::AnswerPolicy`];
//! notifiers whose deliveries make several calls remember them in a [`DeliveryProgress`].
//!
//! Out of process, a notifier is a child process speaking the JSON-lines [`protocol`]; [`serve_type`] runs a
//! [`NotifierType`] that way and [`serve`](fn@serve) any [`Notifier`] (the only I/O this crate does: stdin
//! and stdout).
//!
//! Plugins depend on this crate only, never on the daemon.

mod config;
mod context;
pub mod duration;
mod host;
pub mod http;
mod notifier;
mod notifier_type;
mod progress;
pub mod protocol;
mod registry;
pub mod render;
mod secret;
pub mod serve;
mod table;

pub use config::{ConfigError, default_true, parse_table};
pub use duration::{format_duration, parse_duration};
pub use host::{
    FiredFor, Host, HostError, MuteEntry, OPS, RuleChange, RuleEntry, RuleList, RunDetail, RunSummary,
    WatchRequest,
};
pub use notifier::{
    Capabilities, DeliveryError, Health, Image, Notification, Notifier, Receipt, Renderings, RunContext,
    error_chain,
};
pub use notifier_type::NotifierType;
pub use progress::DeliveryProgress;
pub use registry::{Constructor, Registry};
pub use secret::Secret;
pub use serve::{ServeError, serve, serve_type};
pub use table::TableLayout;

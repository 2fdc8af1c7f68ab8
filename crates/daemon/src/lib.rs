//! The Herald daemon (`herald serve`) and the dispatcher it shares with in-process mode.
//!
//! A training process posts events (`server.rs`, HTTP on TCP and a Unix socket); the [`Dispatcher`]
//! (`dispatcher.rs`) commits them to the durable outbox (`store.rs`, redb) before answering, routes each to
//! the notifiers that want it (`runs.rs`), and one supervised worker per notifier (`worker.rs`) delivers in
//! order with rate limits, timeouts and retries (`limits.rs`). The run watch makes `run_stalled` and
//! `run_lost` for runs that go silent or whose process vanished. `herald train` embeds the same dispatcher,
//! or forwards to a running daemon with spooling (`embedded.rs`, `forwarder.rs`).
//!
//! Notifiers are plugins behind `herald_plugin::Notifier`; this crate links the built-in ones
//! (`builtins.rs`) but knows no service. Configuration is `config.rs`.

pub mod builtins;
pub mod client;
pub mod config;
mod daemon;
pub mod dispatcher;
pub mod embedded;
mod error;
pub mod exec;
pub mod forwarder;
pub mod host;
pub mod limits;
pub mod runs;
pub mod sdnotify;
pub mod server;
pub mod store;
mod worker;

pub use client::{Client, ClientError};
pub use daemon::{build_notifiers, check_listen, default_socket, serve};
pub use dispatcher::{Dispatcher, Handle, IngestReply, NotifierSpec, Options, RunControl, Status};
pub use embedded::{LinkMode, LinkReport, TrainerLink, spawn_for_trainer, spawn_link};
pub use error::DaemonError;
pub use worker::deliver_with_timeout;

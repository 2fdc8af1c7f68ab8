//! The Herald daemon (`herald serve`) and the dispatcher it shares with in-process mode.
//!
//! A training process posts events (`server.rs`, HTTP on TCP and a Unix socket); the [`Dispatcher`]
//! (`dispatcher.rs`, with `writer.rs`, `worker.rs`, `periodic.rs` and `handle.rs` around the state in
//! `shared.rs`) commits them to the durable [`Outbox`] (`outbox/`: a redb file, or memory in a trainer's
//! process) before answering, routes each to the notifiers that want it (`runs.rs`), and one supervised
//! worker per notifier delivers in order with rate limits, timeouts and retries (`limits.rs`). The run watch
//! makes `run_stalled` and `run_lost` for runs that go silent or whose process vanished. `herald train`
//! embeds the same dispatcher, or forwards to a running daemon with spooling (`embedded.rs`, `forwarder.rs`).
//! What the API answers is in `api.rs`.
//!
//! Notifiers are plugins behind `herald_plugin::Notifier`; this crate links the built-in ones
//! (`builtins.rs`) but knows no service. Configuration is `config`.

pub mod api;
pub mod builtins;
pub mod client;
pub mod config;
mod daemon;
mod dashboard;
pub mod dispatcher;
pub mod embedded;
mod error;
pub mod forwarder;
mod handle;
pub mod host;
pub mod jobs;
pub mod limits;
pub mod outbox;
pub mod periodic;
mod plot;
pub mod quiet;
pub mod rules;
pub mod runs;
pub mod sdnotify;
pub mod server;
mod shared;
mod worker;
mod writer;

pub use api::{ClusterView, IngestReply, RunControl, RunSnapshot, Status};
pub use client::{Client, ClientError};
pub use daemon::{build_notifiers, check_listen, default_socket, serve, serve_with_stop_hook};
pub use dispatcher::Dispatcher;
pub use embedded::{LinkMode, LinkReport, TrainerLink, spawn_for_trainer, spawn_link};
pub use error::DaemonError;
pub use handle::Handle;
pub use outbox::{MemoryOutbox, Outbox, RedbOutbox};
pub use periodic::{pid_alive, stall_threshold};
pub use shared::{NotifierSpec, Options, StopHook, local_hostname, now_ms};
pub use worker::deliver_with_timeout;

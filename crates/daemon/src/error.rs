//! The daemon's error type: what can stop `herald serve` from starting or a request from being stored.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::outbox::StoreError;

/// Why the daemon (or the in-process dispatcher) cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the dispatcher is shutting down: send again once it is back")]
    ShuttingDown,
    #[error(
        "listen address {addr} is not a loopback address, so anyone on the network could post: set [daemon] token (or token_file), or listen on 127.0.0.1"
    )]
    TokenRequired { addr: SocketAddr },
    #[error(
        "cannot listen on {addr}: {source}: is another `herald serve` running? set [daemon] listen to a free address"
    )]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a herald daemon already answers on the socket {path}: stop it first, or set [daemon] socket")]
    SocketInUse { path: PathBuf },
    #[error("cannot set up notifier `{name}`: {message}")]
    Notifier { name: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> DaemonError {
        DaemonError::Io { context: context.into(), source }
    }
}

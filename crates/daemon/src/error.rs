//! The daemon's error type: what can stop `herald serve` from starting or a request from being stored.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::outbox::StoreError;

/// Why the daemon (or the in-process dispatcher) cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The outbox failed (open, read, write, compaction).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dispatcher is stopping and takes no more work.
    #[error("the dispatcher is shutting down: send again once it is back")]
    ShuttingDown,
    /// The daemon would listen beyond loopback without a token.
    #[error(
        "listen address {addr} is not a loopback address, so anyone on the network could post: set [daemon] token (or token_file), or listen on 127.0.0.1"
    )]
    TokenRequired {
        /// The configured listen address.
        addr: SocketAddr,
    },
    /// The HTTP listener could not bind its address.
    #[error(
        "cannot listen on {addr}: {source}: is another `herald serve` running? set [daemon] listen to a free address"
    )]
    Bind {
        /// The address, as configured.
        addr: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon answers on the Unix socket.
    #[error("a herald daemon already answers on the socket {path}: stop it first, or set [daemon] socket")]
    SocketInUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// A configured notifier could not be built.
    #[error("cannot set up notifier `{name}`: {message}")]
    Notifier {
        /// The notifier's name in the configuration.
        name: String,
        /// What its constructor said.
        message: String,
    },
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the daemon was doing, naming the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> DaemonError {
        DaemonError::Io { context: context.into(), source }
    }
}

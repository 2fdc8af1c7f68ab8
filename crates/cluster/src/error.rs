//! [`ClusterError`]: what can go wrong in cluster mode, each message saying what the operator can do.

use herald_daemon::DaemonError;

/// Cluster mode could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No server of the list answered, or it refused us.
    #[error("cannot connect to the NATS servers {servers}: {message}")]
    Connect {
        /// The configured servers.
        servers: String,
        /// Why, with what to do.
        message: String,
    },
    /// The credentials file cannot be used.
    #[error("cluster.creds_file: {0}: check the NATS .creds file")]
    Creds(String),
    /// The stream exists with settings this version cannot work with.
    #[error(
        "the stream {stream} exists with other settings ({differences}), made by another version or by hand: delete it (`nats stream rm {stream}`) or set another [cluster] prefix"
    )]
    StreamSettings {
        /// The stream's name.
        stream: String,
        /// What differs.
        differences: String,
    },
    /// A JetStream request failed.
    #[error("{what}: {message}")]
    Nats {
        /// What was being done.
        what: String,
        /// The server's or the client's error.
        message: String,
    },
    /// The daemon failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

impl ClusterError {
    /// A connection error, with advice by kind.
    pub(crate) fn connect(servers: &[String], err: &async_nats::ConnectError) -> ClusterError {
        use async_nats::ConnectErrorKind as K;
        let advice = match err.kind() {
            K::AuthorizationViolation | K::Authentication => {
                "the servers refused the credentials: check [cluster] token, user and password or creds_file"
            }
            K::Tls => "TLS failed: check [cluster] ca_file and that the URLs are the servers' names",
            K::ServerParse | K::Dns => "check the [cluster] servers list",
            _ => "is nats-server running and reachable from here? check [cluster] servers",
        };
        ClusterError::Connect { servers: servers.join(", "), message: format!("{err}; {advice}") }
    }

    /// A failed JetStream request.
    pub(crate) fn nats(what: &str, err: &dyn std::fmt::Display) -> ClusterError {
        ClusterError::Nats { what: what.to_owned(), message: err.to_string() }
    }
}

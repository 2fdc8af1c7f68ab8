//! Connecting to the NATS servers and making sure the stream exists with the settings this version needs.
//!
//! [`Target`] is what a node needs to reach the cluster (servers, credentials, names, replicas); it travels
//! as the forwarding notifier's table too (`forward.rs`). [`connect`] gives a client that reconnects on its
//! own, at most a second apart; [`ensure_stream`] creates `<prefix>-events` or checks that an existing one
//! has the settings this version relies on (subjects, retention, storage), refusing one that does not.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use herald_daemon::config::{ClusterAuth, ClusterConfig};
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::names::Names;

/// How long events stay in the stream (the leader's consumer has long taken them by then).
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stream's deduplication window: a replay of an event within it is dropped by the server.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How to reach the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Server URLs.
    pub servers: Vec<String>,
    /// The names' prefix.
    pub prefix: String,
    /// Replicas of the stream and buckets.
    pub replicas: usize,
    /// The token to authenticate with, if the servers want one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The user name to authenticate with (used with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password of `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The text of a NATS `.creds` file (a user JWT and its NKey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds: Option<String>,
    /// A file holding the CA certificate (PEM) for TLS to the servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<PathBuf>,
}

impl Target {
    /// The target of a `[cluster]` section; its CA, if any, is written to `ca_path`.
    pub fn new(config: &ClusterConfig, ca_path: Option<PathBuf>) -> Target {
        let mut t = Target {
            servers: config.servers.clone(),
            prefix: config.prefix.clone(),
            replicas: config.replicas,
            ca_path,
            ..Target::default()
        };
        match &config.auth {
            ClusterAuth::None => {}
            ClusterAuth::Token(s) => t.token = Some(s.expose().to_owned()),
            ClusterAuth::UserPassword { user, password } => {
                t.user = Some(user.clone());
                t.password = Some(password.expose().to_owned());
            }
            ClusterAuth::Creds(c) => t.creds = Some(c.expose().to_owned()),
        }
        t
    }

    /// The names of this cluster's objects.
    pub fn names(&self) -> Names {
        Names::new(&self.prefix)
    }
}

/// Connect to the servers (any one of them), as `name`.
pub async fn connect(target: &Target, name: &str) -> Result<async_nats::Client, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| Duration::from_millis((attempt as u64 * 100).min(1000)));
    if let Some(token) = &target.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&target.user, &target.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(creds) = &target.creds {
        options = options.credentials(creds).map_err(|e| ClusterError::Creds(e.to_string()))?;
    }
    if let Some(ca) = &target.ca_path {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    options.connect(target.servers.clone()).await.map_err(|e| ClusterError::connect(&target.servers, &e))
}

/// The stream configuration this version writes and reads.
pub fn stream_config(names: &Names, replicas: usize) -> stream::Config {
    stream::Config {
        name: names.stream(),
        subjects: vec![names.subjects()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: STREAM_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        discard: stream::DiscardPolicy::Old,
        ..stream::Config::default()
    }
}

/// Create the events stream, or check that the existing one has the subjects, retention and storage this
/// version relies on.
pub async fn ensure_stream(js: &jetstream::Context, target: &Target) -> Result<(), ClusterError> {
    let names = target.names();
    let want = stream_config(&names, target.replicas);
    let mut stream = js
        .get_or_create_stream(want.clone())
        .await
        .map_err(|e| ClusterError::nats("cannot create the stream", &e))?;
    let info = stream.info().await.map_err(|e| ClusterError::nats("cannot read the stream", &e))?;
    let have = &info.config;
    let mut differences = Vec::new();
    if have.subjects != want.subjects {
        differences.push(format!("subjects {:?} (want {:?})", have.subjects, want.subjects));
    }
    if have.retention != want.retention {
        differences.push(format!("retention {:?} (want {:?})", have.retention, want.retention));
    }
    if have.storage != want.storage {
        differences.push(format!("storage {:?} (want {:?})", have.storage, want.storage));
    }
    if have.duplicate_window < Duration::from_secs(60) {
        differences.push(format!("duplicate_window {:?} (want at least 1m)", have.duplicate_window));
    }
    if !differences.is_empty() {
        return Err(ClusterError::StreamSettings {
            stream: names.stream(),
            differences: differences.join(", "),
        });
    }
    if have.num_replicas != want.num_replicas {
        tracing::warn!(stream = %names.stream(), have = have.num_replicas, want = want.num_replicas, "the stream has another number of replicas than [cluster] replicas");
    }
    Ok(())
}

/// The key-value bucket `name` (one value per key, file storage, `replicas`), made with `max_age` when
/// missing. An existing bucket is opened as it is, whatever its settings.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    name: String,
    replicas: usize,
    max_age: Option<Duration>,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age: max_age.unwrap_or_default(),
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..kv::Config::default()
    };
    js.create_key_value(config)
        .await
        .map_err(|e| ClusterError::nats(&format!("cannot create the bucket {name}"), &e))
}

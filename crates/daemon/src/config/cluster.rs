//! The `[cluster]` section: NATS JetStream servers, this node's role, names, replication, the leader's lease
//! and the credentials, as a serde struct checked by `validate`.
//!
//! Without `[cluster]` nothing changes: one machine, the redb outbox. With it, `herald serve` runs the
//! cluster mode of `herald-cluster` (`docs/cluster.md`). The pre-pass reads `token_file`, `password_file`,
//! `creds_file` and `ca_file` into `token`, `password`, `creds` and `ca` (the files' text). This module
//! connects to nothing; whether a deliverer has a notifier is checked in `mod.rs`, which sees both sections.

use std::time::Duration;

use herald_plugin::{ConfigError, Secret, parse_table};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::source::Source;
use super::values;

/// What a node of the cluster does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingest as a single daemon does and forward every accepted event to JetStream.
    Edge,
    /// Compete for the leader's lease; the leader delivers what the stream holds.
    Deliver,
    /// Both, on one machine (the default).
    Both,
}

impl Role {
    /// Whether this node ingests and forwards.
    pub fn edge(self) -> bool {
        matches!(self, Role::Edge | Role::Both)
    }

    /// Whether this node competes to deliver.
    pub fn deliver(self) -> bool {
        matches!(self, Role::Deliver | Role::Both)
    }

    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Deliver => "deliver",
            Role::Both => "both",
        }
    }
}

/// How a node proves who it is to the NATS servers.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterAuth {
    /// No credentials.
    None,
    /// `token` (or `token_file`).
    Token(Secret),
    /// `user` with `password` (or `password_file`).
    UserPassword {
        /// The user name.
        user: String,
        /// Its password.
        password: Secret,
    },
    /// The text of a NATS `.creds` file (`creds_file`): a user JWT and its NKey seed.
    Creds(Secret),
}

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// NATS server URLs, such as `nats://10.0.0.1:4222` (at least one).
    pub servers: Vec<String>,
    /// This node's role, default [`Role::Both`].
    pub role: Role,
    /// What the stream, subjects, buckets and consumer are named from, default `herald`.
    pub prefix: String,
    /// Replicas of the stream and the buckets, default the smaller of 3 and the number of servers.
    pub replicas: usize,
    /// The leader's lease: a leader that cannot renew within it is replaced, default `10s`.
    pub lease: Duration,
    /// Credentials.
    pub auth: ClusterAuth,
    /// The PEM text of the CA that signed the servers' certificates (`ca_file`): TLS to the servers.
    pub ca: Option<String>,
    /// Line and column of the `role` key (or the section), for errors found with the other sections.
    pub role_at: (usize, usize),
}

/// Every key `[cluster]` takes, as the message for an unknown one lists them.
pub(super) const CLUSTER_KEYS: [&str; 12] = [
    "servers",
    "role",
    "prefix",
    "replicas",
    "lease",
    "token",
    "token_file",
    "user",
    "password",
    "password_file",
    "creds_file",
    "ca_file",
];

/// The keys of `[cluster]` as written (the `*_file` keys are read by the pre-pass).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterKeys {
    #[serde(default)]
    servers: Option<toml::Value>,
    #[serde(default, deserialize_with = "values::string")]
    role: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    prefix: Option<String>,
    #[serde(default, deserialize_with = "values::integer")]
    replicas: Option<i64>,
    #[serde(default, deserialize_with = "values::duration")]
    lease: Option<Duration>,
    #[serde(default, deserialize_with = "values::string")]
    token: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    user: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    password: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    creds: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    ca: Option<String>,
}

/// Read `[cluster]`.
pub(super) fn section(src: &Source, value: Spanned<DeValue>) -> Result<ClusterConfig, ConfigError> {
    let section =
        src.section(value, "cluster", "expected a table: write `[cluster]` and its keys below it")?;
    let keys: ClusterKeys = parse_table(values::mark_datetimes(section.table.clone())).map_err(|err| {
        let err = match (err.message.starts_with("unknown key"), &err.key) {
            // The pre-pass renamed `creds_file` and `ca_file`; an unknown `creds` or `ca` was written so.
            (true, Some(key)) => ConfigError::unknown_key(key, &CLUSTER_KEYS),
            _ => err,
        };
        section.place(err)
    })?;
    section.check()?;
    let role_at = section.values.get("role").copied().unwrap_or(section.at);
    keys.validate(role_at).map_err(|err| section.place(err))
}

impl ClusterKeys {
    /// Check the values and fill in the defaults.
    fn validate(self, role_at: (usize, usize)) -> Result<ClusterConfig, ConfigError> {
        let servers = servers(self.servers)?;
        let role = match self.role.as_deref() {
            None | Some("both") => Role::Both,
            Some("edge") => Role::Edge,
            Some("deliver") => Role::Deliver,
            Some(other) => {
                let message = format!("`{other}` is not a role; expected `edge`, `deliver` or `both`");
                return Err(ConfigError::for_key("role", message));
            }
        };
        let prefix = self.prefix.unwrap_or_else(|| "herald".to_owned());
        let fine = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if prefix.is_empty() || prefix.len() > 32 || !prefix.chars().all(fine) {
            let message =
                "must be 1 to 32 letters, digits, `-` or `_` (it names the stream, subjects and buckets)";
            return Err(ConfigError::for_key("prefix", message));
        }
        let replicas = match self.replicas {
            None => servers.len().min(3),
            Some(r @ 1..=5) => r as usize,
            Some(_) => return Err(ConfigError::for_key("replicas", "must be 1 to 5 (JetStream's limit)")),
        };
        let lease = self.lease.unwrap_or(Duration::from_secs(10));
        if lease < Duration::from_secs(1) {
            return Err(ConfigError::for_key(
                "lease",
                "must be at least 1s (it is renewed every third of it)",
            ));
        }
        let auth = match (self.token, self.user, self.password, self.creds) {
            (None, None, None, None) => ClusterAuth::None,
            (Some(t), None, None, None) if !t.is_empty() => ClusterAuth::Token(Secret::new(t)),
            (Some(_), None, None, None) => {
                return Err(ConfigError::for_key("token", "empty token; remove the key or set a token"));
            }
            (None, Some(user), Some(password), None) if !user.is_empty() => {
                ClusterAuth::UserPassword { user, password: Secret::new(password) }
            }
            (None, Some(_), None, None) => {
                return Err(ConfigError::for_key("user", "`user` needs `password` (or `password_file`)"));
            }
            (None, None, Some(_), None) => {
                return Err(ConfigError::for_key("password", "`password` needs `user`"));
            }
            (None, Some(_), Some(_), None) => {
                return Err(ConfigError::for_key("user", "empty user name"));
            }
            (None, None, None, Some(c)) if c.contains("-----BEGIN") => ClusterAuth::Creds(Secret::new(c)),
            (None, None, None, Some(_)) => {
                let message = "not a NATS credentials file (no `-----BEGIN` block); `nsc` writes them";
                return Err(ConfigError::for_key("creds", message));
            }
            (_, _, _, _) => {
                let message = "set one way to log in: `token`, `user` + `password`, or `creds_file`";
                return Err(ConfigError::for_key("token", message));
            }
        };
        let ca = match self.ca {
            Some(pem) if !pem.contains("-----BEGIN CERTIFICATE") => {
                return Err(ConfigError::for_key(
                    "ca",
                    "not a PEM certificate (no `-----BEGIN CERTIFICATE`)",
                ));
            }
            ca => ca,
        };
        Ok(ClusterConfig { servers, role, prefix, replicas, lease, auth, ca, role_at })
    }
}

/// `servers`: a non-empty array of `nats://`, `tls://` or `host:port` addresses.
fn servers(value: Option<toml::Value>) -> Result<Vec<String>, ConfigError> {
    let example = "such as `[\"nats://10.0.0.1:4222\"]`";
    let Some(value) = value else {
        return Err(ConfigError::for_key(
            "servers",
            format!("missing required key: the NATS servers, {example}"),
        ));
    };
    let toml::Value::Array(items) = value else {
        let message =
            format!("expected an array of server URLs, {example}, found {}", values::type_str(&value));
        return Err(ConfigError::for_key("servers", message));
    };
    if items.is_empty() {
        return Err(ConfigError::for_key("servers", format!("empty; name at least one server, {example}")));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let key = format!("servers[{i}]");
            let s = match item {
                toml::Value::String(s) if !s.starts_with(super::source::UNREAD) => s,
                toml::Value::String(_) => return Err(ConfigError::for_key(key, "cannot read this value")),
                other => {
                    let message = format!("expected a string, found {}", values::type_str(&other));
                    return Err(ConfigError::for_key(key, message));
                }
            };
            let rest = ["nats://", "tls://"].iter().find_map(|p| s.strip_prefix(p)).unwrap_or(&s);
            let host_port = rest.rsplit('@').next().unwrap_or(rest);
            let port_ok =
                host_port.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if s.contains("://") && !s.starts_with("nats://") && !s.starts_with("tls://") || !port_ok {
                let message = format!("`{s}` is not a NATS server URL, such as `nats://10.0.0.1:4222`");
                return Err(ConfigError::for_key(key, message));
            }
            Ok(s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{BUILT_IN, parse_with};
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME").then(|| "/home/ada".to_owned())
    }

    fn parse(text: &str) -> Result<Option<ClusterConfig>, String> {
        parse_with(text, "/etc/herald/herald.toml", &env).map(|c| c.cluster).map_err(|e| e.to_string())
    }

    const HOOK: &str = "\n[[notifier]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n";

    #[test]
    fn no_section_is_no_cluster_and_defaults_follow_the_servers() {
        assert_eq!(parse("").expect("empty"), None);
        let built_in = parse_with(&crate::builtins::default_config(), BUILT_IN, &env).expect("built in");
        assert!(built_in.cluster.is_none());
        let one = parse(&format!("[cluster]\nservers = [\"nats://127.0.0.1:4222\"]\n{HOOK}"))
            .expect("one server")
            .expect("a cluster");
        assert_eq!((one.role, one.prefix.as_str(), one.replicas), (Role::Both, "herald", 1));
        assert_eq!(
            (one.lease, one.auth.clone(), one.ca.clone()),
            (Duration::from_secs(10), ClusterAuth::None, None)
        );
        let four =
            "[cluster]\nservers = [\"a:1\", \"tls://b:2\", \"nats://u:p@c:3\", \"d:4\"]\nrole = \"edge\"\n";
        let four = parse(four).expect("four servers").expect("a cluster");
        assert_eq!((four.replicas, four.role, four.servers.len()), (3, Role::Edge, 4));
        let full = "[cluster]\nservers = [\"a:1\"]\nrole = \"deliver\"\nprefix = \"team-a\"\nreplicas = 1\n\
                    lease = \"3s\"\nuser = \"herald\"\npassword = \"pw\"\n"
            .to_owned()
            + HOOK;
        let full = parse(&full).expect("full").expect("a cluster");
        assert_eq!(
            (full.role, full.prefix.as_str(), full.lease),
            (Role::Deliver, "team-a", Duration::from_secs(3))
        );
        assert_eq!(
            full.auth,
            ClusterAuth::UserPassword { user: "herald".into(), password: Secret::new("pw") }
        );
    }

    #[test]
    fn mistakes_name_the_file_line_column_and_key() {
        let check = |text: &str, expected: &str| match parse(text) {
            Ok(c) => panic!("{text}\n-> accepted: {c:?}"),
            Err(e) => assert_eq!(e, format!("/etc/herald/herald.toml:{expected}"), "{text}"),
        };
        check(
            "[cluster]\nrole = \"edge\"\n",
            "1:1: cluster.servers: missing required key: the NATS servers, such as `[\"nats://10.0.0.1:4222\"]`",
        );
        check(
            "[cluster]\nservers = []\n",
            "2:11: cluster.servers: empty; name at least one server, such as `[\"nats://10.0.0.1:4222\"]`",
        );
        check(
            "[cluster]\nservers = \"a:1\"\n",
            "2:11: cluster.servers: expected an array of server URLs, such as `[\"nats://10.0.0.1:4222\"]`, found string",
        );
        check(
            "[cluster]\nservers = [\"a:1\", \"http://b:2\"]\n",
            "2:19: cluster.servers: `http://b:2` is not a NATS server URL, such as `nats://10.0.0.1:4222`",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\nrole = \"leader\"\n",
            "3:8: cluster.role: `leader` is not a role; expected `edge`, `deliver` or `both`",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\nprefix = \"a.b\"\n",
            "3:10: cluster.prefix: must be 1 to 32 letters, digits, `-` or `_` (it names the stream, subjects and buckets)",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\nreplicas = 7\n",
            "3:12: cluster.replicas: must be 1 to 5 (JetStream's limit)",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\nlease = \"100ms\"\n",
            "3:9: cluster.lease: must be at least 1s (it is renewed every third of it)",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\nuser = \"u\"\n",
            "3:8: cluster.user: `user` needs `password` (or `password_file`)",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\"\n",
            "3:9: cluster.token: set one way to log in: `token`, `user` + `password`, or `creds_file`",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\nsecret = 1\n",
            "3:1: cluster.secret: unknown key; expected one of `servers`, `role`, `prefix`, `replicas`, `lease`, `token`, `token_file`, `user`, `password`, `password_file`, `creds_file`, `ca_file`",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\nrole = \"deliver\"\n",
            "3:8: cluster.role: a deliverer needs at least one [[notifier]] to deliver to; add one, or set `role = \"edge\"`",
        );
        check(
            "[cluster]\nservers = [\"a:1\"]\n",
            "1:1: cluster.role: a deliverer needs at least one [[notifier]] to deliver to; add one, or set `role = \"edge\"`",
        );
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), "s3cret\n").expect("token file");
        std::fs::write(dir.path().join("bad.creds"), "not creds").expect("creds file");
        let origin = dir.path().join("herald.toml");
        let origin = origin.to_str().expect("utf-8 path");
        let text = "[cluster]\nservers = [\"a:1\"]\nrole = \"edge\"\ntoken_file = \"token\"\n";
        let c = parse_with(text, origin, &env).expect("token file").cluster.expect("a cluster");
        assert_eq!(c.auth, ClusterAuth::Token(Secret::new("s3cret")));
        assert!(!format!("{c:?}").contains("s3cret"), "the token is never printed");
        let text = "[cluster]\nservers = [\"a:1\"]\nrole = \"edge\"\ncreds_file = \"bad.creds\"\n";
        let err = parse_with(text, origin, &env).expect_err("bad creds").to_string();
        assert!(
            err.ends_with(
                ":4:14: cluster.creds: not a NATS credentials file (no `-----BEGIN` block); `nsc` writes them"
            ),
            "{err}"
        );
    }

    #[test]
    fn the_example_and_the_reference_use_every_key() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text =
            std::fs::read_to_string(root.join("config/herald.toml")).expect("config/herald.toml exists");
        let raw: toml::Table = text.parse().expect("config/herald.toml is TOML");
        let cluster = raw["cluster"].as_table().expect("a [cluster] table");
        for key in ["servers", "role", "prefix", "replicas", "lease", "token"] {
            assert!(cluster.contains_key(key), "[cluster] of config/herald.toml lacks `{key}`");
        }
        let docs =
            std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs/configuration.md");
        for key in CLUSTER_KEYS {
            // The ways to log in exclude each other: the example names the others in its comments.
            assert!(text.contains(&format!("{key} = ")), "config/herald.toml does not show `{key}`");
            assert!(docs.contains(&format!("`{key}`")), "docs/configuration.md does not mention `{key}`");
        }
        let parsed = super::super::parse_with(&text, "config/herald.toml", &env).expect("the example parses");
        assert_eq!(parsed.cluster.map(|c| c.replicas), Some(3));
    }
}

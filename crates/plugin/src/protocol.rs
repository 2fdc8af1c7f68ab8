//! The out-of-process plugin protocol, version 1.0: the messages a host (the daemon) and a plugin exchange.
//!
//! A plugin is a child process speaking newline-delimited JSON on its stdin (host to plugin) and stdout
//! (plugin to host), one object per line with a `type` field; its stderr is its log.
//! `docs/plugin-protocol.md` is the specification with an example of every message; this module is its Rust
//! form, shared by the host (`herald-plugin-host`'s child process host and its conformance kit) and the
//! plugin side ([`mod@crate::serve`]). It only encodes, decodes and checks versions: it does no I/O.
//!
//! Compatibility: a reader ignores fields it does not know, so a minor version may add optional fields; a
//! different major version is refused at the handshake with [`check_version`].

use serde::{Deserialize, Serialize};

use crate::notifier::{Capabilities, DeliveryError, Notification, Receipt};

/// The protocol name in `hello`.
pub const PROTOCOL: &str = "herald-plugin";
/// The protocol version this crate speaks.
pub const VERSION: &str = "1.0";
/// The major version; a plugin speaking another major version is refused.
pub const MAJOR: u64 = 1;
/// The longest line either side may send, in bytes (without the newline); a longer line is a violation.
pub const MAX_LINE: usize = 1 << 20;

/// A message from the host to a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// The first message: who is speaking and the notifier's configuration table.
    Hello {
        /// Always [`PROTOCOL`].
        protocol: String,
        /// The host's protocol version, such as `1.0`.
        version: String,
        /// The notifier's name in the host's configuration (an addition of 1.0 over the bare table).
        #[serde(default)]
        name: String,
        /// The notifier's TOML table as JSON, less the keys the host keeps (`type`, routing, `command`, ...).
        #[serde(default)]
        config: serde_json::Value,
    },
    /// Deliver one notification; answer with `delivered` or `failed` carrying the same `id`.
    Deliver {
        /// The host's id for this delivery, echoed in the answer.
        id: String,
        /// What to send.
        notification: Box<Notification>,
    },
    /// The answer to a `command` that carried an `id`.
    CommandResult {
        /// The `id` of the `command` this answers.
        id: String,
        /// Whether the host did what was asked.
        ok: bool,
        /// What happened, to show the user (`stopping run mnist-3`, `no run matches 7`).
        message: String,
    },
    /// Finish what is in flight and exit.
    Shutdown,
}

/// A message from a plugin to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginMessage {
    /// The handshake succeeded.
    Ready {
        /// The plugin's name, such as `gotify`.
        name: String,
        /// The plugin's own version.
        #[serde(default)]
        version: String,
        /// The protocol version the plugin speaks; its major must equal [`MAJOR`].
        protocol_version: String,
        /// Any of `edit`, `image` and `commands`.
        #[serde(default)]
        capabilities: Vec<String>,
    },
    /// The handshake failed (a bad configuration, most often); the plugin exits after sending it.
    Error {
        /// What is wrong and what to do, to show the user.
        message: String,
    },
    /// A delivery succeeded.
    Delivered {
        /// The `id` of the `deliver` this answers.
        id: String,
        /// Opaque data handed back in the next notification of the same run (`previous`).
        #[serde(default)]
        receipt: Receipt,
    },
    /// A delivery failed.
    Failed {
        /// The `id` of the `deliver` this answers.
        id: String,
        /// What went wrong, saying what the user can do where possible.
        message: String,
        /// A short machine-readable code, such as `http_429`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// Whether a later retry may succeed (default `true`).
        #[serde(default = "yes")]
        retryable: bool,
        /// Seconds to wait before the retry, when the service said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<f64>,
    },
    /// A user's command relayed to the host (only from plugins that declared `commands`).
    Command {
        /// The run: its id, name or short number.
        run: String,
        /// `stop` (the only action of 1.0).
        action: String,
        /// Why, shown to the trainer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When set, the host answers with `command_result` carrying it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

fn yes() -> bool {
    true
}

impl PluginMessage {
    /// The `failed` answer for a [`DeliveryError`].
    pub fn failed(id: String, err: &DeliveryError) -> PluginMessage {
        PluginMessage::Failed {
            id,
            message: err.message.clone(),
            code: err.code.clone(),
            retryable: err.retryable,
            retry_after: err.retry_after.map(|d| d.as_secs_f64()),
        }
    }

    /// The message's `type`, for errors that name what arrived.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginMessage::Ready { .. } => "ready",
            PluginMessage::Error { .. } => "error",
            PluginMessage::Delivered { .. } => "delivered",
            PluginMessage::Failed { .. } => "failed",
            PluginMessage::Command { .. } => "command",
        }
    }
}

/// The [`DeliveryError`] a `failed` answer describes. A `retry_after` outside 0..1e9 seconds is ignored.
pub fn delivery_error(
    message: String,
    code: Option<String>,
    retryable: bool,
    retry_after: Option<f64>,
) -> DeliveryError {
    let mut err = DeliveryError { message, code, retryable, retry_after: None };
    if let Some(secs) = retry_after.filter(|s| s.is_finite() && (0.0..1e9).contains(s)) {
        err = err.with_retry_after(std::time::Duration::from_secs_f64(secs));
    }
    err
}

/// Capability words as `ready` lists them.
pub fn capability_words(c: Capabilities) -> Vec<String> {
    let mut out = Vec::new();
    if c.edit {
        out.push("edit".to_owned());
    }
    if c.images {
        out.push("image".to_owned());
    }
    if c.commands {
        out.push("commands".to_owned());
    }
    out
}

/// Capabilities from the words of `ready`; unknown words are ignored (a later minor version may add some).
pub fn capabilities_from(words: &[String]) -> Capabilities {
    let has = |w: &str| words.iter().any(|x| x == w);
    Capabilities { edit: has("edit"), images: has("image") || has("images"), commands: has("commands") }
}

/// Why a peer's protocol version is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The peer speaks another major version.
    #[error(
        "the plugin speaks {PROTOCOL} protocol {found}, this herald speaks {VERSION}: install a version of the \
         plugin made for protocol {MAJOR}.x, or a herald that speaks {found}"
    )]
    Major {
        /// The peer's version, as sent.
        found: String,
    },
    /// The version is not `MAJOR.MINOR` numbers.
    #[error("`{found}` is not a protocol version: expected MAJOR.MINOR, such as `{VERSION}`")]
    Malformed {
        /// The peer's version, as sent.
        found: String,
    },
}

/// Accept a version with the same major as [`VERSION`] (any minor), refuse anything else.
pub fn check_version(version: &str) -> Result<(), VersionError> {
    let malformed = || VersionError::Malformed { found: version.to_owned() };
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    let major: u64 = major.parse().map_err(|_| malformed())?;
    let _: u64 = minor.parse().map_err(|_| malformed())?;
    if major != MAJOR {
        return Err(VersionError::Major { found: version.to_owned() });
    }
    Ok(())
}

/// One message as a line: compact JSON and `\n`.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use herald_event::{Event, Message};

    use super::*;
    use crate::{RunContext, render};

    fn notification() -> Notification {
        let event =
            Event::now("r1", 3, Message { level: Default::default(), title: "hi".into(), text: "t".into() });
        render::notification(&RunContext::new("r1"), &event, None, None, 1)
    }

    #[test]
    fn messages_round_trip_with_their_type_tags() {
        fn check<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(m: T, tag: &str) {
            let line = encode(&m).expect("messages encode");
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
            let v: serde_json::Value = serde_json::from_slice(&line).expect("a line is JSON");
            assert_eq!(v["type"], tag);
            assert_eq!(serde_json::from_value::<T>(v).expect("decodes"), m);
        }
        check(
            HostMessage::Hello {
                protocol: PROTOCOL.into(),
                version: VERSION.into(),
                name: "g".into(),
                config: serde_json::json!({"url": "http://x"}),
            },
            "hello",
        );
        check(HostMessage::Deliver { id: "7".into(), notification: Box::new(notification()) }, "deliver");
        check(HostMessage::Shutdown, "shutdown");
        check(
            HostMessage::CommandResult { id: "c1".into(), ok: true, message: "stopping".into() },
            "command_result",
        );
        check(
            PluginMessage::Ready {
                name: "p".into(),
                version: "0.1".into(),
                protocol_version: "1.0".into(),
                capabilities: vec!["edit".into()],
            },
            "ready",
        );
        check(
            PluginMessage::Delivered { id: "7".into(), receipt: Receipt(serde_json::json!({"m": 1})) },
            "delivered",
        );
        check(
            PluginMessage::Command {
                run: "2".into(),
                action: "stop".into(),
                reason: None,
                id: Some("c".into()),
            },
            "command",
        );
    }

    #[test]
    fn issue_examples_decode() {
        let ready: PluginMessage = serde_json::from_str(
            r#"{"type":"ready","name":"x","version":"1","protocol_version":"1.0","capabilities":["edit","image","commands"],"extra":1}"#,
        )
        .expect("ready with an unknown field decodes");
        let PluginMessage::Ready { capabilities, .. } = ready else { panic!("ready") };
        assert_eq!(
            capabilities_from(&capabilities),
            Capabilities { edit: true, images: true, commands: true }
        );
        let failed: PluginMessage = serde_json::from_str(
            r#"{"type":"failed","id":"1","message":"m","retryable":true,"retry_after":1.5}"#,
        )
        .expect("failed decodes");
        let PluginMessage::Failed { message, code, retryable, retry_after, .. } = failed else { panic!() };
        let err = delivery_error(message, code, retryable, retry_after);
        assert_eq!(err.retry_after, Some(std::time::Duration::from_millis(1500)));
        assert!(err.retryable);
        let failed: PluginMessage =
            serde_json::from_str(r#"{"type":"failed","id":"1","message":"m"}"#).expect("defaults");
        assert!(matches!(failed, PluginMessage::Failed { retryable: true, .. }));
        let err = delivery_error("m".into(), None, false, Some(f64::NAN));
        assert_eq!((err.retryable, err.retry_after), (false, None));
        assert!(serde_json::from_str::<PluginMessage>(r#"{"type":"reddy"}"#).is_err());
        assert!(serde_json::from_str::<PluginMessage>(r#"{"type":"delivered"}"#).is_err(), "id is required");
    }

    /// Every JSON example in docs/plugin-protocol.md is a message of this module.
    #[test]
    fn documented_examples_decode() {
        let doc = include_str!("../../../docs/plugin-protocol.md");
        let mut seen = std::collections::BTreeSet::new();
        for block in doc.split("```json\n").skip(1) {
            let text = block.split("```").next().expect("a closed block").trim();
            let value: serde_json::Value = serde_json::from_str(text).expect(text);
            let kind = value["type"].as_str().expect("a type").to_owned();
            let host = serde_json::from_value::<HostMessage>(value.clone());
            let plugin = serde_json::from_value::<PluginMessage>(value);
            assert!(host.is_ok() || plugin.is_ok(), "{text}: {host:?} {plugin:?}");
            seen.insert(kind);
        }
        let all = [
            "command",
            "command_result",
            "deliver",
            "delivered",
            "error",
            "failed",
            "hello",
            "ready",
            "shutdown",
        ];
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), all, "every message has an example");
    }

    #[test]
    fn versions() {
        fn check(v: &str, ok: bool) {
            assert_eq!(check_version(v).is_ok(), ok, "{v}");
        }
        check("1.0", true);
        check("1.7", true);
        check("1", true);
        check("2.0", false);
        check("0.9", false);
        check("one", false);
        check("1.x", false);
        let msg = check_version("2.0").expect_err("2.0 is another major").to_string();
        assert!(msg.contains("protocol 2.0, this herald speaks 1.0"), "{msg}");
    }

    #[test]
    fn capability_words_round_trip() {
        for c in [
            Capabilities::default(),
            Capabilities { edit: true, images: false, commands: true },
            Capabilities { edit: true, images: true, commands: true },
        ] {
            assert_eq!(capabilities_from(&capability_words(c)), c);
        }
    }
}

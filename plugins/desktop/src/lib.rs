//! The `desktop` notifier: freedesktop.org notifications on the machine you sit at, over the D-Bus session
//! bus (notify-rust with zbus on tokio).
//!
//! Each notification shows the rendering's title as the summary and its first paragraph (the epoch summary,
//! the error, ...) as the body; the results table stays out of the popup. With `live = true` (the default)
//! a run keeps one notification, replaced in place (`replaces_id`, kept in the [`Receipt`]) instead of
//! stacking one per epoch. Failures (failed or lost runs, error messages) are sent with critical urgency,
//! epochs with low urgency. At run end the loss curve is shown through the `image-path` hint.
//!
//! Without a session bus (a headless training box, an SSH session) the notifier reports itself
//! unavailable with a clear message ("no D-Bus session bus") in `herald check`, `/v1/status` and the log,
//! and its deliveries fail as retryable, so the other notifiers keep working. The daemon and the CLI use
//! this crate through its [`DesktopConfig`] ([`NotifierType`]) and [`session_bus_available`] (the built-in
//! default configuration adds a desktop notifier only when a bus is there).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use herald_event::{Level, Payload};
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, Health, Notification, Notifier, NotifierType, Receipt, duration,
};
use notify_rust::{Timeout, Urgency};
use serde::Deserialize;
use tokio::sync::OnceCell;

const BUS_NAME: &str = "org.freedesktop.Notifications";
const OBJECT_PATH: &str = "/org/freedesktop/Notifications";
/// How long a D-Bus call may take before the bus counts as not answering.
const BUS_TIMEOUT: Duration = Duration::from_secs(5);
/// The popup body keeps at most this many lines of the first paragraph.
const BODY_LINES: usize = 8;

/// Configuration of a `desktop` notifier (`[[notifier]]` with `type = "desktop"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopConfig {
    /// One notification per run, replaced in place as the run goes on (default true); false stacks one
    /// notification per event.
    #[serde(default = "herald_plugin::default_true")]
    pub live: bool,
    /// The application name the notification server shows (default `Herald`).
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// An icon name from the icon theme or a file path; none when unset.
    #[serde(default)]
    pub icon: Option<String>,
    /// How long a notification stays on screen (`"10s"`; `"0s"` for until dismissed); the server's
    /// default when unset.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub expire: Option<Duration>,
}

fn default_app_name() -> String {
    "Herald".to_owned()
}

/// Whether this process can reach a D-Bus session bus at all (cheap: environment and file checks only).
/// The built-in default configuration adds a desktop notifier when this is true.
pub fn session_bus_available() -> bool {
    bus_missing_reason().is_none()
}

/// Why there is certainly no session bus, if that is certain without connecting.
fn bus_missing_reason() -> Option<String> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty()) {
        return None;
    }
    // Without the variable, D-Bus clients fall back to the systemd user bus socket.
    let runtime_bus = std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("bus"));
    if runtime_bus.is_some_and(|p| p.exists()) {
        return None;
    }
    Some(
        "no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set, so desktop notifications cannot be shown \
         (a headless or SSH session?); run herald inside your desktop session or remove the desktop notifier"
            .to_owned(),
    )
}

/// The `desktop` notifier.
#[derive(Debug)]
pub struct Desktop {
    name: String,
    config: DesktopConfig,
    /// Whether the server renders body markup (so `&`, `<`, `>` must be escaped); asked once.
    markup: OnceCell<bool>,
}

impl NotifierType for DesktopConfig {
    const KIND: &'static str = "desktop";
    const DESCRIPTION: &'static str =
        "shows freedesktop notifications on the D-Bus session bus, one per run replaced in place";
    type Notifier = Desktop;

    /// Check the configuration (no bus is contacted).
    fn build(self, name: &str) -> Result<Desktop, ConfigError> {
        if self.app_name.trim().is_empty() {
            return Err(ConfigError::for_key("app_name", "must not be empty"));
        }
        if self.expire.is_some_and(|d| d.as_millis() > i32::MAX as u128) {
            return Err(ConfigError::for_key("expire", "too long: use `0s` for until dismissed"));
        }
        Ok(Desktop { name: name.to_owned(), config: self, markup: OnceCell::new() })
    }
}

impl Desktop {
    /// A connection to the session bus, or the reason there is none.
    async fn connect(&self) -> Result<zbus::Connection, String> {
        if let Some(reason) = bus_missing_reason() {
            return Err(reason);
        }
        let address = std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_else(|_| "the user bus".to_owned());
        match tokio::time::timeout(BUS_TIMEOUT, zbus::Connection::session()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(format!("no D-Bus session bus: the bus at {address} does not answer ({e})")),
            Err(_) => Err(format!("no D-Bus session bus: the bus at {address} did not answer within 5 s")),
        }
    }

    async fn call<R>(&self, connection: &zbus::Connection, method: &str) -> Result<R, String>
    where
        R: for<'d> zbus::export::serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        let call = connection.call_method(Some(BUS_NAME), OBJECT_PATH, Some(BUS_NAME), method, &());
        let reply = match tokio::time::timeout(BUS_TIMEOUT, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(format!("no notification server on the D-Bus session bus ({e})")),
            Err(_) => return Err("the notification server did not answer within 5 s".to_owned()),
        };
        reply.body().deserialize::<R>().map_err(|e| format!("the notification server answered oddly ({e})"))
    }

    async fn body_markup(&self) -> Result<bool, String> {
        self.markup
            .get_or_try_init(|| async {
                let connection = self.connect().await?;
                let caps: Vec<String> = self.call(&connection, "GetCapabilities").await?;
                Ok(caps.iter().any(|c| c == "body-markup"))
            })
            .await
            .copied()
    }

    /// Write the image where the notification server can read it; its path.
    async fn image_file(&self, n: &Notification) -> Option<PathBuf> {
        let image = n.image.as_ref()?;
        let dir =
            std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from).join("herald");
        let run: String = n
            .event
            .run
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let path = dir.join(format!("{run}-{}", sanitize_file_name(&image.filename)));
        let written = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&path, &image.bytes).await
        };
        match written.await {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(notifier = %self.name, run = %n.event.run, error = %e, "cannot write the image; sending the text alone");
                None
            }
        }
    }
}

fn sanitize_file_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    if clean.trim_matches('.').is_empty() { "image.png".to_owned() } else { clean }
}

/// The urgency of an event: critical for failures, low for epochs, normal otherwise.
pub fn urgency(n: &Notification) -> Urgency {
    match &n.event.payload {
        Payload::RunFailed(_) | Payload::RunLost(_) | Payload::RankLost(_) | Payload::RankFailed(_) => {
            Urgency::Critical
        }
        Payload::Message(m) if m.level == Level::Error => Urgency::Critical,
        Payload::Alert(a) => match a.level {
            Level::Error => Urgency::Critical,
            Level::Warning => Urgency::Normal,
            Level::Info => Urgency::Low,
        },
        Payload::EpochEnded(_)
        | Payload::EpochStarted(_)
        | Payload::BatchEnded(_)
        | Payload::Heartbeat(_) => Urgency::Low,
        _ => Urgency::Normal,
    }
}

/// The popup body: the first paragraph of the plain text (no table), at most [`BODY_LINES`] lines,
/// escaped when the server renders markup.
pub fn body(n: &Notification, markup: bool) -> String {
    let first = n.text.split("\n\n").next().unwrap_or_default();
    let lines: Vec<&str> = first.lines().take(BODY_LINES).collect();
    let mut text = lines.join("\n");
    if first.lines().count() > BODY_LINES {
        text.push_str("\n…");
    }
    if markup { escape_markup(&text) } else { text }
}

/// Escape for the notification body markup (a small subset of HTML): `&`, `<`, `>`.
fn escape_markup(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn delivery_error(message: String) -> DeliveryError {
    // The bus may come back (the user logs in again): the host retries until its max_age.
    DeliveryError::retryable(message).with_code("no_session_bus")
}

#[async_trait]
impl Notifier for Desktop {
    fn capabilities(&self) -> Capabilities {
        Capabilities { edit: self.config.live, images: true, commands: false }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let markup = self.body_markup().await.map_err(delivery_error)?;
        let mut notification = notify_rust::Notification::new();
        notification
            .appname(&self.config.app_name)
            .summary(&n.title)
            .body(&body(n, markup))
            .urgency(urgency(n));
        if let Some(icon) = &self.config.icon {
            notification.icon(icon);
        }
        if let Some(expire) = self.config.expire {
            notification.timeout(if expire.is_zero() { Timeout::Never } else { Timeout::from(expire) });
        }
        if self.config.live
            && let Some(id) = n
                .previous
                .as_ref()
                .and_then(|r| r.0.get("id"))
                .and_then(serde_json::Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .filter(|id| *id != 0)
        {
            notification.id(id);
        }
        if let Some(path) = self.image_file(n).await {
            notification.image_path(&path.to_string_lossy());
        }
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, "showing a desktop notification");
        let shown = tokio::time::timeout(BUS_TIMEOUT, notification.show_async())
            .await
            .map_err(|_| delivery_error("the notification server did not answer within 5 s".to_owned()))?
            .map_err(|e| delivery_error(format!("cannot show the notification: {e}")))?;
        Ok(Receipt(serde_json::json!({ "id": shown.id() })))
    }

    async fn health_check(&self) -> Health {
        let connection = match self.connect().await {
            Ok(connection) => connection,
            Err(message) => return Health::Unavailable { message },
        };
        match self.call::<(String, String, String, String)>(&connection, "GetServerInformation").await {
            Ok(_) => Health::Ok,
            Err(message) => Health::Unavailable { message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_key() {
        fn check(text: &str, key: &str, part: &str) {
            let err = DesktopConfig::from_table("d", text.parse().expect("TOML")).err().expect(text);
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
            assert!(err.message.contains(part), "{text}: {err}");
        }
        check("live = 'yes'", "live", "boolean");
        check("app_name = ' '", "app_name", "empty");
        check("expire = 'forever'", "expire", "invalid duration");
        check("icon = 3", "icon", "string");
        check("urgent = true", "urgent", "unknown key");
        assert!(DesktopConfig::from_table("d", toml::Table::new()).is_ok());
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(sanitize_file_name("loss.png"), "loss.png");
        assert_eq!(sanitize_file_name("../../etc/x"), ".._.._etc_x");
        assert_eq!(sanitize_file_name(".."), "image.png");
    }
}

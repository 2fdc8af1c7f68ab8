//! The `email` notifier: training notifications as mail, over SMTP with STARTTLS, implicit TLS or none.
//!
//! Each notification is one `multipart/alternative` mail: the plain-text rendering, and an HTML part with
//! the results table as a real `<table>` (every run-supplied string escaped; see [`html`]). At run end the
//! loss curve the host hands over is shown inline (`multipart/related`, `cid:` image). A failure mail
//! carries the traceback. Mails of one run form a thread (`In-Reply-To` the run's first mail), and a retry
//! of the same event reuses its `Message-ID`. SMTP connections are pooled and reused between mails.
//!
//! Digests are not this crate's: `digest` and `quiet_hours` are routing keys of every `[[notifier]]`, and the
//! daemon hands a digest over as one notification (a `message`), mailed like any other.
//!
//! The daemon and the CLI use this crate through its [`EmailConfig`] ([`NotifierType`]); it does not retry or
//! rate-limit: the host does.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use herald_plugin::{
    Capabilities, ConfigError, DeliveryError, Health, Notification, Notifier, NotifierType, Receipt, Secret,
    duration,
};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

pub mod html;

/// The `Content-ID` of the inline loss curve.
pub const IMAGE_CID: &str = "loss-curve@herald";

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on this machine or a trusted network.
    None,
}

/// Configuration of an `email` notifier (`[[notifier]]` with `type = "email"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server, such as `smtp.gmail.com`.
    pub smtp_host: String,
    /// The SMTP port; by default 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS) or `none`.
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    /// A PEM file of extra CA certificates to trust (a company or test CA); the system's web roots are
    /// always trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The SMTP login, if the server needs one (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// The SMTP password (an app password for Gmail and the like); use `password_file` to keep it out of
    /// the configuration.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, such as `Herald <herald@example.org>`.
    pub from: String,
    /// The recipients (at least one).
    pub to: Vec<String>,
    /// Put before every subject (default `[herald] `).
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// How long to wait for the server at each SMTP step (default `30s`). The routing key `timeout` bounds
    /// the whole delivery.
    #[serde(default = "default_timeout", deserialize_with = "duration::deserialize")]
    pub smtp_timeout: Duration,
}

fn default_tls() -> TlsMode {
    TlsMode::Starttls
}
fn default_subject_prefix() -> String {
    "[herald] ".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The `email` notifier.
pub struct Email {
    name: String,
    config: EmailConfig,
    from: Mailbox,
    to: Vec<Mailbox>,
    port: u16,
    tls: Tls,
    /// Built on first use: lettre's connection pool starts a task, which needs the runtime.
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NotifierType for EmailConfig {
    const KIND: &'static str = "email";
    const DESCRIPTION: &'static str =
        "mails text and HTML (results table, inline loss curve) over SMTP with STARTTLS or TLS";
    type Notifier = Email;

    /// Check the configuration (addresses, TLS, the CA file); nothing is sent and no connection is made.
    fn build(self, name: &str) -> Result<Email, ConfigError> {
        let host = self.smtp_host.trim();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
            return Err(ConfigError::for_key(
                "smtp_host",
                "expected a host name or address such as `smtp.example.org` (the port goes in `smtp_port`)",
            ));
        }
        let from: Mailbox = self.from.parse().map_err(|e| {
            ConfigError::for_key(
                "from",
                format!("`{}` is not a mail address ({e}): write `Name <user@host>`", self.from),
            )
        })?;
        if self.to.is_empty() {
            return Err(ConfigError::for_key("to", "give at least one recipient"));
        }
        let to = self
            .to
            .iter()
            .enumerate()
            .map(|(i, address)| {
                address.parse::<Mailbox>().map_err(|e| {
                    ConfigError::for_key(
                        format!("to[{i}]"),
                        format!("`{address}` is not a mail address ({e})"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(ConfigError::for_key("password", "`username` is set: set `password` too"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::for_key("username", "`password` is set: set `username` too"));
            }
            _ => {}
        }
        let tls = match self.tls {
            TlsMode::None => {
                if self.ca_file.is_some() {
                    return Err(ConfigError::for_key("ca_file", "`tls = \"none\"` uses no certificates"));
                }
                Tls::None
            }
            mode => {
                let mut params = TlsParameters::builder(host.to_owned());
                if let Some(path) = &self.ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        ConfigError::for_key("ca_file", format!("cannot read {}: {e}", path.display()))
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| {
                        ConfigError::for_key(
                            "ca_file",
                            format!("{} holds no PEM certificate: {e}", path.display()),
                        )
                    })?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| ConfigError::for_key("tls", format!("cannot set up TLS: {e}")))?;
                if mode == TlsMode::Tls { Tls::Wrapper(params) } else { Tls::Required(params) }
            }
        };
        let port = self.smtp_port.unwrap_or(match self.tls {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        });
        Ok(Email { name: name.to_owned(), from, to, port, tls, config: self, transport: OnceLock::new() })
    }
}

impl Email {
    fn transport(&self) -> &AsyncSmtpTransport<Tokio1Executor> {
        self.transport.get_or_init(|| {
            let mut builder =
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.config.smtp_host.trim())
                    .port(self.port)
                    .tls(self.tls.clone())
                    .timeout(Some(self.config.smtp_timeout));
            if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
            }
            builder.build()
        })
    }

    /// The mail for one notification.
    pub fn message(&self, n: &Notification, thread: Option<&str>) -> Result<Message, DeliveryError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("{}{}", self.config.subject_prefix, n.title))
            .message_id(Some(message_id(n)))
            .date(std::time::SystemTime::from(n.event.time));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        if let Some(thread) = thread {
            builder = builder.in_reply_to(thread.to_owned()).references(thread.to_owned());
        }
        let text = SinglePart::plain(n.text.clone());
        let body = html::document(n, n.image.is_some());
        let alternative = match &n.image {
            Some(image) => {
                let content_type = ContentType::parse(&image.mime).map_err(|e| {
                    DeliveryError::permanent(format!("invalid image type `{}`: {e}", image.mime))
                })?;
                let inline = Attachment::new_inline_with_name(IMAGE_CID.to_owned(), image.filename.clone())
                    .body(image.bytes.clone(), content_type);
                MultiPart::alternative()
                    .singlepart(text)
                    .multipart(MultiPart::related().singlepart(SinglePart::html(body)).singlepart(inline))
            }
            None => MultiPart::alternative().singlepart(text).singlepart(SinglePart::html(body)),
        };
        builder
            .multipart(alternative)
            .map_err(|e| DeliveryError::permanent(format!("cannot build the mail: {e}")))
    }
}

/// A `Message-ID` that is the same for every retry of one event: `<run.seq@herald>` (run id made safe).
fn message_id(n: &Notification) -> String {
    let run: String = n
        .event
        .run
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    format!("<{run}.{}.{}@herald>", n.event.seq, n.event.kind())
}

/// What the receipt keeps between mails of one run.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct State {
    /// The run's first mail, which later mails reply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread: Option<String>,
    /// The last mail's `Message-ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
}

impl State {
    fn from_previous(previous: Option<&Receipt>) -> State {
        previous.and_then(|r| serde_json::from_value(r.0.clone()).ok()).unwrap_or_default()
    }

    fn receipt(&self) -> Receipt {
        Receipt(serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }
}

fn smtp_error(err: &lettre::transport::smtp::Error, host: &str) -> DeliveryError {
    let chain = herald_plugin::error_chain(err);
    if err.is_permanent() {
        let hint = match err.status().map(|c| c.to_string()) {
            Some(code) if code.starts_with("53") => "; check `username` and `password`",
            _ => "; check the addresses in `from` and `to`",
        };
        DeliveryError::permanent(format!("the SMTP server {host} refused the mail: {chain}{hint}"))
            .with_code("smtp_5xx")
    } else if err.is_transient() {
        DeliveryError::retryable(format!("the SMTP server {host} deferred the mail: {chain}"))
            .with_code("smtp_4xx")
    } else if err.is_tls() || chain.contains("certificate") {
        // rustls reports an untrusted or mismatched certificate as a connection error: no retry fixes it.
        DeliveryError::permanent(format!(
            "TLS with {host} failed: {chain}; check `tls` and the port, and set `ca_file` for a private CA"
        ))
        .with_code("tls")
    } else if err.is_client() {
        DeliveryError::permanent(format!("cannot send through {host}: {chain}")).with_code("smtp_client")
    } else if err.is_timeout() {
        DeliveryError::retryable(format!("the SMTP server {host} timed out: {chain}")).with_code("timeout")
    } else {
        DeliveryError::retryable(format!("cannot reach the SMTP server {host}: {chain}")).with_code("network")
    }
}

#[async_trait]
impl Notifier for Email {
    fn capabilities(&self) -> Capabilities {
        Capabilities { edit: false, images: true, commands: false }
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let mut state = State::from_previous(n.previous.as_ref());
        let message = self.message(n, state.thread.as_deref())?;
        let host = self.config.smtp_host.trim();
        tracing::debug!(notifier = %self.name, run = %n.event.run, seq = n.event.seq, "sending mail");
        self.transport().send(message).await.map_err(|e| smtp_error(&e, host))?;
        let id = message_id(n);
        state.thread.get_or_insert_with(|| id.clone());
        state.message_id = Some(id);
        Ok(state.receipt())
    }

    async fn health_check(&self) -> Health {
        let host = self.config.smtp_host.trim();
        match self.transport().test_connection().await {
            Ok(true) => Health::Ok,
            Ok(false) => Health::Unavailable {
                message: format!("the SMTP server {host}:{} does not answer", self.port),
            },
            Err(e) => {
                Health::Unavailable { message: smtp_error(&e, &format!("{host}:{}", self.port)).message }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_plugin::parse_table;

    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
    }

    const BASE: &str =
        "smtp_host = 'smtp.example.org'\nfrom = 'Herald <herald@example.org>'\nto = ['me@example.org']\n";

    #[test]
    fn config_errors_name_the_key() {
        fn check(text: &str, key: &str, part: &str) {
            let err = EmailConfig::from_table("m", table(text)).err().expect(text);
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
            assert!(err.message.contains(part), "{text}: {err}");
        }
        check(&format!("{BASE}tls = 'ssl'"), "tls", "unknown variant");
        check(&BASE.replace("herald@example.org", "not an address"), "from", "not a mail address");
        check(&BASE.replace("['me@example.org']", "[]"), "to", "at least one");
        check(&BASE.replace("['me@example.org']", "['a@b.c', 'nope']"), "to[1]", "not a mail address");
        check(&BASE.replace("smtp.example.org", "smtp.example.org:587"), "smtp_host", "smtp_port");
        check(&format!("{BASE}username = 'u'"), "password", "set `password` too");
        // The digest is the daemon's (a routing key), not the email type's.
        check(&format!("{BASE}digest = '10m'"), "digest", "unknown key");
        check(&format!("{BASE}ca_file = '/nonexistent/ca.pem'"), "ca_file", "cannot read");
        check(&format!("{BASE}subjectprefix = 'x'"), "subjectprefix", "unknown key");
        assert!(EmailConfig::from_table("m", table(BASE)).is_ok());
    }

    #[test]
    fn password_does_not_show_in_debug() {
        let config: EmailConfig =
            parse_table(table(&format!("{BASE}username = 'u'\npassword = 'hunter2'"))).expect("valid");
        let shown = format!("{:?}", config.build("m").expect("valid"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

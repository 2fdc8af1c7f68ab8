//! A notifier type as a Rust type: [`NotifierType`], implemented by a notifier's configuration struct.
//!
//! Following Vector's sink configs, one struct is a type's whole description: serde reads the
//! `[[notifier]]` table into it, its constants name the type (`type = "..."`) and say what it does
//! (`herald plugins`), and `build` checks it and makes the notifier. The [`crate::Registry`] (built-ins,
//! `Registry::add`) and [`crate::serve_type`] (out of process) take the type, so a notifier crate exports
//! its config struct and nothing else for hosts. A built notifier reports its type's `KIND` through a thin
//! wrapper, so a notifier does not implement [`Notifier::kind`] itself. This module does no I/O.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{ConfigError, parse_table};
use crate::host::Host;
use crate::notifier::{Capabilities, DeliveryError, Health, Notification, Notifier, Receipt, Renderings};

/// A notifier type: its configuration table (this struct, `#[serde(deny_unknown_fields)]`), its name and
/// description, and how a configuration becomes a notifier.
///
/// ```
/// use herald_plugin::{ConfigError, DeliveryError, Notification, Notifier, NotifierType, Receipt};
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct NullConfig {
///     /// Say what was dropped in the receipt.
///     #[serde(default = "herald_plugin::default_true")]
///     verbose: bool,
/// }
///
/// struct Null { verbose: bool }
///
/// #[async_trait::async_trait]
/// impl Notifier for Null {
///     async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
///         Ok(if self.verbose { Receipt(n.title.clone().into()) } else { Receipt::none() })
///     }
/// }
///
/// impl NotifierType for NullConfig {
///     const KIND: &'static str = "null";
///     const DESCRIPTION: &'static str = "drops every notification";
///     type Notifier = Null;
///     fn build(self, _name: &str) -> Result<Null, ConfigError> {
///         Ok(Null { verbose: self.verbose })
///     }
/// }
///
/// let mut registry = herald_plugin::Registry::new();
/// registry.add::<NullConfig>();
/// let null = registry.build("null", "n", toml::Table::new()).expect("no keys are needed");
/// assert_eq!(null.kind(), "null");
/// let err = NullConfig::from_table("n", "verbos = true".parse().expect("TOML")).err().expect("a typo");
/// assert_eq!(err.key.as_deref(), Some("verbos"));
/// ```
pub trait NotifierType: DeserializeOwned + Send + 'static {
    /// The `type` name in `[[notifier]]` tables (`console`, `webhook`, ...).
    const KIND: &'static str;
    /// One line for `herald plugins`: what a notifier of this type does.
    const DESCRIPTION: &'static str;
    /// The notifier a configuration builds.
    type Notifier: Notifier + 'static;

    /// Check the configuration and make the notifier called `name` (nothing is sent). A bad value is a
    /// [`ConfigError`] on its key (`ConfigError::for_key`), which the host places at its line and column.
    fn build(self, name: &str) -> Result<Self::Notifier, ConfigError>;

    /// Parse a `[[notifier]]` table (less the host's keys) with [`parse_table`] and build: what the registry
    /// and [`crate::serve_type`] do. The notifier answers [`Notifier::kind`] with [`Self::KIND`].
    fn from_table(name: &str, table: toml::Table) -> Result<Box<dyn Notifier>, ConfigError>
    where
        Self: Sized,
    {
        let notifier = parse_table::<Self>(table)?.build(name)?;
        Ok(Box::new(Typed { kind: Self::KIND, notifier }))
    }
}

/// A built notifier with its type's name; everything else is the notifier's own.
struct Typed<N> {
    kind: &'static str,
    notifier: N,
}

#[async_trait::async_trait]
impl<N: Notifier> Notifier for Typed<N> {
    fn kind(&self) -> &str {
        self.kind
    }

    fn capabilities(&self) -> Capabilities {
        self.notifier.capabilities()
    }

    async fn deliver(&self, notification: &Notification) -> Result<Receipt, DeliveryError> {
        self.notifier.deliver(notification).await
    }

    fn max_batch(&self) -> usize {
        self.notifier.max_batch()
    }

    fn renderings(&self) -> Renderings {
        self.notifier.renderings()
    }

    async fn deliver_batch(&self, notifications: &[Notification]) -> Vec<Result<Receipt, DeliveryError>> {
        self.notifier.deliver_batch(notifications).await
    }

    async fn listen(&self, host: Arc<dyn Host>) -> Result<(), DeliveryError> {
        self.notifier.listen(host).await
    }

    async fn health_check(&self) -> Health {
        self.notifier.health_check().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use herald_event::{EpochStarted, Event};
    use serde::Deserialize;

    use super::*;
    use crate::host::{HostError, RunDetail, RunSummary};
    use crate::render::notification;
    use crate::{Receipt, RunContext};

    /// A notifier whose every method answers something no default does, and records `listen`.
    struct Probe {
        listened: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl Notifier for Probe {
        fn capabilities(&self) -> Capabilities {
            Capabilities { edit: true, images: true, commands: true }
        }
        async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
            Err(DeliveryError::permanent(format!("probe got {}", n.event.seq)))
        }
        async fn listen(&self, _host: Arc<dyn Host>) -> Result<(), DeliveryError> {
            *self.listened.lock().expect("not poisoned") = true;
            Err(DeliveryError::retryable("probe listened"))
        }
        async fn health_check(&self) -> Health {
            Health::Degraded { message: "probe".into() }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ProbeConfig {}

    impl NotifierType for ProbeConfig {
        const KIND: &'static str = "probe";
        const DESCRIPTION: &'static str = "answers what no default answers";
        type Notifier = Probe;
        fn build(self, name: &str) -> Result<Probe, ConfigError> {
            if name.is_empty() {
                return Err(ConfigError::for_key("name", "must not be empty"));
            }
            Ok(Probe { listened: Mutex::new(false) })
        }
    }

    struct NoHost;

    #[async_trait::async_trait]
    impl Host for NoHost {
        async fn runs(&self) -> Vec<RunSummary> {
            Vec::new()
        }
        async fn run(&self, key: &str) -> Result<RunDetail, HostError> {
            Err(HostError::NoSuchRun(key.to_owned()))
        }
        async fn request_stop(&self, key: &str, _reason: &str) -> Result<RunSummary, HostError> {
            Err(HostError::NoSuchRun(key.to_owned()))
        }
    }

    /// The wrapper must hand every method to the notifier: a method added to `Notifier` and not
    /// forwarded in `Typed` would silently fall back to its default for every built-in.
    #[tokio::test]
    async fn a_built_notifier_keeps_every_answer_of_its_own() {
        let n = ProbeConfig::from_table("p", toml::Table::new()).expect("an empty table is valid");
        assert_eq!(n.kind(), "probe");
        assert_eq!(n.capabilities(), Capabilities { edit: true, images: true, commands: true });
        assert_eq!(n.health_check().await, Health::Degraded { message: "probe".into() });
        let event = Event::now("r", 7, EpochStarted { epoch: 0 });
        let note = notification(&RunContext::new("r"), &event, None, None, 1);
        assert_eq!(n.deliver(&note).await.expect_err("the probe refuses").message, "probe got 7");
        let listened = n.listen(Arc::new(NoHost)).await.expect_err("the probe's own answer");
        assert_eq!(listened.message, "probe listened");
    }

    #[test]
    fn from_table_reports_parse_and_build_errors_on_their_keys() {
        let err = ProbeConfig::from_table("p", "x = 1".parse().expect("TOML")).err().expect("unknown key");
        assert_eq!(err.key.as_deref(), Some("x"));
        let err = ProbeConfig::from_table("", toml::Table::new()).err().expect("build refuses");
        assert_eq!(err.key.as_deref(), Some("name"));
    }
}

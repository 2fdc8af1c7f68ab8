//! The edge role: the daemon exactly as on a single machine (HTTP, socket, spool replay, run watch, the local
//! redb outbox), whose only notifier is the [`Forwarder`](crate::forward::Forwarder).
//!
//! [`edge_config`] turns the configuration into the edge's: the configured `[[notifier]]`s are the
//! deliverers' business, so they are replaced by the forwarding slot `cluster`, which routes every event type
//! but `run_stalled` (the leader makes those), from every rank of a distributed job; of the edge's own job
//! events only `rank_lost` (its pid check): the leader makes the others from the whole job. [`registry`] adds the forwarder's type. The daemon itself is
//! unchanged.

use std::time::Duration;

use herald_daemon::config::{Config, KeyPositions, NotifierConfig, Routing};
use herald_plugin::Registry;

use crate::connect::Target;
use crate::forward::{self, Forwarder};

/// How long the edge keeps trying to forward an event before it gives up on it.
pub const FORWARD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The edge's configuration: `config` with the forwarding slot as its only notifier.
pub fn edge_config(config: &Config, target: &Target) -> Config {
    let table = toml::Table::try_from(target).unwrap_or_default();
    let routing = Routing {
        events: forward::forwarded_events(),
        timeout: Duration::from_secs(10),
        max_age: FORWARD_MAX_AGE,
        // Every rank's events go to the leader, which sees the whole job and makes its job events.
        all_ranks: true,
        ..Routing::default()
    };
    let forwarder = NotifierConfig {
        name: forward::KIND.to_owned(),
        kind: forward::KIND.to_owned(),
        routing,
        table,
        span: None,
        keys: KeyPositions::default(),
    };
    Config { notifiers: vec![forwarder], ..config.clone() }
}

/// `registry` with the forwarder's type.
pub fn registry(registry: &Registry) -> Registry {
    let mut registry = registry.clone();
    registry.register(forward::KIND, forward::DESCRIPTION, Forwarder::from_table);
    registry
}

//! `[[notifier]]` tables: the keys the daemon owns (`name`, `type`, the [`Routing`] keys) as a serde struct
//! checked by `validate`, and the rest of the table for the notifier's constructor.
//!
//! [`NotifierConfig::build`] hands the rest to the type's constructor (through `crate::builtins::build`,
//! which also finds out-of-process plugins) and points the constructor's error at the key it names. This
//! module knows no notifier type.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_event::EventKind;
use herald_plugin::{ConfigError, Notifier, Registry, parse_table};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::source::{Position, Source, join};
use super::values;
use crate::quiet::{Quiet, Window, schedule};

/// A built notifier and its configured name.
pub type NamedNotifier = (String, Box<dyn Notifier>);

/// One `[[notifier]]`.
#[derive(Clone)]
pub struct NotifierConfig {
    /// Unique name (letters, digits, `-`, `_`), default the type.
    pub name: String,
    /// `type`: which notifier (`console`, `webhook`, ...).
    pub kind: String,
    /// Which events it gets, how often and how fast.
    pub routing: Routing,
    /// The remaining keys, interpolated, with `*_file` keys resolved, for the notifier's constructor.
    pub table: toml::Table,
    /// Line and column of the `[[notifier]]` table.
    pub span: Option<(usize, usize)>,
    /// Where each key of `table` is, to point at the key a constructor complains about.
    pub keys: KeyPositions,
}

impl std::fmt::Debug for NotifierConfig {
    /// The table's values may be secrets: only its keys are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("routing", &self.routing)
            .field("table_keys", &self.table.keys().collect::<Vec<_>>())
            .field("span", &self.span)
            .finish()
    }
}

/// Positions of a notifier table's keys, for errors found after parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPositions {
    /// The file the table is in.
    pub origin: String,
    /// The key path prefix of the table in messages, such as `notifier[1]`.
    pub label: String,
    /// Dotted key path (`url`, `headers.X-Token`) -> 1-based line and column.
    pub positions: BTreeMap<String, (usize, usize)>,
}

/// The routing keys of a `[[notifier]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Event types sent, default `run_started, epoch_ended, run_finished, run_failed, run_stalled, run_lost,
    /// message`.
    pub events: Vec<EventKind>,
    /// Send every n-th epoch (and always the last), default 1.
    pub every_n_epochs: u32,
    /// At most one notification per this interval; when epochs end faster, the latest state is sent,
    /// never a backlog. Default `0s`.
    pub min_interval: Duration,
    /// Send `epoch_ended` only when this metric improves (such as `valid_loss` or `accuracy`).
    pub only_on_improvement: Option<String>,
    /// Token bucket rate, notifications per second; default per service.
    pub rate_per_s: Option<f64>,
    /// Token bucket size; default per service.
    pub burst: Option<u32>,
    /// Deadline of one delivery attempt, default `30s`.
    pub timeout: Duration,
    /// Give up retrying a notification this old, default `24h`.
    pub max_age: Duration,
    /// `quiet_hours`, `timezone` and `digest`: what waits for a digest, and until when; None to send each
    /// notification at once.
    pub quiet: Option<Quiet>,
    /// Not a configuration key: the cluster's edge forwarding sets it. Every rank's own events of a
    /// distributed job pass, not only rank 0's (the leader sees the whole job), and of the job events the
    /// node makes only `rank_lost` (its pid check): the leader makes the others from the whole job.
    pub all_ranks: bool,
}

impl Routing {
    /// The events a notifier gets unless it says otherwise.
    pub const DEFAULT_EVENTS: [EventKind; 13] = [
        EventKind::RunStarted,
        EventKind::EpochEnded,
        EventKind::RunFinished,
        EventKind::RunFailed,
        EventKind::RunStalled,
        EventKind::RunLost,
        EventKind::Message,
        EventKind::Alert,
        EventKind::RankStalled,
        EventKind::RankLost,
        EventKind::RankFailed,
        EventKind::RankSlow,
        EventKind::RanksMissing,
    ];
}

impl Default for Routing {
    fn default() -> Routing {
        Routing {
            events: Routing::DEFAULT_EVENTS.to_vec(),
            every_n_epochs: 1,
            min_interval: Duration::ZERO,
            only_on_improvement: None,
            rate_per_s: None,
            burst: None,
            timeout: Duration::from_secs(30),
            max_age: Duration::from_secs(24 * 3600),
            quiet: None,
            all_ranks: false,
        }
    }
}

/// The routing keys, as the message for a constructor's unknown key lists them.
pub(super) const ROUTING_KEYS: [&str; 11] = [
    "events",
    "every_n_epochs",
    "min_interval",
    "only_on_improvement",
    "rate_per_s",
    "burst",
    "timeout",
    "max_age",
    "quiet_hours",
    "timezone",
    "digest",
];

/// The keys of a `[[notifier]]` the daemon owns, as written: `name`, `type` and [`ROUTING_KEYS`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnKeys {
    #[serde(default, deserialize_with = "values::string")]
    name: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "values::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "values::events")]
    events: Option<Vec<toml::Value>>,
    #[serde(default, deserialize_with = "values::integer")]
    every_n_epochs: Option<i64>,
    #[serde(default, deserialize_with = "values::duration")]
    min_interval: Option<Duration>,
    #[serde(default, deserialize_with = "values::string")]
    only_on_improvement: Option<String>,
    #[serde(default, deserialize_with = "values::number")]
    rate_per_s: Option<f64>,
    #[serde(default, deserialize_with = "values::integer")]
    burst: Option<i64>,
    #[serde(default, deserialize_with = "values::duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "values::duration")]
    max_age: Option<Duration>,
    #[serde(default, deserialize_with = "values::string")]
    quiet_hours: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    timezone: Option<String>,
    #[serde(default, deserialize_with = "values::duration")]
    digest: Option<Duration>,
}

/// The owned keys, checked: the name if set, the type, the routing.
struct Checked {
    name: Option<String>,
    kind: String,
    routing: Routing,
}

impl OwnKeys {
    /// Check names and ranges and fill in the defaults; an error's key is the key (or `events[i]`).
    fn validate(self) -> Result<Checked, ConfigError> {
        if let Some(name) = &self.name {
            let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if name.is_empty() || name.len() > 64 || !valid {
                let message =
                    format!("`{name}` is not a valid name: use 1 to 64 letters, digits, `-` or `_`");
                return Err(ConfigError::for_key("name", message));
            }
        }
        if self.kind.as_deref() == Some("") {
            return Err(ConfigError::for_key("type", "empty type; `herald plugins` lists the types"));
        }
        let mut routing = Routing::default();
        if let Some(items) = self.events {
            if items.is_empty() {
                let message = "lists no event type; name at least one, or remove the notifier";
                return Err(ConfigError::for_key("events", message));
            }
            routing.events.clear();
            for (i, item) in items.iter().enumerate() {
                let at = format!("events[{i}]");
                let name = item.as_str().ok_or_else(|| {
                    ConfigError::for_key(&at, format!("expected a string, found {}", values::type_str(item)))
                })?;
                let kind = name.parse::<EventKind>().map_err(|m| ConfigError::for_key(&at, m))?;
                if !routing.events.contains(&kind) {
                    routing.events.push(kind);
                }
            }
        }
        if let Some(n) = self.every_n_epochs {
            let max = i64::from(u32::MAX);
            routing.every_n_epochs = u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                ConfigError::for_key("every_n_epochs", format!("must be an integer from 1 to {max}"))
            })?;
        }
        routing.min_interval = self.min_interval.unwrap_or_default();
        if let Some(metric) = self.only_on_improvement {
            if metric.is_empty() {
                return Err(ConfigError::for_key(
                    "only_on_improvement",
                    "empty metric name; name a metric or `valid_loss`",
                ));
            }
            routing.only_on_improvement = Some(metric);
        }
        if let Some(rate) = self.rate_per_s {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::for_key("rate_per_s", "must be a number above zero, such as `0.5`"));
            }
            routing.rate_per_s = Some(rate);
        }
        if let Some(burst) = self.burst {
            let message = "must be an integer from 1 to 1000000";
            routing.burst = Some(
                u32::try_from(burst)
                    .ok()
                    .filter(|b| (1..=1_000_000).contains(b))
                    .ok_or_else(|| ConfigError::for_key("burst", message))?,
            );
        }
        for (key, value, field) in
            [("timeout", self.timeout, &mut routing.timeout), ("max_age", self.max_age, &mut routing.max_age)]
        {
            match value {
                Some(d) if d.is_zero() => return Err(ConfigError::for_key(key, "must be more than zero")),
                Some(d) => *field = d,
                None => {}
            }
        }
        routing.quiet = quiet(self.quiet_hours.as_deref(), self.timezone.as_deref(), self.digest)?;
        let Some(kind) = self.kind else {
            let message = "missing key `type`: say which notifier this is, such as `type = \"console\"` \
                           (`herald plugins` lists the types)";
            return Err(ConfigError::for_key("type", message));
        };
        Ok(Checked { name: self.name, kind, routing })
    }
}

/// The quiet hours and digest keys, checked: None when neither `quiet_hours` nor `digest` is set.
fn quiet(
    hours: Option<&str>,
    timezone: Option<&str>,
    digest: Option<Duration>,
) -> Result<Option<Quiet>, ConfigError> {
    let hours = match hours {
        Some(h) => Some(h.parse::<Window>().map_err(|m| ConfigError::for_key("quiet_hours", m))?),
        None => None,
    };
    match digest {
        Some(d) if d < Duration::from_secs(60) => {
            return Err(ConfigError::for_key(
                "digest",
                "a digest period is at least `1m`; remove `digest` to send each notification at once",
            ));
        }
        Some(d) if d > Duration::from_secs(24 * 3600) => {
            return Err(ConfigError::for_key(
                "digest",
                "a digest period is at most `24h` (periods count from local midnight)",
            ));
        }
        _ => {}
    }
    if hours.is_none() && digest.is_none() {
        if timezone.is_some() {
            let message =
                "`timezone` is the zone of `quiet_hours` and `digest`: set one of them, or remove it";
            return Err(ConfigError::for_key("timezone", message));
        }
        return Ok(None);
    }
    let (zone, zone_name) = schedule::zone(timezone).map_err(|m| ConfigError::for_key("timezone", m))?;
    Ok(Some(Quiet { hours, digest, zone, zone_name }))
}

/// Read the `notifier` array of tables; names must be unique.
pub(super) fn list(src: &Source, value: Spanned<DeValue>) -> Result<Vec<NotifierConfig>, ConfigError> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        let message =
            "expected an array of tables: write `[[notifier]]` (double brackets) above each notifier";
        return Err(src.err(&span, "notifier", message));
    };
    let mut out: Vec<NotifierConfig> = Vec::new();
    let mut seen: BTreeMap<String, Position> = BTreeMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let label = format!("notifier[{index}]");
        let (n, (line, column)) = one(src, item, &label)?;
        if let Some((first, _)) = seen.get(&n.name) {
            let message = format!(
                "the name `{}` is already used by the notifier at line {first}; give each [[notifier]] a \
                 unique `name`",
                n.name
            );
            return Err(ConfigError::for_key(join(&label, "name"), message).at(line, column));
        }
        seen.insert(n.name.clone(), n.span.unwrap_or((0, 0)));
        out.push(n);
    }
    Ok(out)
}

/// One `[[notifier]]`, and where its name is set (its table, when the name is the type).
fn one(src: &Source, item: Spanned<DeValue>, label: &str) -> Result<(NotifierConfig, Position), ConfigError> {
    let mut section = src.section(item, label, "expected a table of keys under `[[notifier]]`")?;
    let mut own = section.take(&["name", "type"]);
    own.extend(section.take(&ROUTING_KEYS));
    let keys: OwnKeys = parse_table(values::mark_datetimes(own)).map_err(|err| section.place(err))?;
    section.check()?;
    let Checked { name, kind, routing } = keys.validate().map_err(|err| section.place(err))?;
    let name_at = match name {
        Some(_) => section.keys.get("name").copied().unwrap_or(section.at),
        None => section.at,
    };
    let mut positions: BTreeMap<String, Position> = section
        .keys
        .into_iter()
        .filter(|(path, _)| {
            let top = path.split('.').next().unwrap_or_default();
            !(top == "name" || top == "type" || ROUTING_KEYS.contains(&top))
        })
        .collect();
    if let Some(at) = section.values.get("type") {
        positions.insert("type".to_owned(), *at);
    }
    let keys = KeyPositions { origin: src.origin.to_owned(), label: label.to_owned(), positions };
    let name = name.unwrap_or_else(|| kind.clone());
    let config = NotifierConfig { name, kind, routing, table: section.table, span: Some(section.at), keys };
    Ok((config, name_at))
}

impl NotifierConfig {
    /// Build the notifier with `registry` (or the plugin `herald-notify-<type>`: `crate::builtins::build`).
    /// A constructor's error gets this table's file, the line and column of the key it names (or of the
    /// table), and the key path under `notifier[i]`.
    pub fn build(&self, registry: &Registry) -> Result<Box<dyn Notifier>, ConfigError> {
        crate::builtins::build(registry, &self.kind, &self.name, self.table.clone())
            .map_err(|err| self.locate(err))
    }

    fn locate(&self, err: ConfigError) -> ConfigError {
        let mut position = None;
        if let Some(key) = &err.key {
            let mut path = key.as_str();
            loop {
                if let Some(p) = self.keys.positions.get(path) {
                    position = Some(*p);
                    break;
                }
                match path.rsplit_once('.') {
                    Some((parent, _)) => path = parent,
                    None => break,
                }
            }
        }
        let err = match err.message.starts_with("unknown key") {
            true => {
                let routing: Vec<String> = ROUTING_KEYS.iter().map(|k| format!("`{k}`")).collect();
                let message = format!("{} (or a routing key: {})", err.message, routing.join(", "));
                ConfigError { message, ..err }
            }
            false => err,
        };
        let err = err.under(&self.keys.label);
        let err = match position.or(self.span) {
            Some((line, column)) => err.at(line, column),
            None => err,
        };
        err.in_origin(self.keys.origin.clone())
    }
}

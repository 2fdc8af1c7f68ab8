//! The `[[rule]]` tables: alert rules, what each says ([`RuleConfig`]: name, kind with its parameters, the
//! runs it watches, the level, the notifiers) and how it is read.
//!
//! Each table is deserialized with serde like the other sections and checked by `validate`, so every error
//! names the file, line, column and key: an unknown key, a key the kind does not take (`patience` on a
//! `threshold`), a missing one, a bad `op`, `level` or `runs` glob, a duplicate name, a notifier that is not
//! configured. The evaluation is `crate::rules`, which imports these types; this module does not know it.

use std::collections::BTreeMap;

use herald_event::Level;
use herald_plugin::{ConfigError, parse_table};
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::DeValue;

use super::glob::Glob;
use super::notifier::NotifierConfig;
use super::source::{Position, Section, Source, join};
use super::values;

/// One `[[rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// Unique among the rules; shown in the alert and its key in each run's rule memory.
    pub name: String,
    /// What the rule watches for.
    pub kind: RuleKind,
    /// The runs it watches, by name (`run_started`'s `name`, else the run id); default every run.
    pub runs: Glob,
    /// The level of its alerts; default per kind ([`RuleKind::default_level`]).
    pub level: Level,
    /// The notifiers its alerts go to, by name; `None`: every notifier that routes `alert`.
    pub notifiers: Option<Vec<String>>,
}

/// The kinds of rule, with their parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A NaN or infinite loss (batch or epoch) or metric.
    Nan,
    /// The metric crosses `value`: `metric op value` becomes true.
    Threshold {
        /// The metric: `train_loss`, `valid_loss` or a metric name.
        metric: String,
        /// The comparison.
        op: Op,
        /// The threshold.
        value: f64,
    },
    /// No improvement of the metric by more than `min_delta` for `patience` epochs (losses improve downwards).
    Plateau {
        /// The metric watched.
        metric: String,
        /// Epochs without improvement before the rule fires.
        patience: u32,
        /// The smallest change that counts as an improvement.
        min_delta: f64,
    },
    /// The metric is worse than its best so far by `factor` (a loss at 1.5 times its minimum).
    Diverging {
        /// The metric watched.
        metric: String,
        /// How many times worse than the best the value must be.
        factor: f64,
    },
    /// An epoch longer than `factor` times the run's median epoch (from the third epoch on).
    SlowEpoch {
        /// How many times the median epoch an epoch must take.
        factor: f64,
    },
    /// Every run matching `runs` has ended (completed, stopped, failed or lost).
    AllFinished,
}

/// The comparison of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
}

impl Op {
    /// Every operator, as written in the configuration.
    pub const ALL: [Op; 4] = [Op::Gt, Op::Ge, Op::Lt, Op::Le];

    /// The operator as written in the configuration (`>`, `>=`, `<`, `<=`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// The operator written `s`.
    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }

    /// Whether `value op limit` holds (never for a NaN).
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Lt => value < limit,
            Op::Le => value <= limit,
        }
    }
}

impl RuleKind {
    /// The `kind` names, as written in the configuration.
    pub const NAMES: [&'static str; 6] =
        ["nan", "threshold", "plateau", "diverging", "slow_epoch", "all_finished"];

    /// The name of the kind, as written in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Nan => "nan",
            RuleKind::Threshold { .. } => "threshold",
            RuleKind::Plateau { .. } => "plateau",
            RuleKind::Diverging { .. } => "diverging",
            RuleKind::SlowEpoch { .. } => "slow_epoch",
            RuleKind::AllFinished => "all_finished",
        }
    }

    /// The level of the kind's alerts when the rule does not say: a NaN is an error, a target reached or a
    /// sweep done is news, the rest are warnings.
    pub fn default_level(&self) -> Level {
        match self {
            RuleKind::Nan => Level::Error,
            RuleKind::Threshold { .. } | RuleKind::AllFinished => Level::Info,
            RuleKind::Plateau { .. } | RuleKind::Diverging { .. } | RuleKind::SlowEpoch { .. } => {
                Level::Warning
            }
        }
    }

    /// The metric the kind watches, if it watches one.
    pub fn metric(&self) -> Option<&str> {
        match self {
            RuleKind::Threshold { metric, .. }
            | RuleKind::Plateau { metric, .. }
            | RuleKind::Diverging { metric, .. } => Some(metric),
            _ => None,
        }
    }
}

impl RuleConfig {
    /// A rule with the defaults: every run, the kind's level, every notifier.
    pub fn new(name: impl Into<String>, kind: RuleKind) -> RuleConfig {
        let level = kind.default_level();
        RuleConfig { name: name.into(), kind, runs: Glob::any(), level, notifiers: None }
    }
}

/// Every key a `[[rule]]` takes (the example configuration must show each).
#[cfg(test)]
const RULE_KEYS: [&str; 11] = [
    "name",
    "kind",
    "runs",
    "level",
    "notifiers",
    "metric",
    "op",
    "value",
    "patience",
    "min_delta",
    "factor",
];

/// The keys of a `[[rule]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleKeys {
    #[serde(default, deserialize_with = "values::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    runs: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    level: Option<String>,
    #[serde(default, deserialize_with = "names")]
    notifiers: Option<Vec<toml::Value>>,
    #[serde(default, deserialize_with = "values::string")]
    metric: Option<String>,
    #[serde(default, deserialize_with = "values::string")]
    op: Option<String>,
    #[serde(default, deserialize_with = "values::number")]
    value: Option<f64>,
    #[serde(default, deserialize_with = "values::integer")]
    patience: Option<i64>,
    #[serde(default, deserialize_with = "values::number")]
    min_delta: Option<f64>,
    #[serde(default, deserialize_with = "values::number")]
    factor: Option<f64>,
}

/// An array (of notifier names, checked by `validate`, which can point at each item).
fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<toml::Value>>, D::Error> {
    use serde::de::Error as _;
    match toml::Value::deserialize(d)? {
        toml::Value::Array(items) => Ok(Some(items)),
        other => Err(D::Error::custom(format!(
            "expected an array of notifier names, such as `[\"phone\"]`, found {}",
            values::type_str(&other)
        ))),
    }
}

impl RuleKeys {
    /// Check the keys against the kind and fill in the defaults; an error's key is the key (or `notifiers[i]`).
    fn validate(self) -> Result<RuleConfig, ConfigError> {
        let name = self.name.ok_or_else(|| {
            ConfigError::for_key(
                "name",
                "missing key `name`: give each rule a unique name, shown in its alerts",
            )
        })?;
        if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ConfigError::for_key(
                "name",
                "must be 1 to 64 characters, not blank, no control characters",
            ));
        }
        let kinds = RuleKind::NAMES.map(|k| format!("`{k}`")).join(", ");
        let Some(kind_name) = self.kind else {
            return Err(ConfigError::for_key("kind", format!("missing key `kind`: one of {kinds}")));
        };
        // The keys each kind takes beyond the common ones.
        let takes: &[&str] = match kind_name.as_str() {
            "nan" | "all_finished" => &[],
            "threshold" => &["metric", "op", "value"],
            "plateau" => &["metric", "patience", "min_delta"],
            "diverging" => &["metric", "factor"],
            "slow_epoch" => &["factor"],
            other => {
                return Err(ConfigError::for_key(
                    "kind",
                    format!("unknown kind `{other}`; expected one of {kinds}"),
                ));
            }
        };
        let given = [
            ("metric", self.metric.is_some()),
            ("op", self.op.is_some()),
            ("value", self.value.is_some()),
            ("patience", self.patience.is_some()),
            ("min_delta", self.min_delta.is_some()),
            ("factor", self.factor.is_some()),
        ];
        for (key, set) in given {
            if set && !takes.contains(&key) {
                let list = if takes.is_empty() {
                    "no keys of its own".to_owned()
                } else {
                    takes.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                };
                let message = format!("a `{kind_name}` rule does not take `{key}`; it takes {list}");
                return Err(ConfigError::for_key(key, message));
            }
        }
        let missing = |key: &str, what: &str| {
            ConfigError::for_key(key, format!("missing key `{key}`: a `{kind_name}` rule needs {what}"))
        };
        let metric = || -> Result<String, ConfigError> {
            match &self.metric {
                Some(m) if m.is_empty() => {
                    Err(ConfigError::for_key("metric", "empty metric name; name a metric or `valid_loss`"))
                }
                Some(m) => Ok(m.clone()),
                None => Err(missing("metric", "the metric: `train_loss`, `valid_loss` or a metric name")),
            }
        };
        let factor = |default: f64| -> Result<f64, ConfigError> {
            match self.factor {
                Some(f) if !(f.is_finite() && f > 1.0) => {
                    Err(ConfigError::for_key("factor", "must be a number above 1, such as `1.5`"))
                }
                Some(f) => Ok(f),
                None => Ok(default),
            }
        };
        let kind = match kind_name.as_str() {
            "nan" => RuleKind::Nan,
            "all_finished" => RuleKind::AllFinished,
            "threshold" => {
                let ops = Op::ALL.map(|o| format!("`{}`", o.as_str())).join(", ");
                let op = self
                    .op
                    .as_deref()
                    .ok_or_else(|| missing("op", &format!("the comparison: one of {ops}")))?;
                let op = Op::parse(op).ok_or_else(|| {
                    ConfigError::for_key("op", format!("unknown comparison `{op}`; expected one of {ops}"))
                })?;
                let value = self.value.ok_or_else(|| missing("value", "the value to compare with"))?;
                if !value.is_finite() {
                    return Err(ConfigError::for_key("value", "must be a finite number"));
                }
                RuleKind::Threshold { metric: metric()?, op, value }
            }
            "plateau" => {
                let patience = match self.patience {
                    None => 5,
                    Some(p) => {
                        u32::try_from(p).ok().filter(|p| (1..=100_000).contains(p)).ok_or_else(|| {
                            ConfigError::for_key("patience", "must be an integer from 1 to 100000 (epochs)")
                        })?
                    }
                };
                let min_delta = self.min_delta.unwrap_or(0.0);
                if !(min_delta.is_finite() && min_delta >= 0.0) {
                    return Err(ConfigError::for_key("min_delta", "must be a number of at least 0"));
                }
                RuleKind::Plateau { metric: metric()?, patience, min_delta }
            }
            "diverging" => RuleKind::Diverging { metric: metric()?, factor: factor(1.5)? },
            _ => RuleKind::SlowEpoch { factor: factor(2.0)? },
        };
        let runs = match self.runs {
            Some(pattern) => Glob::new(&pattern).map_err(|m| ConfigError::for_key("runs", m))?,
            None => Glob::any(),
        };
        let level = match self.level.as_deref() {
            None => kind.default_level(),
            Some("info") => Level::Info,
            Some("warning") => Level::Warning,
            Some("error") => Level::Error,
            Some(other) => {
                let message = format!("unknown level `{other}`; expected `info`, `warning` or `error`");
                return Err(ConfigError::for_key("level", message));
            }
        };
        let notifiers = match self.notifiers {
            None => None,
            Some(items) if items.is_empty() => {
                let message =
                    "lists no notifier; name at least one, or remove `notifiers` to use every notifier";
                return Err(ConfigError::for_key("notifiers", message));
            }
            Some(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        item.as_str().map(str::to_owned).ok_or_else(|| {
                            let found = values::type_str(item);
                            ConfigError::for_key(
                                format!("notifiers[{i}]"),
                                format!("expected a string, found {found}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<String>, ConfigError>>()?,
            ),
        };
        Ok(RuleConfig { name, kind, runs, level, notifiers })
    }
}

/// A rule as read, with its section for placing later errors.
pub(super) struct Placed {
    rule: RuleConfig,
    section: Section,
}

/// Read the `rule` array of tables; names must be unique. Notifier names are checked by [`finish`].
pub(super) fn list(src: &Source, value: Spanned<DeValue>) -> Result<Vec<Placed>, ConfigError> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        let message = "expected an array of tables: write `[[rule]]` (double brackets) above each rule";
        return Err(src.err(&span, "rule", message));
    };
    let mut out: Vec<Placed> = Vec::new();
    let mut seen: BTreeMap<String, Position> = BTreeMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let label = format!("rule[{index}]");
        let section = src.section(item, &label, "expected a table of keys under `[[rule]]`")?;
        let keys: RuleKeys =
            parse_table(values::mark_datetimes(section.table.clone())).map_err(|err| section.place(err))?;
        section.check()?;
        let rule = keys.validate().map_err(|err| section.place(err))?;
        let at = section.keys.get("name").copied().unwrap_or(section.at);
        if let Some((first, _)) = seen.get(&rule.name) {
            let message = format!(
                "the name `{}` is already used by the rule at line {first}; give each [[rule]] a unique `name`",
                rule.name
            );
            return Err(ConfigError::for_key(join(&label, "name"), message).at(at.0, at.1));
        }
        seen.insert(rule.name.clone(), at);
        out.push(Placed { rule, section });
    }
    Ok(out)
}

/// The rules, once every notifier a rule names is known to be configured.
pub(super) fn finish(
    placed: Vec<Placed>,
    notifiers: &[NotifierConfig],
) -> Result<Vec<RuleConfig>, ConfigError> {
    for Placed { rule, section } in &placed {
        for (i, name) in rule.notifiers.iter().flatten().enumerate() {
            if !notifiers.iter().any(|n| &n.name == name) {
                let known: Vec<String> = notifiers.iter().map(|n| format!("`{}`", n.name)).collect();
                let known = if known.is_empty() {
                    "none is configured".to_owned()
                } else {
                    format!("configured: {}", known.join(", "))
                };
                let message = format!("no notifier is named `{name}` ({known})");
                return Err(section.place(ConfigError::for_key(format!("notifiers[{i}]"), message)));
            }
        }
    }
    Ok(placed.into_iter().map(|p| p.rule).collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, parse_with};

    const FILE: &str = "/etc/herald/herald.toml";
    const PHONE: &str = "[[notifier]]\nname = \"phone\"\ntype = \"console\"\n\n";

    fn parse(text: &str) -> Result<Config, String> {
        parse_with(text, FILE, &|k| (k == "HOME").then(|| "/home/ada".to_owned())).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_reads_with_defaults() {
        let text = format!(
            "{PHONE}[[rule]]\nname = \"diverged\"\nkind = \"nan\"\nlevel = \"error\"\nnotifiers = [\"phone\"]\n\n\
             [[rule]]\nname = \"target\"\nkind = \"threshold\"\nmetric = \"accuracy\"\nop = \">=\"\nvalue = 0.98\n\n\
             [[rule]]\nname = \"stuck\"\nkind = \"plateau\"\nmetric = \"valid_loss\"\npatience = 5\nmin_delta = 0.0\n\n\
             [[rule]]\nname = \"overfitting\"\nkind = \"diverging\"\nmetric = \"valid_loss\"\nfactor = 1.5\n\n\
             [[rule]]\nname = \"slow\"\nkind = \"slow_epoch\"\nfactor = 2\n\n\
             [[rule]]\nname = \"sweep done\"\nkind = \"all_finished\"\nruns = \"sweep-*\"\n"
        );
        let rules = parse(&text).unwrap_or_else(|e| panic!("{e}")).rules;
        let kinds: Vec<&str> = rules.iter().map(|r| r.kind.name()).collect();
        assert_eq!(kinds, RuleKind::NAMES);
        assert_eq!(rules[0].notifiers.as_deref(), Some(&["phone".to_owned()][..]));
        assert_eq!(rules[1].kind, RuleKind::Threshold { metric: "accuracy".into(), op: Op::Ge, value: 0.98 });
        assert_eq!(
            (rules[1].level, rules[2].level, rules[5].level),
            (Level::Info, Level::Warning, Level::Info)
        );
        assert_eq!(rules[4].kind, RuleKind::SlowEpoch { factor: 2.0 });
        assert!(rules[1].runs.is_any() && rules[1].notifiers.is_none());
        assert!(rules[5].runs.matches("sweep-3") && !rules[5].runs.matches("other"));
        let defaults =
            parse("[[rule]]\nname = \"p\"\nkind = \"plateau\"\nmetric = \"valid_loss\"\n").expect("valid");
        assert_eq!(
            defaults.rules[0].kind,
            RuleKind::Plateau { metric: "valid_loss".into(), patience: 5, min_delta: 0.0 }
        );
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let check = |rules: &str, expected: &str| {
            let text = format!("{PHONE}{rules}");
            let err = parse(&text).expect_err(&text);
            assert_eq!(err, format!("{FILE}:{expected}"), "{text}");
        };
        let nan = "[[rule]]\nname = \"n\"\nkind = \"nan\"\n";
        check(
            &format!("{nan}metrc = \"x\"\n"),
            "8:1: rule[0].metrc: unknown key; expected one of `name`, `kind`, `runs`, `level`, `notifiers`, `metric`, \
             `op`, `value`, `patience`, `min_delta`, `factor`",
        );
        check(
            "[[rule]]\nname = \"n\"\nkind = \"nope\"\n",
            "7:8: rule[0].kind: unknown kind `nope`; expected one of \
               `nan`, `threshold`, `plateau`, `diverging`, `slow_epoch`, `all_finished`",
        );
        check(
            "[[rule]]\nname = \"n\"\n",
            "5:1: rule[0].kind: missing key `kind`: one of `nan`, `threshold`, \
               `plateau`, `diverging`, `slow_epoch`, `all_finished`",
        );
        check(
            "[[rule]]\nkind = \"nan\"\n",
            "5:1: rule[0].name: missing key `name`: give each rule a unique name, \
               shown in its alerts",
        );
        check(
            &format!("{nan}patience = 3\n"),
            "8:12: rule[0].patience: a `nan` rule does not take `patience`; it \
               takes no keys of its own",
        );
        check(
            "[[rule]]\nname = \"t\"\nkind = \"threshold\"\nmetric = \"accuracy\"\nop = \"=>\"\nvalue = 1\n",
            "9:6: rule[0].op: unknown comparison `=>`; expected one of `>`, `>=`, `<`, `<=`",
        );
        check(
            "[[rule]]\nname = \"t\"\nkind = \"threshold\"\nmetric = \"accuracy\"\nop = \">\"\n",
            "5:1: rule[0].value: missing key `value`: a `threshold` rule needs the value to compare with",
        );
        check(
            "[[rule]]\nname = \"t\"\nkind = \"threshold\"\nmetric = \"accuracy\"\nop = \">\"\nvalue = \"high\"\n",
            "10:9: rule[0].value: expected a number, found string",
        );
        check(
            "[[rule]]\nname = \"s\"\nkind = \"slow_epoch\"\nfactor = 0.5\n",
            "8:10: rule[0].factor: must be a \
               number above 1, such as `1.5`",
        );
        check(
            "[[rule]]\nname = \"p\"\nkind = \"plateau\"\nmetric = \"valid_loss\"\npatience = 0\n",
            "9:12: rule[0].patience: must be an integer from 1 to 100000 (epochs)",
        );
        check(
            &format!("{nan}runs = \"fold[0-4\"\n"),
            "8:8: rule[0].runs: `fold[0-4` has a `[` without its `]`",
        );
        check(
            &format!("{nan}level = \"loud\"\n"),
            "8:9: rule[0].level: unknown level `loud`; expected `info`, \
               `warning` or `error`",
        );
        check(
            &format!("{nan}notifiers = [\"phone\", \"pager\"]\n"),
            "8:23: rule[0].notifiers: no notifier is named `pager` (configured: `phone`)",
        );
        check(
            &format!("{nan}notifiers = []\n"),
            "8:13: rule[0].notifiers: lists no notifier; name at least one, or \
               remove `notifiers` to use every notifier",
        );
        check(
            &format!("{nan}\n{nan}"),
            "10:1: rule[1].name: the name `n` is already used by the rule at line 6; give each [[rule]] a unique \
             `name`",
        );
        check(
            "[rule]\nname = \"n\"\n",
            "5:1: rule: expected an array of tables: write `[[rule]]` (double \
               brackets) above each rule",
        );
    }

    #[test]
    fn the_example_configuration_shows_every_rule_key_and_kind() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/herald.toml");
        let text = std::fs::read_to_string(&path).expect("config/herald.toml exists");
        let raw: toml::Table = text.parse().expect("config/herald.toml is TOML");
        let rules: Vec<&toml::Table> = raw
            .get("rule")
            .and_then(|r| r.as_array())
            .expect("[[rule]] tables")
            .iter()
            .filter_map(|r| r.as_table())
            .collect();
        for key in RULE_KEYS {
            assert!(
                rules.iter().any(|r| r.contains_key(key)),
                "no [[rule]] in config/herald.toml sets `{key}`"
            );
        }
        for kind in RuleKind::NAMES {
            let shown = rules.iter().any(|r| r.get("kind").and_then(|k| k.as_str()) == Some(kind));
            assert!(shown, "config/herald.toml has no `{kind}` rule");
        }
    }
}

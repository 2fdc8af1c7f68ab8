//! What a configured alert rule says (`[[rule]]`): its name, kind with the kind's parameters, which runs it
//! watches, the alert level and the notifiers it goes to. Plain data, checked when the configuration is read;
//! the evaluation is the rest of `rules`.

use herald_event::Level;

use super::glob::Glob;

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
    Threshold { metric: String, op: Op, value: f64 },
    /// No improvement of the metric by more than `min_delta` for `patience` epochs (losses improve downwards).
    Plateau { metric: String, patience: u32, min_delta: f64 },
    /// The metric is worse than its best so far by `factor` (a loss at 1.5 times its minimum).
    Diverging { metric: String, factor: f64 },
    /// An epoch longer than `factor` times the run's median epoch (from the third epoch on).
    SlowEpoch { factor: f64 },
    /// Every run matching `runs` has ended (completed, stopped, failed or lost).
    AllFinished,
}

/// The comparison of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    /// Every operator, as written in the configuration.
    pub const ALL: [Op; 4] = [Op::Gt, Op::Ge, Op::Lt, Op::Le];

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

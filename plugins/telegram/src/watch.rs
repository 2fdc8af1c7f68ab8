//! Rules and mutes from the phone: `/watch <run> <metric> <op> <value>`, `/unwatch <run> [metric]`, `/rules`,
//! `/mute <run> [duration]` and `/unmute <run>`.
//!
//! [`parse`] reads a command's words into a [`RuleCommand`] (or says what is wrong, with the usage), and
//! [`answer`] carries it out through the [`Host`] and writes the reply. A run is named as for `/stop`: its
//! number from /runs, its name (which may hold spaces: the rule's words are taken from the end) or its id;
//! without one, the only active run. The host (the daemon) checks the run, stores the rule or the mute with
//! the run and evaluates it; this module knows neither storage nor evaluation. The caller (`commands.rs`)
//! checks the chat first: nothing here runs for a chat not in `allowed_chats`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_plugin::render::escape_html;
use herald_plugin::{
    Host, HostError, OPS, RuleChange, RuleEntry, RuleList, WatchRequest, format_duration, parse_duration,
};

/// How `/watch` is used.
pub const WATCH_USAGE: &str =
    "Usage: /watch <run> <metric> <op> <value>, such as /watch 2 accuracy >= 0.98 (op: > >= < <=)";
/// How `/unwatch` is used.
pub const UNWATCH_USAGE: &str = "Usage: /unwatch <run> [metric], such as /unwatch 2 or /unwatch 2 accuracy";
/// How `/mute` is used.
pub const MUTE_USAGE: &str = "Usage: /mute <run> [duration], such as /mute 2 30m or /mute 2 (until /unmute)";
/// How `/unmute` is used.
pub const UNMUTE_USAGE: &str = "Usage: /unmute <run>";

/// A rule or mute command, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleCommand {
    /// `/watch`: `run` is empty when not given (then the only active run).
    Watch {
        /// The run as typed.
        run: String,
        /// The rule.
        rule: WatchRequest,
    },
    /// `/unwatch`: the words after the command (the run, then perhaps a metric).
    Unwatch {
        /// The words as typed.
        words: Vec<String>,
    },
    /// `/rules`.
    Rules,
    /// `/mute`: the run as typed; `duration` when the last word is one.
    Mute {
        /// The run, and the run if the last word is not a duration after all.
        run: String,
        /// The duration, when the last word (after a run) reads as one.
        duration: Option<(Duration, String)>,
    },
    /// `/unmute`.
    Unmute {
        /// The run as typed.
        run: String,
    },
}

/// Read a command (`watch`, `unwatch`, `rules`, `mute`, `unmute`, lower case, without the slash) and its
/// argument. `None`: not one of these commands; `Some(Err(html))`: what is wrong, with the usage.
pub fn parse(command: &str, arg: &str) -> Option<Result<RuleCommand, String>> {
    let words: Vec<&str> = arg.split_whitespace().collect();
    let parsed = match command {
        "watch" => parse_watch(&words),
        "unwatch" => Ok(RuleCommand::Unwatch { words: words.iter().map(|w| (*w).to_owned()).collect() }),
        "rules" => Ok(RuleCommand::Rules),
        "mute" => parse_mute(&words),
        "unmute" => Ok(RuleCommand::Unmute { run: words.join(" ") }),
        _ => return None,
    };
    Some(parsed)
}

/// What is wrong, then the usage, as HTML.
fn wrong(what: &str, usage: &str) -> String {
    format!("{}\n{}", escape_html(what), escape_html(usage))
}

fn parse_watch(words: &[&str]) -> Result<RuleCommand, String> {
    // `accuracy>=0.98` in one word, or `metric op value` as the last three words.
    let (run, metric, op, value) = match words {
        [run @ .., last] if OPS.iter().any(|op| last.contains(op)) && !OPS.contains(last) => {
            let at = last.find(['<', '>']).unwrap_or(0);
            let (metric, rest) = last.split_at(at);
            let op_len = if rest.get(1..2) == Some("=") { 2 } else { 1 };
            let (op, value) = rest.split_at(op_len.min(rest.len()));
            (run.join(" "), metric, op, value)
        }
        [run @ .., metric, op, value] => (run.join(" "), *metric, *op, *value),
        _ => return Err(wrong("Which metric, compared how, with what?", WATCH_USAGE)),
    };
    if metric.is_empty() || value.is_empty() {
        return Err(wrong("Which metric, compared how, with what?", WATCH_USAGE));
    }
    if !OPS.contains(&op) {
        return Err(wrong(&format!("Unknown comparison `{op}`: use one of {}.", OPS.join(" ")), WATCH_USAGE));
    }
    let value = match value.parse::<f64>() {
        Ok(v) if v.is_finite() => v,
        _ => return Err(wrong(&format!("`{value}` is not a number."), WATCH_USAGE)),
    };
    let rule = WatchRequest { metric: metric.to_owned(), op: op.to_owned(), value };
    Ok(RuleCommand::Watch { run, rule })
}

fn parse_mute(words: &[&str]) -> Result<RuleCommand, String> {
    if let [run @ .., last] = words
        && !run.is_empty()
        && last.starts_with(|c: char| c.is_ascii_digit())
        && last.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        return match parse_duration(last) {
            Ok(d) if !d.is_zero() => {
                Ok(RuleCommand::Mute { run: run.join(" "), duration: Some((d, (*last).to_owned())) })
            }
            Ok(_) => Err(wrong("A mute of no time at all: give a duration such as 30m or 2h.", MUTE_USAGE)),
            Err(e) => Err(wrong(&e, MUTE_USAGE)),
        };
    }
    Ok(RuleCommand::Mute { run: words.join(" "), duration: None })
}

/// Carry out `command` through the host on behalf of `by` (`@user`) and write the reply (HTML).
pub async fn answer(host: &dyn Host, command: RuleCommand, by: &str) -> String {
    match command {
        RuleCommand::Rules => rules_text(&host.rules().await, &run_names(host).await, now_ms()),
        RuleCommand::Watch { run, rule } => {
            let Some(run) = run_or_only(host, &run).await else {
                return wrong("Which run? Name it by its number from /runs.", WATCH_USAGE);
            };
            let condition = format!("{} {} {}", rule.metric, rule.op, rule.value);
            match host.watch(&run, rule, by).await {
                Ok(c) => {
                    let mut out = format!(
                        "Watching <b>{}</b>: I will tell you once when {}.",
                        escape_html(&c.summary.name),
                        escape_html(&condition)
                    );
                    if let Some(note) = &c.note {
                        out.push_str(&format!("\nNote: {}.", escape_html(note)));
                    }
                    out.push_str(&format!(
                        "\n/rules lists the rules; /unwatch {} removes this run's.",
                        c.summary.number
                    ));
                    out
                }
                Err(e) => refused(&e, WATCH_USAGE),
            }
        }
        RuleCommand::Unwatch { words } => {
            let full = words.join(" ");
            let Some(run) = run_or_only(host, &full).await else {
                return wrong("Which run? Name it by its number from /runs.", UNWATCH_USAGE);
            };
            let mut result = host.unwatch(&run, None).await;
            // `/unwatch 2 accuracy`: the last word is a metric when the whole is no run.
            if let (Err(HostError::NoSuchRun(_)), [rest @ .., metric]) = (&result, words.as_slice())
                && !rest.is_empty()
            {
                result = host.unwatch(&rest.join(" "), Some(metric)).await;
                return unwatched(result, Some(metric));
            }
            unwatched(result, None)
        }
        RuleCommand::Mute { run, duration } => {
            let Some(key) = run_or_only(host, &run).await else {
                return wrong("Which run? Name it by its number from /runs.", MUTE_USAGE);
            };
            match host.mute(&key, duration.as_ref().map(|(d, _)| *d), by).await {
                Ok(c) => {
                    let how_long = match &duration {
                        Some((d, _)) => format!("for {}", format_duration(*d)),
                        None => "until /unmute".to_owned(),
                    };
                    format!(
                        "Muted <b>{}</b> {how_long}: no epoch updates. Its end, failures, stalls and alerts still come.",
                        escape_html(&c.summary.name)
                    )
                }
                Err(e) => refused(&e, MUTE_USAGE),
            }
        }
        RuleCommand::Unmute { run } => {
            let Some(key) = run_or_only(host, &run).await else {
                return wrong("Which run? Name it by its number from /runs.", UNMUTE_USAGE);
            };
            match host.unmute(&key).await {
                Ok(c) if c.count > 0 => format!("Unmuted <b>{}</b>.", escape_html(&c.summary.name)),
                Ok(c) => format!("<b>{}</b> was not muted.", escape_html(&c.summary.name)),
                Err(e) => refused(&e, UNMUTE_USAGE),
            }
        }
    }
}

fn unwatched(result: Result<RuleChange, HostError>, metric: Option<&String>) -> String {
    match result {
        Ok(c) => {
            let name = escape_html(&c.summary.name);
            let on = metric.map(|m| format!(" on {}", escape_html(m))).unwrap_or_default();
            match c.count {
                0 => format!("<b>{name}</b> has no rules from the phone{on}."),
                1 => format!("Removed 1 rule{on} of <b>{name}</b>."),
                n => format!("Removed {n} rules{on} of <b>{name}</b>."),
            }
        }
        Err(e) => refused(&e, UNWATCH_USAGE),
    }
}

/// The host's refusal, and the usage.
fn refused(e: &HostError, usage: &str) -> String {
    wrong(&e.to_string(), usage)
}

/// The run typed, or the only active run when none was typed (`None`: none typed and not exactly one active).
async fn run_or_only(host: &dyn Host, typed: &str) -> Option<String> {
    if !typed.trim().is_empty() {
        return Some(typed.trim().to_owned());
    }
    let runs = host.runs().await;
    let mut active =
        runs.iter().filter(|r| !matches!(r.state.as_str(), "completed" | "stopped" | "failed" | "lost"));
    match (active.next(), active.next()) {
        (Some(one), None) => Some(one.run.clone()),
        _ => None,
    }
}

/// Run ids with their names, to show phone rules by run name.
async fn run_names(host: &dyn Host) -> Vec<(String, String)> {
    host.runs().await.into_iter().map(|r| (r.run, r.name)).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `name (2×), other`: the runs a rule fired for.
fn fired_for(rule: &RuleEntry) -> String {
    let runs: Vec<String> = rule
        .fired_for
        .iter()
        .map(|f| {
            let name = if f.name.is_empty() { &f.run } else { &f.name };
            if f.times > 1 { format!("{} ({}×)", escape_html(name), f.times) } else { escape_html(name) }
        })
        .collect();
    runs.join(", ")
}

/// The /rules answer: configured rules, phone rules (with their run's name from `names`), muted runs.
pub fn rules_text(list: &RuleList, names: &[(String, String)], now_ms: u64) -> String {
    let name_of = |run: &str| -> String {
        names.iter().find(|(id, _)| id == run).map_or_else(|| run.to_owned(), |(_, n)| n.clone())
    };
    let mut out = String::from("<b>Rules</b>");
    if list.configured.is_empty() {
        out.push_str("\nNone configured ([[rule]] in herald.toml).");
    }
    for r in &list.configured {
        out.push_str(&format!("\n• <b>{}</b> · {}", escape_html(&r.name), escape_html(&r.condition)));
        if r.runs != "*" {
            out.push_str(&format!(" · runs {}", escape_html(&r.runs)));
        }
        if !r.fired_for.is_empty() {
            out.push_str(&format!("\n    fired for {}", fired_for(r)));
        }
    }
    out.push_str("\n\n<b>From the phone</b>");
    if list.phone.is_empty() {
        out.push_str("\nNone. /watch &lt;run&gt; &lt;metric&gt; &lt;op&gt; &lt;value&gt; adds one.");
    }
    for r in &list.phone {
        let state = if r.fired_for.is_empty() { "waiting" } else { "fired" };
        out.push_str(&format!(
            "\n• <b>{}</b> · {} · {state}",
            escape_html(&name_of(&r.runs)),
            escape_html(&r.condition)
        ));
        if let Some(by) = &r.added_by {
            out.push_str(&format!(" · by {}", escape_html(by)));
        }
    }
    if !list.mutes.is_empty() {
        out.push_str("\n\n<b>Muted</b>");
        for m in &list.mutes {
            let until = match m.until_ms {
                Some(until) => {
                    let left = Duration::from_secs(until.saturating_sub(now_ms).div_ceil(60_000) * 60);
                    format!("for {} more", format_duration(left))
                }
                None => "until /unmute".to_owned(),
            };
            let name = if m.name.is_empty() { &m.run } else { &m.name };
            out.push_str(&format!("\n• <b>{}</b> {until} · by {}", escape_html(name), escape_html(&m.by)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use herald_plugin::{FiredFor, MuteEntry};

    use super::*;

    fn watch(run: &str, metric: &str, op: &str, value: f64) -> Option<Result<RuleCommand, String>> {
        let rule = WatchRequest { metric: metric.into(), op: op.into(), value };
        Some(Ok(RuleCommand::Watch { run: run.into(), rule }))
    }

    fn err(text: &str, usage: &str) -> Option<Result<RuleCommand, String>> {
        Some(Err(format!("{}\n{}", escape_html(text), escape_html(usage))))
    }

    #[test]
    fn watch_reads_the_rule_from_the_end_and_says_what_is_wrong() {
        for (arg, expected) in [
            ("2 accuracy >= 0.98", watch("2", "accuracy", ">=", 0.98)),
            ("digits <mlp> valid_loss < 0.1", watch("digits <mlp>", "valid_loss", "<", 0.1)),
            ("run-abc accuracy>=0.9", watch("run-abc", "accuracy", ">=", 0.9)),
            ("2 train_loss<1e-3", watch("2", "train_loss", "<", 0.001)),
            ("accuracy > 0.5", watch("", "accuracy", ">", 0.5)),
            ("2 accuracy => 0.9", err("Unknown comparison `=>`: use one of > >= < <=.", WATCH_USAGE)),
            ("2 accuracy == 0.9", err("Unknown comparison `==`: use one of > >= < <=.", WATCH_USAGE)),
            ("2 accuracy >= high", err("`high` is not a number.", WATCH_USAGE)),
            ("2 accuracy >= NaN", err("`NaN` is not a number.", WATCH_USAGE)),
            ("2 accuracy>=", err("Which metric, compared how, with what?", WATCH_USAGE)),
            ("2 >=0.9", err("Which metric, compared how, with what?", WATCH_USAGE)),
            ("2 accuracy", err("Which metric, compared how, with what?", WATCH_USAGE)),
            ("", err("Which metric, compared how, with what?", WATCH_USAGE)),
        ] {
            assert_eq!(parse("watch", arg), expected, "/watch {arg}");
        }
    }

    #[test]
    fn mute_takes_a_duration_from_the_last_word_and_other_commands_their_words() {
        let mute = |run: &str, d: Option<(u64, &str)>| {
            Some(Ok(RuleCommand::Mute {
                run: run.into(),
                duration: d.map(|(s, w)| (Duration::from_secs(s), w.to_owned())),
            }))
        };
        assert_eq!(parse("mute", "2 30m"), mute("2", Some((1800, "30m"))));
        assert_eq!(parse("mute", "digits <mlp> 1h30m"), mute("digits <mlp>", Some((5400, "1h30m"))));
        assert_eq!(parse("mute", "2"), mute("2", None));
        assert_eq!(parse("mute", "30m"), mute("30m", None), "a lone word is the run");
        assert_eq!(parse("mute", "exp 2"), mute("exp 2", None), "a number is no duration");
        assert_eq!(parse("mute", ""), mute("", None));
        assert!(
            matches!(parse("mute", "2 30x"), Some(Err(e)) if e.contains("unknown unit `x`") && e.ends_with(&escape_html(MUTE_USAGE)))
        );
        assert!(matches!(parse("mute", "2 0s"), Some(Err(e)) if e.contains("no time at all")));
        assert_eq!(parse("unmute", " 2 "), Some(Ok(RuleCommand::Unmute { run: "2".into() })));
        assert_eq!(
            parse("unwatch", "2 accuracy"),
            Some(Ok(RuleCommand::Unwatch { words: vec!["2".into(), "accuracy".into()] }))
        );
        assert_eq!(parse("rules", ""), Some(Ok(RuleCommand::Rules)));
        assert_eq!(parse("stop", "2"), None);
    }

    #[test]
    fn rules_text_lists_configured_and_phone_rules_and_mutes() {
        let entry = |name: &str, condition: &str, runs: &str, fired: Vec<FiredFor>| RuleEntry {
            name: name.into(),
            kind: "threshold".into(),
            condition: condition.into(),
            runs: runs.into(),
            level: "info".into(),
            added_by: None,
            added_ms: None,
            fired_for: fired,
        };
        let fired = |name: &str, times: u32| FiredFor { run: format!("id-{name}"), name: name.into(), times };
        let mut phone = entry("watch accuracy >= 0.9", "accuracy >= 0.9", "id-a", vec![fired("a&b", 1)]);
        phone.added_by = Some("@me".into());
        let list = RuleList {
            configured: vec![
                entry(
                    "target",
                    "accuracy >= 0.98",
                    "sweep-*",
                    vec![fired("sweep-1", 2), fired("sweep-2", 1)],
                ),
                entry("diverged", "a NaN or infinite loss or metric", "*", vec![]),
            ],
            phone: vec![phone],
            mutes: vec![
                MuteEntry {
                    run: "id-a".into(),
                    name: "a&b".into(),
                    until_ms: Some(1_000 + 29 * 60_000 + 1),
                    by: "@me".into(),
                },
                MuteEntry { run: "id-c".into(), name: String::new(), until_ms: None, by: "@you".into() },
            ],
        };
        let text = rules_text(&list, &[("id-a".into(), "a&b".into())], 1_000);
        assert_eq!(
            text,
            "<b>Rules</b>\n• <b>target</b> · accuracy &gt;= 0.98 · runs sweep-*\n    fired for sweep-1 (2×), sweep-2\
             \n• <b>diverged</b> · a NaN or infinite loss or metric\
             \n\n<b>From the phone</b>\n• <b>a&amp;b</b> · accuracy &gt;= 0.9 · fired · by @me\
             \n\n<b>Muted</b>\n• <b>a&amp;b</b> for 30m more · by @me\n• <b>id-c</b> until /unmute · by @you"
        );
        let empty = rules_text(&RuleList::default(), &[], 0);
        assert!(empty.contains("None configured") && empty.contains("/watch &lt;run&gt;"), "{empty}");
        assert!(!empty.contains("Muted"), "{empty}");
    }
}

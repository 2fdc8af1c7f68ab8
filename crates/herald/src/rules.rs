//! `herald rules [--json]`: the alert rules the daemon evaluates: the configured `[[rule]]`s and the rules
//! added from the phone (`/watch`), each with the runs it has fired for, and the runs muted from the phone
//! (`GET /v1/rules`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use herald_plugin::{RuleEntry, RuleList, format_duration};

/// Show the daemon's alert rules and muted runs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the daemon's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_path: Option<&Path>, args: Args) -> Result<()> {
    let config = crate::serve::load_config(config_path)?;
    let client = crate::serve::client(&config, Duration::from_secs(10))?;
    let list = crate::serve::runtime()?.block_on(client.rules())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        print!("{}", render(&list, now));
    }
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> =
            row.iter().enumerate().map(|(c, cell)| format!("{cell:<w$}", w = widths[c])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn header(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// `mnist (2x), cifar`, or `-`.
fn fired_for(rule: &RuleEntry) -> String {
    if rule.fired_for.is_empty() {
        return "-".to_owned();
    }
    let runs: Vec<String> = rule
        .fired_for
        .iter()
        .map(|f| {
            let name = if f.name.is_empty() { &f.run } else { &f.name };
            if f.times > 1 { format!("{name} ({}x)", f.times) } else { name.clone() }
        })
        .collect();
    runs.join(", ")
}

/// How long ago, for people: `42s`, `5m`, `3h`, `2d`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// The human-readable list.
pub fn render(list: &RuleList, now_ms: u64) -> String {
    let mut out = String::new();
    if list.configured.is_empty() {
        out.push_str("no rules configured ([[rule]] in the configuration)\n");
    } else {
        let mut rows = vec![header(&["RULE", "KIND", "CONDITION", "RUNS", "LEVEL", "FIRED FOR"])];
        for r in &list.configured {
            rows.push(vec![
                r.name.clone(),
                r.kind.clone(),
                r.condition.clone(),
                r.runs.clone(),
                r.level.clone(),
                fired_for(r),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    if list.phone.is_empty() {
        out.push_str("no rules from the phone (/watch on Telegram adds one)\n");
    } else {
        let mut rows = vec![header(&["FROM THE PHONE", "RUN", "BY", "ADDED", "FIRED FOR"])];
        for r in &list.phone {
            rows.push(vec![
                r.name.clone(),
                r.runs.clone(),
                r.added_by.clone().unwrap_or_default(),
                r.added_ms.map_or_else(String::new, |t| ago(now_ms, t)),
                fired_for(r),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if !list.mutes.is_empty() {
        out.push('\n');
        let mut rows = vec![header(&["MUTED RUN", "NAME", "UNTIL", "BY"])];
        for m in &list.mutes {
            let until = match m.until_ms {
                Some(t) => {
                    let left = Duration::from_secs(t.saturating_sub(now_ms).div_ceil(1000));
                    format!("{} more", format_duration(left))
                }
                None => "unmuted".to_owned(),
            };
            rows.push(vec![m.run.clone(), m.name.clone(), until, m.by.clone()]);
        }
        out.push_str(&table(&rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use herald_plugin::{FiredFor, MuteEntry};

    use super::*;

    #[test]
    fn the_table_lists_configured_and_phone_rules_and_mutes() {
        let rule = |name: &str, runs: &str| RuleEntry {
            name: name.into(),
            kind: "threshold".into(),
            condition: "accuracy >= 0.9".into(),
            runs: runs.into(),
            level: "info".into(),
            added_by: None,
            added_ms: None,
            fired_for: vec![],
        };
        let mut target = rule("target", "*");
        target.fired_for = vec![
            FiredFor { run: "r1".into(), name: "mnist".into(), times: 2 },
            FiredFor { run: "r2".into(), name: String::new(), times: 1 },
        ];
        let mut phone = rule("watch accuracy >= 0.9", "r1");
        phone.added_by = Some("@me".into());
        phone.added_ms = Some(1_000);
        let list = RuleList {
            configured: vec![target],
            phone: vec![phone],
            mutes: vec![
                MuteEntry { run: "r1".into(), name: "mnist".into(), until_ms: None, by: "@me".into() },
                MuteEntry {
                    run: "r2".into(),
                    name: "cifar".into(),
                    until_ms: Some(1_800_000),
                    by: "@you".into(),
                },
            ],
        };
        assert_eq!(
            render(&list, 121_000),
            "RULE    KIND       CONDITION        RUNS  LEVEL  FIRED FOR\n\
             target  threshold  accuracy >= 0.9  *     info   mnist (2x), r2\n\
             \n\
             FROM THE PHONE         RUN  BY   ADDED   FIRED FOR\n\
             watch accuracy >= 0.9  r1   @me  2m ago  -\n\
             \n\
             MUTED RUN  NAME   UNTIL        BY\n\
             r1         mnist  unmuted      @me\n\
             r2         cifar  27m59s more  @you\n"
        );
        let empty = render(&RuleList::default(), 0);
        assert_eq!(
            empty,
            "no rules configured ([[rule]] in the configuration)\n\nno rules from the phone (/watch on Telegram adds one)\n"
        );
    }
}

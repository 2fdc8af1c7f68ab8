//! The digest: one notification for the deliveries a notifier held (quiet hours or `digest` mode).
//!
//! It is a `message` event the daemon makes for the pseudo-run [`DIGEST_RUN`], rendered by the SDK's
//! `render::notification` like any message, so every notifier delivers it without knowing digests. Its text
//! has one paragraph per run, in the order the runs were first held: how the run ended (status, best value,
//! final losses) or how far it got, how many epochs were held, and the alerts and messages of lower level
//! that waited. Its sequence number is the highest held job id, so two digests never share an id (mail
//! `Message-ID`s) while a retry of one keeps it.

use std::collections::BTreeMap;
use std::fmt::Write;

use herald_event::format::{float6, format_time, summary};
use herald_event::{Event, Level, Message, PROTOCOL_VERSION, Payload};
use herald_plugin::{Notification, RunContext, render};
use time::OffsetDateTime;

use super::schedule::Quiet;

/// The run id of digest notifications.
pub const DIGEST_RUN: &str = "digest";

/// What was held of one run.
#[derive(Default)]
struct RunDigest<'a> {
    order: usize,
    epochs: u32,
    last_epoch: Option<&'a herald_event::EpochEnded>,
    started: bool,
    ended: Option<&'a Payload>,
    lines: Vec<String>,
    other: BTreeMap<&'static str, u32>,
}

/// The digest of `held` events (in job order) for a notifier with `quiet`, due at `due_ms` (the earliest
/// release of the held jobs: the end of quiet hours, or of a digest period) and made at `now_ms`; `context`
/// gives a run's context (name, results table) as the daemon knows it now. `seq` numbers the digest (the
/// highest held job id); `attempt` counts from 1.
pub fn notification(
    quiet: Option<&Quiet>,
    held: &[&Event],
    context: &dyn Fn(&str) -> Option<RunContext>,
    due_ms: u64,
    now_ms: u64,
    seq: u64,
    attempt: u32,
) -> Notification {
    let (title, text) = text(quiet, held, context, due_ms);
    let time = i128::from(now_ms)
        .checked_mul(1_000_000)
        .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    let event = Event {
        v: PROTOCOL_VERSION,
        run: DIGEST_RUN.to_owned(),
        seq,
        time,
        payload: Payload::Message(Message { title, text, level: Level::Info }),
    };
    render::notification(&RunContext::new(DIGEST_RUN), &event, None, None, attempt)
}

/// The digest's title and body.
fn text(
    quiet: Option<&Quiet>,
    held: &[&Event],
    context: &dyn Fn(&str) -> Option<RunContext>,
    due_ms: u64,
) -> (String, String) {
    let mut runs: BTreeMap<&str, RunDigest<'_>> = BTreeMap::new();
    for event in held {
        let order = runs.len();
        let r = runs.entry(event.run.as_str()).or_insert_with(|| RunDigest { order, ..RunDigest::default() });
        match &event.payload {
            Payload::EpochEnded(e) => {
                r.epochs += 1;
                r.last_epoch = Some(e);
            }
            Payload::RunStarted(_) => r.started = true,
            Payload::RunFinished(_) | Payload::RunFailed(_) | Payload::RunLost(_) => {
                r.ended = Some(&event.payload)
            }
            Payload::Alert(a) => {
                let first = a.text.lines().next().unwrap_or_default();
                let mut line = format!("{}: {}", a.level.as_str(), a.title);
                if !first.is_empty() {
                    let _ = write!(line, " ({first})");
                }
                r.lines.push(line);
            }
            Payload::Message(m) => {
                let first = m.text.lines().next().unwrap_or_default();
                let mut line = format!("message: {}", m.title);
                if !first.is_empty() {
                    let _ = write!(line, " ({first})");
                }
                r.lines.push(line);
            }
            Payload::RunStalled(_) => r.lines.push("stalled (no event for a while)".to_owned()),
            other => *r.other.entry(event_kind(other)).or_default() += 1,
        }
    }
    let mut ordered: Vec<(&str, RunDigest<'_>)> = runs.into_iter().collect();
    ordered.sort_by_key(|(_, r)| r.order);
    let finished = ordered.iter().filter(|(_, r)| r.ended.is_some()).count();
    let alerts = held.iter().filter(|e| matches!(e.payload, Payload::Alert(_))).count();
    let mut title = format!(
        "digest: {} held from {} run{}",
        count(held.len(), "notification"),
        ordered.len(),
        plural(ordered.len())
    );
    if finished > 0 {
        let _ = write!(title, ", {finished} finished");
    }
    if alerts > 0 {
        let _ = write!(title, ", {}", count(alerts, "alert"));
    }
    let mut body = String::new();
    // The quiet hours that ended when the digest was due, else the digest period, say why these waited.
    let just_quiet =
        quiet.and_then(|q| q.hours.filter(|_| q.is_quiet(due_ms.saturating_sub(1))).map(|w| (w, q)));
    match (just_quiet, quiet.and_then(|q| q.digest)) {
        (Some((w, q)), _) => {
            let _ = writeln!(body, "Held during quiet hours {w} ({}).", q.zone_name);
        }
        (None, Some(p)) => {
            let _ = writeln!(body, "Held for the digest (every {}).", format_time(p.as_secs_f64()));
        }
        (None, None) => body.push_str("Held for this digest.\n"),
    }
    for (run, r) in &ordered {
        let ctx = context(run);
        let name = ctx.as_ref().map_or(*run, |c| c.name.as_str());
        body.push('\n');
        let _ = writeln!(body, "{name}: {}", state(r, ctx.as_ref()));
        if r.epochs > 0 {
            let _ = writeln!(body, "  {} held", count(r.epochs as usize, "epoch"));
        }
        for line in &r.lines {
            let _ = writeln!(body, "  {line}");
        }
        for (kind, n) in &r.other {
            let _ = writeln!(body, "  {kind} ×{n}");
        }
    }
    (title, body.trim_end().to_owned())
}

/// How a run stands: how it ended (with its best value and final losses), or its latest epoch.
fn state(r: &RunDigest<'_>, ctx: Option<&RunContext>) -> String {
    let last = ctx.and_then(RunContext::last_epoch).or(r.last_epoch);
    let mut out = match r.ended {
        Some(Payload::RunFinished(f)) => {
            let mut s = format!("{} after {}", f.status.as_str(), format_time(f.duration_s));
            if let Some(best) = &f.best {
                let _ = write!(
                    s,
                    " · best {} {} (epoch {})",
                    best.name,
                    float6(best.value),
                    u64::from(best.epoch) + 1
                );
            }
            if let Some(e) = last {
                let _ = write!(s, " · final train {}", float6(e.train_loss));
                if let Some(v) = e.valid_loss {
                    let _ = write!(s, " · valid {}", float6(v));
                }
            }
            return s;
        }
        Some(Payload::RunFailed(f)) => return format!("failed: {}", f.error),
        Some(Payload::RunLost(_)) => return "lost".to_owned(),
        _ => String::new(),
    };
    match last {
        Some(e) => out.push_str(&summary(e)),
        None if r.started => out.push_str("started"),
        None => out.push_str("running"),
    }
    out
}

fn event_kind(payload: &Payload) -> &'static str {
    payload.kind().as_str()
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", plural(n))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_event::{Alert, Best, EpochEnded, Metrics, RunFinished, RunStarted, RunStatus};

    use super::*;
    use crate::quiet::schedule::zone;

    fn quiet() -> Quiet {
        let (zone, zone_name) = zone(Some("Europe/Berlin")).expect("the test machine has tzdata");
        Quiet { hours: Some("22:30-07:00".parse().expect("valid")), digest: None, zone, zone_name }
    }

    fn epoch(run: &str, seq: u64, epoch: u32, valid: f64) -> Event {
        let e = EpochEnded {
            epoch,
            n_epochs: 10,
            train_loss: 0.5,
            valid_loss: Some(valid),
            metrics: Metrics::default(),
            elapsed_s: 3.0,
        };
        Event::now(run, seq, e)
    }

    fn started(name: &str) -> RunStarted {
        RunStarted {
            name: name.into(),
            host: "h".into(),
            pid: 1,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 10,
            batches_per_epoch: 100,
            metric_names: Vec::new(),
            hyper: Default::default(),
        }
    }

    #[test]
    fn the_digest_tells_each_run_its_end_epochs_and_alerts() {
        let finished = RunFinished {
            status: RunStatus::Completed,
            reason: "done".into(),
            duration_s: 3725.0,
            best: Some(Best { name: "valid_loss".into(), value: 0.031, epoch: 8 }),
        };
        let alert = Alert {
            rule: Some("stuck".into()),
            title: "valid_loss has not improved".into(),
            text: "5 epochs without improvement".into(),
            level: Level::Warning,
            epoch: Some(4),
        };
        let held = [
            Event::now("a", 0, started("mnist")),
            epoch("a", 1, 0, 0.2),
            epoch("b", 3, 3, 0.4),
            epoch("a", 2, 1, 0.1),
            Event::now("b", 4, alert),
            Event::now("a", 3, finished),
        ];
        let refs: Vec<&Event> = held.iter().collect();
        let ctx = |run: &str| {
            (run == "a").then(|| {
                let mut c = RunContext::new("a");
                c.name = "mnist".into();
                c
            })
        };
        let n = notification(Some(&quiet()), &refs, &ctx, 1_800_000_000_000, 1_800_000_000_000, 42, 1);
        assert_eq!(n.event.run, DIGEST_RUN);
        assert_eq!(n.event.seq, 42);
        assert!(matches!(n.event.payload, Payload::Message(_)));
        assert_eq!(n.title, "digest: 6 notifications held from 2 runs, 1 finished, 1 alert");
        let text = &n.text;
        for part in [
            "mnist: completed after 1:02:05 · best valid_loss 0.031000 (epoch 9) · final train 0.500000 · valid 0.100000",
            "  2 epochs held",
            "b: epoch 4/10",
            "  1 epoch held",
            "  warning: valid_loss has not improved (5 epochs without improvement)",
        ] {
            assert!(text.contains(part), "{part:?} in:\n{text}");
        }
        assert!(text.find("mnist:") < text.find("b: "), "runs in the order they were held:\n{text}");
        assert!(n.html.contains("digest"), "{}", n.html);
    }

    #[test]
    fn the_digest_says_why_it_waited() {
        let held = [epoch("a", 1, 0, 0.2)];
        let refs: Vec<&Event> = held.iter().collect();
        let none = |_: &str| None;
        // 2026-01-15 06:00 UTC is 07:00 in Berlin: the end of the quiet hours.
        let at = 1_768_456_800_000;
        let n = notification(Some(&quiet()), &refs, &none, at, at + 3_600_000, 1, 1);
        assert!(n.text.starts_with("Held during quiet hours 22:30-07:00 (Europe/Berlin)."), "{}", n.text);
        let hourly = Quiet { hours: None, digest: Some(Duration::from_secs(3600)), ..quiet() };
        let n = notification(Some(&hourly), &refs, &none, at, at, 1, 1);
        assert!(n.text.starts_with("Held for the digest (every 1:00:00)."), "{}", n.text);
        assert_eq!(n.title, "digest: 1 notification held from 1 run");
    }
}

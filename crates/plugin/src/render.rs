//! Ready-made renderings of an event: a title, plain text, HTML and Markdown, the same facts in each.
//!
//! Every notifier gets these in its [`Notification`] and picks what its service shows best. They are built
//! on `herald_event::format` (the fastai results table and the one-line epoch summary), so a phone shows
//! the numbers exactly as the trainer's console does. Every string a run or a user supplies (run name,
//! host, metric and hyperparameter names, messages, errors, tracebacks) is escaped in the HTML and Markdown
//! renderings. The HTML uses only the tags Telegram accepts (`b`, `pre`) and `\n` for line breaks.
//!
//! [`notification`] writes fastai's full table; a notifier that wants the phone-sized one (the chat
//! notifiers' `table = "compact"`) asks [`with_table`] for the renderings in that layout (`crate::table`).
//!
//! This module does not truncate for any service's length limit (a notifier knows its own), except that the
//! results table shows at most [`MAX_TABLE_ROWS`] epochs (the compact one [`COMPACT_ROWS`]) and a traceback
//! its last [`MAX_TRACEBACK_LINES`] lines.

use std::borrow::Cow;
use std::time::Duration;

use herald_event::format::{float6, format_time};
use herald_event::{Event, Level, Payload, RunStatus};

use crate::duration::format_duration;
use crate::notifier::{Image, Notification, Receipt, RunContext};
pub use crate::table::{COMPACT_ROWS, COMPACT_WIDTH, MAX_TABLE_ROWS, TableLayout};
/// A traceback in a notification keeps its last this many lines (where the error is).
pub const MAX_TRACEBACK_LINES: usize = 40;

/// Build the notification for one event of a run.
///
/// `run` is the run's context; the event is applied to a copy of it first (see [`RunContext::apply`]), so
/// the results table of an `epoch_ended` includes that epoch whether or not the caller applied it.
pub fn notification(
    run: &RunContext,
    event: &Event,
    previous: Option<Receipt>,
    image: Option<Image>,
    attempt: u32,
) -> Notification {
    let mut ctx = run.clone();
    ctx.apply(event);
    let parts = parts(&ctx, event, TableLayout::Full);
    Notification {
        title: parts.title.clone(),
        text: parts.text(),
        html: parts.html(),
        markdown: parts.markdown(),
        run: ctx,
        event: event.clone(),
        image,
        previous,
        attempt,
    }
}

/// `n` with its results table in `layout`: itself for [`TableLayout::Full`] (what [`notification`] writes),
/// else a copy whose `text`, `html` and `markdown` are rendered again from its run and event.
pub fn with_table(n: &Notification, layout: TableLayout) -> Cow<'_, Notification> {
    match layout {
        TableLayout::Full => Cow::Borrowed(n),
        TableLayout::Compact => {
            // `n.run` already includes the event (see `notification`).
            let parts = parts(&n.run, &n.event, layout);
            Cow::Owned(Notification {
                title: parts.title.clone(),
                text: parts.text(),
                html: parts.html(),
                markdown: parts.markdown(),
                ..n.clone()
            })
        }
    }
}

/// Escape text for HTML (and Telegram's HTML mode): `&`, `<`, `>`, `"` and `'`.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escape text for Markdown outside code: a backslash before each character that could start markup.
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '~' | '|' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Text inside a Markdown code block: backticks become `'` so the block cannot be closed early.
fn escape_code_block(s: &str) -> String {
    s.replace('`', "'")
}

/// The facts of one notification, before they are written in a markup.
struct Parts {
    title: String,
    /// Plain lines of prose (user strings unescaped).
    lines: Vec<String>,
    /// The results table, if the run has one.
    table: Option<String>,
    /// A labelled monospace block (a traceback).
    block: Option<(&'static str, String)>,
}

impl Parts {
    fn text(&self) -> String {
        let mut out = self.lines.join("\n");
        if let Some(table) = &self.table {
            push_section(&mut out, table);
        }
        if let Some((label, block)) = &self.block {
            push_section(&mut out, &format!("{label}:\n{block}"));
        }
        out
    }

    fn html(&self) -> String {
        let mut out = format!("<b>{}</b>", escape_html(&self.title));
        for line in &self.lines {
            out.push('\n');
            out.push_str(&escape_html(line));
        }
        if let Some(table) = &self.table {
            out.push_str(&format!("\n<pre>{}</pre>", escape_html(table)));
        }
        if let Some((label, block)) = &self.block {
            out.push_str(&format!("\n<b>{label}</b>\n<pre>{}</pre>", escape_html(block)));
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("**{}**", escape_markdown(&self.title));
        for line in &self.lines {
            out.push('\n');
            out.push_str(&escape_markdown(line));
        }
        if let Some(table) = &self.table {
            out.push_str(&format!("\n```\n{}\n```", escape_code_block(table)));
        }
        if let Some((label, block)) = &self.block {
            out.push_str(&format!("\n**{label}**\n```\n{}\n```", escape_code_block(block)));
        }
        out
    }
}

/// `herald_event::format::summary`, safe for every epoch number a sender may send.
fn summary(e: &herald_event::EpochEnded) -> String {
    if e.epoch < u32::MAX {
        herald_event::format::summary(e)
    } else {
        let mut shown = e.clone();
        shown.epoch = 0;
        herald_event::format::summary(&shown).replacen(
            "epoch 1/",
            &format!("epoch {}/", u64::from(e.epoch) + 1),
            1,
        )
    }
}

fn push_section(out: &mut String, section: &str) {
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(section);
}

/// `name on host`, or the name alone when the host is not known.
fn who(ctx: &RunContext) -> String {
    if ctx.host.is_empty() { ctx.name.clone() } else { format!("{} on {}", ctx.name, ctx.host) }
}

/// The run's results table so far in `layout`, as a notification shows it (`None` before the first epoch).
pub fn table(ctx: &RunContext, layout: TableLayout) -> Option<String> {
    crate::table::table(layout, &ctx.table_metric_names(), &ctx.epochs)
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("({skip} earlier lines not shown)\n"));
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}

/// How far the run got: `epoch 3/10`, or nothing when no epoch ended.
fn progress(ctx: &RunContext) -> Option<String> {
    ctx.last_epoch().map(|e| format!("epoch {}/{}", u64::from(e.epoch) + 1, e.n_epochs))
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 { Duration::from_secs_f64(s.min(1e12)) } else { Duration::ZERO }
}

fn parts(ctx: &RunContext, event: &Event, layout: TableLayout) -> Parts {
    let name = &ctx.name;
    let mut lines = Vec::new();
    let mut with_table = false;
    let mut block = None;
    let title = match &event.payload {
        Payload::RunStarted(s) => {
            let rank = if s.rank == 0 { String::new() } else { format!(", rank {}", s.rank) };
            lines.push(format!("{} started (pid {}{rank})", who(ctx), s.pid));
            lines.push(format!("{} epochs × {} batches", s.n_epochs, s.batches_per_epoch));
            if !s.metric_names.is_empty() {
                lines.push(format!("metrics: {}", s.metric_names.join(", ")));
            }
            if !s.hyper.is_empty() {
                let hyper: Vec<String> = s
                    .hyper
                    .iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => format!("{k}={s}"),
                        v => format!("{k}={v}"),
                    })
                    .collect();
                lines.push(hyper.join(" · "));
            }
            format!("{name}: started")
        }
        Payload::EpochStarted(e) => {
            let n = if ctx.n_epochs == 0 { String::new() } else { format!("/{}", ctx.n_epochs) };
            lines.push(format!("{}: epoch {}{n} started", who(ctx), u64::from(e.epoch) + 1));
            format!("{name}: epoch {}{n} started", u64::from(e.epoch) + 1)
        }
        Payload::BatchEnded(b) => {
            lines.push(format!(
                "epoch {} · batch {}/{} · loss {} · smooth {} · lr {}",
                u64::from(b.epoch) + 1,
                b.batch.saturating_add(1),
                b.n_batches,
                float6(b.loss),
                float6(b.smooth_loss),
                b.lr
            ));
            lines.push(who(ctx));
            format!(
                "{name}: epoch {} batch {}/{}",
                u64::from(b.epoch) + 1,
                b.batch.saturating_add(1),
                b.n_batches
            )
        }
        Payload::EpochEnded(e) => {
            lines.push(summary(e));
            lines.push(who(ctx));
            lines.extend(ctx.health.clone());
            with_table = true;
            format!("{name}: epoch {}/{}", u64::from(e.epoch) + 1, e.n_epochs)
        }
        Payload::RunFinished(f) => {
            let mut line = format!("{} {} after {}", who(ctx), f.status.as_str(), format_time(f.duration_s));
            if let Some(p) = progress(ctx) {
                line.push_str(&format!(" ({p})"));
            }
            if !f.reason.is_empty() {
                line.push_str(&format!(": {}", f.reason));
            }
            lines.push(line);
            lines.extend(ctx.health.clone());
            if let Some(best) = &f.best {
                lines.push(format!(
                    "best {} {} at epoch {}",
                    best.name,
                    float6(best.value),
                    u64::from(best.epoch) + 1
                ));
            }
            with_table = true;
            match f.status {
                RunStatus::Completed => format!("{name}: completed"),
                RunStatus::Stopped => format!("{name}: stopped"),
                RunStatus::Failed => format!("{name}: failed"),
            }
        }
        Payload::RunFailed(f) => {
            let at = progress(ctx).map(|p| format!(" after {p}")).unwrap_or_default();
            lines.push(format!("{} failed{at}", who(ctx)));
            lines.extend(f.error.trim_end().lines().map(str::to_owned));
            if let Some(tb) = f.traceback.as_deref().filter(|t| !t.trim().is_empty()) {
                block = Some(("traceback", tail_lines(tb, MAX_TRACEBACK_LINES)));
            }
            with_table = true;
            format!("{name}: failed")
        }
        Payload::Message(m) => {
            lines.extend(m.text.trim_end().lines().map(str::to_owned));
            if !ctx.host.is_empty() {
                lines.push(format!("({})", who(ctx)));
            }
            let title = if m.title.is_empty() { name.clone() } else { m.title.clone() };
            match m.level {
                Level::Info => title,
                Level::Warning => format!("warning: {title}"),
                Level::Error => format!("error: {title}"),
            }
        }
        Payload::Heartbeat(_) => {
            lines.push(format!("{} is alive", who(ctx)));
            format!("{name}: alive")
        }
        Payload::RunStalled(s) => {
            lines.push(format!(
                "no event from {} for {} (stall_after {})",
                who(ctx),
                format_duration(Duration::from_secs(secs(s.silent_s).as_secs())),
                format_duration(secs(s.stall_after_s))
            ));
            if let Some(e) = ctx.last_epoch() {
                lines.push(format!("last: {}", summary(e)));
            }
            with_table = true;
            format!("{name}: stalled")
        }
        Payload::RunLost(l) => {
            let at = progress(ctx).map(|p| format!(" at {p}")).unwrap_or_default();
            lines.push(format!("{} lost{at} (pid {}): {}", who(ctx), l.pid, l.reason));
            with_table = true;
            format!("{name}: lost")
        }
        Payload::Alert(a) => {
            lines.extend(a.text.trim_end().lines().map(str::to_owned));
            let mut about = who(ctx);
            if let Some(epoch) = a.epoch {
                about.push_str(&format!(" at epoch {}", u64::from(epoch) + 1));
            }
            if let Some(rule) = &a.rule {
                about.push_str(&format!(" (rule {rule})"));
            }
            lines.push(about);
            let title = if a.title.is_empty() { "alert" } else { a.title.as_str() };
            format!("{}: {name}: {title}", a.level.as_str())
        }
        Payload::RankStalled(s) => {
            let silent: Vec<String> = s.ranks.iter().map(|r| format!("rank {}", r.rank)).collect();
            for r in &s.ranks {
                let epoch = r.epoch.map(|e| format!(" in epoch {}", u64::from(e) + 1)).unwrap_or_default();
                lines.push(format!(
                    "rank {} on {}: silent for {}{epoch}, last {}",
                    r.rank,
                    r.host,
                    format_duration(Duration::from_secs(secs(r.silent_s).as_secs())),
                    r.last
                ));
            }
            lines.push(format!("job {} (stall_after {})", s.job, format_duration(secs(s.stall_after_s))));
            with_table = true;
            if s.all {
                format!("{name}: hung, every rank silent")
            } else {
                format!("{name}: {} stalled", silent.join(", "))
            }
        }
        Payload::RankLost(l) => {
            lines.push(format!("rank {} on {} (pid {}): {}", l.rank, l.host, l.pid, l.reason));
            lines.push(format!("job {}", l.job));
            with_table = true;
            format!("{name}: rank {} lost", l.rank)
        }
        Payload::RankFailed(f) => {
            lines.push(format!("rank {} on {} failed", f.rank, f.host));
            lines.extend(f.error.trim_end().lines().map(str::to_owned));
            if let Some(tb) = f.traceback.as_deref().filter(|t| !t.trim().is_empty()) {
                block = Some(("traceback", tail_lines(tb, MAX_TRACEBACK_LINES)));
            }
            format!("{name}: rank {} failed", f.rank)
        }
        Payload::RankSlow(r) => {
            let pct = if r.median_s > 0.0 { (r.elapsed_s / r.median_s - 1.0) * 100.0 } else { 0.0 };
            lines.push(format!(
                "rank {} on {}: epoch {} took {} against a median of {} (+{pct:.0}%, over {}×)",
                r.rank,
                r.host,
                u64::from(r.epoch) + 1,
                format_time(r.elapsed_s),
                format_time(r.median_s),
                r.factor
            ));
            format!("{name}: rank {} slow", r.rank)
        }
        Payload::RanksMissing(m) => {
            let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            lines.push(format!(
                "{}/{} ranks started within {}; missing: {}",
                m.seen.len(),
                m.world_size,
                format_duration(Duration::from_secs(secs(m.after_s).as_secs())),
                list(&m.missing)
            ));
            format!("{name}: ranks missing")
        }
    };
    Parts { title, lines, table: if with_table { table(ctx, layout) } else { None }, block }
}

#[cfg(test)]
mod tests {
    use herald_event::{
        Alert, BatchEnded, Best, EpochEnded, EpochStarted, Heartbeat, Message, Metrics, RunFailed,
        RunFinished, RunLost, RunStalled, RunStarted,
    };

    use super::*;

    fn started(name: &str) -> RunStarted {
        RunStarted {
            name: name.into(),
            host: "gpu-box".into(),
            pid: 4242,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 3,
            batches_per_epoch: 938,
            metric_names: vec!["accuracy".into()],
            hyper: [
                ("lr".to_owned(), serde_json::json!(0.001)),
                ("model".to_owned(), serde_json::json!("mlp")),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn epoch(n: u32, train: f64, valid: f64, acc: f64) -> EpochEnded {
        EpochEnded {
            epoch: n,
            n_epochs: 3,
            train_loss: train,
            valid_loss: Some(valid),
            metrics: Metrics(vec![("accuracy".into(), acc)]),
            elapsed_s: 5.2,
        }
    }

    /// A run that started and finished two epochs, as the daemon's context holds it.
    fn ctx(name: &str) -> RunContext {
        let mut ctx = RunContext::from_started("run-1", &started(name));
        ctx.apply(&Event::now("run-1", 1, epoch(0, 0.100888, 0.058969, 0.978901)));
        ctx.apply(&Event::now("run-1", 2, epoch(1, 0.05, 0.04, 0.985)));
        ctx
    }

    const TABLE: &str = "epoch     train_loss  valid_loss  accuracy  time\n\
                         0         0.100888    0.058969    0.978901  00:05\n\
                         1         0.050000    0.040000    0.985000  00:05";

    struct Case {
        payload: Payload,
        title: &'static str,
        text: String,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                payload: started("digits").into(),
                title: "digits: started",
                text: "digits on gpu-box started (pid 4242)\n3 epochs × 938 batches\nmetrics: accuracy\n\
                       lr=0.001 · model=mlp"
                    .into(),
            },
            Case {
                payload: EpochStarted { epoch: 2 }.into(),
                title: "digits: epoch 3/3 started",
                text: "digits on gpu-box: epoch 3/3 started".into(),
            },
            Case {
                payload: BatchEnded { epoch: 0, batch: 9, n_batches: 938, loss: 0.5, smooth_loss: 0.6, lr: 0.001 }
                    .into(),
                title: "digits: epoch 1 batch 10/938",
                text: "epoch 1 · batch 10/938 · loss 0.500000 · smooth 0.600000 · lr 0.001\ndigits on gpu-box".into(),
            },
            Case {
                // Replays epoch 1: the table keeps one row for it.
                payload: epoch(1, 0.05, 0.04, 0.985).into(),
                title: "digits: epoch 2/3",
                text: format!(
                    "epoch 2/3 · train 0.050000 · valid 0.040000 · accuracy 0.985000 · 00:05\n\
                     digits on gpu-box\n\n{TABLE}"
                ),
            },
            Case {
                payload: RunFinished {
                    status: RunStatus::Completed,
                    reason: "all epochs done".into(),
                    duration_s: 3723.0,
                    best: Some(Best { name: "accuracy".into(), value: 0.985, epoch: 1 }),
                }
                .into(),
                title: "digits: completed",
                text: format!(
                    "digits on gpu-box completed after 1:02:03 (epoch 2/3): all epochs done\n\
                     best accuracy 0.985000 at epoch 2\n\n{TABLE}"
                ),
            },
            Case {
                payload: RunFinished { status: RunStatus::Stopped, reason: "stop requested".into(), duration_s: 65.0, best: None }
                    .into(),
                title: "digits: stopped",
                text: format!("digits on gpu-box stopped after 01:05 (epoch 2/3): stop requested\n\n{TABLE}"),
            },
            Case {
                payload: RunFailed {
                    error: "CUDA out of memory".into(),
                    traceback: Some("Traceback (most recent call last):\n  File \"train.py\", line 3\nRuntimeError: CUDA out of memory\n".into()),
                }
                .into(),
                title: "digits: failed",
                text: format!(
                    "digits on gpu-box failed after epoch 2/3\nCUDA out of memory\n\n{TABLE}\n\n\
                     traceback:\nTraceback (most recent call last):\n  File \"train.py\", line 3\n\
                     RuntimeError: CUDA out of memory"
                ),
            },
            Case {
                payload: Message { title: "checkpoint".into(), text: "saved to /ckpt/3.pt".into(), level: Level::Info }.into(),
                title: "checkpoint",
                text: "saved to /ckpt/3.pt\n(digits on gpu-box)".into(),
            },
            Case {
                payload: Message { title: "disk".into(), text: "90% full".into(), level: Level::Warning }.into(),
                title: "warning: disk",
                text: "90% full\n(digits on gpu-box)".into(),
            },
            Case {
                payload: Heartbeat {}.into(),
                title: "digits: alive",
                text: "digits on gpu-box is alive".into(),
            },
            Case {
                payload: RunStalled { silent_s: 1023.4, stall_after_s: 900.0 }.into(),
                title: "digits: stalled",
                text: format!(
                    "no event from digits on gpu-box for 17m3s (stall_after 15m)\n\
                     last: epoch 2/3 · train 0.050000 · valid 0.040000 · accuracy 0.985000 · 00:05\n\n{TABLE}"
                ),
            },
            Case {
                payload: RunLost { pid: 4242, reason: "the process exited without reporting".into() }.into(),
                title: "digits: lost",
                text: format!(
                    "digits on gpu-box lost at epoch 2/3 (pid 4242): the process exited without reporting\n\n{TABLE}"
                ),
            },
            Case {
                payload: Alert {
                    rule: Some("diverged".into()),
                    title: "NaN loss".into(),
                    text: "batch 2 of epoch 2 has a NaN loss".into(),
                    level: Level::Error,
                    epoch: Some(1),
                }
                .into(),
                title: "error: digits: NaN loss",
                text: "batch 2 of epoch 2 has a NaN loss\ndigits on gpu-box at epoch 2 (rule diverged)".into(),
            },
            Case {
                payload: herald_event::RankStalled {
                    job: "j7".into(),
                    ranks: vec![herald_event::RankSeen {
                        rank: 2,
                        host: "gpu-b".into(),
                        silent_s: 904.2,
                        last: herald_event::EventKind::EpochEnded,
                        epoch: Some(2),
                    }],
                    all: false,
                    stall_after_s: 900.0,
                }
                .into(),
                title: "digits: rank 2 stalled",
                text: format!(
                    "rank 2 on gpu-b: silent for 15m4s in epoch 3, last epoch_ended\njob j7 (stall_after 15m)\n\n{TABLE}"
                ),
            },
            Case {
                payload: herald_event::RankLost {
                    job: "j7".into(),
                    rank: 1,
                    host: "gpu-a".into(),
                    pid: 4248,
                    reason: "the process exited without reporting".into(),
                }
                .into(),
                title: "digits: rank 1 lost",
                text: format!(
                    "rank 1 on gpu-a (pid 4248): the process exited without reporting\njob j7\n\n{TABLE}"
                ),
            },
            Case {
                payload: herald_event::RankFailed {
                    job: "j7".into(),
                    rank: 3,
                    host: "gpu-b".into(),
                    error: "CUDA out of memory".into(),
                    traceback: None,
                }
                .into(),
                title: "digits: rank 3 failed",
                text: "rank 3 on gpu-b failed\nCUDA out of memory".into(),
            },
            Case {
                payload: herald_event::RankSlow {
                    job: "j7".into(),
                    rank: 3,
                    host: "gpu-b".into(),
                    epoch: 4,
                    elapsed_s: 7.2,
                    median_s: 5.2,
                    factor: 1.5,
                }
                .into(),
                title: "digits: rank 3 slow",
                text: "rank 3 on gpu-b: epoch 5 took 00:07 against a median of 00:05 (+38%, over 1.5×)".into(),
            },
            Case {
                payload: herald_event::RanksMissing {
                    job: "j7".into(),
                    world_size: 4,
                    seen: vec![0, 1, 2],
                    missing: vec![3],
                    after_s: 900.1,
                }
                .into(),
                title: "digits: ranks missing",
                text: "3/4 ranks started within 15m; missing: 3".into(),
            },
        ]
    }

    #[test]
    fn every_event_type_renders() {
        let context = ctx("digits");
        let cases = cases();
        let mut kinds: Vec<_> = cases.iter().map(|c| c.payload.kind()).collect();
        kinds.dedup();
        assert_eq!(kinds.len(), herald_event::EventKind::ALL.len(), "a case per event type");
        for case in cases {
            let event = Event::now("run-1", 7, case.payload.clone());
            let n = notification(&context, &event, None, None, 1);
            assert_eq!(n.title, case.title, "{:?}", case.payload.kind());
            assert_eq!(n.text, case.text, "{:?}", case.payload.kind());
            assert!(n.html.starts_with(&format!("<b>{}</b>", escape_html(case.title))), "{}", n.html);
            assert!(n.markdown.starts_with("**"), "{}", n.markdown);
            if n.text.contains("train_loss") {
                assert!(n.html.contains("<pre>epoch     train_loss"), "{}", n.html);
                assert!(n.markdown.contains("```\nepoch     train_loss"), "{}", n.markdown);
            }
            assert_eq!(n.event, event);
            assert_eq!(n.attempt, 1);
        }
    }

    #[test]
    fn a_jobs_health_line_goes_under_rank_zeros_epoch_and_end() {
        let mut context = ctx("digits");
        context.health = Some("3/3 ranks · slowest: rank 2 on gpu-b, +38%".into());
        let n = notification(&context, &Event::now("run-1", 3, epoch(2, 0.04, 0.03, 0.99)), None, None, 1);
        assert!(
            n.text.contains("digits on gpu-box\n3/3 ranks · slowest: rank 2 on gpu-b, +38%\n"),
            "{}",
            n.text
        );
        let end =
            RunFinished { status: RunStatus::Completed, reason: String::new(), duration_s: 9.0, best: None };
        let n = notification(&context, &Event::now("run-1", 4, end), None, None, 1);
        assert!(n.text.contains("\n3/3 ranks · slowest"), "{}", n.text);
    }

    #[test]
    fn epoch_ended_adds_its_row_when_the_caller_did_not() {
        let context = RunContext::from_started("r", &started("digits"));
        let n = notification(&context, &Event::now("r", 1, epoch(0, 0.1, 0.2, 0.9)), None, None, 2);
        assert_eq!(n.run.epochs.len(), 1);
        assert!(n.text.ends_with("\n0         0.100000    0.200000    0.900000  00:05"), "{}", n.text);
        assert_eq!(n.attempt, 2);
    }

    #[test]
    fn hostile_strings_are_escaped() {
        let hostile = "<b>&\"x\"";
        let mut s = started(hostile);
        s.host = "<i>host</i>".into();
        s.metric_names = vec!["<acc>".into()];
        let mut context = RunContext::from_started("r", &s);
        context.apply(&Event::now(
            "r",
            1,
            EpochEnded {
                epoch: 0,
                n_epochs: 1,
                train_loss: 1.0,
                valid_loss: None,
                metrics: Metrics(vec![("<acc>".into(), 0.5)]),
                elapsed_s: 1.0,
            },
        ));
        let payloads: Vec<Payload> = vec![
            s.clone().into(),
            epoch(0, 1.0, 1.0, 1.0).into(),
            RunFailed { error: "<script>".into(), traceback: Some("</pre><b>".into()) }.into(),
            Message { title: "<t>".into(), text: "a & b".into(), level: Level::Error }.into(),
            RunLost { pid: 1, reason: "<gone>".into() }.into(),
        ];
        for payload in payloads {
            let n = notification(&context, &Event::now("r", 2, payload), None, None, 1);
            let stripped =
                n.html.replace("<b>", "").replace("</b>", "").replace("<pre>", "").replace("</pre>", "");
            assert!(!stripped.contains('<') && !stripped.contains('>'), "unescaped markup: {}", n.html);
            assert!(!stripped.contains('"'), "unescaped quote: {}", n.html);
            assert!(
                n.html.contains("&lt;b&gt;&amp;&quot;x&quot;") || n.title.starts_with("error"),
                "{}",
                n.html
            );
            let prose = n.markdown.split("```").step_by(2).collect::<String>();
            assert!(!prose.contains("<b>") && !prose.contains("<script>"), "{}", n.markdown);
        }
        assert_eq!(escape_html(hostile), "&lt;b&gt;&amp;&quot;x&quot;");
        assert_eq!(escape_markdown("*a_b* [x](y) `c`"), "\\*a\\_b\\* \\[x\\](y) \\`c\\`");
        assert_eq!(escape_code_block("a```b"), "a'''b");
    }

    #[test]
    fn long_tables_and_tracebacks_are_cut_from_the_top() {
        let mut context = RunContext::from_started("r", &started("digits"));
        for i in 0..(MAX_TABLE_ROWS as u32 + 5) {
            context.apply(&Event::now("r", u64::from(i), epoch(i, 0.1, 0.1, 0.1)));
        }
        let tb: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let event = Event::now("r", 99, RunFailed { error: "boom".into(), traceback: Some(tb) });
        let n = notification(&context, &event, None, None, 1);
        assert!(n.text.contains("(5 earlier epochs not shown)\n5         "), "{}", n.text);
        assert!(n.text.contains("(60 earlier lines not shown)\nline 60\n"), "{}", n.text);
        assert!(n.text.ends_with("line 99"), "{}", n.text);
    }

    #[test]
    fn extreme_numbers_do_not_panic() {
        let mut e = epoch(u32::MAX, f64::NAN, f64::INFINITY, -0.0);
        e.n_epochs = u32::MAX;
        let payloads: Vec<Payload> = vec![
            e.clone().into(),
            EpochStarted { epoch: u32::MAX }.into(),
            BatchEnded {
                epoch: u32::MAX,
                batch: u64::MAX,
                n_batches: u64::MAX,
                loss: f64::NAN,
                smooth_loss: 1e300,
                lr: 0.0,
            }
            .into(),
            RunFinished {
                status: RunStatus::Completed,
                reason: String::new(),
                duration_s: f64::MAX,
                best: Some(Best { name: "x".into(), value: 1.0, epoch: u32::MAX }),
            }
            .into(),
            RunStalled { silent_s: f64::MAX, stall_after_s: -1.0 }.into(),
        ];
        let mut context = RunContext::new("r");
        context.apply(&Event::now("r", 0, e));
        for payload in payloads {
            let n = notification(&context, &Event::now("r", u64::MAX, payload), None, None, u32::MAX);
            assert!(!n.title.is_empty());
        }
        assert!(summary(&epoch(u32::MAX, 1.0, 1.0, 1.0)).starts_with("epoch 4294967296/3 · train 1.000000"));
    }

    #[test]
    fn with_table_renders_the_compact_table_or_keeps_the_full_one() {
        let context = ctx("digits");
        let event = Event::now("run-1", 3, epoch(1, 0.05, 0.04, 0.985));
        let n = notification(&context, &event, None, None, 1);
        assert!(matches!(with_table(&n, TableLayout::Full), Cow::Borrowed(_)));
        let compact = with_table(&n, TableLayout::Compact);
        let table =
            "ep  train  valid    acc  time\n 0 0.1009 0.0590 0.9789 00:05\n 1 0.0500 0.0400 0.9850 00:05";
        assert_eq!(
            compact.text,
            format!(
                "epoch 2/3 · train 0.050000 · valid 0.040000 · accuracy 0.985000 · 00:05\ndigits on gpu-box\n\n{table}"
            )
        );
        assert!(compact.html.ends_with(&format!("<pre>{table}</pre>")), "{}", compact.html);
        assert!(compact.markdown.ends_with(&format!("```\n{table}\n```")), "{}", compact.markdown);
        assert_eq!((&compact.title, &compact.run, &compact.event), (&n.title, &n.run, &n.event));
        let started = Event::now("run-1", 0, started("digits"));
        let n = notification(&context, &started, None, None, 1);
        assert_eq!(with_table(&n, TableLayout::Compact).text, n.text, "no table, nothing changes");
    }

    #[test]
    fn carries_previous_receipt_and_image() {
        let previous = Receipt(serde_json::json!({"message_id": 7}));
        let image = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: vec![1, 2] };
        let event = Event::now("r", 0, Heartbeat {});
        let n = notification(&RunContext::default(), &event, Some(previous.clone()), Some(image.clone()), 3);
        assert_eq!((n.previous, n.image, n.run.name.as_str()), (Some(previous), Some(image), "r"));
        assert_eq!(n.text, "r is alive");
    }
}

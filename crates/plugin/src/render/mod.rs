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
use crate::notifier::{Image, Notification, Receipt, Renderings, RunContext};
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
    notification_with(Renderings::All, run, event, previous, image, attempt)
}

/// [`notification`] with only the renderings a notifier asked for ([`crate::Notifier::renderings`]); the
/// others are empty.
pub fn notification_with(
    renderings: Renderings,
    run: &RunContext,
    event: &Event,
    previous: Option<Receipt>,
    image: Option<Image>,
    attempt: u32,
) -> Notification {
    if renderings == Renderings::None {
        return Notification { previous, image, ..bare(event, attempt) };
    }
    let mut ctx = run.clone();
    ctx.apply(event);
    let parts = parts(&ctx, event, TableLayout::Full);
    let all = renderings == Renderings::All;
    Notification {
        title: parts.title.clone(),
        text: parts.text(),
        html: if all { parts.html() } else { String::new() },
        markdown: if all { parts.markdown() } else { String::new() },
        run: ctx,
        event: event.clone(),
        image,
        previous,
        attempt,
    }
}

/// The notification of `event` without renderings, for a notifier that reads only the event
/// ([`Renderings::None`]): empty title and texts, a context holding only the run's id.
pub fn bare(event: &Event, attempt: u32) -> Notification {
    Notification {
        run: RunContext::new(&event.run),
        event: event.clone(),
        title: String::new(),
        text: String::new(),
        html: String::new(),
        markdown: String::new(),
        image: None,
        previous: None,
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
mod tests;

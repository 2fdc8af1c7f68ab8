//! Commands from the phone: long polling `getUpdates` and answering `/runs`, `/status [run]`,
//! `/stop <run>` (confirmed with an inline keyboard button, then a stop request through the [`Host`], and a
//! word again when the run reports stopped), the rules and mutes of `watch.rs` (`/watch`, `/unwatch`, `/rules`,
//! `/mute`, `/unmute`) and `/help`, registered with `setMyCommands`.
//!
//! Only chats in `allowed_chats` are answered; anything from another chat (messages and button presses)
//! gets no reply and is logged with the chat and user. Replies are paced like deliveries. The host (the
//! daemon) owns the task, aborts it at shutdown and restarts it when it returns; this module knows runs
//! only through [`Host`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_event::format::summary;
use herald_plugin::TableLayout;
use herald_plugin::render::{self, escape_html};
use herald_plugin::{DeliveryError, Host, HostError, RunDetail, RunSummary};
use teloxide::types::{
    InlineKeyboardButton, InlineKeyboardMarkup, MaybeInaccessibleMessage, Update, UpdateKind,
};

use crate::api::{Api, Chat, Failure};
use crate::{text, watch};

/// How long one `getUpdates` waits for an update.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(25);
/// How often stop requests are checked for the run having stopped.
const STOP_CHECK: Duration = Duration::from_secs(1);
/// A stop request is followed this long at most.
const STOP_FOLLOW: Duration = Duration::from_secs(24 * 3600);

/// The commands, as `setMyCommands` registers them and /help lists them.
pub const COMMANDS: &[(&str, &str)] = &[
    ("runs", "Active and recent runs, with their numbers"),
    ("status", "A run's results table and loss curve: /status [run]"),
    ("stop", "Stop a run (asks first): /stop <run>"),
    ("watch", "Tell me once when a metric crosses a value: /watch <run> <metric> <op> <value>"),
    ("unwatch", "Remove a run's rules from the phone: /unwatch <run> [metric]"),
    ("rules", "The alert rules, and the runs they fired for"),
    ("mute", "No epoch updates of a run (its end and alerts still come): /mute <run> [30m]"),
    ("unmute", "Epoch updates of a run again: /unmute <run>"),
    ("help", "What Herald can do"),
];

/// A stop that was confirmed and is waited for.
struct PendingStop {
    run: String,
    name: String,
    chat: i64,
    asked: Instant,
}

struct Listener<'a> {
    name: &'a str,
    api: &'a Api,
    allowed: &'a HashSet<i64>,
    host: Arc<dyn Host>,
    bot_username: String,
    pending: Mutex<Vec<PendingStop>>,
    /// The layout of /status's results table: the notifier's `table`.
    table: TableLayout,
}

/// Listen until aborted (or until the token turns out to be wrong).
pub async fn listen(
    name: &str,
    api: &Api,
    _chat: &Chat,
    allowed: &HashSet<i64>,
    host: Arc<dyn Host>,
    table: TableLayout,
) -> Result<(), DeliveryError> {
    let bot_username = match api.me().await {
        Ok(u) => u,
        Err(e) if !e.retryable => return Err(e),
        Err(e) => {
            tracing::warn!(notifier = name, error = %e, "cannot ask Telegram who the bot is; commands still work");
            String::new()
        }
    };
    if let Err(e) = api.set_commands(COMMANDS).await {
        tracing::warn!(notifier = name, error = %e, "cannot register the bot's commands (setMyCommands)");
    }
    tracing::info!(notifier = name, bot = %bot_username, allowed = ?allowed, "taking commands from Telegram");
    let listener =
        Listener { name, api, allowed, host, bot_username, pending: Mutex::new(Vec::new()), table };
    let (polled, ()) = tokio::join!(listener.poll(), listener.follow_stops());
    polled
}

impl Listener<'_> {
    async fn poll(&self) -> Result<(), DeliveryError> {
        let mut offset: i32 = 0;
        let mut failures: u32 = 0;
        loop {
            match self.api.updates(offset, POLL_TIMEOUT).await {
                Ok(updates) => {
                    failures = 0;
                    for update in updates {
                        offset = offset.max(i32::try_from(update.id.0).unwrap_or(i32::MAX).saturating_add(1));
                        self.handle(update).await;
                    }
                }
                Err(e) if !e.retryable => {
                    if e.message.contains("terminated by other getUpdates") {
                        tracing::warn!(
                            notifier = self.name,
                            "another program polls this bot's updates; waiting"
                        );
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => {
                    failures += 1;
                    let wait = e.retry_after.unwrap_or_else(|| Duration::from_secs(1 << failures.min(5)));
                    tracing::warn!(notifier = self.name, error = %e, retry_in_s = wait.as_secs_f64(), "getUpdates failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Tell the chats that asked when their stopped run has ended.
    async fn follow_stops(&self) {
        let mut tick = tokio::time::interval(STOP_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let waiting: Vec<(String, String, i64, Instant)> =
                self.pending().iter().map(|p| (p.run.clone(), p.name.clone(), p.chat, p.asked)).collect();
            if waiting.is_empty() {
                continue;
            }
            // The list is cheap (no plot is drawn); a run no longer listed has gone.
            let runs = self.host.runs().await;
            for (run, name, chat, asked) in waiting {
                let summary = runs.iter().find(|r| r.run == run);
                let ended = match summary {
                    Some(s) if is_ended(&s.state) => Some(Some(s)),
                    Some(_) if asked.elapsed() > STOP_FOLLOW => Some(None),
                    Some(_) => None,
                    None => Some(None),
                };
                let Some(summary) = ended else { continue };
                self.pending().retain(|p| !(p.run == run && p.chat == chat));
                if let Some(s) = summary {
                    let at = s
                        .last_epoch
                        .as_ref()
                        .map(|e| format!(" after epoch {}/{}", u64::from(e.epoch) + 1, e.n_epochs))
                        .unwrap_or_default();
                    let html = format!("<b>{}</b> {}{at}.", escape_html(&name), escape_html(&s.state));
                    self.reply(chat, &html, None).await;
                }
            }
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<PendingStop>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Send a reply, waiting out a 429 (a few times) so that an answer is not lost to a flood wait.
    async fn reply(&self, chat: i64, html: &str, markup: Option<InlineKeyboardMarkup>) -> Option<i32> {
        let chat = Chat::Id(chat);
        for attempt in 1..=3 {
            let html = text::cut(html, text::MESSAGE_LIMIT);
            match self.api.send_html(&chat, &html, false, markup.clone()).await {
                Ok(id) => return Some(id),
                Err(Failure::Error(e)) if e.retryable && attempt < 3 => {
                    tokio::time::sleep(e.retry_after.unwrap_or(Duration::from_secs(2))).await;
                }
                Err(f) => {
                    tracing::warn!(notifier = self.name, chat = chat.key(), error = %f.into_error(), "cannot answer a command");
                    return None;
                }
            }
        }
        None
    }

    async fn handle(&self, update: Update) {
        match update.kind {
            UpdateKind::Message(message) => {
                let chat = message.chat.id.0;
                let Some(text) = message.text() else { return };
                let user = message.from.as_ref().map(describe_user).unwrap_or_default();
                if !self.allowed.contains(&chat) {
                    let command = text.split_whitespace().next().unwrap_or_default();
                    tracing::warn!(
                        notifier = self.name, chat, user = %user, command = %command,
                        "ignoring a message from a chat not in allowed_chats"
                    );
                    return;
                }
                self.command(chat, text, &user).await;
            }
            UpdateKind::CallbackQuery(query) => {
                let Some(message) = &query.message else { return };
                let chat = message.chat().id.0;
                let user = describe_user(&query.from);
                if !self.allowed.contains(&chat) {
                    tracing::warn!(notifier = self.name, chat, user = %user, "ignoring a button press from a chat not in allowed_chats");
                    return;
                }
                let data = query.data.clone().unwrap_or_default();
                self.button(chat, message, &query.id.0, &data, &user).await;
            }
            _ => {}
        }
    }

    async fn command(&self, chat: i64, text: &str, user: &str) {
        let mut words = text.split_whitespace();
        let Some(first) = words.next() else { return };
        let Some(command) = first.strip_prefix('/') else { return };
        // `/stop@herald_bot 2` in groups: only commands for this bot.
        let command = match command.split_once('@') {
            Some((c, bot))
                if self.bot_username.is_empty() || bot.eq_ignore_ascii_case(&self.bot_username) =>
            {
                c
            }
            Some(_) => return,
            None => command,
        };
        let arg = words.collect::<Vec<_>>().join(" ");
        tracing::info!(notifier = self.name, chat, user = %user, command, arg = %arg, "command");
        let command = command.to_ascii_lowercase();
        if let Some(parsed) = watch::parse(&command, &arg) {
            let html = match parsed {
                Ok(rule_command) => watch::answer(&*self.host, rule_command, user).await,
                Err(html) => html,
            };
            self.reply(chat, &html, None).await;
            return;
        }
        match command.as_str() {
            "runs" => {
                let html = runs_text(&self.host.runs().await);
                self.reply(chat, &html, None).await;
            }
            "status" => self.status(chat, &arg).await,
            "stop" => self.ask_stop(chat, &arg).await,
            "help" | "start" => {
                self.reply(chat, &help_text(), None).await;
            }
            other => {
                let html = format!("Unknown command /{}. /help lists what I understand.", escape_html(other));
                self.reply(chat, &html, None).await;
            }
        }
    }

    /// The run a command means: the argument, or the only active run.
    async fn pick(&self, chat: i64, arg: &str, usage: &str) -> Option<RunDetail> {
        if !arg.is_empty() {
            return match self.host.run(arg).await {
                Ok(view) => Some(view),
                Err(e) => {
                    self.reply(chat, &escape_html(&e.to_string()), None).await;
                    None
                }
            };
        }
        let runs = self.host.runs().await;
        let active: Vec<&RunSummary> = runs.iter().filter(|r| !is_ended(&r.state)).collect();
        let only = match active.as_slice() {
            [one] => Some(one.run.clone()),
            [] if runs.len() == 1 => runs.first().map(|r| r.run.clone()),
            _ => None,
        };
        match only {
            Some(run) => self.host.run(&run).await.ok(),
            None => {
                let html = format!("{}\n\n{usage}", runs_text(&runs));
                self.reply(chat, &html, None).await;
                None
            }
        }
    }

    async fn status(&self, chat: i64, arg: &str) {
        let Some(view) = self.pick(chat, arg, "Which one? Send /status and its number.").await else {
            return;
        };
        self.reply(chat, &status_text(&view, self.table), None).await;
        if let Some(plot) = view.plot {
            let caption = format!("<b>{}</b>: loss curve", escape_html(&view.summary.name));
            if let Err(f) =
                self.api.send_photo(&Chat::Id(chat), plot.bytes, &plot.filename, &caption, true).await
            {
                tracing::warn!(notifier = self.name, chat, error = %f.into_error(), "cannot send the loss curve");
            }
        }
    }

    async fn ask_stop(&self, chat: i64, arg: &str) {
        let Some(view) = self.pick(chat, arg, "Which one? Send /stop and its number.").await else { return };
        let s = &view.summary;
        if is_ended(&s.state) {
            let html =
                format!("<b>{}</b> has already ended ({}).", escape_html(&s.name), escape_html(&s.state));
            self.reply(chat, &html, None).await;
            return;
        }
        // callback_data holds at most 64 bytes.
        let data = if s.run.len() <= 59 { format!("stop:{}", s.run) } else { format!("stop#{}", s.number) };
        let keyboard = InlineKeyboardMarkup::new([[
            InlineKeyboardButton::callback("Stop it", data),
            InlineKeyboardButton::callback("Cancel", "cancel"),
        ]]);
        let at = s
            .last_epoch
            .as_ref()
            .map(|e| format!(" (epoch {}/{} done)", u64::from(e.epoch) + 1, e.n_epochs))
            .unwrap_or_default();
        let html = format!(
            "Stop <b>{}</b>{at}? It stops at the end of the batch it is on.\n<code>{}</code>",
            escape_html(&s.name),
            escape_html(&s.run)
        );
        self.reply(chat, &html, Some(keyboard)).await;
    }

    async fn button(
        &self,
        chat: i64,
        message: &MaybeInaccessibleMessage,
        query: &str,
        data: &str,
        user: &str,
    ) {
        let message_id = message.id().0;
        let target = data
            .strip_prefix("stop:")
            .map(str::to_owned)
            .or_else(|| data.strip_prefix("stop#").map(str::to_owned));
        let (answer, html) = match target {
            Some(key) => {
                let reason = format!("stop requested from Telegram by {user}");
                match self.host.request_stop(&key, &reason).await {
                    Ok(s) => {
                        tracing::info!(notifier = self.name, chat, user = %user, run = %s.run, "stop requested from Telegram");
                        self.pending().push(PendingStop {
                            run: s.run.clone(),
                            name: s.name.clone(),
                            chat,
                            asked: Instant::now(),
                        });
                        (
                            "Stop requested".to_owned(),
                            format!(
                                "Stop requested for <b>{}</b>: it stops at the end of the batch it is on. I will say when it has.",
                                escape_html(&s.name)
                            ),
                        )
                    }
                    Err(HostError::Ended(run)) => (
                        "Already ended".to_owned(),
                        format!("<b>{}</b> has already ended.", escape_html(&run)),
                    ),
                    Err(e) => ("Not stopped".to_owned(), escape_html(&e.to_string())),
                }
            }
            None if data == "cancel" => ("Cancelled".to_owned(), "Not stopped.".to_owned()),
            None => ("Unknown button".to_owned(), String::new()),
        };
        if let Err(e) = self.api.answer_callback(query, &answer).await {
            tracing::warn!(notifier = self.name, chat, error = %e, "cannot answer a button press");
        }
        if !html.is_empty() {
            // Replacing the text drops the buttons, so the question cannot be answered twice.
            match self.api.edit_html(&Chat::Id(chat), message_id, &html, None).await {
                Ok(()) | Err(Failure::NotModified) => {}
                Err(Failure::NotFound) => {
                    self.reply(chat, &html, None).await;
                }
                Err(f) => {
                    tracing::warn!(notifier = self.name, chat, error = %f.into_error(), "cannot update the stop question")
                }
            }
        }
    }
}

fn describe_user(user: &teloxide::types::User) -> String {
    match &user.username {
        Some(u) => format!("@{u}"),
        None => format!("user {}", user.id.0),
    }
}

fn is_ended(state: &str) -> bool {
    matches!(state, "completed" | "stopped" | "failed" | "lost")
}

/// The /runs answer.
pub fn runs_text(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "No runs yet. Start one with <code>herald train</code>, or any client that posts to the daemon."
            .to_owned();
    }
    let mut out = String::from("<b>Runs</b>");
    for r in runs {
        let mut line = format!("\n{}. <b>{}</b> · {}", r.number, escape_html(&r.name), escape_html(&r.state));
        if r.stop_requested && !is_ended(&r.state) {
            line.push_str(" (stop requested)");
        }
        if let Some(e) = &r.last_epoch {
            line.push_str(&format!("\n    {}", escape_html(&summary(e))));
        }
        out.push_str(&line);
    }
    if runs.iter().any(|r| !is_ended(&r.state)) {
        out.push_str("\n\n/status N shows a run, /stop N stops it.");
    }
    out
}

/// The /status answer: the run's state and its results table in `table`'s layout.
pub fn status_text(view: &RunDetail, table: TableLayout) -> String {
    let s = &view.summary;
    let ctx = &view.context;
    let mut out = format!("<b>{}</b> · {}", escape_html(&s.name), escape_html(&s.state));
    if !ctx.host.is_empty() {
        out.push_str(&format!(" · {}", escape_html(&ctx.host)));
    }
    if s.stop_requested && !is_ended(&s.state) {
        out.push_str(" (stop requested)");
    }
    out.push_str(&format!("\n<code>{}</code>", escape_html(&s.run)));
    match render::table(ctx, table) {
        Some(table) => out.push_str(&format!("\n<pre>{}</pre>", escape_html(&table))),
        None => out.push_str("\nNo epoch has ended yet."),
    }
    out
}

/// The /help answer.
pub fn help_text() -> String {
    let mut out =
        String::from("<b>Herald</b> tells you how your training runs go, and takes these commands:");
    for (c, d) in COMMANDS {
        out.push_str(&format!("\n/{c} · {}", escape_html(d)));
    }
    out.push_str("\nA run is named by its number from /runs, its name or its id.");
    out
}

#[cfg(test)]
mod tests {
    use herald_event::{EpochEnded, Metrics};
    use herald_plugin::RunContext;

    use super::*;

    fn summary_of(number: u32, name: &str, state: &str) -> RunSummary {
        RunSummary {
            number,
            run: format!("run-{number}"),
            name: name.into(),
            state: state.into(),
            last_epoch: Some(EpochEnded {
                epoch: 2,
                n_epochs: 10,
                train_loss: 0.25,
                valid_loss: Some(0.2),
                metrics: Metrics(vec![("accuracy".into(), 0.9)]),
                elapsed_s: 4.0,
            }),
            stop_requested: false,
        }
    }

    #[test]
    fn runs_list_escapes_and_numbers() {
        let text = runs_text(&[summary_of(1, "<mlp>", "active"), summary_of(2, "old", "completed")]);
        assert!(
            text.starts_with("<b>Runs</b>\n1. <b>&lt;mlp&gt;</b> · active\n    epoch 3/10 · train 0.250000"),
            "{text}"
        );
        assert!(text.contains("\n2. <b>old</b> · completed"), "{text}");
        assert!(text.ends_with("/stop N stops it."), "{text}");
        assert!(runs_text(&[]).starts_with("No runs yet"));
    }

    #[test]
    fn status_shows_the_table() {
        let mut ctx = RunContext::new("run-1");
        ctx.epochs.push(summary_of(1, "x", "active").last_epoch.expect("an epoch"));
        let view = RunDetail { summary: summary_of(1, "a&b", "active"), context: ctx, plot: None };
        let text = status_text(&view, TableLayout::Full);
        assert!(
            text.starts_with("<b>a&amp;b</b> · active\n<code>run-1</code>\n<pre>epoch     train_loss"),
            "{text}"
        );
        assert!(text.ends_with("00:04</pre>"), "{text}");
        let text = status_text(&view, TableLayout::Compact);
        assert!(text.starts_with("<b>a&amp;b</b> · active\n<code>run-1</code>\n<pre>ep  train"), "{text}");
        assert!(text.ends_with("00:04</pre>"), "{text}");
    }

    #[test]
    fn help_lists_every_command() {
        let text = help_text();
        for (c, _) in COMMANDS {
            assert!(text.contains(&format!("/{c} ")), "{text}");
        }
    }
}

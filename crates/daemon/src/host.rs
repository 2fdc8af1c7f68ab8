//! The daemon's side of commands from people: [`DaemonHost`] implements `herald_plugin::Host` over the
//! dispatcher's run table, and [`listen`] keeps a command-taking notifier's `listen` task running.
//!
//! A chat notifier (Telegram) asks the host for the runs (each with a short number, stable while the daemon
//! runs, for typing `/stop 2` on a phone), for one run by number, id or name (its results table and its loss
//! curve, drawn by herald-plot from the run's stored history), and to stop a run: that sets the same stop
//! flag as `herald stop`, which reaches the trainer in the answer to its next post (the curve is drawn by
//! `plot.rs`). Rules and mutes from the phone (`/watch`, `/unwatch`, `/mute`, `/unmute`) are checked here and
//! stored on the run through the writer ([`Handle::change_run`]), so they survive a restart with the run
//! table; `/rules` is [`Handle::rules`]. This module sends nothing itself and knows no service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_plugin::{
    Host, HostError, Notifier, OPS, RuleChange, RuleList, RunDetail, RunSummary, WatchRequest,
};

use crate::config::Op;
use crate::handle::Handle;
use crate::runs::{MAX_WATCHES, Mute, RunChange, RunState, Watch, epoch_values};
use crate::shared::now_ms;

/// Ended runs listed by `runs()`, newest first.
const RECENT_ENDED: usize = 10;
/// Ended runs older than this are not listed (they can still be named).
const ENDED_LISTED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// A listener that returned is started again after this long, doubling up to [`RESTART_MAX`].
const RESTART_AFTER: Duration = Duration::from_secs(5);
const RESTART_MAX: Duration = Duration::from_secs(300);

/// The word a phone shows for a run's state.
fn state_word(st: &RunState) -> &'static str {
    match st.state_word() {
        "running" => "active",
        other => other,
    }
}

fn is_ended(st: &RunState) -> bool {
    st.ended.is_some() || st.lost
}

/// `herald_plugin::Host` over the dispatcher.
pub struct DaemonHost {
    handle: Handle,
    numbers: Mutex<Numbers>,
}

#[derive(Default)]
struct Numbers {
    by_run: HashMap<String, u32>,
    next: u32,
}

impl DaemonHost {
    /// The host for notifiers' commands, answering from the dispatcher behind `handle`; run numbers start at 1.
    pub fn new(handle: Handle) -> DaemonHost {
        DaemonHost { handle, numbers: Mutex::new(Numbers { by_run: HashMap::new(), next: 1 }) }
    }

    /// Every run with a results table or a start (not message-only run ids), numbered.
    fn numbered(&self) -> Vec<(u32, String, RunState)> {
        let mut runs: Vec<(String, RunState)> = self
            .handle
            .run_states()
            .into_iter()
            .filter(|(_, st)| st.started || !st.context.epochs.is_empty())
            .collect();
        runs.sort_by(|a, b| a.1.first_ms.cmp(&b.1.first_ms).then_with(|| a.0.cmp(&b.0)));
        let mut numbers = self.numbers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        runs.into_iter()
            .map(|(id, st)| {
                let number = match numbers.by_run.get(&id) {
                    Some(n) => *n,
                    None => {
                        let n = numbers.next;
                        numbers.next = numbers.next.saturating_add(1);
                        numbers.by_run.insert(id.clone(), n);
                        n
                    }
                };
                (number, id, st)
            })
            .collect()
    }

    fn summary(number: u32, id: &str, st: &RunState) -> RunSummary {
        RunSummary {
            number,
            run: id.to_owned(),
            name: st.context.name.clone(),
            state: state_word(st).to_owned(),
            last_epoch: st.context.epochs.last().cloned(),
            stop_requested: st.stop.is_some(),
        }
    }

    /// The run `key` names: its short number (`2` or `#2`), its id, its name (the latest such run), or a
    /// unique start of its id.
    fn find(&self, key: &str) -> Result<(u32, String, RunState), HostError> {
        let key = key.trim();
        let runs = self.numbered();
        if let Ok(n) = key.trim_start_matches('#').parse::<u32>()
            && let Some(found) = runs.iter().find(|(number, _, _)| *number == n)
        {
            return Ok(found.clone());
        }
        if let Some(found) = runs.iter().find(|(_, id, _)| id == key) {
            return Ok(found.clone());
        }
        let latest = |matches: Vec<&(u32, String, RunState)>| {
            matches.into_iter().max_by_key(|(_, _, st)| (!is_ended(st), st.last_event_ms)).cloned()
        };
        if let Some(found) = latest(runs.iter().filter(|(_, _, st)| st.context.name == key).collect()) {
            return Ok(found);
        }
        if let Some(found) =
            latest(runs.iter().filter(|(_, _, st)| st.context.name.eq_ignore_ascii_case(key)).collect())
        {
            return Ok(found);
        }
        if key.len() >= 4 {
            let prefixed: Vec<_> = runs.iter().filter(|(_, id, _)| id.starts_with(key)).collect();
            if let [one] = prefixed.as_slice() {
                return Ok((*one).clone());
            }
        }
        Err(HostError::NoSuchRun(key.to_owned()))
    }

    /// Store a change to the run `id` and answer it as the phone shows it.
    async fn change(
        &self,
        key: &str,
        (number, id, st): (u32, String, RunState),
        change: RunChange,
        note: Option<String>,
    ) -> Result<RuleChange, HostError> {
        match self.handle.change_run(&id, change).await {
            Ok(Some(count)) => Ok(RuleChange { summary: DaemonHost::summary(number, &id, &st), count, note }),
            Ok(None) => Err(HostError::NoSuchRun(key.to_owned())),
            Err(e) => Err(HostError::Other(format!("cannot store the change: {e}"))),
        }
    }
}

/// A note about a new rule: when the run has reported values but none of its metric so far (a typo, most
/// often), or when the latest epoch is over the line already (the rule fires at the next epoch that is).
fn watch_note(st: &RunState, rule: &WatchRequest) -> Option<String> {
    let metric = rule.metric.as_str();
    let last = st.context.epochs.last()?;
    let values = epoch_values(last);
    if let Some((_, v)) = values.iter().find(|(n, _)| n == metric) {
        let over = Op::parse(&rule.op).is_some_and(|op| op.holds(*v, rule.value));
        return over.then(|| {
            format!("{metric} is {v} already: the rule fires at the end of the next epoch where it still is")
        });
    }
    let names: Vec<String> = values.into_iter().map(|(n, _)| n).collect();
    if st.context.metric_names.iter().any(|n| n == metric) {
        return None;
    }
    Some(format!(
        "the run has reported no `{metric}` so far (it has {}); the rule waits for one",
        names.join(", ")
    ))
}

#[async_trait::async_trait]
impl Host for DaemonHost {
    async fn runs(&self) -> Vec<RunSummary> {
        let runs = self.numbered();
        let now = now_ms();
        let mut active: Vec<&(u32, String, RunState)> =
            runs.iter().filter(|(_, _, st)| !is_ended(st)).collect();
        active.sort_by_key(|(n, _, _)| *n);
        let mut ended: Vec<&(u32, String, RunState)> = runs
            .iter()
            .filter(|(_, _, st)| {
                is_ended(st) && now.saturating_sub(st.last_event_ms) < ENDED_LISTED_FOR.as_millis() as u64
            })
            .collect();
        ended.sort_by_key(|(_, _, st)| std::cmp::Reverse(st.last_event_ms));
        ended.truncate(RECENT_ENDED);
        active.into_iter().chain(ended).map(|(n, id, st)| DaemonHost::summary(*n, id, st)).collect()
    }

    async fn run(&self, key: &str) -> Result<RunDetail, HostError> {
        let (number, id, st) = self.find(key)?;
        let points = self.handle.loss_history(&id).await.unwrap_or_default();
        let context = st.context.clone();
        let plot = tokio::task::spawn_blocking(move || crate::plot::loss_plot(&points, &context))
            .await
            .unwrap_or(None);
        Ok(RunDetail { summary: DaemonHost::summary(number, &id, &st), context: st.context, plot })
    }

    async fn request_stop(&self, key: &str, reason: &str) -> Result<RunSummary, HostError> {
        let (number, id, st) = self.find(key)?;
        if is_ended(&st) {
            return Err(HostError::Ended(st.context.name.clone()));
        }
        match self.handle.request_stop(&id, reason).await {
            Ok(true) => {
                tracing::info!(run = %id, reason, "stop requested");
                let mut summary = DaemonHost::summary(number, &id, &st);
                summary.stop_requested = true;
                Ok(summary)
            }
            Ok(false) => Err(HostError::NoSuchRun(key.to_owned())),
            Err(e) => Err(HostError::Other(format!("cannot store the stop request: {e}"))),
        }
    }

    async fn watch(&self, key: &str, rule: WatchRequest, by: &str) -> Result<RuleChange, HostError> {
        let found = self.find(key)?;
        let st = &found.2;
        if Op::parse(&rule.op).is_none() {
            let ops = OPS.join(" ");
            return Err(HostError::Other(format!("unknown comparison `{}`: use one of {ops}", rule.op)));
        }
        if !rule.value.is_finite() {
            return Err(HostError::Other(format!("the value must be a finite number, not `{}`", rule.value)));
        }
        if rule.metric.is_empty() {
            return Err(HostError::Other("name the metric to watch".to_owned()));
        }
        if is_ended(st) {
            return Err(HostError::Ended(st.context.name.clone()));
        }
        if st.watches.len() >= MAX_WATCHES {
            return Err(HostError::Other(format!(
                "run `{}` has {MAX_WATCHES} rules already: /unwatch some first",
                st.context.name
            )));
        }
        let note = watch_note(st, &rule);
        let watch = Watch {
            metric: rule.metric,
            op: rule.op,
            value: rule.value,
            by: by.to_owned(),
            added_ms: now_ms(),
            fired: None,
        };
        tracing::info!(run = %found.1, rule = %watch.name(), by, "rule added from the phone");
        self.change(key, found, RunChange::Watch(watch), note).await
    }

    async fn unwatch(&self, key: &str, metric: Option<&str>) -> Result<RuleChange, HostError> {
        let found = self.find(key)?;
        self.change(key, found, RunChange::Unwatch { metric: metric.map(str::to_owned) }, None).await
    }

    async fn rules(&self) -> RuleList {
        self.handle.rules()
    }

    async fn mute(&self, key: &str, duration: Option<Duration>, by: &str) -> Result<RuleChange, HostError> {
        let found = self.find(key)?;
        if is_ended(&found.2) {
            return Err(HostError::Ended(found.2.context.name.clone()));
        }
        let until_ms =
            duration.map(|d| now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        tracing::info!(run = %found.1, ?duration, by, "run muted from the phone");
        self.change(key, found, RunChange::Mute(Mute { until_ms, by: by.to_owned() }), None).await
    }

    async fn unmute(&self, key: &str) -> Result<RuleChange, HostError> {
        let found = self.find(key)?;
        self.change(key, found, RunChange::Unmute, None).await
    }
}

/// Keep `notifier`'s command listener running until the task is aborted (at shutdown): a listener that
/// returns, with an error or not, is logged and started again, after a delay that doubles while it keeps
/// failing quickly (a wrong token must not hammer the service).
pub async fn listen(name: String, notifier: Arc<dyn Notifier>, host: Arc<dyn Host>) {
    let mut delay = RESTART_AFTER;
    loop {
        let started = std::time::Instant::now();
        let task = tokio::spawn({
            let notifier = notifier.clone();
            let host = host.clone();
            async move { notifier.listen(host).await }
        });
        // Aborting this future drops the inner task's handle only: abort it too.
        let guard = AbortOnDrop(task.abort_handle());
        let result = task.await;
        drop(guard);
        if started.elapsed() > RESTART_MAX {
            delay = RESTART_AFTER;
        }
        let retry_s = delay.as_secs();
        match result {
            Ok(Ok(())) => {
                tracing::error!(notifier = %name, retry_s, "the command listener stopped; starting it again")
            }
            Ok(Err(e)) => {
                tracing::error!(notifier = %name, error = %e, retry_s, "the command listener failed; starting it again")
            }
            Err(e) if e.is_panic() => {
                tracing::error!(notifier = %name, retry_s, "the command listener panicked; starting it again")
            }
            Err(_) => return,
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RESTART_MAX);
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use herald_event::{Event, RunStarted};

    use super::*;

    fn started(run: &str, name: &str) -> Event {
        Event::now(
            run,
            0,
            RunStarted {
                name: name.into(),
                host: "elsewhere".into(),
                pid: 1,
                rank: 0,
                job: None,
                world_size: None,
                n_epochs: 3,
                batches_per_epoch: 2,
                metric_names: vec![],
                hyper: Default::default(),
            },
        )
    }

    #[tokio::test]
    async fn runs_are_numbered_found_by_number_name_or_id_and_stopped() {
        let outbox = std::sync::Arc::new(crate::outbox::MemoryOutbox::new());
        let options =
            crate::Options { hostname: "here".into(), ..crate::Options::new(Duration::from_secs(3600)) };
        let dispatcher = crate::Dispatcher::start(outbox, Vec::new(), options).await.expect("dispatcher");
        let handle = dispatcher.handle();
        handle.ingest(vec![started("run-aaaa-1", "mnist")]).await.expect("stored");
        handle.ingest(vec![started("run-bbbb-2", "cifar")]).await.expect("stored");
        let finished = herald_event::RunFinished {
            status: herald_event::RunStatus::Completed,
            reason: "done".into(),
            duration_s: 1.0,
            best: None,
        };
        handle.ingest(vec![Event::now("run-bbbb-2", 1, finished)]).await.expect("stored");
        let host = DaemonHost::new(handle.clone());
        let runs = host.runs().await;
        let listed: Vec<(u32, &str, &str)> =
            runs.iter().map(|r| (r.number, r.name.as_str(), r.state.as_str())).collect();
        assert_eq!(listed, [(1, "mnist", "active"), (2, "cifar", "completed")], "active first");
        assert_eq!(host.run("1").await.expect("by number").summary.run, "run-aaaa-1");
        assert_eq!(host.run("#2").await.expect("by #number").summary.run, "run-bbbb-2");
        assert_eq!(host.run("cifar").await.expect("by name").summary.run, "run-bbbb-2");
        assert_eq!(host.run("run-aaaa").await.expect("by id prefix").summary.run, "run-aaaa-1");
        assert!(matches!(host.run("nope").await, Err(HostError::NoSuchRun(_))));
        assert!(matches!(host.request_stop("2", "phone").await, Err(HostError::Ended(_))));
        let stopped = host.request_stop("mnist", "from the phone").await.expect("stop requested");
        assert!(stopped.stop_requested);
        let control = handle.control("run-aaaa-1");
        assert_eq!((control.stop, control.reason.as_deref()), (true, Some("from the phone")));
        // Numbers stay put when a new run arrives.
        handle.ingest(vec![started("run-cccc-3", "mnist")]).await.expect("stored");
        let runs = host.runs().await;
        assert_eq!(runs.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 3, 2]);
        assert_eq!(
            host.run("mnist").await.expect("by name").summary.run,
            "run-cccc-3",
            "the latest of that name"
        );
        dispatcher.shutdown(Duration::from_millis(100)).await;
    }

    fn epoch(run: &str, e: u32, accuracy: f64) -> Event {
        let ended = herald_event::EpochEnded {
            epoch: e,
            n_epochs: 5,
            train_loss: 0.5,
            valid_loss: Some(0.4),
            metrics: herald_event::Metrics(vec![("accuracy".into(), accuracy)]),
            elapsed_s: 1.0,
        };
        Event::now(run, u64::from(e) + 1, ended)
    }

    #[tokio::test]
    async fn phone_rules_are_checked_stored_fire_once_and_are_listed_with_mutes() {
        let outbox = std::sync::Arc::new(crate::outbox::MemoryOutbox::new());
        let options = crate::Options::new(Duration::from_secs(3600));
        let dispatcher = crate::Dispatcher::start(outbox, Vec::new(), options).await.expect("dispatcher");
        let handle = dispatcher.handle();
        handle
            .ingest(vec![started("run-aaaa-1", "mnist"), epoch("run-aaaa-1", 0, 0.5)])
            .await
            .expect("stored");
        let host = DaemonHost::new(handle.clone());
        let rule =
            |metric: &str, op: &str, value: f64| WatchRequest { metric: metric.into(), op: op.into(), value };
        for (request, expected) in [
            (rule("accuracy", "=>", 0.9), "unknown comparison `=>`: use one of > >= < <="),
            (rule("accuracy", ">=", f64::NAN), "the value must be a finite number, not `NaN`"),
            (rule("", ">=", 0.9), "name the metric to watch"),
        ] {
            let answer = host.watch("1", request, "@me").await;
            assert_eq!(answer, Err(HostError::Other(expected.to_owned())));
        }
        assert!(matches!(
            host.watch("9", rule("accuracy", ">", 0.9), "@me").await,
            Err(HostError::NoSuchRun(_))
        ));
        let added = host.watch("mnist", rule("accuracy", ">=", 0.9), "@me").await.expect("added");
        assert_eq!((added.summary.run.as_str(), added.count, added.note), ("run-aaaa-1", 1, None));
        let typo = host.watch("1", rule("acuracy", ">", 0.1), "@me").await.expect("added");
        assert!(
            typo.note
                .is_some_and(|n| n.contains("no `acuracy` so far (it has train_loss, valid_loss, accuracy)"))
        );
        assert_eq!(host.unwatch("1", Some("acuracy")).await.expect("removed").count, 1);
        let over = host.watch("1", rule("valid_loss", "<", 0.5), "@me").await.expect("added");
        assert_eq!(
            over.note.as_deref(),
            Some("valid_loss is 0.4 already: the rule fires at the end of the next epoch where it still is")
        );
        assert_eq!(host.unwatch("1", Some("valid_loss")).await.expect("removed").count, 1);

        // Crossing: one alert, counted for the rule, then none.
        for (e, acc) in [(1, 0.8), (2, 0.95), (3, 0.97)] {
            handle.ingest(vec![epoch("run-aaaa-1", e, acc)]).await.expect("stored");
        }
        let list = host.rules().await;
        assert_eq!(list.phone.len(), 1);
        assert_eq!(list.phone[0].name, "watch accuracy >= 0.9");
        assert_eq!(list.phone[0].fired_for.len(), 1);
        assert_eq!(list.phone[0].fired_for[0].times, 1, "once");
        let (_, st) = handle.run_states().into_iter().find(|(id, _)| id == "run-aaaa-1").expect("the run");
        assert_eq!(st.watches[0].fired, Some(2));
        assert_eq!(st.made, 1, "one alert made");

        // Mutes: listed while active, ended by /unmute.
        assert_eq!(host.mute("1", Some(Duration::from_secs(1800)), "@me").await.expect("muted").count, 1);
        let mutes = host.rules().await.mutes;
        assert_eq!(mutes.len(), 1);
        assert!(mutes[0].until_ms.is_some_and(|t| t > now_ms() + 1_700_000), "{mutes:?}");
        assert_eq!(host.unmute("1").await.expect("unmuted").count, 1);
        assert_eq!(host.unmute("1").await.expect("answered").count, 0);
        assert!(host.rules().await.mutes.is_empty());
        assert_eq!(host.unwatch("1", None).await.expect("removed").count, 1);
        assert!(host.rules().await.phone.is_empty());
        dispatcher.shutdown(Duration::from_millis(100)).await;
    }
}

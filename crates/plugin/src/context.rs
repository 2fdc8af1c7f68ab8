//! Keeping a [`RunContext`] up to date from a run's events.
//!
//! The daemon keeps one context per run and calls [`RunContext::apply`] for each event it accepts;
//! [`crate::render::notification`] applies the triggering event once more to its own copy, so a caller may
//! apply before rendering or not. `apply` is idempotent: at-least-once delivery replays events, and a
//! replayed `epoch_ended` replaces its row instead of adding a second one. This module does no I/O.

use herald_event::{EpochEnded, Event, Payload, RunStarted};

use crate::notifier::RunContext;

impl RunContext {
    /// The context of a run nothing is known about yet: its name is its id.
    pub fn new(run_id: &str) -> RunContext {
        RunContext { run: run_id.to_owned(), name: run_id.to_owned(), ..RunContext::default() }
    }

    /// The context a `run_started` event sets up.
    pub fn from_started(run_id: &str, started: &RunStarted) -> RunContext {
        let mut ctx = RunContext::new(run_id);
        ctx.fill(started);
        ctx
    }

    fn fill(&mut self, started: &RunStarted) {
        if !started.name.is_empty() {
            self.name = started.name.clone();
        }
        self.host = started.host.clone();
        self.pid = started.pid;
        self.rank = started.rank;
        self.n_epochs = started.n_epochs;
        self.batches_per_epoch = started.batches_per_epoch;
        self.metric_names = started.metric_names.clone();
        self.hyper = started.hyper.clone();
    }

    /// Update the context with one of the run's events: `run_started` fills it in, `epoch_ended` adds its
    /// row to the results table (replacing a replayed row), the rest change nothing. Idempotent.
    pub fn apply(&mut self, event: &Event) {
        if self.run.is_empty() {
            self.run = event.run.clone();
        }
        if self.name.is_empty() {
            self.name = event.run.clone();
        }
        match &event.payload {
            Payload::RunStarted(started) => self.fill(started),
            Payload::EpochEnded(epoch) => self.push_epoch(epoch),
            _ => {}
        }
    }

    fn push_epoch(&mut self, epoch: &EpochEnded) {
        if self.n_epochs == 0 {
            self.n_epochs = epoch.n_epochs;
        }
        match self.epochs.last_mut() {
            Some(last) if last.epoch == epoch.epoch && last.n_epochs == epoch.n_epochs => {
                *last = epoch.clone()
            }
            _ => self.epochs.push(epoch.clone()),
        }
    }

    /// The latest `epoch_ended`, if any.
    pub fn last_epoch(&self) -> Option<&EpochEnded> {
        self.epochs.last()
    }

    /// The metric columns of the results table: the run's `metric_names`, or when no `run_started` was seen,
    /// the names the epochs report, in first-seen order.
    pub fn table_metric_names(&self) -> Vec<String> {
        if !self.metric_names.is_empty() {
            return self.metric_names.clone();
        }
        let mut names: Vec<String> = Vec::new();
        for e in &self.epochs {
            for (name, _) in e.metrics.iter() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use herald_event::{Message, Metrics};

    use super::*;

    fn started() -> RunStarted {
        RunStarted {
            name: "mnist".into(),
            host: "gpu1".into(),
            pid: 42,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 3,
            batches_per_epoch: 100,
            metric_names: vec!["accuracy".into()],
            hyper: [("lr".to_owned(), serde_json::json!(0.01))].into_iter().collect(),
        }
    }

    fn epoch(n: u32, train: f64) -> EpochEnded {
        EpochEnded {
            epoch: n,
            n_epochs: 3,
            train_loss: train,
            valid_loss: Some(0.5),
            metrics: Metrics(vec![("accuracy".into(), 0.9)]),
            elapsed_s: 1.0,
        }
    }

    #[test]
    fn apply_builds_the_table_and_is_idempotent() {
        let mut ctx = RunContext::default();
        ctx.apply(&Event::now("r1", 0, started()));
        assert_eq!(ctx, RunContext::from_started("r1", &started()));
        assert_eq!((ctx.name.as_str(), ctx.host.as_str(), ctx.pid), ("mnist", "gpu1", 42));
        ctx.apply(&Event::now("r1", 1, epoch(0, 0.9)));
        ctx.apply(&Event::now("r1", 1, epoch(0, 0.8)));
        ctx.apply(&Event::now("r1", 2, epoch(1, 0.7)));
        ctx.apply(&Event::now("r1", 2, epoch(1, 0.7)));
        ctx.apply(&Event::now(
            "r1",
            3,
            Message { title: "t".into(), text: "x".into(), level: Default::default() },
        ));
        assert_eq!(
            ctx.epochs.iter().map(|e| (e.epoch, e.train_loss)).collect::<Vec<_>>(),
            [(0, 0.8), (1, 0.7)]
        );
        // A replayed run_started keeps the table.
        ctx.apply(&Event::now("r1", 0, started()));
        assert_eq!(ctx.epochs.len(), 2);
    }

    #[test]
    fn unknown_run_is_named_after_its_id() {
        let mut ctx = RunContext::default();
        ctx.apply(&Event::now("r9", 0, epoch(0, 1.0)));
        assert_eq!((ctx.run.as_str(), ctx.name.as_str(), ctx.n_epochs), ("r9", "r9", 3));
        assert_eq!(ctx.table_metric_names(), ["accuracy"]);
        assert_eq!(RunContext::new("x").name, "x");
    }
}

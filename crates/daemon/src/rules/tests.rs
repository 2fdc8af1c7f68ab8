//! Each rule kind against event sequences, fed as the writer feeds them: applied to the run's state, then
//! evaluated.

use std::collections::{BTreeMap, HashMap};

use herald_event::{
    Alert, BatchEnded, EpochEnded, Event, Level, Message, Metrics, Payload, RunFailed, RunFinished, RunLost,
    RunStarted, RunStatus,
};

use super::*;
use crate::runs::MADE_SEQ_BASE;

/// Runs by id, as the writer's run table, and the rules under test.
struct Bench {
    rules: Rules,
    runs: HashMap<String, RunState>,
    seq: u64,
}

impl Bench {
    fn new(rules: Vec<RuleConfig>) -> Bench {
        Bench { rules: Rules::new(rules), runs: HashMap::new(), seq: 0 }
    }

    /// Apply `payload` as an event of run `run` and return the alerts it made.
    fn post(&mut self, run: &str, payload: impl Into<Payload>) -> Vec<Alert> {
        let payload = payload.into();
        let made = matches!(payload, Payload::RunLost(_));
        self.seq += 1;
        let event = Event::now(run, if made { MADE_SEQ_BASE + self.seq } else { self.seq }, payload);
        let mut st = self.runs.remove(run).unwrap_or_else(|| RunState::new(run));
        st.apply(&event, made, self.seq);
        let runs = &self.runs;
        let others = |f: &mut dyn FnMut(&RunState)| runs.values().for_each(&mut *f);
        let fired: Vec<Alert> =
            self.rules.evaluate(&mut st, &event, &others).into_iter().map(|f| f.alert).collect();
        self.runs.insert(run.to_owned(), st);
        fired
    }

    fn start(&mut self, run: &str, name: &str) -> Vec<Alert> {
        self.post(
            run,
            RunStarted {
                name: name.into(),
                host: "h".into(),
                pid: 1,
                rank: 0,
                job: None,
                world_size: None,
                n_epochs: 10,
                batches_per_epoch: 100,
                metric_names: vec!["accuracy".into()],
                hyper: BTreeMap::new(),
            },
        )
    }
}

fn batch(epoch: u32, batch: u64, loss: f64) -> BatchEnded {
    BatchEnded { epoch, batch, n_batches: 100, loss, smooth_loss: loss, lr: 0.01 }
}

fn epoch(epoch: u32, valid_loss: f64, accuracy: f64, elapsed_s: f64) -> EpochEnded {
    EpochEnded {
        epoch,
        n_epochs: 10,
        train_loss: 0.5,
        valid_loss: Some(valid_loss),
        metrics: Metrics(vec![("accuracy".into(), accuracy)]),
        elapsed_s,
    }
}

/// The epochs (0-based) at which the sequence of epochs made an alert, for one rule on one run.
fn epochs_fired(rule: RuleConfig, epochs: &[EpochEnded]) -> Vec<u32> {
    let mut bench = Bench::new(vec![rule]);
    bench.start("r", "mnist");
    let mut fired = Vec::new();
    for e in epochs {
        for a in bench.post("r", e.clone()) {
            fired.push(a.epoch.expect("epoch alerts name their epoch"));
        }
    }
    fired
}

fn losses(values: &[f64]) -> Vec<EpochEnded> {
    values.iter().enumerate().map(|(i, &v)| epoch(i as u32, v, 0.5, 1.0)).collect()
}

fn accuracies(values: &[f64]) -> Vec<EpochEnded> {
    values.iter().enumerate().map(|(i, &v)| epoch(i as u32, 1.0, v, 1.0)).collect()
}

#[test]
fn nan_batches_make_one_alert_until_a_finite_batch_rearms_the_rule() {
    let mut bench = Bench::new(vec![RuleConfig::new("diverged", RuleKind::Nan)]);
    bench.start("r", "mnist");
    let losses = [0.9, f64::NAN, f64::NAN, f64::INFINITY, 0.8, f64::INFINITY];
    let mut fired = Vec::new();
    for (i, loss) in losses.into_iter().enumerate() {
        for a in bench.post("r", batch(2, i as u64, loss)) {
            fired.push((i, a));
        }
    }
    let at: Vec<usize> = fired.iter().map(|(i, _)| *i).collect();
    assert_eq!(at, [1, 5]);
    let (_, first) = &fired[0];
    assert_eq!(first.rule.as_deref(), Some("diverged"));
    assert_eq!(first.level, Level::Error);
    assert_eq!(first.epoch, Some(2));
    assert_eq!(first.title, "diverged: NaN loss");
    assert_eq!(first.text, "batch 2/100 of epoch 3: loss NaN, smooth_loss NaN");
    assert_eq!(fired[1].1.title, "diverged: infinite loss");
}

#[test]
fn nan_at_an_epoch_end_names_the_values() {
    let mut bench = Bench::new(vec![RuleConfig::new("diverged", RuleKind::Nan)]);
    bench.start("r", "mnist");
    assert!(bench.post("r", epoch(0, 0.4, 0.9, 1.0)).is_empty());
    let fired = bench.post("r", epoch(1, f64::NAN, f64::NEG_INFINITY, 1.0));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].text, "epoch 2/10: valid_loss NaN, accuracy -inf");
    assert_eq!(fired[0].title, "diverged: NaN value");
    assert!(bench.post("r", epoch(2, f64::NAN, 0.9, 1.0)).is_empty(), "still NaN: no second alert");
}

#[test]
fn a_threshold_crossed_twice_fires_twice() {
    let target = RuleKind::Threshold { metric: "accuracy".into(), op: Op::Ge, value: 0.98 };
    let fired =
        epochs_fired(RuleConfig::new("target", target.clone()), &accuracies(&[0.9, 0.985, 0.99, 0.97, 0.99]));
    assert_eq!(fired, [1, 4]);
    let low = RuleKind::Threshold { metric: "valid_loss".into(), op: Op::Lt, value: 0.1 };
    let fired =
        epochs_fired(RuleConfig::new("low", low), &losses(&[0.5, 0.1, 0.09, f64::NAN, 0.08, 0.2, 0.05]));
    assert_eq!(fired, [2, 6], "a NaN neither fires nor re-arms a threshold");

    let mut bench = Bench::new(vec![RuleConfig::new("target", target)]);
    bench.start("r", "mnist");
    let a = bench.post("r", epoch(3, 0.1, 0.99, 1.0)).pop().expect("fires");
    assert_eq!((a.title.as_str(), a.level), ("target: accuracy >= 0.98", Level::Info));
    assert_eq!(a.text, "accuracy 0.99 at epoch 4/10");
}

#[test]
fn a_plateau_fires_after_patience_and_rearms_when_it_recovers() {
    let stuck = RuleKind::Plateau { metric: "valid_loss".into(), patience: 3, min_delta: 0.0 };
    let seq = [1.0, 0.9, 0.95, 0.95, 0.92, 0.91, 0.8, 0.85, 0.85, 0.85];
    assert_eq!(epochs_fired(RuleConfig::new("stuck", stuck), &losses(&seq)), [4, 9]);
    // An improvement smaller than min_delta is none.
    let strict = RuleKind::Plateau { metric: "valid_loss".into(), patience: 2, min_delta: 0.05 };
    assert_eq!(epochs_fired(RuleConfig::new("stuck", strict), &losses(&[1.0, 0.97, 0.96, 0.9])), [2]);
    // Higher accuracy is better.
    let acc = RuleKind::Plateau { metric: "accuracy".into(), patience: 2, min_delta: 0.0 };
    assert_eq!(epochs_fired(RuleConfig::new("stuck", acc), &accuracies(&[0.5, 0.6, 0.55, 0.6, 0.7])), [3]);
}

#[test]
fn diverging_fires_when_worse_than_the_best_by_the_factor() {
    let over = RuleKind::Diverging { metric: "valid_loss".into(), factor: 1.5 };
    let seq = [1.0, 0.5, 0.6, 0.8, 0.9, 0.7, 0.76];
    assert_eq!(epochs_fired(RuleConfig::new("overfitting", over.clone()), &losses(&seq)), [3, 6]);
    let acc = RuleKind::Diverging { metric: "accuracy".into(), factor: 2.0 };
    assert_eq!(epochs_fired(RuleConfig::new("collapse", acc), &accuracies(&[0.8, 0.9, 0.5, 0.4])), [3]);

    let mut bench = Bench::new(vec![RuleConfig::new("overfitting", over)]);
    bench.start("r", "mnist");
    bench.post("r", epoch(0, 0.5, 0.5, 1.0));
    let a = bench.post("r", epoch(1, 1.0, 0.5, 1.0)).pop().expect("fires");
    assert_eq!(a.text, "valid_loss 1 at epoch 2/10 (2 times), against its best 0.5 at epoch 1");
    assert_eq!(a.level, Level::Warning);
}

#[test]
fn slow_epochs_are_judged_against_the_median_of_earlier_ones() {
    let slow = RuleConfig::new("slow", RuleKind::SlowEpoch { factor: 2.0 });
    let epochs: Vec<EpochEnded> = [30.0, 10.0, 10.0, 25.0, 30.0, 10.0, 40.0]
        .iter()
        .enumerate()
        .map(|(i, &s)| epoch(i as u32, 0.5, 0.5, s))
        .collect();
    // Epoch 0 and 1 only make the history; 3 is 2.5x the median 10 (of 30, 10, 10); 4 is still slow (no
    // second alert), 5 clears, 6 is slow again.
    assert_eq!(epochs_fired(slow.clone(), &epochs), [3, 6]);
    let mut bench = Bench::new(vec![slow]);
    bench.start("r", "mnist");
    for e in &epochs[..3] {
        bench.post("r", e.clone());
    }
    let a = bench.post("r", epochs[3].clone()).pop().expect("fires");
    assert_eq!(a.text, "epoch 4/10 took 25s, 2.5 times the run's median epoch of 10s");
}

#[test]
fn slow_epoch_rules_share_one_list_of_the_runs_epoch_times() {
    let rules = vec![
        RuleConfig::new("slow", RuleKind::SlowEpoch { factor: 2.0 }),
        RuleConfig::new("very slow", RuleKind::SlowEpoch { factor: 3.0 }),
    ];
    let mut bench = Bench::new(rules);
    bench.start("r", "mnist");
    let mut fired = Vec::new();
    for (i, s) in [10.0, 10.0, 10.0, 25.0, 10.0, 35.0].into_iter().enumerate() {
        for a in bench.post("r", epoch(i as u32, 0.5, 0.5, s)) {
            fired.push((a.rule.expect("a rule's alert"), a.epoch.expect("an epoch")));
        }
    }
    // 25 s is slow (2.5x the median 10) but not very slow; 35 s is both, judged against the same median.
    let expected = [("slow", 3), ("slow", 5), ("very slow", 5)];
    assert_eq!(fired, expected.map(|(r, e)| (r.to_owned(), e)));
    let st = &bench.runs["r"];
    assert_eq!(st.epoch_times_s, [10.0, 10.0, 10.0, 25.0, 10.0, 35.0], "one list, once per epoch");
    // The list keeps the latest 64 durations.
    for i in 6..100 {
        bench.post("r", epoch(i, 0.5, 0.5, f64::from(i)));
    }
    let times = &bench.runs["r"].epoch_times_s;
    assert_eq!((times.len(), times[0], times[63]), (64, 36.0, 99.0));
}

#[test]
fn alerts_of_one_epoch_come_in_configuration_order_and_only_watching_rules_keep_a_memory() {
    let threshold = |name: &str, metric: &str, op, value| {
        RuleConfig::new(name, RuleKind::Threshold { metric: metric.into(), op, value })
    };
    let mut elsewhere = threshold("beta", "accuracy", Op::Ge, 0.1);
    elsewhere.runs = Glob::new("other-*").expect("valid");
    let rules = vec![
        threshold("zeta", "accuracy", Op::Ge, 0.5),
        elsewhere,
        threshold("alpha", "valid_loss", Op::Lt, 1.0),
        threshold("mu", "accuracy", Op::Ge, 0.95),
    ];
    let mut bench = Bench::new(rules);
    bench.start("r", "mnist");
    for (i, expected) in [(0, &["zeta", "alpha"][..]), (1, &[]), (2, &["mu"])] {
        let fired: Vec<String> = bench
            .post("r", epoch(i, 0.5, [0.9, 0.9, 0.96][i as usize], 1.0))
            .into_iter()
            .map(|a| a.rule.expect("a rule's alert"))
            .collect();
        assert_eq!(fired, expected, "epoch {i}");
    }
    let kept: Vec<&String> = bench.runs["r"].rules.keys().collect();
    assert_eq!(kept, ["alpha", "mu", "zeta"], "no memory for a rule that does not watch the run");
}

#[test]
fn a_metric_the_run_does_not_have_is_said_once() {
    let typo = RuleKind::Threshold { metric: "acc".into(), op: Op::Ge, value: 0.9 };
    let mut bench = Bench::new(vec![RuleConfig::new("target", typo)]);
    bench.start("r", "mnist");
    let said = bench.post("r", epoch(0, 0.5, 0.95, 1.0));
    assert_eq!(said.len(), 1);
    assert_eq!(said[0].level, Level::Info);
    assert_eq!(said[0].title, "target: no `acc` in this run");
    assert!(said[0].text.contains("it has train_loss, valid_loss, accuracy"), "{}", said[0].text);
    assert!(bench.post("r", epoch(1, 0.5, 0.95, 1.0)).is_empty());
    // A run that had the metric before and skips it in one epoch (no validation) is not told.
    let vl = RuleKind::Threshold { metric: "valid_loss".into(), op: Op::Lt, value: 0.01 };
    let mut bench = Bench::new(vec![RuleConfig::new("low", vl)]);
    bench.start("r", "mnist");
    assert!(bench.post("r", epoch(0, 0.5, 0.9, 1.0)).is_empty());
    let mut skipped = epoch(1, 0.5, 0.9, 1.0);
    skipped.valid_loss = None;
    assert!(bench.post("r", skipped).is_empty());
}

#[test]
fn all_finished_fires_when_the_last_of_three_runs_ends_one_of_them_lost() {
    let mut done = RuleConfig::new("sweep done", RuleKind::AllFinished);
    done.runs = Glob::new("sweep-*").expect("valid");
    let mut bench = Bench::new(vec![done]);
    for (run, name) in [("a", "sweep-a"), ("b", "sweep-b"), ("c", "sweep-c"), ("x", "other")] {
        assert!(bench.start(run, name).is_empty());
    }
    let finished = |status| RunFinished { status, reason: "done".into(), duration_s: 1.0, best: None };
    assert!(bench.post("a", finished(RunStatus::Completed)).is_empty());
    assert!(bench.post("c", RunLost { pid: 1, reason: "gone".into() }).is_empty());
    let fired = bench.post("b", RunFailed { error: "oom".into(), traceback: None });
    assert_eq!(fired.len(), 1, "the running `other` does not match and does not hold it back");
    assert_eq!(fired[0].title, "sweep done: all runs finished");
    assert_eq!(
        fired[0].text,
        "all 3 runs matching `sweep-*` ended: 1 completed, 1 failed, 1 lost; the last was sweep-b"
    );
    assert_eq!((fired[0].level, fired[0].epoch), (Level::Info, None));
    assert!(bench.post("x", finished(RunStatus::Completed)).is_empty(), "not matched");
    // The next sweep under the same pattern fires again.
    assert!(bench.start("d", "sweep-d").is_empty());
    let again = bench.post("d", finished(RunStatus::Stopped));
    assert_eq!(again.len(), 1);
    assert!(
        again[0]
            .text
            .starts_with("all 4 runs matching `sweep-*` ended: 1 completed, 1 stopped, 1 failed, 1 lost")
    );
}

#[test]
fn a_lost_run_that_comes_back_rearms_all_finished() {
    let mut bench = Bench::new(vec![RuleConfig::new("all", RuleKind::AllFinished)]);
    bench.start("a", "one");
    assert_eq!(bench.post("a", RunLost { pid: 1, reason: "gone".into() }).len(), 1);
    assert!(bench.post("a", epoch(0, 0.5, 0.5, 1.0)).is_empty());
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None };
    assert_eq!(bench.post("a", finished).len(), 1);
}

#[test]
fn a_lost_run_that_comes_back_with_batches_only_fires_all_finished_again_at_its_end() {
    let rules = vec![RuleConfig::new("all", RuleKind::AllFinished), RuleConfig::new("nan", RuleKind::Nan)];
    let mut bench = Bench::new(rules);
    bench.start("a", "one");
    assert_eq!(bench.post("a", RunLost { pid: 1, reason: "gone".into() }).len(), 1);
    for b in 0..3 {
        assert!(bench.post("a", batch(0, b, 0.5)).is_empty());
    }
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None };
    let again = bench.post("a", finished);
    assert_eq!(again.len(), 1, "the end after coming back is a new end");
    assert!(again[0].text.contains("1 completed"), "{}", again[0].text);
    // A late message of the ended run is no new end.
    let late = Message { title: "t".into(), text: "bye".into(), level: Level::Info };
    assert!(bench.post("a", late).is_empty());
}

#[test]
fn all_finished_walks_the_other_runs_only_at_an_end_never_per_batch() {
    use std::cell::Cell;
    let rules = Rules::new(vec![
        RuleConfig::new("all", RuleKind::AllFinished),
        RuleConfig::new("nan", RuleKind::Nan),
    ]);
    let walks = Cell::new(0);
    let others = |_: &mut dyn FnMut(&RunState)| walks.set(walks.get() + 1);
    let mut st = RunState::new("r");
    let mut seq = 0;
    let mut post = |st: &mut RunState, payload: Payload| {
        seq += 1;
        let made = matches!(payload, Payload::RunLost(_));
        let event = Event::now("r", if made { MADE_SEQ_BASE + seq } else { seq }, payload);
        st.apply(&event, made, seq);
        rules.evaluate(st, &event, &others).len()
    };
    let started = RunStarted {
        name: "sweep-1".into(),
        host: "h".into(),
        pid: 1,
        rank: 0,
        job: None,
        world_size: None,
        n_epochs: 1,
        batches_per_epoch: 1000,
        metric_names: vec![],
        hyper: BTreeMap::new(),
    };
    assert_eq!(post(&mut st, started.clone().into()), 0);
    for b in 0..1000 {
        assert_eq!(post(&mut st, batch(0, b, 0.5).into()), 0);
    }
    assert_eq!(post(&mut st, epoch(0, 0.5, 0.5, 1.0).into()), 0);
    assert_eq!(walks.get(), 0, "a running run's events walk no other run");
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 1.0, best: None };
    assert_eq!(post(&mut st, finished.clone().into()), 1);
    assert_eq!(walks.get(), 1);
    assert!(st.rules["all"].fired);
    let late = Message { title: "t".into(), text: "bye".into(), level: Level::Info };
    assert_eq!(post(&mut st, late.into()), 0);
    assert_eq!(walks.get(), 1, "nor do the events of an ended run but its end");
    // Started again: re-armed (by run_started, not by its batches), and its next end fires again.
    assert_eq!(post(&mut st, started.into()), 0);
    assert!(!st.rules["all"].fired);
    assert_eq!(post(&mut st, batch(0, 0, 0.5).into()), 0);
    assert_eq!(post(&mut st, finished.into()), 1);
    assert_eq!(walks.get(), 2);
}

#[test]
fn rules_watch_only_runs_matching_their_glob_and_never_alerts() {
    let mut nan = RuleConfig::new("diverged", RuleKind::Nan);
    nan.runs = Glob::new("prod-*").expect("valid");
    nan.notifiers = Some(vec!["phone".into()]);
    let rules = Rules::new(vec![nan]);
    let mut st = RunState::new("r");
    let started = Event::now(
        "r",
        0,
        RunStarted {
            name: "dev-1".into(),
            host: "h".into(),
            pid: 1,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 1,
            batches_per_epoch: 1,
            metric_names: vec![],
            hyper: BTreeMap::new(),
        },
    );
    st.apply(&started, false, 1);
    let none = |_: &mut dyn FnMut(&RunState)| {};
    let nan_batch = Event::now("r", 1, batch(0, 0, f64::NAN));
    assert!(rules.evaluate(&mut st, &nan_batch, &none).is_empty());
    st.context.name = "prod-1".into();
    let fired = rules.evaluate(&mut st, &nan_batch, &none);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].notifiers, Some(&["phone".to_owned()][..]));
    let alert = Event::now("r", 2, fired[0].alert.clone());
    let message = Event::now("r", 3, Message { title: "t".into(), text: "NaN".into(), level: Level::Error });
    st.rules.clear();
    assert!(rules.evaluate(&mut st, &alert, &none).is_empty());
    assert!(rules.evaluate(&mut st, &message, &none).is_empty());
}

#[test]
fn what_a_rule_remembers_survives_a_restart_of_the_run_table() {
    let mut bench = Bench::new(vec![RuleConfig::new("diverged", RuleKind::Nan)]);
    bench.start("r", "mnist");
    assert_eq!(bench.post("r", batch(0, 0, f64::NAN)).len(), 1);
    let stored = serde_json::to_string(&bench.runs["r"]).expect("a run state encodes");
    let restored: RunState = serde_json::from_str(&stored).expect("and decodes");
    bench.runs.insert("r".into(), restored);
    assert!(bench.post("r", batch(0, 1, f64::NAN)).is_empty(), "fired before the restart: not again");
    // A run state stored before rules existed reads with no memory.
    let mut old: serde_json::Value = serde_json::from_str(&stored).expect("json");
    old.as_object_mut().expect("an object").remove("rules");
    let old: RunState = serde_json::from_value(old).expect("an old record decodes");
    assert!(old.rules.is_empty());
}

#[test]
fn batches_and_alerts_cost_nothing_without_a_rule_that_watches_them() {
    use herald_event::EventKind;
    let epochs_only = Rules::new(vec![RuleConfig::new("slow", RuleKind::SlowEpoch { factor: 2.0 })]);
    assert!(!epochs_only.watches(EventKind::BatchEnded));
    assert!(epochs_only.watches(EventKind::EpochEnded) && epochs_only.watches(EventKind::RunFinished));
    let nan = Rules::new(vec![RuleConfig::new("diverged", RuleKind::Nan)]);
    assert!(nan.watches(EventKind::BatchEnded));
    assert!(!nan.watches(EventKind::Alert), "a rule never feeds on alerts");
    assert!(!Rules::new(Vec::new()).watches(EventKind::EpochEnded));
}

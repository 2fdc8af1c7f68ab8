//! The cost of alert rules (issue 15): `Rules::evaluate` per `epoch_ended` with 100 rules and per
//! `batch_ended` with a NaN rule, and the in-process ingest of the same events (decide, commit to the memory
//! outbox, publish) with and without those rules, whose ratio is the figure the issue asks for (goal: under
//! 5% slower). `cargo bench -p herald-daemon --bench rules`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use herald_daemon::config::{Op, RuleConfig, RuleKind};
use herald_daemon::rules::Rules;
use herald_daemon::runs::RunState;
use herald_daemon::{Dispatcher, MemoryOutbox, Options};
use herald_event::{BatchEnded, EpochEnded, Event, Metrics, RunStarted};

/// 100 rules: 20 each of threshold, plateau, diverging, slow_epoch and nan, on the run's metrics.
fn hundred_rules() -> Vec<RuleConfig> {
    (0..100)
        .map(|i| {
            let metric = ["accuracy", "valid_loss", "train_loss", "f1"][i % 4].to_owned();
            let kind = match i % 5 {
                0 => RuleKind::Threshold { metric, op: Op::Ge, value: 0.9 + i as f64 / 1000.0 },
                1 => RuleKind::Plateau { metric, patience: 3 + (i as u32 % 5), min_delta: 0.0 },
                2 => RuleKind::Diverging { metric, factor: 1.5 },
                3 => RuleKind::SlowEpoch { factor: 2.0 },
                _ => RuleKind::Nan,
            };
            RuleConfig::new(format!("rule-{i}"), kind)
        })
        .collect()
}

fn nan_rule() -> Vec<RuleConfig> {
    vec![RuleConfig::new("diverged", RuleKind::Nan)]
}

fn started(run: &str) -> Event {
    Event::now(
        run,
        0,
        RunStarted {
            name: run.into(),
            host: "bench".into(),
            pid: 1,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 1_000_000,
            batches_per_epoch: 1000,
            metric_names: vec!["accuracy".into(), "f1".into()],
            hyper: BTreeMap::new(),
        },
    )
}

/// Epoch `seq` of a run of 200 epochs (`r<n>`), so that a run's state stays the size of a real one.
fn epoch(_: &str, seq: u64) -> Event {
    let run = format!("r{}", seq / 200);
    let run = run.as_str();
    let e = (seq % 200) as u32;
    // A noisy, slowly improving run: rules fire and re-arm now and then, as in life.
    let wobble = ((seq * 7919) % 13) as f64 / 100.0;
    Event::now(
        run,
        seq,
        EpochEnded {
            epoch: e,
            n_epochs: 1_000_000,
            train_loss: 1.0 / (1.0 + e as f64 / 50.0) + wobble,
            valid_loss: Some(1.1 / (1.0 + e as f64 / 60.0) + wobble),
            metrics: Metrics(vec![("accuracy".into(), 0.8 + wobble), ("f1".into(), 0.7 + wobble)]),
            elapsed_s: 10.0 + wobble * 100.0,
        },
    )
}

fn batch(run: &str, seq: u64) -> Event {
    let loss = 0.5 + (seq % 17) as f64 / 100.0;
    Event::now(
        run,
        seq,
        BatchEnded { epoch: 0, batch: seq, n_batches: u64::MAX, loss, smooth_loss: loss, lr: 0.01 },
    )
}

fn run_state(run: &str) -> RunState {
    let mut st = RunState::new(run);
    st.apply(&started(run), false, 1);
    st
}

fn evaluate(c: &mut Criterion) {
    let none = |_: &mut dyn FnMut(&RunState)| {};
    let mut group = c.benchmark_group("evaluate");
    let rules = Rules::new(hundred_rules());
    let epochs: Vec<Event> = (1..200).map(|s| epoch("r", s)).collect();
    group.bench_function("epoch_ended, 100 rules", |b| {
        let mut st = run_state("r");
        let mut i = 0;
        b.iter(|| {
            let e = &epochs[i % epochs.len()];
            i += 1;
            st.apply(e, false, 2);
            black_box(rules.evaluate(&mut st, e, &none));
        })
    });
    group.bench_function("epoch_ended, state update only (no rules)", |b| {
        let mut st = run_state("r");
        let mut i = 0;
        b.iter(|| {
            let e = &epochs[i % epochs.len()];
            i += 1;
            st.apply(e, false, 2);
            black_box(&st);
        })
    });
    let rules = Rules::new(nan_rule());
    let batches: Vec<Event> = (1..=256).map(|s| batch("r", s)).collect();
    group.bench_function("batch_ended, 1 nan rule", |b| {
        let mut st = run_state("r");
        let mut i = 0;
        b.iter(|| {
            let e = &batches[i % batches.len()];
            i += 1;
            black_box(rules.evaluate(&mut st, e, &none));
        })
    });
    group.finish();
}

/// Ingest `make(seq)` events in posts of `per_post`, through a dispatcher with these rules.
fn ingest(
    c: &mut Criterion,
    name: &str,
    rules: Vec<RuleConfig>,
    per_post: u64,
    make: fn(&str, u64) -> Event,
) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let options = Options::new(Duration::from_secs(3600)).with_rules(rules);
    let dispatcher = rt
        .block_on(Dispatcher::start(Arc::new(MemoryOutbox::new()), Vec::new(), options))
        .expect("a dispatcher with no notifiers starts");
    let handle = dispatcher.handle();
    rt.block_on(handle.ingest(vec![started("r")])).expect("stored");
    let mut seq = 1;
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                let events: Vec<Event> = (seq..seq + per_post).map(|s| make("r", s)).collect();
                seq += per_post;
                events
            },
            |events| rt.block_on(handle.ingest(events)).expect("ingested"),
            BatchSize::SmallInput,
        )
    });
    rt.block_on(dispatcher.shutdown(Duration::from_secs(1)));
}

fn ingest_all(c: &mut Criterion) {
    ingest(c, "ingest 100 batch_ended, no rules", Vec::new(), 100, batch);
    ingest(c, "ingest 100 batch_ended, 1 nan rule", nan_rule(), 100, batch);
    ingest(c, "ingest 10 epoch_ended, no rules", Vec::new(), 10, epoch);
    ingest(c, "ingest 10 epoch_ended, 100 rules", hundred_rules(), 10, epoch);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = evaluate, ingest_all
}
criterion_main!(benches);

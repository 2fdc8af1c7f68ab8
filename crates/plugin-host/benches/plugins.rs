//! What running a notifier out of process costs: deliveries per second through a trivial Rust plugin (goal
//! ≥ 10k/s, with concurrency) and the latency one delivery adds compared with the same notifier in process.
//!
//! The plugin is this bench binary itself, re-run with `HERALD_BENCH_PLUGIN=1`: it serves a notifier that
//! accepts everything with `herald_plugin::serve`, so the figures are the protocol's and the host's cost
//! (JSON encoding, pipes, two context switches, correlation) and nothing else.
//!
//! - `delivery/in_process`: `Notifier::deliver` on the trivial notifier, awaited one at a time.
//! - `delivery/out_of_process`: the same through `ExecNotifier` (concurrency 1), one at a time: the difference
//!   is the added latency per delivery.
//! - `throughput/concurrency_N`: 1000 deliveries spread over N tasks through one plugin with `concurrency = N`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use herald_event::{EpochEnded, Event, Metrics, RunStarted};
use herald_plugin::{DeliveryError, Notification, Notifier, Receipt, RunContext, render};
use herald_plugin_host::{ExecNotifier, ExecOptions};

/// Accepts every notification.
struct Sink;

#[async_trait::async_trait]
impl Notifier for Sink {
    fn kind(&self) -> &str {
        "sink"
    }

    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        Ok(Receipt(serde_json::json!({ "seq": n.event.seq })))
    }
}

/// A typical notification: an `epoch_ended` with a five-row results table.
fn notification() -> Notification {
    let started = RunStarted {
        name: "bench".into(),
        host: "gpu1".into(),
        pid: 1,
        rank: 0,
        job: None,
        world_size: None,
        n_epochs: 10,
        batches_per_epoch: 100,
        metric_names: vec!["accuracy".into()],
        hyper: Default::default(),
    };
    let mut ctx = RunContext::from_started("r1", &started);
    let epoch = |e: u32| EpochEnded {
        epoch: e,
        n_epochs: 10,
        train_loss: 1.0 / f64::from(e + 1),
        valid_loss: Some(0.9 / f64::from(e + 1)),
        metrics: Metrics(vec![("accuracy".into(), 0.5 + 0.05 * f64::from(e))]),
        elapsed_s: 12.5,
    };
    for e in 0..4 {
        ctx.apply(&Event::now("r1", u64::from(e) + 1, epoch(e)));
    }
    render::notification(&ctx, &Event::now("r1", 5, epoch(4)), None, None, 1)
}

fn plugin(concurrency: usize) -> ExecNotifier {
    let exe = std::env::current_exe().expect("the bench knows its own path");
    let mut options =
        ExecOptions::new("/usr/bin/env", vec!["HERALD_BENCH_PLUGIN=1".into(), exe.display().to_string()]);
    options.concurrency = concurrency;
    ExecNotifier::new("bench", "exec", options)
}

fn bench(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let n = notification();
    let mut group = c.benchmark_group("delivery");
    group.throughput(Throughput::Elements(1));
    let sink: Arc<dyn Notifier> = Arc::new(Sink);
    group.bench_function("in_process", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    sink.deliver(&n).await.expect("the sink accepts");
                }
                t0.elapsed()
            })
        })
    });
    let one = plugin(1);
    rt.block_on(async { one.deliver(&n).await.expect("the plugin starts and delivers") });
    group.bench_function("out_of_process", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    one.deliver(&n).await.expect("the plugin delivers");
                }
                t0.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(one.shutdown());

    let mut group = c.benchmark_group("throughput");
    const BATCH: u64 = 1000;
    group.throughput(Throughput::Elements(BATCH));
    for concurrency in [1usize, 16, 64] {
        let p = Arc::new(plugin(concurrency));
        rt.block_on(async { p.deliver(&n).await.expect("the plugin starts and delivers") });
        let n = Arc::new(n.clone());
        group.bench_function(format!("concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let mut tasks = tokio::task::JoinSet::new();
                        for t in 0..concurrency as u64 {
                            let (p, n) = (p.clone(), n.clone());
                            let share =
                                BATCH / concurrency as u64 + u64::from(t < BATCH % concurrency as u64);
                            tasks.spawn(async move {
                                for _ in 0..share {
                                    p.deliver(&n).await.expect("the plugin delivers");
                                }
                            });
                        }
                        while tasks.join_next().await.is_some() {}
                    }
                    t0.elapsed()
                })
            })
        });
        rt.block_on(p.shutdown());
    }
    group.finish();
}

fn main() {
    if std::env::var_os("HERALD_BENCH_PLUGIN").is_some() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        if let Err(e) = rt.block_on(herald_plugin::serve(Sink)) {
            eprintln!("bench plugin: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut c = Criterion::default().measurement_time(Duration::from_secs(3)).configure_from_args();
    bench(&mut c);
    c.final_summary();
}

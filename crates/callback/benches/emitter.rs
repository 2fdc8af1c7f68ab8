//! What the event emitter costs the training thread: one `batch_ended` and one lifecycle event (`epoch_ended`),
//! emitted by calling the emitter's hooks on a `State` as the driver does. Goal: under 1 µs each.
//!
//! - `batch_ended/reader_after`: the events are drained, untimed, after every thousand, so the timing is the
//!   training thread alone with a backlog under a thousand, never dropping.
//! - `batch_ended/concurrent_reader`: a thread drains the receiver while the training thread emits (a large
//!   bound, so nothing is dropped).
//! - `batch_ended/dropped`: the reader is far behind; the cost of counting a drop.
//! - `epoch_ended`: the lifecycle event, drained likewise.
//! - `fit/per_batch`: the whole callback machinery per training batch (Recorder, one-cycle scheduler,
//!   emitter) around a step that does nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_callback::{
    Callback, CallbackHandler, EventEmitter, EventReceiver, OneCycleScheduler, RunInfo, State, Step,
    StopHandle, channel, fit,
};

fn state() -> State {
    let mut s = State::new(vec!["accuracy".into(), "error_rate".into()]);
    s.n_epochs = 10;
    s.n_batches = 1000;
    s.last_loss = Some(0.5);
    s.smooth_loss = Some(0.6);
    s.valid_loss = Some(0.4);
    s.last_metrics = vec![Some(0.9), Some(0.1)];
    s.epoch_time_s = 12.5;
    s
}

fn emitter(max_pending: usize) -> (EventEmitter, EventReceiver, State) {
    let (tx, rx) = channel(max_pending);
    let mut e = EventEmitter::new(tx, RunInfo::new("bench").hyper("lr", 1e-3), StopHandle::new());
    let mut s = state();
    e.on_train_begin(&mut s).expect("the emitter never fails");
    (e, rx, s)
}

fn drain(rx: &mut EventReceiver) {
    while let Ok(ev) = rx.try_recv() {
        black_box(ev);
    }
}

/// Times `iters` calls of `hook` in chunks of [`CHUNK`], draining the receiver untimed after each chunk (a
/// reader that keeps up within a thousand events, so the backlog never grows past that).
fn timed(
    e: &mut EventEmitter,
    rx: &mut EventReceiver,
    s: &mut State,
    iters: u64,
    hook: fn(&mut EventEmitter, &mut State),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let start = Instant::now();
        for i in 0..n {
            s.num_batch = i;
            hook(e, s);
        }
        elapsed += start.elapsed();
        drain(rx);
        left -= n;
    }
    elapsed
}

const CHUNK: u64 = 1000;

fn batch_end(e: &mut EventEmitter, s: &mut State) {
    e.on_batch_end(s).expect("the emitter never fails");
}

fn epoch_end(e: &mut EventEmitter, s: &mut State) {
    e.on_epoch_end(s).expect("the emitter never fails");
}

fn bench_emitter(c: &mut Criterion) {
    let mut g = c.benchmark_group("emitter");
    g.throughput(Throughput::Elements(1));

    let (mut e, mut rx, mut s) = emitter(usize::MAX);
    g.bench_function("batch_ended/reader_after", |b| {
        b.iter_custom(|iters| timed(&mut e, &mut rx, &mut s, iters, batch_end))
    });
    assert_eq!(e.dropped(), 0, "the reader_after bench must not drop");

    let (mut e, mut rx, mut s) = emitter(1 << 20);
    let reader = std::thread::spawn(move || {
        let mut n = 0u64;
        while let Some(ev) = rx.blocking_recv() {
            black_box(ev);
            n += 1;
        }
        n
    });
    g.bench_function("batch_ended/concurrent_reader", |b| b.iter(|| batch_end(&mut e, &mut s)));
    let dropped = e.dropped();
    drop(e);
    let received = reader.join().expect("the reader does not panic");
    eprintln!("concurrent_reader: {received} events received, {dropped} dropped");

    let (mut e, _rx, mut s) = emitter(0);
    g.bench_function("batch_ended/dropped", |b| b.iter(|| batch_end(&mut e, &mut s)));

    let (mut e, mut rx, mut s) = emitter(usize::MAX);
    g.bench_function("epoch_ended", |b| {
        b.iter_custom(|iters| timed(&mut e, &mut rx, &mut s, iters, epoch_end))
    });
    g.finish();
}

/// A step that does nothing: what is left is the callback machinery.
struct Noop {
    n: u64,
}

impl Step for Noop {
    type Error = String;
    fn n_train_batches(&self) -> u64 {
        self.n
    }
    fn n_valid_batches(&self) -> u64 {
        0
    }
    fn begin_epoch(&mut self, _: u32) -> Result<(), String> {
        Ok(())
    }
    fn forward(&mut self, batch: u64, _: bool) -> Result<usize, String> {
        Ok(black_box(batch as usize % 64 + 1))
    }
    fn loss(&mut self, _: bool) -> Result<f64, String> {
        Ok(black_box(0.5))
    }
    fn backward(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn step(&mut self, lr: f64, mom: f64) -> Result<(), String> {
        black_box((lr, mom));
        Ok(())
    }
    fn zero_grad(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn metrics(&mut self, _: &mut Vec<f64>) -> Result<(), String> {
        Ok(())
    }
}

fn bench_fit(c: &mut Criterion) {
    const BATCHES: u64 = 1000;
    let mut g = c.benchmark_group("fit");
    g.throughput(Throughput::Elements(BATCHES));
    g.bench_function("per_batch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, mut rx) = channel(usize::MAX);
                let mut h = CallbackHandler::new(vec![]);
                h.add(OneCycleScheduler::new(1e-2));
                h.add(EventEmitter::new(tx, RunInfo::new("bench"), StopHandle::new()));
                let start = Instant::now();
                fit(&mut h, &mut Noop { n: BATCHES }, 1).expect("the no-op step never fails");
                total += start.elapsed();
                drain(&mut rx);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench_emitter, bench_fit);
criterion_main!(benches);

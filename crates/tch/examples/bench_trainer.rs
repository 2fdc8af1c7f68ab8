//! The herald-tch side of `cargo xtask bench trainer`: times `fit_one_cycle` on the digits data with every
//! callback on (Recorder, TerminateOnNaN, the progress bar and table, an EventEmitter whose events a consumer
//! thread drains as the daemon would) and the same loop with no callback machinery at all
//! (`Learner::fit_one_cycle_bare`), alternating the two so machine noise hits both alike. Fit `i` seeds the
//! weights and the shuffles with `seed + i`; the reported accuracy is the mean over the fits.
//!
//! Usage: `bench_trainer --data PATH --split-out PATH --json PATH [--epochs 20] [--bs 32] [--lr 1e-2]
//! [--threads 1] [--reps 5] [--seed 42] [--only all|none]`. Writes the train/valid split it used (for the Python runs) and a
//! JSON summary; the table rows go to stdout. For profiling, `--only all|none` runs one loop, and the
//! environment variable `BENCH_WITHOUT=progress,emitter,nan` leaves those callbacks out of the full one.

use std::path::PathBuf;
use std::time::Instant;

use herald_callback::{EventEmitter, RunInfo, StopHandle, TerminateOnNaN, TryRecvError, channel};
use herald_tch::tch::{self, Device, nn::VarStore};
use herald_tch::{DataLoaders, Learner, Metric, Progress, ProgressMode, datasets, mlp};

struct Args {
    data: PathBuf,
    split_out: PathBuf,
    json: PathBuf,
    epochs: u32,
    bs: usize,
    lr: f64,
    threads: i32,
    reps: usize,
    seed: u64,
    /// `all` or `none`: run only that loop (for profiling one of them with perf).
    only: Option<bool>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        data: PathBuf::from("data/digits.csv.gz"),
        split_out: PathBuf::from("bench-out/split.json"),
        json: PathBuf::from("bench-out/herald.json"),
        epochs: 20,
        bs: 32,
        lr: 1e-2,
        threads: 1,
        reps: 5,
        seed: 42,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--data" => a.data = value.into(),
            "--split-out" => a.split_out = value.into(),
            "--json" => a.json = value.into(),
            "--epochs" => a.epochs = value.parse().map_err(|e| bad(&e))?,
            "--bs" => a.bs = value.parse().map_err(|e| bad(&e))?,
            "--lr" => a.lr = value.parse().map_err(|e| bad(&e))?,
            "--threads" => a.threads = value.parse().map_err(|e| bad(&e))?,
            "--reps" => a.reps = value.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = value.parse().map_err(|e| bad(&e))?,
            "--only" => a.only = Some(value == "all"),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// The data, split the same way every time (seed `a.seed`), shuffled per epoch with `shuffle_seed`.
fn data(a: &Args, shuffle_seed: u64) -> Result<DataLoaders, Box<dyn std::error::Error>> {
    let d = datasets::load_digits_csv(&a.data)?;
    Ok(DataLoaders::from_tensors(d.x, d.y, 0.2, a.bs, a.seed)?.seed(shuffle_seed))
}

/// One timed fit's seconds per epoch: wall clock, and CPU time of the training thread (what other processes
/// on a shared machine disturb least).
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// One timed fit with weights and shuffles from `seed`; returns its timing and final accuracy.
fn one_fit(a: &Args, all_callbacks: bool, seed: u64) -> Result<(Timing, f64), Box<dyn std::error::Error>> {
    tch::manual_seed(seed as i64);
    let vs = VarStore::new(Device::Cpu);
    let model = mlp(&vs.root(), &[64, 128, 10])?;
    let mut builder = Learner::builder(vs, model, data(a, seed)?).metrics([Metric::accuracy()]);
    let mut consumer = None;
    if all_callbacks {
        let (tx, mut rx) = channel(1024);
        // Drains like `herald train`'s consumer: whatever is waiting, every few milliseconds, so the
        // training thread never pays for waking it.
        consumer = Some(std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                match rx.try_recv() {
                    Ok(_) => n += 1,
                    Err(TryRecvError::Empty) => std::thread::sleep(std::time::Duration::from_millis(10)),
                    Err(TryRecvError::Disconnected) => return n,
                }
            }
        }));
        let without = std::env::var("BENCH_WITHOUT").unwrap_or_default();
        if !without.contains("nan") {
            builder = builder.callback(TerminateOnNaN);
        }
        if !without.contains("progress") {
            builder = builder.callback(Progress::new(ProgressMode::Auto).bar_always(true));
        }
        if !without.contains("emitter") {
            builder = builder.callback(EventEmitter::new(tx, RunInfo::new("bench"), StopHandle::new()));
        }
    }
    let mut learner = builder.build()?;
    let start = Instant::now();
    let cpu_start = cpu_time::ThreadTime::now();
    let accuracy = if all_callbacks {
        learner.fit_one_cycle(a.epochs, a.lr)?;
        learner.recorder().epochs.last().and_then(|e| e.metrics.get("accuracy")).unwrap_or(f64::NAN)
    } else {
        learner.fit_one_cycle_bare(a.epochs, a.lr)?.1.first().copied().unwrap_or(f64::NAN)
    };
    let epochs = f64::from(a.epochs);
    let timing = Timing {
        wall: start.elapsed().as_secs_f64() / epochs,
        cpu: cpu_start.elapsed().as_secs_f64() / epochs,
    };
    drop(learner);
    if let Some(c) = consumer {
        let events = c.join().map_err(|_| "the consumer thread panicked")?;
        if events < u64::from(a.epochs) * 2 && std::env::var_os("BENCH_WITHOUT").is_none() {
            return Err(format!("the consumer saw only {events} events").into());
        }
    }
    Ok((timing, accuracy))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    tch::set_num_threads(a.threads);
    // The split, for the Python runs.
    let n = datasets::load_digits_csv(&a.data)?.y.size()[0] as usize;
    let (train, valid) = DataLoaders::split_indices(n, 0.2, a.seed);
    if let Some(dir) = a.split_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.split_out, format!("{{\"train\": {train:?}, \"valid\": {valid:?}}}\n"))?;

    // Warm-up, untimed.
    let short = Args { epochs: 2, ..parse()? };
    one_fit(&short, true, a.seed)?;
    one_fit(&short, false, a.seed)?;

    // Fit `rep` uses seed `seed + rep` for the weights and the shuffles; the accuracy is the mean over fits.
    let (mut full, mut bare) = (Vec::new(), Vec::new());
    let (mut acc_full, mut acc_bare) = (Vec::new(), Vec::new());
    for rep in 0..a.reps {
        // Alternate which goes first.
        let order = if rep % 2 == 0 { [true, false] } else { [false, true] };
        for all in order.into_iter().filter(|all| a.only.is_none_or(|only| only == *all)) {
            let (t, acc) = one_fit(&a, all, a.seed + rep as u64)?;
            if all {
                full.push(t);
                acc_full.push(acc);
            } else {
                bare.push(t);
                acc_bare.push(acc);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (acc_full, acc_bare) = (mean(&acc_full), mean(&acc_bare));
    let result = |t: &[Timing], acc: f64| {
        let wall: Vec<f64> = t.iter().map(|t| t.wall).collect();
        let cpu: Vec<f64> = t.iter().map(|t| t.cpu).collect();
        format!(
            "{{\"per_epoch_s\": {}, \"accuracy\": {acc}, \"runs\": {wall:?}, \"cpu_runs\": {cpu:?}}}",
            median(&mut wall.clone())
        )
    };
    let json = format!(
        "{{\"all_callbacks\": {}, \"no_callbacks\": {}, \"n_train\": {}, \"n_valid\": {}}}\n",
        result(&full, acc_full),
        result(&bare, acc_bare),
        train.len(),
        valid.len()
    );
    std::fs::write(&a.json, json)?;
    Ok(())
}

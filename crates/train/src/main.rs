//! `herald-train` (run as `herald train`): the project's main job. Trains an MLP 64-128-10 on the digits data
//! (or 784-128-10 on an MNIST folder) with `fit_one_cycle` and `accuracy`, prints fastai's results table, and
//! reports the run's events.
//!
//! The trainer thread never waits on anything but libtorch: events leave through herald-callback's
//! non-blocking channel to a consumer thread. That consumer is the daemon link
//! ([`herald_daemon::spawn_for_trainer`]): it forwards to `herald serve` when one answers at the configured
//! address (spooling to disk while it is unreachable, and feeding stop requests back into the run's
//! [`StopHandle`]), else it runs the same dispatcher in this process with the configured notifiers. With
//! `--events-stderr` the consumer instead prints each event as a JSON line on stderr, for scripts.
//! Plots, when asked for, are written after training.
//!
//! Ctrl-C (SIGINT, which the terminal sends to the whole foreground process group; `herald train` has
//! replaced itself with this process, so no parent dies first) asks the run to stop through the same
//! [`StopHandle`] the daemon's stop requests use: training ends after the current batch, the run is reported as
//! `run_finished {status: stopped, reason: "interrupted (Ctrl-C) ..."}`, the events are handed over, and the
//! process exits with 130. A second Ctrl-C exits at once (the daemon's `run_lost` then covers the run).
//!
//! It is a binary of its own so that only it links libtorch; `herald train` runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use herald_callback::{
    EventEmitter, EventReceiver, RunInfo, StopHandle, TerminateOnNaN, TryRecvError, channel,
};
use herald_tch::tch::{self, Device, nn::VarStore};
use herald_tch::{DataLoaders, Learner, Metric, ProgressMode, datasets, mlp};

/// Unread `batch_ended` events kept before newer ones are dropped (lifecycle events are never dropped).
const MAX_PENDING_BATCH_EVENTS: usize = 1024;

/// Train the demo model (an MLP on the digits data) with fit_one_cycle and report its events.
#[derive(Debug, clap::Parser)]
#[command(name = "herald train", version)]
pub struct TrainArgs {
    /// Configuration file (default: $HERALD_CONFIG, then ~/.config/herald/herald.toml, then built-in defaults).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the run's events as JSON lines on stderr instead of sending them to the daemon or notifiers.
    #[arg(long)]
    pub events_stderr: bool,
    /// The data: a digits CSV (64 pixels then the label per line, optionally gzipped) or an MNIST folder
    /// (the four IDX files). Default: the repository's data/digits.csv.gz.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Epochs to train.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Maximum learning rate of the one-cycle schedule.
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub bs: usize,
    /// Seed for the weights, the train/valid split and the shuffles.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Write the loss curve to this PNG file (and the schedule to `<name>-lr.png` beside it).
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// The run's name in notifications.
    #[arg(long, default_value = "digits-mlp")]
    pub name: String,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<u16>,
    /// Share of the digits data held out for validation (MNIST uses its test set).
    #[arg(long, default_value_t = 0.2)]
    pub valid_pct: f64,
}

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

fn main() -> ExitCode {
    let args = <TrainArgs as clap::Parser>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    match run(args) {
        Ok(code) => code,
        // One line the user can act on, never anyhow's Debug form (which adds a backtrace when
        // RUST_BACKTRACE is set); a bug panics and still prints its backtrace.
        Err(err) => {
            eprintln!("herald: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The stop reason a Ctrl-C gives; `run_finished` carries it (with the epochs done).
pub const CTRL_C_REASON: &str = "interrupted (Ctrl-C)";

/// The exit code after a Ctrl-C, as a shell reports a process ended by SIGINT (128 + 2).
const INTERRUPTED: u8 = 130;

/// Handles SIGINT from now on: the first asks `stop` to end the run after the current batch and sets the
/// returned flag; a second exits the process at once with [`INTERRUPTED`].
///
/// The handler is installed before this returns; a thread of its own waits for the signals. The second one
/// ends the process with `_exit` (signal-hook's safe `low_level::exit`), not `std::process::exit`: at-exit
/// hooks would run libtorch's static destructors under the training threads, which crashes.
fn on_ctrl_c(stop: StopHandle) -> Result<Arc<AtomicBool>> {
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]).context("cannot handle Ctrl-C")?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    std::thread::Builder::new()
        .name("herald-ctrl-c".into())
        .spawn(move || {
            for _ in signals.forever() {
                if flag.swap(true, Ordering::AcqRel) {
                    eprintln!("herald: Ctrl-C again: quitting now");
                    signal_hook::low_level::exit(i32::from(INTERRUPTED));
                }
                stop.request(CTRL_C_REASON);
                eprintln!(
                    "\nherald: Ctrl-C: stopping after this batch and reporting the run as stopped \
                     (Ctrl-C again to quit at once)"
                );
            }
        })
        .context("cannot start the thread that handles Ctrl-C")?;
    Ok(interrupted)
}

/// Where the run's events go.
enum Consumer {
    Printer(JoinHandle<()>),
    Link(herald_daemon::TrainerLink),
}

fn run(args: TrainArgs) -> Result<ExitCode> {
    // First, so that a Ctrl-C while the data loads already ends the run cleanly.
    let stop = StopHandle::new();
    let interrupted = on_ctrl_c(stop.clone())?;
    if let Some(n) = args.threads {
        tch::set_num_threads(i32::from(n.max(1)));
    }
    let device = match args.device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda if tch::Cuda::is_available() => Device::Cuda(0),
        DeviceArg::Cuda => bail!("--device cuda: libtorch sees no CUDA device here; use --device cpu"),
    };
    let data_path = data_path(args.data.as_deref())?;
    let data = load(&data_path, &args)?;
    let n_features = data.train().x.size().get(1).copied().context("the inputs have no feature dimension")?;

    tch::manual_seed(args.seed as i64);
    let vs = VarStore::new(device);
    let model = mlp(&vs.root(), &[n_features, 128, 10])?;

    let (tx, rx) = channel(MAX_PENDING_BATCH_EVENTS);
    let info = RunInfo::new(&args.name)
        .hyper("model", format!("mlp {n_features}-128-10"))
        .hyper("data", data_path.display().to_string())
        .hyper("epochs", args.epochs)
        .hyper("max_lr", args.lr)
        .hyper("bs", args.bs)
        .hyper("seed", args.seed)
        .hyper("device", format!("{device:?}"));
    let consumer = if args.events_stderr {
        Consumer::Printer(spawn_event_printer(rx))
    } else {
        // The results table is on this terminal: with no configuration file, the console notifier says only
        // what the table does not.
        let config = herald_daemon::config::load_beside_output(args.config.as_deref())?;
        let link = herald_daemon::spawn_for_trainer(&config, rx, stop.clone())?;
        eprintln!("herald: {}", describe(link.mode()));
        Consumer::Link(link)
    };
    let emitter = EventEmitter::new(tx, info, stop);

    let mut learner = Learner::builder(vs, model, data)
        .metrics([Metric::accuracy()])
        .device(device)
        .progress(ProgressMode::Auto)
        .callback(TerminateOnNaN)
        .callback(emitter)
        .build()?;
    let result = learner.fit_one_cycle(args.epochs, args.lr);
    let losses = learner.loss_history();
    let schedule = learner.lr_history();
    // Dropping the learner drops the emitter and so the channel's sender: the consumer drains and ends.
    drop(learner);
    match consumer {
        Consumer::Printer(printer) => {
            if printer.join().is_err() {
                tracing::warn!("the event consumer thread panicked; some events were not printed");
            }
        }
        Consumer::Link(link) => match link.finish() {
            Ok(report) if report.undelivered > 0 => {
                eprintln!("herald: {} notifications were not delivered before exit", report.undelivered)
            }
            Ok(report) => tracing::info!(?report, "events handed over"),
            Err(e) => eprintln!("herald: some notifications may not have gone out: {e}"),
        },
    }
    result.context("training failed")?;

    if let Some(path) = &args.plot {
        let png = herald_plot::plot_losses(&losses)?;
        std::fs::write(path, png)
            .with_context(|| format!("cannot write the loss plot to {}", path.display()))?;
        let lr_path = lr_plot_path(path);
        let png = herald_plot::plot_lr(&schedule)?;
        std::fs::write(&lr_path, png).with_context(|| format!("cannot write {}", lr_path.display()))?;
        eprintln!("herald: loss plot: {} (learning rate: {})", path.display(), lr_path.display());
    }
    if interrupted.load(Ordering::Acquire) {
        eprintln!("herald: {CTRL_C_REASON}: the run was reported as stopped");
        return Ok(ExitCode::from(INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the run's events go, in words.
fn describe(mode: &herald_daemon::LinkMode) -> String {
    match mode {
        herald_daemon::LinkMode::Daemon { url } => format!("reporting to the daemon at {url}"),
        herald_daemon::LinkMode::Spool { url, spool } => format!(
            "the daemon at {url} does not answer: keeping events in {} until it does",
            spool.display()
        ),
        herald_daemon::LinkMode::InProcess => {
            "no daemon answers: notifying from this process with the configured notifiers".to_owned()
        }
    }
}

/// How often the consumer drains the channel. Polling (rather than blocking on each event) means the
/// training thread never pays for waking the consumer: a send is a lock-free push, nothing more.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The `--events-stderr` consumer: every [`DRAIN_EVERY`] it prints whatever events are waiting, one JSON line
/// each on stderr, on its own thread, until every sender is gone.
fn spawn_event_printer(mut rx: EventReceiver) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("herald-events".into())
        .spawn(move || {
            use std::io::Write;
            let stderr = std::io::stderr();
            loop {
                match rx.try_recv() {
                    Ok(event) => match herald_event::encode_event(&event) {
                        Ok(line) => {
                            let _ = writeln!(stderr.lock(), "{line}");
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot encode an event"),
                    },
                    Err(TryRecvError::Empty) => std::thread::sleep(DRAIN_EVERY),
                    Err(TryRecvError::Disconnected) => return,
                }
            }
        })
        .unwrap_or_else(|e| {
            // Without a consumer thread the events are dropped at the channel; training goes on.
            tracing::warn!(error = %e, "cannot start the event consumer thread; events are not printed");
            std::thread::spawn(|| {})
        })
}

/// `--data`, or the repository's digits data: `data/digits.csv.gz` under the current folder, else the one
/// this binary was built from.
fn data_path(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.exists() {
            bail!("--data {}: no such file or folder", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let candidates = [
        PathBuf::from("data/digits.csv.gz"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits.csv.gz"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("no data/digits.csv.gz here: run from the repository root or pass --data PATH")
}

fn load(path: &Path, args: &TrainArgs) -> Result<DataLoaders> {
    let dls = if path.is_dir() {
        let m = datasets::load_mnist(path)?;
        let train = herald_tch::Dataset::new(m.train.x, m.train.y)?;
        let valid = herald_tch::Dataset::new(m.test.x, m.test.y)?;
        DataLoaders::new(train, valid, args.bs)?.seed(args.seed)
    } else {
        let d = datasets::load_digits_csv(path)?;
        DataLoaders::from_tensors(d.x, d.y, args.valid_pct, args.bs, args.seed)?
    };
    Ok(dls)
}

/// `loss.png` -> `loss-lr.png`.
fn lr_plot_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map_or_else(|| "plot".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}-lr.png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_plot_sits_beside_the_loss_plot() {
        assert_eq!(lr_plot_path(Path::new("out/loss.png")), Path::new("out/loss-lr.png"));
        assert_eq!(lr_plot_path(Path::new("curve")), Path::new("curve-lr.png"));
    }
}

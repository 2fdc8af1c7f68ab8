//! The fastai v1 callbacks people use: [`EarlyStopping`], [`TerminateOnNaN`], [`CsvLogger`] and
//! [`SaveModel`].
//!
//! They work on the [`State`] only. `SaveModel` is a hook point: it decides *when* to save (every epoch, or
//! when a monitored value improves) and calls a closure the trainer supplies to do the saving, because this
//! crate knows nothing about models or tensors. ReduceLROnPlateau and the plots are not here.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use herald_event::format::{column_names, float6, format_time};

use crate::callback::{Callback, CallbackError, CallbackResult, TrainError};
use crate::state::{State, StopReason, lower_is_better};

/// Whether a monitored value should go down or up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Down for names containing `loss` or `error`, up otherwise.
    #[default]
    Auto,
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

impl Mode {
    fn lower_is_better(self, monitor: &str) -> bool {
        match self {
            Mode::Auto => lower_is_better(monitor),
            Mode::Min => true,
            Mode::Max => false,
        }
    }
}

/// Tracks the best value of a monitored quantity, fastai's `TrackerCallback` logic.
#[derive(Debug, Clone, PartialEq)]
struct Tracker {
    monitor: String,
    lower: bool,
    best: f64,
}

impl Tracker {
    fn new(monitor: &str, mode: Mode) -> Tracker {
        let lower = mode.lower_is_better(monitor);
        Tracker {
            monitor: monitor.to_owned(),
            lower,
            best: if lower { f64::INFINITY } else { f64::NEG_INFINITY },
        }
    }

    fn check_name(&self, s: &State, who: &str) -> CallbackResult {
        if s.is_monitorable(&self.monitor) {
            return Ok(());
        }
        Err(CallbackError::new(format!(
            "{who} monitors `{}`, which this run does not have; use one of: {}",
            self.monitor,
            s.monitorable_names().join(", ")
        )))
    }

    /// Whether `current` beats the best by more than `min_delta` (fastai: `current - min_delta < best` for
    /// minimised values, `current - min_delta > best` for maximised ones); records it if so.
    fn improved(&mut self, current: f64, min_delta: f64) -> bool {
        let better =
            if self.lower { current + min_delta < self.best } else { current - min_delta > self.best };
        if better {
            self.best = current;
        }
        better
    }
}

/// Stops training when the monitored value has not improved for more than `patience` epochs.
/// Sets `stop_training` with [`StopReason::EarlyStopping`].
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    /// `valid_loss` (fastai's default), `train_loss`, or a metric name.
    pub monitor: String,
    /// The least change that counts as an improvement.
    pub min_delta: f64,
    /// Epochs without improvement tolerated.
    pub patience: u32,
    /// Whether the value should go down or up.
    pub mode: Mode,
    tracker: Tracker,
    wait: u32,
}

impl EarlyStopping {
    /// Stops training once `monitor` (`valid_loss`, `train_loss` or a metric) has not improved by more than
    /// `min_delta` (taken as its absolute value) for more than `patience` epochs; mode [`Mode::Auto`].
    pub fn new(monitor: impl Into<String>, min_delta: f64, patience: u32) -> EarlyStopping {
        let monitor = monitor.into();
        let tracker = Tracker::new(&monitor, Mode::Auto);
        EarlyStopping { monitor, min_delta: min_delta.abs(), patience, mode: Mode::Auto, tracker, wait: 0 }
    }

    /// Whether the monitored value should go down or up.
    pub fn mode(mut self, mode: Mode) -> EarlyStopping {
        self.mode = mode;
        self
    }

    /// The best value seen in the current fit.
    pub fn best(&self) -> Option<f64> {
        self.tracker.best.is_finite().then_some(self.tracker.best)
    }
}

impl Callback for EarlyStopping {
    fn name(&self) -> &str {
        "early_stopping"
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        self.tracker = Tracker::new(&self.monitor, self.mode);
        self.wait = 0;
        self.tracker.check_name(s, "early stopping")
    }

    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        let Some(current) = s.monitor_value(&self.monitor) else { return Ok(()) };
        if self.tracker.improved(current, self.min_delta) {
            self.wait = 0;
            return Ok(());
        }
        self.wait += 1;
        if self.wait > self.patience {
            s.stop_training = true;
            let epochs = if self.wait == 1 { "epoch" } else { "epochs" };
            let text = format!(
                "{} did not improve on {} for {} {epochs} (patience {})",
                self.monitor,
                float6(self.tracker.best),
                self.wait,
                self.patience
            );
            s.stop_reason.get_or_insert(StopReason::EarlyStopping(text));
        }
        Ok(())
    }
}

/// Stops at a non-finite loss (NaN or infinite, training or validation): stops the epoch and the training and
/// skips validation, with [`StopReason::NonFiniteLoss`]. The run then ends with `run_failed`. Order -5, so
/// the flags are set before the schedulers and the emitter see the batch end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TerminateOnNaN;

impl Callback for TerminateOnNaN {
    fn name(&self) -> &str {
        "terminate_on_nan"
    }

    fn order(&self) -> i32 {
        -5
    }

    fn on_batch_end(&mut self, s: &mut State) -> CallbackResult {
        let Some(loss) = s.last_loss else { return Ok(()) };
        if !loss.is_finite() {
            let phase = if s.train { "training" } else { "validation" };
            let text = format!("loss {loss} at epoch {}, {phase} batch {}", s.epoch, s.num_batch);
            tracing::warn!(
                epoch = s.epoch,
                batch = s.num_batch,
                loss,
                "non-finite loss, terminating training"
            );
            s.stop_now(StopReason::NonFiniteLoss(text));
        }
        Ok(())
    }
}

/// Writes the results table as CSV, fastai's `CSVLogger`: at `on_train_begin` the header (the recorder's
/// names: `epoch,train_loss,valid_loss,<metrics>,time`), then one row per epoch, flushed and fsynced so a crash
/// loses nothing written. Floats with 6 decimals, missing values `#na#`, time `mm:ss`.
#[derive(Debug)]
pub struct CsvLogger {
    path: PathBuf,
    append: bool,
    file: Option<BufWriter<File>>,
}

impl CsvLogger {
    /// Overwrites `path` at each fit (creating its folder).
    pub fn new(path: impl Into<PathBuf>) -> CsvLogger {
        CsvLogger { path: path.into(), append: false, file: None }
    }

    /// Appends to `path` instead of overwriting it.
    pub fn append(mut self, append: bool) -> CsvLogger {
        self.append = append;
        self
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> CallbackError {
        CallbackError::new(format!(
            "cannot {what} the CSV log {}: {e}; check that the folder is writable and the disk has space",
            self.path.display()
        ))
    }

    fn write_line(&mut self, line: &str) -> CallbackResult {
        let Some(file) = self.file.as_mut() else {
            return Err(CallbackError::new("the CSV log is not open: on_train_begin did not run or failed"));
        };
        let result = file
            .write_all(line.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.flush())
            .and_then(|()| file.get_ref().sync_all());
        result.map_err(|e| self.io_error("write", e))
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

impl Callback for CsvLogger {
    fn name(&self) -> &str {
        "csv_logger"
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io_error("create the folder of", e))?;
        }
        let mut options = OpenOptions::new();
        options.create(true);
        if self.append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let file = options.open(&self.path).map_err(|e| self.io_error("open", e))?;
        self.file = Some(BufWriter::new(file));
        let header: Vec<String> = column_names(&s.metric_names).iter().map(|n| csv_field(n)).collect();
        self.write_line(&header.join(","))
    }

    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        let cell = |v: Option<f64>| v.map_or_else(|| "#na#".to_owned(), float6);
        let mut cells = vec![s.epoch.to_string(), cell(s.smooth_loss), cell(s.valid_loss)];
        cells.extend(s.last_metrics.iter().map(|m| cell(*m)));
        cells.push(format_time(s.epoch_time_s));
        self.write_line(&cells.join(","))
    }

    fn on_train_end(&mut self, _: &mut State, _: Option<&TrainError>) -> CallbackResult {
        self.file = None;
        Ok(())
    }
}

/// When [`SaveModel`] saves.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveEvery {
    /// After every epoch.
    Epoch,
    /// After an epoch where `monitor` improved (`valid_loss`, `train_loss` or a metric; mode auto).
    Improvement {
        /// The value watched.
        monitor: String,
    },
}

/// Why [`SaveModel`] calls its closure now.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveWhy {
    /// Every-epoch save after `epoch`.
    Epoch {
        /// The epoch that ended.
        epoch: u32,
    },
    /// `monitor` improved to `value` at `epoch`.
    Improvement {
        /// The value watched.
        monitor: String,
        /// Its new best.
        value: f64,
        /// The epoch that reached it.
        epoch: u32,
    },
}

/// A hook point for saving the model: decides when (at `on_epoch_end`, by [`SaveEvery`]) and calls the
/// trainer's closure, which does the saving and returns an error message if it failed (training then fails
/// with that message).
pub struct SaveModel<F: FnMut(SaveWhy, &State) -> Result<(), String> + Send + 'static> {
    every: SaveEvery,
    save: F,
    tracker: Option<Tracker>,
}

impl<F: FnMut(SaveWhy, &State) -> Result<(), String> + Send + 'static> std::fmt::Debug for SaveModel<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveModel").field("every", &self.every).finish_non_exhaustive()
    }
}

impl<F: FnMut(SaveWhy, &State) -> Result<(), String> + Send + 'static> SaveModel<F> {
    /// Calls `save` as `every` says; `save` does the saving and returns an error message if it failed.
    pub fn new(every: SaveEvery, save: F) -> SaveModel<F> {
        SaveModel { every, save, tracker: None }
    }
}

impl<F: FnMut(SaveWhy, &State) -> Result<(), String> + Send + 'static> Callback for SaveModel<F> {
    fn name(&self) -> &str {
        "save_model"
    }

    fn on_train_begin(&mut self, s: &mut State) -> CallbackResult {
        self.tracker = match &self.every {
            SaveEvery::Epoch => None,
            SaveEvery::Improvement { monitor } => {
                let tracker = Tracker::new(monitor, Mode::Auto);
                tracker.check_name(s, "save model")?;
                Some(tracker)
            }
        };
        Ok(())
    }

    fn on_epoch_end(&mut self, s: &mut State) -> CallbackResult {
        let why = match &mut self.tracker {
            None => SaveWhy::Epoch { epoch: s.epoch },
            Some(tracker) => {
                let Some(value) = s.monitor_value(&tracker.monitor) else { return Ok(()) };
                if !tracker.improved(value, 0.0) {
                    return Ok(());
                }
                SaveWhy::Improvement { monitor: tracker.monitor.clone(), value, epoch: s.epoch }
            }
        };
        (self.save)(why, s).map_err(|e| CallbackError::new(format!("saving the model failed: {e}")))
    }
}

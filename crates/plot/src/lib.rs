//! Training curves as PNG images: the loss curve (`plot_losses`) and the schedule (`plot_lr`).
//!
//! fastai's Recorder draws the smoothed training loss per batch with the validation loss at each epoch's
//! cumulative batch count, and the learning rate (and momentum) per batch. This crate draws the same two
//! figures into PNG bytes. Its input types, [`LossHistory`] and [`LrHistory`], are plain numbers: the trainer
//! (`herald-tch`) fills them from its Recorder, and the daemon fills them from a run's event history
//! ([`LossHistory::from_events`]) to send the loss curve to a phone.
//!
//! The font is embedded (DejaVu Sans Mono, from Debian's `fonts-dejavu-core`, licence in `fonts/`), so no
//! system font is needed. This crate does no I/O (callers write the bytes where they like) and knows nothing
//! of tensors or of the callback system.

use std::sync::OnceLock;

use herald_event::{Event, Payload};
use plotters::prelude::*;

/// The embedded font (Bitstream Vera licence, see `fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSansMono.ttf");
/// The family name the embedded font is registered under.
const FAMILY: &str = "sans-serif";

/// Image size in pixels.
const SIZE: (u32, u32) = (800, 500);

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// There is nothing to draw.
    #[error("no {0} to plot yet: train at least one batch first")]
    Empty(&'static str),
    /// The embedded font did not load; a broken build.
    #[error("the embedded font cannot be loaded; the build is broken, rebuild herald-plot")]
    Font,
    /// plotters failed while drawing.
    #[error("drawing the plot failed: {0}")]
    Draw(String),
    /// The PNG encoder failed.
    #[error("encoding the plot as PNG failed: {0}")]
    Encode(String),
}

/// What `plot_losses` draws: the smoothed training loss per batch and the validation loss per epoch, each as
/// `(cumulative batch count, value)` points. Non-finite values are skipped when drawing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossHistory {
    /// Smoothed training loss after each batch; x is the batch's 1-based cumulative index.
    pub train: Vec<(f64, f64)>,
    /// Validation loss at each epoch end; x is the cumulative batch count at that epoch's end.
    pub valid: Vec<(f64, f64)>,
}

impl LossHistory {
    /// From a Recorder's vectors: the smoothed losses (one per training batch), the batches done in each
    /// epoch, and each epoch's validation loss (`None` when validation was skipped).
    pub fn from_recorder(losses: &[f64], nb_batches: &[u64], valid_losses: &[Option<f64>]) -> LossHistory {
        let train = losses.iter().enumerate().map(|(i, l)| ((i + 1) as f64, *l)).collect();
        let mut cumulative = 0u64;
        let mut valid = Vec::new();
        for (n, v) in nb_batches.iter().zip(valid_losses) {
            cumulative += n;
            if let Some(v) = v {
                valid.push((cumulative as f64, *v));
            }
        }
        LossHistory { train, valid }
    }

    /// From one run's events: `batch_ended` gives the smoothed training loss, `epoch_ended` the validation
    /// loss. Batches are placed by epoch and batch index, so `batch_ended` events dropped under back-pressure
    /// leave gaps, not shifts. Events of other runs are ignored (the run is the first event's).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> LossHistory {
        let mut run: Option<&str> = None;
        let mut batches_per_epoch = 0u64;
        let mut batches: Vec<BatchPoint> = Vec::new();
        let mut epochs: Vec<EpochPoint> = Vec::new();
        for event in events {
            let this = *run.get_or_insert(event.run.as_str());
            if event.run != this {
                continue;
            }
            match &event.payload {
                Payload::RunStarted(p) => batches_per_epoch = p.batches_per_epoch,
                Payload::BatchEnded(p) => batches.push(BatchPoint {
                    epoch: p.epoch,
                    batch: p.batch,
                    n_batches: p.n_batches,
                    smooth_loss: p.smooth_loss,
                }),
                Payload::EpochEnded(p) => {
                    epochs.push(EpochPoint { epoch: p.epoch, valid_loss: p.valid_loss })
                }
                _ => {}
            }
        }
        LossHistory::from_points(&batches, &epochs, batches_per_epoch)
    }

    /// From stored points: each batch's smoothed loss by epoch and batch index, each epoch's validation loss,
    /// and the batches per epoch the run announced (for epochs whose batch points all say 0 or are missing).
    /// This is what a daemon draws from its run history.
    pub fn from_points(batches: &[BatchPoint], epochs: &[EpochPoint], batches_per_epoch: u64) -> LossHistory {
        // Batches per epoch, as the points say; the epoch offsets are their running sum.
        let mut per_epoch: Vec<u64> = Vec::new();
        let note = |per_epoch: &mut Vec<u64>, epoch: u32, n: u64| {
            let i = epoch as usize;
            if per_epoch.len() <= i {
                per_epoch.resize(i + 1, 0);
            }
            per_epoch[i] = per_epoch[i].max(n);
        };
        for b in batches {
            note(&mut per_epoch, b.epoch, b.n_batches);
        }
        for e in epochs {
            note(&mut per_epoch, e.epoch, 0);
        }
        // An epoch whose batch points were all dropped still counts a full epoch.
        for n in &mut per_epoch {
            if *n == 0 {
                *n = batches_per_epoch;
            }
        }
        let offset = |epoch: u32| -> u64 { per_epoch.iter().take(epoch as usize).sum() };
        let train = batches.iter().map(|b| ((offset(b.epoch) + b.batch + 1) as f64, b.smooth_loss)).collect();
        let valid =
            epochs.iter().filter_map(|e| e.valid_loss.map(|v| (offset(e.epoch + 1) as f64, v))).collect();
        LossHistory { train, valid }
    }
}

/// One batch's point for [`LossHistory::from_points`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPoint {
    /// The epoch the batch belongs to, from 0.
    pub epoch: u32,
    /// The batch's index within its epoch, from 0.
    pub batch: u64,
    /// Batches in that epoch, when known (0 when not).
    pub n_batches: u64,
    /// The smoothed training loss after the batch.
    pub smooth_loss: f64,
}

/// One epoch's point for [`LossHistory::from_points`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    /// The epoch, from 0.
    pub epoch: u32,
    /// Its validation loss, when validated.
    pub valid_loss: Option<f64>,
}

/// What `plot_lr` draws: the learning rate per training batch and, when known, the momentum (beta1 for
/// Adam-family optimizers) per batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LrHistory {
    /// The learning rate after each training batch, in order.
    pub lrs: Vec<f64>,
    /// Empty when unknown (event history carries no momentum); then only the lr is drawn.
    pub moms: Vec<f64>,
}

impl LrHistory {
    /// From one run's events: the lr of each `batch_ended` (in order; dropped ones leave no point). Events
    /// carry no momentum, so `moms` stays empty. Events of other runs are ignored.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> LrHistory {
        let mut run: Option<&str> = None;
        let mut lrs = Vec::new();
        for event in events {
            if *run.get_or_insert(event.run.as_str()) != event.run {
                continue;
            }
            if let Payload::BatchEnded(b) = &event.payload {
                lrs.push(b.lr);
            }
        }
        LrHistory { lrs, moms: Vec::new() }
    }
}

/// The loss curve as PNG bytes: smoothed training loss per batch (blue) and validation loss per epoch
/// (orange, with markers).
pub fn plot_losses(history: &LossHistory) -> Result<Vec<u8>, PlotError> {
    let train: Vec<(f64, f64)> = finite(&history.train);
    let valid: Vec<(f64, f64)> = finite(&history.valid);
    if train.is_empty() && valid.is_empty() {
        return Err(PlotError::Empty("losses"));
    }
    register_font()?;
    let (x_max, y_min, y_max) = bounds(train.iter().chain(&valid));
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Loss", (FAMILY, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, y_min..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("batches processed")
            .y_desc("loss")
            .x_label_formatter(&whole)
            .label_style((FAMILY, 13))
            .draw()
            .map_err(draw_err)?;
        if !train.is_empty() {
            chart
                .draw_series(LineSeries::new(train.iter().copied(), BLUE.stroke_width(2)))
                .map_err(draw_err)?
                .label("train (smoothed)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        }
        if !valid.is_empty() {
            let orange = RGBColor(255, 127, 14);
            chart
                .draw_series(LineSeries::new(valid.iter().copied(), orange.stroke_width(2)))
                .map_err(draw_err)?
                .label("valid")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], orange.stroke_width(2)));
            chart
                .draw_series(valid.iter().map(|&(x, y)| Circle::new((x, y), 4, orange.filled())))
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)
    })
}

/// The schedule as PNG bytes: learning rate per batch on the left, momentum per batch on the right (when
/// `moms` is not empty).
pub fn plot_lr(history: &LrHistory) -> Result<Vec<u8>, PlotError> {
    let lrs: Vec<(f64, f64)> = finite(&indexed(&history.lrs));
    let moms: Vec<(f64, f64)> = finite(&indexed(&history.moms));
    if lrs.is_empty() {
        return Err(PlotError::Empty("learning rates"));
    }
    register_font()?;
    render(|root| {
        let mut panels: Vec<Panel<'_>> = vec![("learning rate", &lrs, BLUE, sci)];
        if !moms.is_empty() {
            panels.push(("momentum", &moms, RGBColor(44, 160, 44), fixed3));
        }
        let areas = root.split_evenly((1, panels.len()));
        for (area, (name, points, color, y_format)) in areas.iter().zip(panels) {
            let (x_max, y_min, y_max) = bounds(points.iter());
            let mut chart = ChartBuilder::on(area)
                .caption(name, (FAMILY, 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(75)
                .build_cartesian_2d(0f64..x_max, y_min..y_max)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc("batch")
                .label_style((FAMILY, 12))
                .x_label_formatter(&whole)
                .y_label_formatter(&y_format)
                .draw()
                .map_err(draw_err)?;
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(draw_err)?;
        }
        Ok(())
    })
}

/// One chart of `plot_lr`: its title, points, colour and y-label format.
type Panel<'a> = (&'static str, &'a [(f64, f64)], RGBColor, fn(&f64) -> String);

fn whole(v: &f64) -> String {
    format!("{v:.0}")
}

fn sci(v: &f64) -> String {
    format!("{v:.1e}")
}

fn fixed3(v: &f64) -> String {
    format!("{v:.3}")
}

fn indexed(values: &[f64]) -> Vec<(f64, f64)> {
    values.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect()
}

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
}

/// `(x_max, y_min, y_max)` with a margin, never an empty range.
fn bounds<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> (f64, f64, f64) {
    let (mut x_max, mut y_min, mut y_max) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() || !y_max.is_finite() {
        return (x_max, 0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(y_max.abs().max(1e-12) * 1e-3);
    (x_max, y_min - pad, y_max + pad)
}

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws with `draw` on a white RGB canvas of [`SIZE`] and encodes it as PNG.
fn render(draw: impl FnOnce(&Area<'_>) -> Result<(), PlotError>) -> Result<Vec<u8>, PlotError> {
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| PlotError::Encode(e.to_string()))?;
        writer.write_image_data(&rgb).map_err(|e| PlotError::Encode(e.to_string()))?;
        writer.finish().map_err(|e| PlotError::Encode(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_event::{BatchEnded, EpochEnded, Metrics, RunStarted};

    /// Checks the PNG signature and reads the size from the IHDR chunk, then decodes the whole image.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let h = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("a decodable PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("size fits")];
        let info = reader.next_frame(&mut buf).expect("one frame");
        assert_eq!((info.width, info.height), (w, h));
        // Something was drawn: not every pixel is white.
        assert!(buf.iter().any(|&b| b != 255), "the image is blank");
        (w, h)
    }

    #[test]
    fn losses_plot_is_a_png() {
        let h = LossHistory::from_recorder(&[2.0, 1.5, 1.2, 1.0, 0.9, 0.8], &[3, 3], &[Some(1.1), Some(0.7)]);
        assert_eq!(h.valid, [(3.0, 1.1), (6.0, 0.7)]);
        assert_eq!(png_size(&plot_losses(&h).expect("drawn")), SIZE);
    }

    #[test]
    fn lr_plot_is_a_png_with_and_without_momentum() {
        let lrs = vec![4e-4, 2.8e-3, 7.6e-3, 1e-2, 9.5e-3, 8.1e-3];
        let moms = vec![0.95, 0.925, 0.875, 0.85, 0.855, 0.869];
        assert_eq!(png_size(&plot_lr(&LrHistory { lrs: lrs.clone(), moms }).expect("drawn")), SIZE);
        assert_eq!(png_size(&plot_lr(&LrHistory { lrs, moms: vec![] }).expect("drawn")), SIZE);
    }

    #[test]
    fn empty_and_non_finite_histories() {
        assert!(matches!(plot_losses(&LossHistory::default()), Err(PlotError::Empty(_))));
        assert!(matches!(plot_lr(&LrHistory::default()), Err(PlotError::Empty(_))));
        let h = LossHistory { train: vec![(1.0, f64::NAN), (2.0, 1.0), (3.0, f64::INFINITY)], valid: vec![] };
        assert_eq!(png_size(&plot_losses(&h).expect("finite points drawn")), SIZE);
        // A flat curve still gets a y range.
        let flat = LossHistory { train: vec![(1.0, 0.5), (2.0, 0.5)], valid: vec![] };
        png_size(&plot_losses(&flat).expect("drawn"));
    }

    fn ev(run: &str, seq: u64, payload: impl Into<Payload>) -> Event {
        Event::now(run, seq, payload)
    }

    #[test]
    fn history_from_events_places_batches_by_epoch() {
        let start = RunStarted {
            name: "r".into(),
            host: "h".into(),
            pid: 1,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 2,
            batches_per_epoch: 3,
            metric_names: vec![],
            hyper: Default::default(),
        };
        let batch = |epoch, batch, smooth_loss| BatchEnded {
            epoch,
            batch,
            n_batches: 3,
            loss: smooth_loss,
            smooth_loss,
            lr: 1e-3,
        };
        let epoch = |epoch, valid_loss| EpochEnded {
            epoch,
            n_epochs: 2,
            train_loss: 1.0,
            valid_loss,
            metrics: Metrics::default(),
            elapsed_s: 1.0,
        };
        let events = vec![
            ev("a", 0, start),
            ev("a", 1, batch(0, 0, 2.0)),
            // batch (0, 1) was dropped
            ev("a", 2, batch(0, 2, 1.5)),
            ev("b", 0, batch(0, 0, 9.0)),
            ev("a", 3, epoch(0, Some(1.2))),
            ev("a", 4, batch(1, 0, 1.1)),
            ev("a", 5, epoch(1, None)),
        ];
        let h = LossHistory::from_events(&events);
        assert_eq!(h.train, [(1.0, 2.0), (3.0, 1.5), (4.0, 1.1)]);
        assert_eq!(LrHistory::from_events(&events), LrHistory { lrs: vec![1e-3; 3], moms: vec![] });
        assert_eq!(h.valid, [(3.0, 1.2)]);
        png_size(&plot_losses(&h).expect("drawn"));
    }
}

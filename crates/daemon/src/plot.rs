//! A run's loss curve from what the outbox keeps (its loss points and results table), drawn by herald-plot.
//! Used for the image attached to `run_finished` and `run_failed` deliveries (`worker.rs`) and for phone
//! commands that show a run (`host.rs`). Pure: no I/O.

use std::collections::HashMap;

use herald_plot::{BatchPoint, EpochPoint, LossHistory};
use herald_plugin::{Image, RunContext};

use crate::outbox::LossPoint;

/// The loss curve (smoothed train loss per batch, valid loss per epoch) of a run, drawn from its stored loss
/// history and results table; `None` when there is nothing to draw.
pub fn loss_plot(points: &[LossPoint], context: &RunContext) -> Option<Image> {
    if points.is_empty() && context.epochs.iter().all(|e| e.valid_loss.is_none()) {
        return None;
    }
    // Batches per epoch: as the run said, else as many as the history shows.
    let mut seen: HashMap<u32, u64> = HashMap::new();
    if context.batches_per_epoch == 0 {
        for p in points {
            let n = seen.entry(p.epoch).or_default();
            *n = (*n).max(p.batch.saturating_add(1));
        }
    }
    let batches: Vec<BatchPoint> = points
        .iter()
        .map(|p| BatchPoint {
            epoch: p.epoch,
            batch: p.batch,
            n_batches: seen.get(&p.epoch).copied().unwrap_or(context.batches_per_epoch),
            smooth_loss: p.smooth_loss,
        })
        .collect();
    let epochs: Vec<EpochPoint> =
        context.epochs.iter().map(|e| EpochPoint { epoch: e.epoch, valid_loss: e.valid_loss }).collect();
    let history = LossHistory::from_points(&batches, &epochs, context.batches_per_epoch);
    match herald_plot::plot_losses(&history) {
        Ok(bytes) => Some(Image { filename: "loss.png".into(), mime: "image/png".into(), bytes }),
        Err(e) => {
            tracing::debug!(run = %context.run, error = %e, "no loss curve");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_event::{EpochEnded, Metrics};

    use super::*;

    #[test]
    fn plots_from_history_or_nothing() {
        let mut ctx = RunContext::new("r");
        ctx.batches_per_epoch = 10;
        assert!(loss_plot(&[], &ctx).is_none(), "nothing to draw");
        let points: Vec<LossPoint> = (0..20)
            .map(|i| LossPoint {
                seq: i + 1,
                epoch: (i / 10) as u32,
                batch: i % 10,
                smooth_loss: 1.0 / (i + 1) as f64,
                lr: 1e-3,
                wall_ms: 0,
            })
            .collect();
        ctx.epochs.push(EpochEnded {
            epoch: 0,
            n_epochs: 2,
            train_loss: 0.1,
            valid_loss: Some(0.2),
            metrics: Metrics(vec![]),
            elapsed_s: 1.0,
        });
        let image = loss_plot(&points, &ctx).expect("a plot");
        assert_eq!(image.mime, "image/png");
        assert!(image.bytes.starts_with(b"\x89PNG"), "a PNG");
    }
}

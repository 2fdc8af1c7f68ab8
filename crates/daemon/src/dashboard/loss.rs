//! `GET /v1/runs/{run}/loss?points=N`: a run's loss and lr series for the run page's charts, in columns (as
//! uPlot takes them), downsampled on the server so that every series keeps its shape.
//!
//! Each point carries its position on the batch axis (batches of earlier epochs counted) and on the wall-time
//! axis (`wall_ms`, the `batch_ended` event's time), so the page can plot against either. Downsampling takes
//! the union of the min-max indices of the smoothed loss and of the lr ([`downsample::min_max`], half the
//! budget each), so the minimum and maximum of both series are always kept.
//!
//! Reading and decoding a long history from the outbox costs most of an answer (20 000 points: milliseconds), so
//! the latest answers are kept ([`LossCache`], [`CACHED_ANSWERS`] of them, by run and `points`), each under the
//! run's loss version ([`Outbox::loss_version`], taken before the read) and the run's epochs: a page polling or
//! opened again gets the kept bytes, and any new point, forgotten run or new epoch makes a fresh answer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use herald_plugin::RunContext;
use serde::Serialize;

use super::api::state_of;
use super::{Dash, downsample, form_pairs};
use crate::outbox::{LossPoint, Outbox, StoreError};
use crate::server::ApiError;

/// Points a loss series has at most when the request does not say.
pub const DEFAULT_POINTS: usize = 2000;
/// The most points a request may ask for.
pub const MAX_POINTS: usize = 100_000;

/// One epoch's point on the chart.
#[derive(Debug, Serialize)]
pub struct EpochMark {
    pub epoch: u32,
    /// The batch axis position of the epoch's end.
    pub x: f64,
    /// The wall time of the epoch's last batch (ms since the Unix epoch), when the history has it.
    pub wall_ms: Option<u64>,
    pub train_loss: f64,
    pub valid_loss: Option<f64>,
}

/// `GET /v1/runs/{run}/loss`: the answer, in columns.
#[derive(Debug, Serialize)]
pub struct LossSeries {
    pub run: String,
    /// Points stored before downsampling.
    pub total: usize,
    /// Global batch index of each point kept (batches of earlier epochs counted).
    pub x: Vec<f64>,
    /// When each point kept was reported (ms since the Unix epoch); 0 for points stored by a daemon that did
    /// not keep the time.
    pub wall_ms: Vec<u64>,
    /// The smoothed training loss at each point kept.
    pub smooth_loss: Vec<f64>,
    /// The learning rate at each point kept; null for points stored by a daemon that did not keep it.
    pub lr: Vec<Option<f64>>,
    /// Each epoch's end, with its train and valid loss.
    pub epochs: Vec<EpochMark>,
}

/// The global batch index of each point, and where each epoch ends on that axis.
fn batch_axis(points: &[LossPoint], ctx: &RunContext) -> (Vec<f64>, BTreeMap<u32, f64>) {
    // Batches per epoch: as the run said, else as many as the history shows.
    let mut sizes: BTreeMap<u32, u64> = BTreeMap::new();
    for p in points {
        let n = sizes.entry(p.epoch).or_default();
        *n = (*n).max(p.batch.saturating_add(1));
    }
    for e in &ctx.epochs {
        sizes.entry(e.epoch).or_default();
    }
    let mut start: BTreeMap<u32, f64> = BTreeMap::new();
    let mut ends: BTreeMap<u32, f64> = BTreeMap::new();
    let mut at = 0.0;
    for (&epoch, &seen) in &sizes {
        let size = if ctx.batches_per_epoch > 0 { ctx.batches_per_epoch } else { seen };
        if ctx.batches_per_epoch > 0 {
            at = epoch as f64 * size as f64;
        }
        start.insert(epoch, at);
        at += size as f64;
        ends.insert(epoch, at);
    }
    // Points come in epoch order: look the epoch's start up once per epoch, not once per point.
    let mut xs = Vec::with_capacity(points.len());
    let mut current: Option<(u32, f64)> = None;
    for p in points {
        let base = match current {
            Some((e, b)) if e == p.epoch => b,
            _ => {
                let b = start.get(&p.epoch).copied().unwrap_or(0.0);
                current = Some((p.epoch, b));
                b
            }
        };
        xs.push(base + p.batch as f64);
    }
    (xs, ends)
}

/// The indices kept of `points` for a budget of `max_points`: the union of the min-max picks of the smoothed
/// loss and of the lr (half the budget each), in order; the loss alone below 4 points or without any lr.
fn keep(points: &[LossPoint], max_points: usize) -> Vec<usize> {
    let max_points = max_points.max(2);
    if points.len() <= max_points {
        return (0..points.len()).collect();
    }
    let loss: Vec<f64> = points.iter().map(|p| p.smooth_loss).collect();
    if max_points < 4 || !points.iter().any(|p| p.lr.is_finite()) {
        return downsample::min_max(&loss, max_points);
    }
    let half = max_points / 2;
    let mut kept = downsample::min_max(&loss, half);
    {
        let lr: Vec<f64> = points.iter().map(|p| p.lr).collect();
        kept.extend(downsample::min_max(&lr, half));
        kept.sort_unstable();
        kept.dedup();
    }
    kept
}

/// The series of a run, at most `max_points` points (min-max downsampling of the loss and the lr keeps the
/// extremes of both).
pub fn loss_series(run: &str, points: &[LossPoint], ctx: &RunContext, max_points: usize) -> LossSeries {
    let (xs, ends) = batch_axis(points, ctx);
    let kept = keep(points, max_points);
    // The wall time of each epoch's last batch in the history.
    let mut epoch_wall: BTreeMap<u32, u64> = BTreeMap::new();
    for p in points.iter().filter(|p| p.wall_ms > 0) {
        epoch_wall.insert(p.epoch, p.wall_ms);
    }
    LossSeries {
        run: run.to_owned(),
        total: points.len(),
        x: kept.iter().map(|&i| xs[i]).collect(),
        wall_ms: kept.iter().map(|&i| points[i].wall_ms).collect(),
        smooth_loss: kept.iter().map(|&i| points[i].smooth_loss).collect(),
        lr: kept.iter().map(|&i| Some(points[i].lr).filter(|v| v.is_finite())).collect(),
        epochs: ctx
            .epochs
            .iter()
            .map(|e| EpochMark {
                epoch: e.epoch,
                x: ends.get(&e.epoch).copied().unwrap_or(0.0),
                wall_ms: epoch_wall.get(&e.epoch).copied(),
                train_loss: e.train_loss,
                valid_loss: e.valid_loss,
            })
            .collect(),
    }
}

/// Answers the loss cache keeps (about 120 KB each at the default 2000 points).
pub const CACHED_ANSWERS: usize = 32;
/// The most bytes the kept answers take together; an answer over a quarter of it (`points` in the tens of
/// thousands) is not kept.
pub const CACHED_BYTES: usize = 8 << 20;

/// What an answer is made of besides the points: the run, the budget, the run's loss version and the parts
/// of its context [`loss_series`] reads (batches per epoch; each epoch's number and losses, as bits).
#[derive(Debug, PartialEq, Eq)]
struct AnswerKey {
    run: String,
    max_points: usize,
    version: u64,
    batches_per_epoch: u64,
    epochs: Vec<(u32, u64, Option<u64>)>,
}

impl AnswerKey {
    fn new(run: &str, max_points: usize, version: u64, ctx: &RunContext) -> AnswerKey {
        AnswerKey {
            run: run.to_owned(),
            max_points,
            version,
            batches_per_epoch: ctx.batches_per_epoch,
            epochs: ctx
                .epochs
                .iter()
                .map(|e| (e.epoch, e.train_loss.to_bits(), e.valid_loss.map(f64::to_bits)))
                .collect(),
        }
    }
}

/// The latest loss answers (JSON bodies), most recently used first, at most [`CACHED_ANSWERS`] and
/// [`CACHED_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct LossCache {
    kept: Mutex<VecDeque<(AnswerKey, Bytes)>>,
}

impl LossCache {
    /// The body kept under exactly `key`, moved to the front.
    fn get(&self, key: &AnswerKey) -> Option<Bytes> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let i = kept.iter().position(|(k, _)| k == key)?;
        let entry = kept.remove(i)?;
        let body = entry.1.clone();
        kept.push_front(entry);
        Some(body)
    }

    /// Keep `body` under `key`, in place of any older answer for the same run and budget.
    fn put(&self, key: AnswerKey, body: Bytes) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|(k, _)| !(k.run == key.run && k.max_points == key.max_points));
        if body.len() > CACHED_BYTES / 4 {
            return;
        }
        kept.push_front((key, body));
        kept.truncate(CACHED_ANSWERS);
        while kept.iter().map(|(_, b)| b.len()).sum::<usize>() > CACHED_BYTES {
            kept.pop_back();
        }
    }
}

/// The JSON body of `run`'s loss answer: the one kept in `cache` when the run's loss version and epochs are
/// those it was made from, else made from the outbox's history (and kept, when the outbox has versions).
async fn answer(
    cache: &LossCache,
    outbox: &dyn Outbox,
    run: &str,
    ctx: &RunContext,
    max_points: usize,
) -> Result<Bytes, StoreError> {
    // The version before the read: the history read is at least as new, so the answer may be kept under it.
    let key = outbox.loss_version(run).map(|v| AnswerKey::new(run, max_points, v, ctx));
    if let Some(body) = key.as_ref().and_then(|k| cache.get(k)) {
        return Ok(body);
    }
    let points = outbox.loss_history(run).await?;
    let body = Bytes::from(serde_json::to_vec(&loss_series(run, &points, ctx, max_points))?);
    if let Some(key) = key {
        cache.put(key, body.clone());
    }
    Ok(body)
}

/// `GET /v1/runs/{run}/loss?points=N`: at most N points (default 2000, at most 100 000).
pub async fn get_loss(
    State(dash): State<Dash>,
    Path(run): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut max_points = DEFAULT_POINTS;
    for (k, v) in form_pairs(query.as_deref().unwrap_or("")) {
        match k.as_str() {
            "points" => {
                max_points =
                    v.parse::<usize>().ok().filter(|n| (2..=MAX_POINTS).contains(n)).ok_or_else(|| {
                        ApiError::bad_request(format!("points `{v}`: give a number from 2 to {MAX_POINTS}"))
                    })?;
            }
            _ => return Err(ApiError::bad_request(format!("unknown parameter `{k}`: use points"))),
        }
    }
    let st = state_of(&dash, &run)?;
    let outbox = dash.handle.shared().outbox.clone();
    let body = answer(&dash.loss_cache, outbox.as_ref(), &run, &st.context, max_points).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use herald_event::{BatchEnded, EpochEnded, Event, Metrics};

    use super::*;
    use crate::outbox::{MemoryOutbox, RedbOutbox, WriteBatch};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    /// `batch_ended` events `seqs` of run `run`, 10 batches an epoch.
    fn batches(run: &str, seqs: std::ops::Range<u64>) -> WriteBatch {
        let events = seqs
            .map(|i| {
                let b = BatchEnded {
                    epoch: (i / 10) as u32,
                    batch: i % 10,
                    n_batches: 10,
                    loss: 1.0,
                    smooth_loss: 1.0 / (1.0 + i as f64),
                    lr: 1e-3,
                };
                Event::now(run, i, b)
            })
            .collect();
        WriteBatch { events, ..WriteBatch::default() }
    }

    fn total(body: &Bytes) -> u64 {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        v["total"].as_u64().expect("total")
    }

    #[test]
    fn the_cache_answers_again_until_new_points_an_epoch_or_a_forget_and_never_stale() {
        block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = RedbOutbox::open(&dir.path().join("state")).expect("open");
            let cache = LossCache::default();
            let mut ctx = RunContext::new("r");
            store.apply(batches("r", 0..30)).expect("write");
            store.apply(batches("q", 0..5)).expect("write");
            let first = answer(&cache, &store, "r", &ctx, 100).await.expect("answer");
            assert_eq!(total(&first), 30);
            let again = answer(&cache, &store, "r", &ctx, 100).await.expect("answer");
            assert_eq!(again.as_ptr(), first.as_ptr(), "the kept answer, not a new one");
            let fewer = answer(&cache, &store, "r", &ctx, 4).await.expect("answer");
            assert_ne!(fewer.as_ptr(), first.as_ptr(), "another budget, another answer");

            // Points of another run leave r's answer kept; new points of r make a fresh one.
            store.apply(batches("q", 5..9)).expect("write");
            assert_eq!(
                answer(&cache, &store, "r", &ctx, 100).await.expect("answer").as_ptr(),
                first.as_ptr()
            );
            assert_eq!(total(&answer(&cache, &store, "q", &ctx, 100).await.expect("answer")), 9);
            store.apply(batches("r", 30..31)).expect("write");
            let newer = answer(&cache, &store, "r", &ctx, 100).await.expect("answer");
            assert_eq!(total(&newer), 31, "a new point is in the answer at once");

            // A new epoch in the run's context changes the answer's epochs, with the same points.
            ctx.epochs.push(epoch(0, 0.5));
            let with_epoch = answer(&cache, &store, "r", &ctx, 100).await.expect("answer");
            let v: serde_json::Value = serde_json::from_slice(&with_epoch).expect("json");
            assert_eq!(v["epochs"].as_array().map(Vec::len), Some(1));

            // A forgotten run has no points left.
            store.apply(WriteBatch { forget: vec!["r".to_owned()], ..WriteBatch::default() }).expect("write");
            assert_eq!(total(&answer(&cache, &store, "r", &ctx, 100).await.expect("answer")), 0);

            // Over its size, the least recently used answers go.
            for k in 0..CACHED_ANSWERS + 4 {
                answer(&cache, &store, "q", &ctx, 10 + k).await.expect("answer");
            }
            assert_eq!(cache.kept.lock().expect("lock").len(), CACHED_ANSWERS);
            let kept = |run: &str| cache.kept.lock().expect("lock").iter().any(|(k, _)| k.run == run);
            cache.put(AnswerKey::new("big", 2, 0, &ctx), Bytes::from(vec![b' '; CACHED_BYTES / 4 + 1]));
            assert!(!kept("big"), "an answer over a quarter of the bytes is not kept");
            for k in 0..5 {
                cache.put(
                    AnswerKey::new(&format!("b{k}"), 2, 0, &ctx),
                    Bytes::from(vec![b' '; CACHED_BYTES / 4]),
                );
            }
            assert!(!kept("b0") && kept("b1") && kept("b4"), "the oldest go to stay within the bytes");
        });
    }

    #[test]
    fn an_outbox_without_versions_is_read_every_time() {
        block_on(async {
            let store = MemoryOutbox::new();
            let cache = LossCache::default();
            let ctx = RunContext::new("r");
            store.commit(batches("r", 0..3)).await.expect("write");
            assert_eq!(total(&answer(&cache, &store, "r", &ctx, 100).await.expect("answer")), 3);
            store.commit(batches("r", 3..5)).await.expect("write");
            assert_eq!(total(&answer(&cache, &store, "r", &ctx, 100).await.expect("answer")), 5);
            assert!(cache.kept.lock().expect("lock").is_empty());
        });
    }

    fn epoch(epoch: u32, valid: f64) -> EpochEnded {
        EpochEnded {
            epoch,
            n_epochs: 3,
            train_loss: 1.0,
            valid_loss: Some(valid),
            metrics: Metrics(vec![]),
            elapsed_s: 2.0,
        }
    }

    fn point(seq: u64, epoch: u32, batch: u64, smooth_loss: f64, lr: f64) -> LossPoint {
        LossPoint { seq, epoch, batch, smooth_loss, lr, wall_ms: 1_000 + seq * 10 }
    }

    #[test]
    fn the_batch_axis_counts_earlier_epochs_and_wall_time_comes_along() {
        let points: Vec<LossPoint> = (0..6).map(|i| point(i, (i / 3) as u32, i % 3, i as f64, 0.1)).collect();
        let mut ctx = RunContext::new("r");
        ctx.epochs = vec![epoch(0, 0.5), epoch(1, 0.4)];
        let s = loss_series("r", &points, &ctx, 100);
        assert_eq!(s.x, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "the run did not say its batches per epoch");
        assert_eq!(s.epochs.iter().map(|e| e.x).collect::<Vec<_>>(), [3.0, 6.0]);
        ctx.batches_per_epoch = 10;
        let s = loss_series("r", &points, &ctx, 100);
        assert_eq!(s.x, [0.0, 1.0, 2.0, 10.0, 11.0, 12.0], "as the run said");
        assert_eq!(s.epochs.iter().map(|e| e.x).collect::<Vec<_>>(), [10.0, 20.0]);
        assert_eq!(s.wall_ms, [1000, 1010, 1020, 1030, 1040, 1050]);
        assert_eq!(s.epochs.iter().map(|e| e.wall_ms).collect::<Vec<_>>(), [Some(1020), Some(1050)]);
        assert_eq!(s.lr, [Some(0.1); 6]);
    }

    #[test]
    fn a_100000_point_series_keeps_the_extremes_of_loss_and_lr_in_at_most_n_points() {
        // The loss and the lr peak and dip at different places.
        let mut points: Vec<LossPoint> = (0..100_000u64)
            .map(|i| {
                let loss = 2.0 / (1.0 + i as f64 / 1000.0) + ((i * 7919) % 101) as f64 * 1e-3;
                let lr = 1e-3 * (1.0 + ((i * 37) % 97) as f64 / 97.0);
                point(i, 0, i, loss, lr)
            })
            .collect();
        points[61_234].smooth_loss = 9.5;
        points[87_001].smooth_loss = -0.25;
        points[12_345].lr = 0.5;
        points[45_678].lr = 1e-7;
        let s = loss_series("r", &points, &RunContext::new("r"), 3);
        assert!(s.x.len() <= 3 && s.smooth_loss.contains(&9.5) && s.smooth_loss.contains(&-0.25));
        for n in [4, 5, 10, 500, 2000] {
            let s = loss_series("r", &points, &RunContext::new("r"), n);
            assert_eq!(s.total, 100_000);
            assert!(s.x.len() <= n, "{} points for n = {n}", s.x.len());
            assert!(
                s.x.len() == s.smooth_loss.len() && s.x.len() == s.lr.len() && s.x.len() == s.wall_ms.len()
            );
            assert!(s.x.windows(2).all(|w| w[0] < w[1]), "in order, no repeats (n = {n})");
            for x in [61_234.0, 87_001.0, 12_345.0, 45_678.0] {
                assert!(s.x.contains(&x), "n = {n} lost the extreme at {x}");
            }
            assert!(s.smooth_loss.contains(&9.5) && s.smooth_loss.contains(&-0.25));
            assert!(s.lr.contains(&Some(0.5)) && s.lr.contains(&Some(1e-7)));
        }
    }

    #[test]
    fn points_without_lr_give_nulls_and_the_loss_alone_decides() {
        let points: Vec<LossPoint> = (0..1000)
            .map(|i| LossPoint { wall_ms: 0, ..point(i, 0, i, (i % 10) as f64, f64::NAN) })
            .collect();
        let s = loss_series("r", &points, &RunContext::new("r"), 100);
        assert!(s.x.len() <= 100 && s.lr.iter().all(Option::is_none));
        assert!(s.smooth_loss.contains(&0.0) && s.smooth_loss.contains(&9.0));
    }
}

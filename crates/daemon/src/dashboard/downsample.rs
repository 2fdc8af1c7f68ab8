//! Downsampling a series for the dashboard's charts: min-max per bucket, so a long curve keeps its shape,
//! its spikes and its extremes at a fraction of the points.
//!
//! `GET /v1/runs/{run}/loss?points=N` uses [`min_max`]; it is pure (no I/O, no allocation beyond the indices
//! it returns) and does not know what the values mean.

/// The indices, in order, of at most `max_points` points of `ys` that keep its shape: the series is cut into
/// `max_points / 2` buckets of consecutive points and each bucket keeps its lowest and its highest point (once
/// when they are the same point). So the series' minimum and maximum are always kept. Non-finite values are
/// never chosen as extremes; a bucket with nothing else keeps its first point. A series no longer than
/// `max_points` comes back whole; `max_points` below 2 counts as 2.
pub fn min_max(ys: &[f64], max_points: usize) -> Vec<usize> {
    let max_points = max_points.max(2);
    if ys.len() <= max_points {
        return (0..ys.len()).collect();
    }
    let buckets = max_points / 2;
    let mut out = Vec::with_capacity(max_points);
    for b in 0..buckets {
        // Bucket b covers [start, end): sizes differ by at most one.
        let start = b * ys.len() / buckets;
        let end = (b + 1) * ys.len() / buckets;
        let mut lo: Option<usize> = None;
        let mut hi: Option<usize> = None;
        for (i, y) in ys.iter().enumerate().take(end).skip(start) {
            if !y.is_finite() {
                continue;
            }
            if lo.is_none_or(|l| *y < ys[l]) {
                lo = Some(i);
            }
            if hi.is_none_or(|h| *y > ys[h]) {
                hi = Some(i);
            }
        }
        match (lo, hi) {
            (Some(l), Some(h)) if l == h => out.push(l),
            (Some(l), Some(h)) => {
                out.push(l.min(h));
                out.push(l.max(h));
            }
            _ => out.push(start),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extremes(ys: &[f64]) -> (usize, usize) {
        let mut lo = 0;
        let mut hi = 0;
        for (i, y) in ys.iter().enumerate() {
            if *y < ys[lo] {
                lo = i;
            }
            if *y > ys[hi] {
                hi = i;
            }
        }
        (lo, hi)
    }

    #[test]
    fn a_100000_point_series_keeps_its_minimum_and_maximum_in_at_most_n_points() {
        // A noisy decaying loss with one spike and one dip far from the ends.
        let mut ys: Vec<f64> = (0..100_000)
            .map(|i| 2.0 / (1.0 + i as f64 / 1000.0) + ((i * 7919) % 101) as f64 * 1e-3)
            .collect();
        ys[61_234] = 9.5;
        ys[87_001] = -0.25;
        let (lo, hi) = extremes(&ys);
        for n in [2, 3, 10, 500, 2000, 2001] {
            let kept = min_max(&ys, n);
            assert!(kept.len() <= n, "{} points for n = {n}", kept.len());
            assert!(kept.contains(&lo) && kept.contains(&hi), "n = {n} lost an extreme");
            assert!(kept.windows(2).all(|w| w[0] < w[1]), "indices in order, no repeats (n = {n})");
        }
        assert_eq!(min_max(&ys, 2000).len(), 2000, "a long series fills its budget");
    }

    #[test]
    fn short_series_come_back_whole_and_odd_values_do_not_break_it() {
        let check =
            |ys: &[f64], n: usize, expected: &[usize]| assert_eq!(min_max(ys, n), expected, "{ys:?} {n}");
        check(&[], 10, &[]);
        check(&[1.0, 2.0, 3.0], 3, &[0, 1, 2]);
        check(&[1.0, 2.0, 3.0], 0, &[0, 2]);
        check(&[5.0, 1.0, 9.0, 2.0], 2, &[1, 2]);
        check(&[f64::NAN, f64::NAN, 1.0, f64::INFINITY, 3.0, 0.5], 4, &[2, 4, 5]);
        check(&[7.0; 9], 4, &[0, 4]);
    }
}

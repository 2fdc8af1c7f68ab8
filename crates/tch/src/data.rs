//! [`DataLoaders`]: a training and a validation set held as tensors on the training device, cut into batches.
//!
//! Like fastai's `DataLoaders` for in-memory data: the training set is reshuffled every epoch with a seeded
//! generator (the same seed gives the same batches on every machine), the validation set is not; the last
//! partial batch is kept in both. Each epoch's batches are cut up front as views of one permuted copy on the
//! device, so the training loop does no per-batch gathering or host-to-device copies. It does not stream
//! data that does not fit in memory, and it does not augment.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// A set of examples: inputs (first dimension = examples) and integer class targets.
#[derive(Debug)]
pub struct Dataset {
    /// The inputs; the first dimension indexes the examples.
    pub x: Tensor,
    /// The class index of each example (`[n]`, i64).
    pub y: Tensor,
}

impl Dataset {
    /// Checks that `x` and `y` hold the same number of examples and that `y` is a vector of class indices.
    pub fn new(x: Tensor, y: Tensor) -> Result<Dataset> {
        let n = x.size().first().copied().unwrap_or(0);
        let y_size = y.size();
        if y_size.len() != 1 || y_size[0] != n {
            return Err(Error::Data(format!(
                "inputs have {n} examples but targets have shape {y_size:?}; give one class index per example"
            )));
        }
        let y = if y.kind() == Kind::Int64 { y } else { y.f_to_kind(Kind::Int64)? };
        Ok(Dataset { x, y })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.x.size().first().map_or(0, |&n| usize::try_from(n).unwrap_or(0))
    }

    /// Whether the set holds no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_device(&self, device: Device) -> Result<Dataset> {
        Ok(Dataset { x: self.x.f_to_device(device)?, y: self.y.f_to_device(device)? })
    }

    fn select(&self, index: &Tensor) -> Result<Dataset> {
        Ok(Dataset { x: self.x.f_index_select(0, index)?, y: self.y.f_index_select(0, index)? })
    }

    /// Cuts into batches of `bs` (views, no copy); the last one may be smaller.
    fn batches(&self, bs: usize) -> Result<Vec<(Tensor, Tensor)>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let bs = bs as i64;
        let xs = self.x.f_split(bs, 0)?;
        let ys = self.y.f_split(bs, 0)?;
        Ok(xs.into_iter().zip(ys).collect())
    }
}

/// A training and a validation set with a batch size and a shuffling seed.
#[derive(Debug)]
pub struct DataLoaders {
    train: Dataset,
    valid: Dataset,
    bs: usize,
    seed: u64,
    device: Device,
    n_classes: Option<i64>,
    /// The current epoch's training batches.
    train_batches: Vec<(Tensor, Tensor)>,
    valid_batches: Vec<(Tensor, Tensor)>,
}

impl DataLoaders {
    /// From separate training and validation sets, on the CPU, seed 0.
    pub fn new(train: Dataset, valid: Dataset, bs: usize) -> Result<DataLoaders> {
        if bs == 0 {
            return Err(Error::Data("batch size 0: give a batch size of at least 1".into()));
        }
        if train.is_empty() {
            return Err(Error::Data("the training set is empty".into()));
        }
        let (tx, vx) = (train.x.size(), valid.x.size());
        if !valid.is_empty() && tx[1..] != vx[1..] {
            return Err(Error::Data(format!(
                "training inputs are {:?} per example but validation inputs are {:?}",
                &tx[1..],
                &vx[1..]
            )));
        }
        let mut dls = DataLoaders {
            train,
            valid,
            bs,
            seed: 0,
            device: Device::Cpu,
            n_classes: None,
            train_batches: Vec::new(),
            valid_batches: Vec::new(),
        };
        dls.valid_batches = dls.valid.batches(bs)?;
        Ok(dls)
    }

    /// From one set: a seeded shuffle, then the last `valid_pct` of it (rounded down) for validation.
    pub fn from_tensors(x: Tensor, y: Tensor, valid_pct: f64, bs: usize, seed: u64) -> Result<DataLoaders> {
        if !(0.0..1.0).contains(&valid_pct) {
            return Err(Error::Data(format!("valid_pct {valid_pct} is outside [0, 1)")));
        }
        let all = Dataset::new(x, y)?;
        let n = all.len();
        let n_valid = (n as f64 * valid_pct).floor() as usize;
        let order = permutation(n, seed);
        let (train_idx, valid_idx) = order.split_at(n - n_valid);
        let train = all.select(&index_tensor(train_idx)?)?;
        let valid = all.select(&index_tensor(valid_idx)?)?;
        Ok(DataLoaders::new(train, valid, bs)?.seed(seed))
    }

    /// The seed of the per-epoch shuffles.
    pub fn seed(mut self, seed: u64) -> DataLoaders {
        self.seed = seed;
        self
    }

    /// Moves both sets to `device`.
    pub fn to_device(mut self, device: Device) -> Result<DataLoaders> {
        self.set_device(device)?;
        Ok(self)
    }

    pub(crate) fn set_device(&mut self, device: Device) -> Result<()> {
        if device != self.device {
            self.train = self.train.to_device(device)?;
            self.valid = self.valid.to_device(device)?;
            self.valid_batches = self.valid.batches(self.bs)?;
            self.train_batches.clear();
            self.device = device;
        }
        Ok(())
    }

    /// Where both sets live (CPU until [`DataLoaders::to_device`]).
    pub fn device(&self) -> Device {
        self.device
    }

    /// The batch size, in examples (the last batch of each set may be smaller).
    pub fn bs(&self) -> usize {
        self.bs
    }

    /// The training set (reshuffled into batches every epoch).
    pub fn train(&self) -> &Dataset {
        &self.train
    }

    /// The validation set (batched in order, never shuffled).
    pub fn valid(&self) -> &Dataset {
        &self.valid
    }

    /// Training batches per epoch (the last partial one counts).
    pub fn n_train_batches(&self) -> u64 {
        self.train.len().div_ceil(self.bs) as u64
    }

    /// Validation batches per pass (the last partial one counts; 0 when the set is empty).
    pub fn n_valid_batches(&self) -> u64 {
        self.valid_batches.len() as u64
    }

    /// The number of classes: one more than the largest target in either set.
    pub fn n_classes(&mut self) -> Result<i64> {
        if let Some(n) = self.n_classes {
            return Ok(n);
        }
        let mut n = self.train.y.f_max()?.f_int64_value(&[])? + 1;
        if !self.valid.is_empty() {
            n = n.max(self.valid.y.f_max()?.f_int64_value(&[])? + 1);
        }
        self.n_classes = Some(n);
        Ok(n)
    }

    /// Shuffles the training set for `epoch` (seed and epoch pick the order) and cuts its batches.
    pub fn shuffle_for_epoch(&mut self, epoch: u32) -> Result<()> {
        let order = permutation(self.train.len(), self.seed ^ (u64::from(epoch) + 1).wrapping_mul(GOLDEN));
        let index = index_tensor(&order)?.f_to_device(self.device)?;
        let shuffled = self.train.select(&index)?;
        self.train_batches = shuffled.batches(self.bs)?;
        Ok(())
    }

    /// Training batch `i` of the current epoch ([`DataLoaders::shuffle_for_epoch`] first).
    pub fn train_batch(&self, i: u64) -> Option<&(Tensor, Tensor)> {
        self.train_batches.get(usize::try_from(i).ok()?)
    }

    /// Validation batch `i`.
    pub fn valid_batch(&self, i: u64) -> Option<&(Tensor, Tensor)> {
        self.valid_batches.get(usize::try_from(i).ok()?)
    }

    /// The validation examples' indices in the set [`DataLoaders::from_tensors`] split, for tools that must
    /// use the same split (the trainer benchmark hands them to fastai and PyTorch).
    pub fn split_indices(n: usize, valid_pct: f64, seed: u64) -> (Vec<i64>, Vec<i64>) {
        let n_valid = (n as f64 * valid_pct).floor() as usize;
        let order = permutation(n, seed);
        let (t, v) = order.split_at(n.saturating_sub(n_valid));
        (t.to_vec(), v.to_vec())
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64: a small, well-mixed generator; the same seed gives the same sequence everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// A seeded Fisher-Yates permutation of `0..n`.
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut rng = SplitMix(seed);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

fn index_tensor(idx: &[i64]) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(idx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: i64) -> (Tensor, Tensor) {
        let x =
            Tensor::f_arange(n, (Kind::Float, Device::Cpu)).expect("arange").f_view([n, 1]).expect("view");
        let y = Tensor::f_arange(n, (Kind::Int64, Device::Cpu)).expect("arange").f_remainder(3).expect("mod");
        (x, y)
    }

    fn values(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t.f_to_kind(Kind::Int64).expect("cast").f_flatten(0, -1).expect("flat"))
            .expect("to vec")
    }

    #[test]
    fn permutation_is_seeded_and_complete() {
        let a = permutation(100, 7);
        assert_eq!(a, permutation(100, 7));
        assert_ne!(a, permutation(100, 8));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert!(permutation(0, 1).is_empty());
        assert_eq!(permutation(1, 1), [0]);
    }

    #[test]
    fn split_batches_and_last_partial_batch() {
        let (x, y) = set(103);
        let mut dls = DataLoaders::from_tensors(x, y, 0.2, 16, 42).expect("loaders");
        assert_eq!((dls.train().len(), dls.valid().len()), (83, 20));
        assert_eq!((dls.n_train_batches(), dls.n_valid_batches()), (6, 2));
        dls.shuffle_for_epoch(0).expect("shuffle");
        let sizes: Vec<i64> = (0..6).map(|i| dls.train_batch(i).expect("batch").0.size()[0]).collect();
        assert_eq!(sizes, [16, 16, 16, 16, 16, 3]);
        assert!(dls.train_batch(6).is_none());
        assert_eq!(dls.valid_batch(1).expect("batch").0.size()[0], 4);
        // Train and valid are disjoint and cover everything; targets follow their inputs.
        let mut seen: Vec<i64> = (0..6).flat_map(|i| values(&dls.train_batch(i).expect("batch").0)).collect();
        seen.extend((0..2).flat_map(|i| values(&dls.valid_batch(i).expect("batch").0)));
        for i in 0..6 {
            let (bx, by) = dls.train_batch(i).expect("batch");
            let expect: Vec<i64> = values(bx).iter().map(|v| v % 3).collect();
            assert_eq!(values(by), expect);
        }
        seen.sort();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        // The split is the one split_indices reports.
        let (_, valid_idx) = DataLoaders::split_indices(103, 0.2, 42);
        let mut valid_seen: Vec<i64> =
            (0..2).flat_map(|i| values(&dls.valid_batch(i).expect("b").0)).collect();
        let mut v = valid_idx.clone();
        v.sort();
        valid_seen.sort();
        assert_eq!(valid_seen, v);
    }

    #[test]
    fn shuffles_differ_by_epoch_and_repeat_by_seed() {
        let order = |seed, epoch| {
            let (x, y) = set(50);
            let mut dls = DataLoaders::from_tensors(x, y, 0.0, 50, seed).expect("loaders");
            dls.shuffle_for_epoch(epoch).expect("shuffle");
            values(&dls.train_batch(0).expect("batch").0)
        };
        assert_eq!(order(1, 0), order(1, 0));
        assert_ne!(order(1, 0), order(1, 1));
        assert_ne!(order(1, 0), order(2, 0));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::f_zeros([4, 2], (Kind::Float, Device::Cpu)).expect("zeros");
        let y = Tensor::f_zeros([5], (Kind::Int64, Device::Cpu)).expect("zeros");
        let err = Dataset::new(x, y).expect_err("4 inputs, 5 targets");
        assert!(err.to_string().contains("4 examples"), "{err}");
        let (x, y) = set(10);
        assert!(DataLoaders::from_tensors(x, y, 1.5, 4, 0).is_err());
        let (x, y) = set(10);
        assert!(DataLoaders::from_tensors(x, y, 0.2, 0, 0).is_err());
    }
}

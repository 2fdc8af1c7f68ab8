"""The digits data (data/digits.csv.gz: 1797 8x8 images, labels 0..9) for the framework tests: a seeded 80/20
split as numpy arrays, and ready-made fastai learners on an MLP 64-128-10."""

from __future__ import annotations

import gzip
import os
from typing import Any, Tuple

from support import REPO

DIGITS = os.path.join(REPO, "data", "digits.csv.gz")


def arrays(seed: int = 0) -> Tuple[Any, Any, Any, Any]:
    """x_train, y_train, x_valid, y_valid: float32 pixels scaled to 0..1, int64 labels."""
    import numpy as np

    with gzip.open(DIGITS, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float32)
    rng = np.random.default_rng(seed)
    data = data[rng.permutation(len(data))]
    x, y = data[:, :64] / 16.0, data[:, 64].astype(np.int64)
    cut = int(len(data) * 0.8)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def mlp() -> Any:
    import torch.nn as nn

    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def fastai_learner(model: Any = None, bs: int = 32) -> Any:
    import torch
    import fastai.callback.schedule  # noqa: F401 - patches fit_one_cycle onto Learner
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy

    torch.manual_seed(0)
    xt, yt, xv, yv = arrays()
    train = list(zip(torch.from_numpy(xt), torch.from_numpy(yt)))
    valid = list(zip(torch.from_numpy(xv), torch.from_numpy(yv)))
    dls = DataLoaders.from_dsets(train, valid, bs=bs, device=torch.device("cpu"), num_workers=0)
    return Learner(dls, model if model is not None else mlp(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)

"""fastai 2.8.12's fit_one_cycle on the same MLP and split, progress bar off: Learner with its default
optimizer (Adam, decoupled wd 1e-2), CrossEntropyLossFlat, accuracy; the training loader keeps the last
partial batch like herald-tch's."""

import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from fastai.basics import CrossEntropyLossFlat, DataLoaders, Learner, accuracy  # noqa: E402
import fastai.callback.schedule  # noqa: E402,F401  (adds Learner.fit_one_cycle)
from fastai.callback.progress import ProgressCallback  # noqa: E402
from fastai.data.load import DataLoader  # noqa: E402

import common  # noqa: E402


def main():
    a = common.args()
    xt, yt, xv, yv = common.load(a)
    train = list(zip(xt, yt))
    valid = list(zip(xv, yv))

    def fit(epochs, seed):
        torch.manual_seed(seed)
        dls = DataLoaders(
            DataLoader(train, bs=a.bs, shuffle=True, drop_last=False),
            DataLoader(valid, bs=a.bs, shuffle=False),
            device=torch.device("cpu"),
        )
        learn = Learner(dls, common.model(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
        learn.remove_cb(ProgressCallback)
        with learn.no_logging():
            learn.fit_one_cycle(epochs, a.lr)
        return float(learn.recorder.values[-1][2])

    common.run(a, fit)


if __name__ == "__main__":
    main()

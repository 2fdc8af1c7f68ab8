"""A small fit under ``torchrun`` on CPU (gloo), reporting with Herald's callback, for test_ranks.py.

``python -m torch.distributed.run --nproc-per-node N ddp_fit.py FRAMEWORK RANKS``: FRAMEWORK is ``fastai``
(``Learner.distrib_ctx``, fastai's ``DistributedTrainer`` on accelerate) or ``transformers`` (``Trainer``);
RANKS is the callback's ``ranks`` (``all`` or ``zero``). The client is the default one (``HERALD_URL``,
``HERALD_SPOOL_DIR``); each rank flushes it before leaving.
"""

from __future__ import annotations

import os
import sys

import herald


def fastai_fit(ranks: str) -> None:
    import torch
    from fastai.callback.progress import ProgressCallback
    import fastai.distributed  # noqa: F401 - patches distrib_ctx onto Learner

    import digits
    from herald.fastai import HeraldCallback

    def broadcast_on_cpu(self, t, rank):  # noqa: ANN001, ANN202
        # fastai's DistributedDL moves its index broadcast to CUDA (for nccl); gloo broadcasts CPU tensors.
        t = torch.LongTensor(t)
        torch.distributed.broadcast(t, rank)
        return t.tolist()

    fastai.distributed.DistributedDL._broadcast = broadcast_on_cpu
    learn = digits.fastai_learner()
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *args: None
    with learn.distrib_ctx(cpu=True):
        learn.fit(2, 1e-2, cbs=HeraldCallback("ddp-fastai", ranks=ranks))


def transformers_fit(ranks: str) -> None:
    import torch
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    from herald.transformers import HeraldCallback

    class Data(Dataset):
        def __init__(self, n: int) -> None:
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(n, 8, generator=g)
            self.y = self.x.sum(dim=1, keepdim=True)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int):  # noqa: ANN204
            return {"x": self.x[i], "labels": self.y[i]}

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 1)

        def forward(self, x, labels=None):  # noqa: ANN001, ANN201
            out = self.layer(x)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    args = TrainingArguments(
        output_dir=os.environ["DDP_OUT"],
        num_train_epochs=2,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        eval_strategy="epoch",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        ddp_backend="gloo",
        disable_tqdm=True,
        run_name="ddp-transformers",
    )
    trainer = Trainer(model=Model(), args=args, train_dataset=Data(64), eval_dataset=Data(16),
                      callbacks=[HeraldCallback(ranks=ranks)])
    trainer.train()


if __name__ == "__main__":
    framework, ranks = sys.argv[1], sys.argv[2]
    {"fastai": fastai_fit, "transformers": transformers_fit}[framework](ranks)
    herald.default_client().flush(20)

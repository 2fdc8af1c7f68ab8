"""A tiny Lightning fit through the DDP strategy on CPU (gloo) under torchrun, reporting every rank with
``herald.lightning.HeraldCallback``, for tests/e2e/jobs.rs.

Environment: ``JOB_DIR`` (each rank writes ``rank<N>.pid`` there), ``JOB_MODE`` (``healthy``; ``hang``: rank 2
sleeps forever in its second epoch, and the others wait for it in the next gradient all-reduce), ``JOB_EPOCHS``,
``JOB_STEPS`` (batches per epoch) and ``JOB_STEP_S`` (seconds each training step sleeps, so that a stop request
can land mid-epoch).
"""

import os
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from herald.lightning import HeraldCallback

rank = int(os.environ["RANK"])
mode = os.environ.get("JOB_MODE", "healthy")
epochs = int(os.environ.get("JOB_EPOCHS", "3"))
steps = int(os.environ.get("JOB_STEPS", "4"))
step_s = float(os.environ.get("JOB_STEP_S", "0.05"))
with open(os.path.join(os.environ["JOB_DIR"], f"rank{rank}.pid"), "w") as f:
    f.write(str(os.getpid()))


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        time.sleep(step_s)
        if mode == "hang" and rank == 2 and self.current_epoch == 1:
            while True:
                time.sleep(3600)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        self.log("accuracy", 0.5 + self.current_epoch / 100, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.01)


torch.manual_seed(0)
# Each rank gets `steps` batches of 16 from the distributed sampler.
data = TensorDataset(torch.randn(16 * steps * 3, 8), torch.randn(16 * steps * 3, 1))
trainer = L.Trainer(
    accelerator="cpu",
    devices=3,
    strategy="ddp",
    max_epochs=epochs,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    callbacks=[HeraldCallback("lightning-e2e")],
)
trainer.fit(Tiny(), DataLoader(data, batch_size=16))
import herald  # noqa: E402

herald.default_client().flush(10)
# gloo's shutdown now and then aborts a finished rank; everything is reported, so leave without it.
os._exit(0)

"""A small plain-loop training under torchrun (gloo, CPU) reporting with ``herald.run`` from every rank, for
tests/e2e/jobs.rs. No collective in the loop (a blocking all-reduce would make every rank's epoch as slow as
the slowest), so each rank's epoch time is its own.

Environment: ``JOB_DIR`` (each rank writes ``rank<N>.pid`` there), ``JOB_MODE`` (``healthy``; ``hang``: rank 2
sleeps forever in its second epoch; ``slow``: rank 2 takes twice as long per step), ``JOB_EPOCHS``,
``JOB_STEPS`` and ``JOB_STEP_S`` (seconds per step).
"""

import os
import time

import torch
import torch.distributed as dist

import herald

dist.init_process_group("gloo")
rank = dist.get_rank()
mode = os.environ.get("JOB_MODE", "healthy")
epochs = int(os.environ.get("JOB_EPOCHS", "3"))
steps = int(os.environ.get("JOB_STEPS", "4"))
step_s = float(os.environ.get("JOB_STEP_S", "0.05"))
with open(os.path.join(os.environ["JOB_DIR"], f"rank{rank}.pid"), "w") as f:
    f.write(str(os.getpid()))

torch.manual_seed(rank)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
with herald.run("ddp-e2e", n_epochs=epochs, batches_per_epoch=steps, metric_names=["accuracy"]) as run:
    for epoch in range(epochs):
        run.epoch_started()
        for step in range(steps):
            loss = model(torch.randn(16, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(step_s * (2 if mode == "slow" and rank == 2 else 1))
            run.batch_ended(loss.item(), lr=0.01)
            if mode == "hang" and rank == 2 and epoch == 1:
                while True:
                    time.sleep(3600)
            if run.should_stop:
                break
        run.epoch_ended(valid_loss=loss.item(), metrics={"accuracy": 0.5 + epoch / 100})
        if run.should_stop:
            break
herald.default_client().flush(10)
# gloo's shutdown now and then aborts a finished rank; everything is reported, so leave without it.
os._exit(0)

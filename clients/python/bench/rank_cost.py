"""The Python client's cost per event on a non-zero rank of a distributed job, against a running daemon (run by
``cargo xtask bench ranks``; standalone: ``python clients/python/bench/rank_cost.py http://127.0.0.1:PORT``).

Prints, for rank 1 of a job of 64 (``HERALD_JOB``, ``RANK``, ``WORLD_SIZE``):

- the call on the training thread: ``epoch_ended`` (queued for the sender thread) and ``batch_ended`` (kept off
  the wire on a non-zero rank), mean of many calls;
- the process's CPU per ``epoch_ended`` sent alone (one every 60 ms, longer than the client's linger, so each is its
  own POST, as an epoch a second is), training thread and sender thread together, less the same time idle.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.update({"HERALD_JOB": "bench-client", "RANK": "1", "WORLD_SIZE": "64"})
import herald  # noqa: E402


def main() -> None:
    url = sys.argv[1]
    spool = os.environ.get("HERALD_SPOOL_DIR") or tempfile.mkdtemp(prefix="herald-rank-cost-")
    client = herald.Client(url, spool_dir=spool)
    n = 20_000
    run = herald.Run("bench-client", client=client).start(n_epochs=n)
    if run.rank != 1 or run.job != "bench-client":
        raise SystemExit(f"not rank 1 of a job: rank {run.rank}, job {run.job}")

    t0 = time.perf_counter()
    for e in range(n):
        run.epoch_ended(train_loss=0.5, elapsed_s=1.0, epoch=e)
    per_epoch = (time.perf_counter() - t0) / n * 1e6
    client.flush(60)
    t0 = time.perf_counter()
    for _ in range(n):
        run.batch_ended(0.5, lr=0.01)
    per_batch = (time.perf_counter() - t0) / n * 1e6

    spaced, gap = 60, 0.06
    idle0 = time.process_time()
    time.sleep(spaced * gap)
    idle = time.process_time() - idle0
    cpu0 = time.process_time()
    for e in range(spaced):
        run.epoch_ended(train_loss=0.5, elapsed_s=1.0, epoch=n + e)
        time.sleep(gap)
    client.flush(10)
    cpu = (time.process_time() - cpu0 - idle) / spaced * 1e6
    run.finish("completed")
    client.flush(10)
    print(f"    epoch_ended call  {per_epoch:8.1f} us (queued; the sender thread posts it)")
    print(f"    batch_ended call  {per_batch:8.2f} us (kept off the wire on a non-zero rank)")
    print(f"    CPU per epoch_ended sent alone, both threads  {cpu:8.0f} us")


if __name__ == "__main__":
    main()

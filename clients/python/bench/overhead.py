"""How much does reporting to Herald slow training down? Side by side in one process, interleaved.

    .venv/bin/python clients/python/bench/overhead.py [--epochs 5] [--repeats 7] [--herald-bin target/debug/herald]

Times fastai 2.8 ``fit_one_cycle`` on the digits data (MLP 64-128-10, bs 32, one torch thread, no progress bar)
without a callback, with ``HeraldCallback`` reporting to a running ``herald serve``, and with the daemon down (the
client spools to disk), plus a plain PyTorch loop (reading ``loss.item()`` each batch) with and without
``herald.run`` reporting every batch. The
modes run interleaved in a shuffled order each repeat so machine noise hits them alike; the figure is the ratio
of medians. The issue's goal: under 2% slower.

Only a measurement: it asserts nothing (the tests check behaviour; timings belong here).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "src"), os.path.join(HERE, "..", "tests")]

import herald  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(binary: str, tmp: str) -> "tuple[subprocess.Popen, str]":
    port = free_port()
    config = os.path.join(tmp, "herald.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f'[daemon]\nlisten = "127.0.0.1:{port}"\nsocket = ""\nstate_dir = "{tmp}/state"\n'
                '[[notifier]]\ntype = "console"\n')
    proc = subprocess.Popen([binary, "--config", config, "serve"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"herald serve did not start ({binary})")
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    default_bin = os.environ.get("HERALD_BIN") or os.path.join(HERE, "..", "..", "..", "target", "debug", "herald")
    parser.add_argument("--herald-bin", default=default_bin)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from fastai.callback.progress import ProgressCallback

    import digits
    from herald.fastai import HeraldCallback

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="herald-bench-")
    proc, url = start_daemon(os.path.abspath(args.herald_bin), tmp)
    up = herald.Client(url, spool_dir=os.path.join(tmp, "spool-up"))
    down = herald.Client(f"http://127.0.0.1:{free_port()}", spool_dir=os.path.join(tmp, "spool-down"))
    xt, yt, xv, yv = digits.arrays()
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)

    hook_time = [0.0]

    def timed(method):
        def wrapper(*a, **kw):
            t0 = time.thread_time()
            try:
                return method(*a, **kw)
            finally:
                hook_time[0] += time.thread_time() - t0
        return wrapper

    def sender_cpu(client) -> float:
        """CPU seconds the client's sender thread has used (Linux schedstat)."""
        thread = client._thread
        if thread is None or thread.native_id is None:
            return 0.0
        try:
            with open(f"/proc/self/task/{thread.native_id}/schedstat", encoding="ascii") as f:
                return int(f.read().split()[0]) / 1e9
        except OSError:
            return 0.0

    def fastai_fit(cb, direct=None) -> float:
        learn = digits.fastai_learner()
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *a: None
        if cb is not None and direct is not None:
            for hook in ("before_fit", "before_epoch", "after_batch", "after_epoch", "after_fit"):
                setattr(cb, hook, timed(getattr(cb, hook)))
            hook_time[0] = 0.0
            cpu0 = sender_cpu(cb.herald.client)
        t, main0 = time.perf_counter(), time.thread_time()
        learn.fit_one_cycle(args.epochs, 1e-2, cbs=[cb] if cb is not None else None)
        wall, main = time.perf_counter() - t, time.thread_time() - main0
        if cb is not None and direct is not None:
            cb.herald.client.flush(5)
            sender = sender_cpu(cb.herald.client) - cpu0
            direct.append((hook_time[0] / main, sender / main, (hook_time[0] + sender) / (main - hook_time[0])))
        return wall

    def plain_loop(client) -> float:
        torch.manual_seed(0)
        model = digits.mlp()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run = herald.run("bench-loop", n_epochs=args.epochs, client=client) if client is not None else None
        t = time.perf_counter()
        if run is not None:
            run.start()
        for _ in range(args.epochs):
            perm = torch.randperm(len(xt_t))
            for i in range(0, len(perm), 32):
                idx = perm[i:i + 32]
                loss = F.cross_entropy(model(xt_t[idx]), yt_t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                value = loss.item()  # both variants read the loss, as a loop that tracks it does
                if run is not None:
                    run.batch_ended(value, lr=1e-3)
            if run is not None:
                run.epoch_ended()
        if run is not None:
            run.finish()
        return time.perf_counter() - t

    modes = {
        "fastai, no callback": lambda: fastai_fit(None),
        "fastai + HeraldCallback, daemon up": lambda: fastai_fit(HeraldCallback("bench", client=up), direct),
        "fastai + HeraldCallback, daemon down (spooling)": lambda: fastai_fit(HeraldCallback("bench", client=down)),
        "plain loop, no reporting": lambda: plain_loop(None),
        "plain loop + herald.run every batch, daemon up": lambda: plain_loop(up),
    }
    times = {name: [] for name in modes}
    cpu = {name: [] for name in modes}
    direct: list = []
    try:
        for name, fn in modes.items():  # warm-up, untimed
            fn()
        for r in range(args.repeats):
            order = list(modes)
            random.shuffle(order)
            for name in order:
                c0 = time.process_time()
                times[name].append(modes[name]())
                cpu[name].append(time.process_time() - c0)
            print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        up.close()
        down.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
        shutil.rmtree(tmp, ignore_errors=True)

    base = {"fastai": statistics.median(times["fastai, no callback"]),
            "plain": statistics.median(times["plain loop, no reporting"])}
    cbase = {"fastai": statistics.median(cpu["fastai, no callback"]),
             "plain": statistics.median(cpu["plain loop, no reporting"])}
    print(f"{args.epochs} epochs per fit, {args.repeats} interleaved repeats; medians per fit, wall and process CPU")
    for name, ts in times.items():
        med, cmed = statistics.median(ts), statistics.median(cpu[name])
        key = "fastai" if name.startswith("fastai") else "plain"
        print(f"  {name:<50} wall {med:7.3f} s {100 * (med / base[key] - 1):+6.2f}%   "
              f"cpu {cmed:7.3f} s {100 * (cmed / cbase[key] - 1):+6.2f}%   (wall min {min(ts):.3f}, max {max(ts):.3f})")
    hooks, sender, total = (sorted(x[i] for x in direct) for i in range(3))
    print("  CPU the reporting costs with the daemon up, relative to the training thread's own CPU time (medians):")
    print(f"    in HeraldCallback's hooks (training thread): {100 * statistics.median(hooks):.3f}%")
    print(f"    sender thread (runs beside training; GIL while in Python): {100 * statistics.median(sender):.3f}%")
    print(f"    both, as if serial: {100 * statistics.median(total):.3f}% (max {100 * max(total):.3f}%)")
    print(f"events: sent {up.stats.sent}, spooled {down.stats.spooled}, dropped {up.stats.dropped + down.stats.dropped}")


if __name__ == "__main__":
    main()

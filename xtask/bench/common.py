"""Shared by the trainer benchmark's Python runs: the digits data, the split herald-tch used, the timing.

Inputs are the 64 pixels divided by 16 (as herald-tch's loader does); the split comes from the JSON file
the herald-tch run wrote, so all three trainers see the same examples.
"""

import argparse
import csv
import gzip
import json
import statistics
import time

import torch


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    return a


def load(a):
    """(x_train, y_train, x_valid, y_valid) as float32 / int64 CPU tensors."""
    with gzip.open(a.data, "rt") as f:
        rows = [[int(c) for c in line] for line in csv.reader(f) if line]
    x = torch.tensor([r[:64] for r in rows], dtype=torch.float32) / 16.0
    y = torch.tensor([r[64] for r in rows], dtype=torch.int64)
    with open(a.split) as f:
        split = json.load(f)
    t = torch.tensor(split["train"], dtype=torch.int64)
    v = torch.tensor(split["valid"], dtype=torch.int64)
    return x[t], y[t], x[v], y[v]


def model():
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def run(a, fit):
    """Calls fit(epochs, seed) (returns the final accuracy) once untimed with 2 epochs, then a.reps times with
    seeds a.seed + rep; writes the seconds per epoch of each fit (wall clock and this thread's CPU time)
    and the mean accuracy to a.json."""
    fit(2, a.seed)
    times, cpu_times, accs = [], [], []
    for rep in range(a.reps):
        start, cpu_start = time.perf_counter(), time.thread_time()
        accs.append(fit(a.epochs, a.seed + rep))
        cpu_times.append((time.thread_time() - cpu_start) / a.epochs)
        times.append((time.perf_counter() - start) / a.epochs)
    with open(a.json, "w") as f:
        json.dump({"per_epoch_s": statistics.median(times), "accuracy": statistics.mean(accs),
                   "accuracies": accs, "runs": times, "cpu_runs": cpu_times}, f)

"""herald.fastai.HeraldCallback in real fastai 2.8 fits on the digits data, against the fake daemon."""

from __future__ import annotations

import threading
import unittest
from pathlib import Path

from support import ClientTest

from fake_daemon import FakeDaemon

try:
    import fastai  # noqa: F401
except ImportError as err:  # pragma: no cover - `cargo xtask setup` installs it
    raise ImportError("fastai is missing: run `cargo xtask setup` (it installs fastai==2.8.12 into .venv)") from err

import torch.nn as nn
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback

import digits
from herald.fastai import HeraldCallback


def quiet(learn, path=None):
    """No progress bar and no printed table; ``path`` for what lr_find saves."""
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *args: None
    if path is not None:
        learn.path = Path(path)
    return learn


def stop_when_started(d: FakeDaemon) -> threading.Thread:
    """Ask the run to stop as soon as its run_started arrives, as `herald stop RUN` would."""

    def watch() -> None:
        events = d.wait_for(lambda es: any(e["type"] == "run_started" for e in es), timeout=60)
        d.stop_run(next(e["run"] for e in events if e["type"] == "run_started"))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


class FailAt(nn.Module):
    """The digits MLP that raises in its forward pass once `fail_after` batches have run."""

    def __init__(self, fail_after: int):
        super().__init__()
        self.inner = digits.mlp()
        self.calls = 0
        self.fail_after = fail_after

    def forward(self, x):
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (32x64 and 65x128)")
        return self.inner(x)


class InterruptAt(Callback):
    def __init__(self, n: int):
        self.n = n

    def after_batch(self):
        if self.learn.training and self.learn.iter == self.n:
            raise KeyboardInterrupt()


class FastaiCallback(ClientTest):
    def test_fit_reports_start_each_epoch_and_finish(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            learn = quiet(digits.fastai_learner())
            learn.fit_one_cycle(3, 1e-2, cbs=HeraldCallback("digits", client=c, batch_interval=0.05))
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        self.assert_gapless(events)
        started = events[0]
        self.assertEqual(started["type"], "run_started")
        self.assertEqual((started["name"], started["n_epochs"], started["metric_names"]), ("digits", 3, ["accuracy"]))
        self.assertEqual(started["batches_per_epoch"], len(learn.dls.train))
        self.assertEqual((started["hyper"]["lr"], started["hyper"]["bs"]), (0.01, 32))
        ended = [e for e in events if e["type"] == "epoch_ended"]
        self.assertEqual([e["epoch"] for e in ended], [0, 1, 2])
        for e, row in zip(ended, learn.recorder.values):
            self.assertEqual([e["train_loss"], e["valid_loss"], e["metrics"]["accuracy"]], [float(v) for v in row])
        self.assertGreater(ended[-1]["metrics"]["accuracy"], 0.9)
        self.assertGreater(sum(e["type"] == "batch_ended" for e in events), 0)
        finished = events[-1]
        self.assertEqual(finished["status"], "completed")
        self.assertEqual(finished["best"]["name"], "accuracy")

    def test_stop_request_cancels_the_fit(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            learn = quiet(digits.fastai_learner())
            stop_when_started(d)
            learn.fit_one_cycle(200, 1e-2, cbs=HeraldCallback("long", client=c, batch_interval=0.05))
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        finished = events[-1]
        self.assertEqual(finished["status"], "stopped")
        self.assertIn("stopped on request", finished["reason"])
        self.assertLess(len(learn.recorder.values), 200)

    def test_an_error_is_reported_with_its_traceback_and_propagates(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            learn = quiet(digits.fastai_learner(FailAt(fail_after=60)))
            with self.assertRaisesRegex(RuntimeError, "shapes cannot be multiplied"):
                learn.fit(3, 1e-3, cbs=HeraldCallback("broken", client=c))
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_failed")
        failed = events[-1]
        self.assertIn("shapes cannot be multiplied", failed["error"])
        self.assertIn("in forward", failed["traceback"])
        self.assertNotIn("run_finished", [e["type"] for e in events])
        self.assertNotIn("_with_events", vars(learn), "the learner is left unwrapped")

    def test_keyboard_interrupt_is_a_stop(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            learn = quiet(digits.fastai_learner())
            with self.assertRaises(KeyboardInterrupt):
                learn.fit(2, 1e-3, cbs=[HeraldCallback("ctrl-c", client=c), InterruptAt(3)])
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        self.assertEqual(events[-1]["status"], "stopped")
        self.assertIn("KeyboardInterrupt", events[-1]["reason"])

    def test_lr_find_is_not_a_run_and_every_thins_epochs(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            learn = quiet(digits.fastai_learner(), self.tmp)
            learn.add_cb(HeraldCallback("tuned", every=2, client=c))
            learn.lr_find(num_it=20, show_plot=False)
            self.assertTrue(c.flush(10))
            self.assertEqual(d.snapshot(), [])
            learn.fit(5, 1e-3)
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        self.assertEqual([e["epoch"] for e in events if e["type"] == "epoch_ended"], [1, 3, 4])
        self.assertEqual(len({e["run"] for e in events}), 1)


if __name__ == "__main__":
    unittest.main()

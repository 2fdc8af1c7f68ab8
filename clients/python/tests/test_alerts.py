"""Alerts against the real ``herald serve`` and a local webhook sink: ``run.alert`` arrives as an ``alert`` event,
and a fastai fit diverging under ``TerminateOnNaNCallback`` (lr 1e6 on the digits data) makes the daemon's ``nan``
rule fire, its alert arriving before the run's end.

The binary comes from ``HERALD_BIN`` (tests/e2e/python.rs sets it), else ``target/debug/herald``.
"""

from __future__ import annotations

import json
import unittest
from typing import Any, Dict, List

from support import ClientTest, free_port

import herald
import digits
from fake_daemon import FakeDaemon
from test_daemon import Daemon, WebhookSink

ENDS = ("run_finished", "run_failed")


class AlertsAgainstTheDaemon(ClientTest):
    def setUp(self) -> None:
        super().setUp()
        self.sink = WebhookSink()
        self.daemon = Daemon(self.tmp, self.sink, free_port())
        # The same daemon with alerts routed to the sink and a `nan` rule.
        with open(self.daemon.config, encoding="utf-8") as f:
            config = f.read()
        config = config.replace('"message"]\n', '"message", "alert"]\n')
        config += '\n[[rule]]\nname = "diverged"\nkind = "nan"\n'
        with open(self.daemon.config, "w", encoding="utf-8") as f:
            f.write(config)
        self.daemon.start()

    def tearDown(self) -> None:
        self.daemon.close()
        self.sink.close()
        super().tearDown()

    def arrivals(self, name: str) -> List[Dict[str, Any]]:
        """The events of the run named ``name`` at the sink in arrival order, once its end has arrived."""
        events = self.sink.wait_for(lambda es: any(e["type"] in ENDS for e in es), timeout=60)
        run = next(e["run"] for e in events if e["type"] == "run_started" and e["name"] == name)
        self.sink.wait_for(lambda es: any(e["type"] in ENDS and e["run"] == run for e in es), timeout=60)
        return self.sink.events(run)

    def test_run_alert_arrives_as_an_alert(self) -> None:
        c = self.client(self.daemon.url)
        with herald.run("alerting", n_epochs=2, client=c, rank=0) as run:
            run.epoch_started(0)
            run.alert("disk almost full", "/data is 97% full", level="error")
            run.epoch_ended(0.5, 0.6, {"accuracy": 0.9})
        events = self.arrivals("alerting")
        types = [e["type"] for e in events]
        self.assertEqual(types, ["run_started", "alert", "epoch_ended", "run_finished"], types)
        alert = events[1]
        self.assertEqual((alert["title"], alert["text"], alert["level"], alert["epoch"]),
                         ("disk almost full", "/data is 97% full", "error", 0))
        self.assertNotIn("rule", alert, "a client's alert names no rule")

    def test_terminate_on_nan_alert_arrives_before_the_runs_end(self) -> None:
        from fastai.callback.progress import ProgressCallback
        from fastai.callback.tracker import TerminateOnNaNCallback

        from herald.fastai import HeraldCallback

        c = self.client(self.daemon.url)
        learn = digits.fastai_learner()
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *args: None
        # A long throttle: only the diverging batch itself can tell the daemon.
        cb = HeraldCallback("diverging", client=c, batch_interval=3600)
        learn.fit(5, 1e6, cbs=[cb, TerminateOnNaNCallback()])
        self.assertLess(len(learn.recorder.values), 5, "TerminateOnNaN ended the fit early")
        events = self.arrivals("diverging")
        types = [e["type"] for e in events]
        self.assertIn("alert", types, json.dumps(events)[:2000])
        end = next(i for i, t in enumerate(types) if t in ENDS)
        self.assertLess(types.index("alert"), end, f"the alert comes before the end: {types}")
        alert = events[types.index("alert")]
        self.assertEqual((alert["rule"], alert["level"]), ("diverged", "error"))
        self.assertRegex(alert["title"], r"^diverged: (NaN|infinite) loss$")
        self.assertIn("batch", alert["text"])
        self.assertEqual(types.count("alert"), 1, "one alert for the divergence")
        finished = events[end]
        self.assertEqual(finished["status"], "stopped")
        self.assertIn("CancelFitException: loss", finished["reason"])


class NonFiniteBatches(ClientTest):
    def test_the_first_non_finite_loss_after_a_finite_one_passes_the_throttle(self) -> None:
        nan, inf = float("nan"), float("inf")
        with FakeDaemon() as d:
            c = self.client(d.url)
            with herald.run("loop", n_epochs=1, client=c, rank=0, batch_interval=3600) as run:
                run.epoch_started(0)
                for loss in [1.0, 0.9, nan, nan, inf, 0.8, 0.7, inf, nan]:
                    run.batch_ended(loss, smooth_loss=loss)
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        # Batch 0 passes (nothing sent yet); 2 is the first NaN; 3 and 4 stay throttled (the daemon knows); 5, a
        # finite loss, is throttled, so the daemon still thinks the run diverged: 7 and 8 are not sent either.
        self.assertEqual([e["batch"] for e in events if e["type"] == "batch_ended"], [0, 2])
        with FakeDaemon() as d:
            c = self.client(d.url)
            with herald.run("loop", n_epochs=1, client=c, rank=0, batch_interval=3600) as run:
                run.epoch_started(0)
                run.batch_ended(1.0, smooth_loss=1.0)
                run.batch_ended(nan, smooth_loss=nan)
                run.batch_ended(0.5, smooth_loss=0.5, force=True)  # the daemon hears it recovered
                run.batch_ended(0.4, smooth_loss=inf)
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        self.assertEqual([e["batch"] for e in events if e["type"] == "batch_ended"], [0, 1, 2, 3])


if __name__ == "__main__":
    unittest.main()

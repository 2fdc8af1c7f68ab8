"""``@herald.notify`` and ``herald.run`` as context managers: start, finish with duration and return value, crash
with traceback (the exception still propagates), and rank awareness (RANK, else LOCAL_RANK)."""

from __future__ import annotations

import os
import unittest
from unittest import mock

from support import ClientTest

import herald
from fake_daemon import FakeDaemon


def types(events):
    return [e["type"] for e in events]


class Notify(ClientTest):
    def test_decorator_reports_start_and_return_value(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)

            @herald.notify(name="train", client=c)
            def train(x: int) -> dict:
                return {"accuracy": x / 100}

            self.assertEqual(train(98), {"accuracy": 0.98})
            self.assertEqual(train.__name__, "train")
            events = d.wait_for(lambda es: len(es) == 2)
        self.assertEqual(types(events), ["run_started", "run_finished"])
        self.assertEqual(events[0]["name"], "train")
        self.assertEqual(events[1]["reason"], "returned {'accuracy': 0.98}")
        self.assertGreaterEqual(events[1]["duration_s"], 0)

    def test_bare_decorator_and_method(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            herald.set_default_client(c)
            try:
                class Job:
                    @herald.notify
                    def run(self) -> str:
                        return "ok"

                self.assertEqual(Job().run(), "ok")
            finally:
                herald.set_default_client(None)
            events = d.wait_for(lambda es: len(es) == 2)
        self.assertEqual(events[0]["name"], "Job.run")
        self.assertEqual(events[1]["reason"], "returned 'ok'")

    def test_crash_is_reported_with_traceback_and_propagates(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)

            @herald.notify(name="crashy", client=c)
            def crashy() -> None:
                raise MemoryError("CUDA out of memory")

            with self.assertRaises(MemoryError):
                crashy()
            events = d.wait_for(lambda es: len(es) == 2)
        self.assertEqual(types(events), ["run_started", "run_failed"])
        self.assertEqual(events[1]["error"], "MemoryError: CUDA out of memory")
        self.assertIn("in crashy", events[1]["traceback"])

    def test_context_manager(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            with herald.notify("backup", client=c) as run:
                run.message("half way")
            with self.assertRaises(KeyboardInterrupt):
                with herald.notify("interrupted", client=c):
                    raise KeyboardInterrupt()
            events = d.wait_for(lambda es: len(es) == 5)
        self.assertEqual(types(events), ["run_started", "message", "run_finished", "run_started", "run_finished"])
        self.assertEqual(events[2]["status"], "completed")
        self.assertEqual(events[4]["status"], "stopped")

    def test_other_ranks_stay_quiet_unless_they_crash(self) -> None:
        for var in ("RANK", "LOCAL_RANK"):
            with self.subTest(var=var), FakeDaemon() as d, mock.patch.dict(os.environ, {var: "1"}):
                os.environ.pop("LOCAL_RANK" if var == "RANK" else "RANK", None)
                c = self.client(d.url)

                @herald.notify(name="ddp", client=c)
                def fine() -> int:
                    return 1

                @herald.notify(name="ddp", client=c)
                def broken() -> None:
                    raise RuntimeError("NCCL timeout")

                fine()
                self.assertTrue(c.flush(10))
                self.assertEqual(d.snapshot(), [])
                with self.assertRaises(RuntimeError):
                    broken()
                events = d.wait_for(lambda es: len(es) == 2)
                self.assertEqual(types(events), ["run_started", "run_failed"])
                self.assertEqual(events[0]["rank"], 1)


class PlainLoop(ClientTest):
    def test_run_context_smooths_counts_epochs_and_tracks_best(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            with herald.run("loop", n_epochs=2, client=c, rank=0, batch_interval=3600) as run:
                for losses, vl, err in (([2.0, 1.0, 0.5], 0.9, 0.09), ([0.4, 0.3], 0.7, 0.07)):
                    run.epoch_started()
                    for loss in losses:
                        run.batch_ended(loss, lr=0.01)
                    run.epoch_ended(valid_loss=vl, metrics={"error_rate": err})
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        ended = [e for e in events if e["type"] == "epoch_ended"]
        self.assertAlmostEqual(ended[0]["train_loss"], 1.156577, places=6)
        self.assertEqual([e["epoch"] for e in ended], [0, 1])
        batches = [e for e in events if e["type"] == "batch_ended"]
        self.assertEqual(len(batches), 1, "the throttle lets the first batch through, then one per interval")
        self.assertEqual(events[-1]["best"], {"name": "error_rate", "value": 0.07, "epoch": 1})
        self.assertEqual(events[-1]["reason"], "completed all 2 epochs")

    def test_exception_in_the_block_is_a_failure(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            with self.assertRaises(ZeroDivisionError):
                with herald.run("loop", client=c, rank=0):
                    1 / 0
            events = d.wait_for(lambda es: len(es) == 2)
        self.assertEqual(events[1]["error"], "ZeroDivisionError: division by zero")

    def test_uncaught_exception_fails_open_runs_through_excepthook(self) -> None:
        from support import run_python

        with FakeDaemon() as d:
            code = (
                "import herald\n"
                f"herald.set_default_client(herald.Client({d.url!r}, spool_dir={self.spool_dir!r}))\n"
                "run = herald.run('script', n_epochs=3).start()\n"
                "raise RuntimeError('dataset missing')\n"
            )
            out = run_python(code)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("dataset missing", out.stderr)
            events = d.wait_for(lambda es: len(es) == 2)
        self.assertEqual(types(events), ["run_started", "run_failed"])
        self.assertIn("RuntimeError: dataset missing", events[1]["error"])


if __name__ == "__main__":
    unittest.main()

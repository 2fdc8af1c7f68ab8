"""The wire format: what the client writes matches docs/events.md field for field."""

from __future__ import annotations

import math
import re
import unittest

from support import ClientTest, doc_examples, run_python

import herald
from herald import _wire
from fake_daemon import FakeDaemon, check_event


class Scalar:
    """Something with ``item()``, like a numpy scalar or a one-element tensor."""

    ndim = 0

    def __init__(self, v: float):
        self.v = v

    def item(self) -> float:
        return self.v


class WireTest(unittest.TestCase):
    def test_numbers(self) -> None:
        cases = [
            (1.5, 1.5),
            (2, 2.0),
            (float("nan"), "NaN"),
            (float("inf"), "Infinity"),
            (float("-inf"), "-Infinity"),
            (Scalar(0.25), 0.25),
            (Scalar(float("nan")), "NaN"),
        ]
        for given, expected in cases:
            with self.subTest(given=given):
                self.assertEqual(_wire.loose(given), expected)
        self.assertEqual(_wire.finite(0.01, "lr"), 0.01)
        with self.assertRaisesRegex(ValueError, "`lr` must be a finite number"):
            _wire.finite(float("nan"), "lr")
        with self.assertRaises(TypeError):
            _wire.loose(True)

    def test_time_and_run_id(self) -> None:
        self.assertEqual(_wire.rfc3339(1795772766.12), "2026-11-27T09:46:06.120Z")
        rid = _wire.new_run_id(1795772766.0)
        self.assertRegex(rid, r"^20261127T094606Z-\d+-\d+-[0-9a-f]{8}$")
        self.assertNotEqual(_wire.new_run_id(), _wire.new_run_id())

    def test_hyper_values_become_json(self) -> None:
        got = _wire.json_value({"lr": 0.01, "bs": 32, "m": (1, 2), "nan": float("nan"), "np": Scalar(3.0), "o": object})
        self.assertEqual(got["lr"], 0.01)
        self.assertEqual(got["m"], [1, 2])
        self.assertEqual(got["nan"], "NaN")
        self.assertEqual(got["np"], 3.0)
        self.assertIsInstance(got["o"], str)

    def test_bare_nan_never_reaches_the_wire(self) -> None:
        with self.assertRaises(ValueError):
            _wire.dumps({"x": float("nan")})

    def test_smoother_matches_fastai(self) -> None:
        s = herald.Smoother()
        got = [s.add(x) for x in (2.0, 1.0, 0.5)]
        for g, want in zip(got, (2.0, 1.494949, 1.156577)):
            self.assertAlmostEqual(g, want, places=6)

    def test_fake_daemon_refuses_what_the_real_one_refuses(self) -> None:
        good = doc_examples()["epoch_ended"][0]
        self.assertIsNone(check_event(good))
        for bad in (
            dict(good, v=2),
            dict(good, train_loss=float("nan")),
            dict(good, elapsed_s="NaN"),
            dict(good, time="yesterday"),
            dict(good, type="nope"),
            {k: v for k, v in good.items() if k != "epoch"},
        ):
            self.assertIsNotNone(check_event(bad), bad)


class ImportCost(unittest.TestCase):
    def test_importing_herald_needs_only_the_standard_library(self) -> None:
        code = (
            "import sys; before = set(sys.modules); import herald, herald.notify, herald.__main__\n"
            "import sys as s; std = s.stdlib_module_names\n"
            "print(sorted({m.split('.')[0] for m in set(s.modules) - before} - set(std) - {'herald'}))"
        )
        out = run_python(code)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "[]")


class SameShapeAsTheDocs(ClientTest):
    """Every type the client writes has exactly the docs example's fields, and passes the daemon's checks."""

    def test_fields_match_the_docs(self) -> None:
        examples = doc_examples()
        with FakeDaemon() as d:
            c = self.client(d.url)
            run = herald.Run("digits-mlp", client=c, n_epochs=2, batches_per_epoch=3, metric_names=["accuracy"],
                             hyper={"lr": 0.01, "bs": 32}, rank=0, batch_interval=0)
            run.start()
            run.epoch_started()
            run.batch_ended(2.3125, lr=0.0004)
            run.batch_ended(float("nan"), lr=0.0028)
            run.epoch_ended(valid_loss=0.058969, metrics={"accuracy": 0.978901})
            run.message("hello", level="warning")
            run.alert("loss spike", "train loss doubled", level="error")
            run.heartbeat()
            run.finish()
            herald.send("done in 4 minutes", "nightly backup", client=c)
            fail = herald.Run("broken", client=c, rank=0)
            fail.start()
            try:
                raise RuntimeError("shape mismatch")
            except RuntimeError as err:
                fail.fail(err)
            events = d.wait_for(lambda es: len(es) >= 12)
        for e in events:
            self.assertIsNone(check_event(e), e)
            with self.subTest(type=e["type"]):
                want = set(examples[e["type"]][0])
                if e["type"] == "epoch_ended":
                    want |= {"valid_loss"}
                if e["type"] == "alert":
                    want -= {"rule"}  # only the daemon's alerts name a rule
                self.assertEqual(set(e), want)
                self.assertEqual(list(e)[:5], ["v", "run", "seq", "time", "type"])
        self.assert_gapless(events)
        nan_batch = [e for e in events if e["type"] == "batch_ended"][1]
        self.assertEqual((nan_batch["loss"], nan_batch["smooth_loss"]), ("NaN", "NaN"))
        finished = [e for e in events if e["type"] == "run_finished"][0]
        self.assertEqual(finished["best"], {"name": "accuracy", "value": 0.978901, "epoch": 0})
        failed = [e for e in events if e["type"] == "run_failed"][0]
        self.assertEqual(failed["error"], "RuntimeError: shape mismatch")
        self.assertIn("Traceback (most recent call last)", failed["traceback"])
        self.assertTrue(re.match(r"^message-", [e for e in events if e["type"] == "message"][1]["run"]))
        self.assertTrue(math.isfinite(finished["duration_s"]))
        alert = [e for e in events if e["type"] == "alert"][0]
        self.assertEqual((alert["level"], alert["epoch"]), ("error", 0))
        with self.assertRaises(ValueError):
            run.alert("t", "x", level="loud")


if __name__ == "__main__":
    unittest.main()

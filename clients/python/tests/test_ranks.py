"""Distributed jobs: the job id's derivation order, what a non-zero rank sends, ``ranks="zero"``, and the
framework callbacks reporting every rank."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import unittest
from typing import Any, Dict, List, Optional
from unittest import mock

from support import ClientTest, env_for_child, free_port

import herald
from fake_daemon import FakeDaemon

_JOB_VARS = (
    "HERALD_JOB",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_NTASKS",
    "TORCHELASTIC_RUN_ID",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
)


def clean_env(**env: str) -> Dict[str, str]:
    """The process's environment without the job variables, with ``env`` on top."""
    out = {k: v for k, v in os.environ.items() if k not in _JOB_VARS}
    out.update(env)
    return out


class FakeDist(types.ModuleType):
    """A stand-in for an initialized ``torch.distributed``: rank ``rank`` of ``world``; rank 0's broadcast value
    is ``sent`` (what rank 0 would have sent to the others)."""

    def __init__(self, rank: int, world: int, sent: Optional[str] = None):
        super().__init__("torch.distributed")
        self.rank, self.world, self.sent = rank, world, sent
        self.broadcasts = 0

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world

    def broadcast_object_list(self, box: List[Any], src: int = 0) -> None:
        self.broadcasts += 1
        if self.rank != src:
            box[0] = self.sent
        else:
            self.sent = box[0]


class JobId(unittest.TestCase):
    def check(self, env: Dict[str, str], expected: Optional[str], dist: Optional[FakeDist] = None) -> None:
        with mock.patch.dict(os.environ, clean_env(**env), clear=True), mock.patch.dict(
            sys.modules, {"torch.distributed": dist}
        ):
            self.assertEqual(herald.detect_job(), expected, env)

    def test_the_documented_order(self) -> None:
        both = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "TORCHELASTIC_RUN_ID": "rdzv-7"}
        self.check({"HERALD_JOB": "mine", **both}, "mine")
        self.check(both, "4242.0")
        self.check({"SLURM_JOB_ID": "4242"}, "4242")
        self.check({"TORCHELASTIC_RUN_ID": "rdzv-7"}, "rdzv-7")
        self.check({}, None)
        self.check({"HERALD_JOB": "  "}, None)

    def test_torchrun_default_none_falls_through_to_one_broadcast_from_rank_zero(self) -> None:
        self.check({"TORCHELASTIC_RUN_ID": "none"}, None)
        dist = FakeDist(rank=2, world=3, sent="job-from-rank-0")
        self.check({"TORCHELASTIC_RUN_ID": "none"}, "job-from-rank-0", dist)
        self.assertEqual(dist.broadcasts, 1)
        zero = FakeDist(rank=0, world=3)
        with mock.patch.dict(os.environ, clean_env(), clear=True), mock.patch.dict(sys.modules, {"torch.distributed": zero}):
            job = herald.detect_job()
        self.assertTrue(job and job == zero.sent, job)
        # A single process needs no job, and no collective is called.
        alone = FakeDist(rank=0, world=1)
        self.check({}, None, alone)
        self.assertEqual(alone.broadcasts, 0)

    def test_world_size_from_the_environment_else_torch_distributed(self) -> None:
        with mock.patch.dict(os.environ, clean_env(WORLD_SIZE="4"), clear=True):
            self.assertEqual(herald.detect_world_size(), 4)
        with mock.patch.dict(os.environ, clean_env(), clear=True), mock.patch.dict(
            sys.modules, {"torch.distributed": FakeDist(1, 3)}
        ):
            self.assertEqual(herald.detect_world_size(), 3)
        with mock.patch.dict(os.environ, clean_env(WORLD_SIZE="lots"), clear=True), mock.patch.dict(
            sys.modules, {"torch.distributed": None}
        ):
            self.assertIsNone(herald.detect_world_size())


def plain_loop(run: herald.Run, epochs: int = 2, batches: int = 3) -> None:
    with run:
        for epoch in range(epochs):
            run.epoch_started()
            for b in range(batches):
                run.batch_ended(1.0 / (1 + b), lr=0.01, force=True)
            run.epoch_ended(valid_loss=0.5, metrics={"accuracy": 0.9})
            run.message("hello from every rank")


class Ranks(ClientTest):
    def events_of(self, env: Dict[str, str], **run_args: Any) -> List[Dict[str, Any]]:
        no_torch = {"torch.distributed": None}
        with FakeDaemon() as d, mock.patch.dict(os.environ, clean_env(**env), clear=True), mock.patch.dict(
            sys.modules, no_torch
        ):
            c = self.client(d.url)
            run = herald.Run("ddp", client=c, **run_args)
            plain_loop(run)
            self.assertTrue(c.flush(10))
            return [e for e in d.snapshot() if e["type"] != "heartbeat"]

    def test_a_non_zero_rank_of_a_job_sends_start_epochs_and_end_but_no_batches(self) -> None:
        events = self.events_of({"HERALD_JOB": "j1", "RANK": "2", "WORLD_SIZE": "3"})
        kinds = [e["type"] for e in events]
        self.assertEqual(kinds, ["run_started", "epoch_ended", "epoch_ended", "run_finished"])
        start = events[0]
        self.assertEqual((start["rank"], start["job"], start["world_size"]), (2, "j1", 3))

    def test_rank_batches_puts_a_non_zero_rank_s_batches_on_the_wire(self) -> None:
        events = self.events_of({"HERALD_JOB": "j1", "RANK": "1", "WORLD_SIZE": "2"}, rank_batches=True)
        self.assertEqual(sum(e["type"] == "batch_ended" for e in events), 6)

    def test_rank_zero_of_a_job_sends_everything_with_the_job(self) -> None:
        events = self.events_of({"HERALD_JOB": "j1", "RANK": "0", "WORLD_SIZE": "3"})
        kinds = {e["type"] for e in events}
        self.assertLessEqual({"run_started", "epoch_started", "batch_ended", "message", "run_finished"}, kinds)
        self.assertEqual(events[0]["job"], "j1")

    def test_ranks_zero_keeps_a_non_zero_rank_quiet_and_sends_no_job(self) -> None:
        self.assertEqual(self.events_of({"HERALD_JOB": "j1", "RANK": "1", "WORLD_SIZE": "2"}, ranks="zero"), [])
        zero = self.events_of({"HERALD_JOB": "j1", "RANK": "0", "WORLD_SIZE": "2"}, ranks="zero")
        self.assertNotIn("job", zero[0])

    def test_without_a_job_id_a_non_zero_rank_stays_quiet_as_before(self) -> None:
        self.assertEqual(self.events_of({"RANK": "1", "WORLD_SIZE": "2"}), [])

    def test_herald_job_alone_makes_a_job_and_a_single_slurm_task_does_not(self) -> None:
        self.assertEqual(self.events_of({"HERALD_JOB": "mine"})[0]["job"], "mine")
        start = self.events_of({"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"})[0]
        self.assertNotIn("job", start)
        self.assertEqual(start["world_size"], 1)
        start = self.events_of({"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "RANK": "0"})[0]
        self.assertEqual((start["job"], start["world_size"]), ("4242.0", 4))

    def test_a_single_process_sends_no_job(self) -> None:
        start = self.events_of({})[0]
        self.assertNotIn("job", start)
        self.assertNotIn("world_size", start)

    def test_ranks_must_be_all_or_zero(self) -> None:
        with self.assertRaises(ValueError):
            herald.Run("x", ranks="some")


class Callbacks(ClientTest):
    def test_lightning_reports_every_rank_by_default_and_rank_zero_only_when_asked(self) -> None:
        try:
            from herald.lightning import HeraldCallback
            from test_frameworks import lightning_module
        except ImportError as err:  # pragma: no cover - the venv has Lightning
            self.fail(f"Lightning is missing ({err}); run `cargo xtask setup`")

        class Rank1Trainer:
            global_rank = 1
            max_epochs = 1
            num_training_batches = 3
            optimizers: List[Any] = []
            current_epoch = 0
            callback_metrics: Dict[str, Any] = {}
            should_stop = False

        for ranks, expected in (("all", ["run_started", "epoch_ended", "run_finished"]), ("zero", [])):
            with self.subTest(ranks=ranks), FakeDaemon() as d, mock.patch.dict(
                os.environ, clean_env(HERALD_JOB="ddp-1", WORLD_SIZE="2"), clear=True
            ):
                c = self.client(d.url)
                cb = HeraldCallback("ddp", client=c, ranks=ranks)
                t, m = Rank1Trainer(), lightning_module()
                cb.on_train_start(t, m)
                cb.on_train_epoch_start(t, m)
                cb.on_train_epoch_end(t, m)
                cb.on_train_end(t, m)
                self.assertTrue(c.flush(10))
                self.assertEqual([e["type"] for e in d.snapshot() if e["type"] != "heartbeat"], expected)


class KerasRanks(ClientTest):
    """Keras has no torch-backend data parallelism of its own: ranks launched by torchrun, SLURM or accelerate are
    seen through their environment (``RANK``, ``WORLD_SIZE``, the job variables)."""

    def fit(self, env: Dict[str, str], ranks: str) -> List[Dict[str, Any]]:
        from herald.keras import HeraldCallback
        from test_frameworks import keras_model

        import digits

        xt, yt, xv, yv = digits.arrays()
        with FakeDaemon() as d, mock.patch.dict(os.environ, clean_env(**env), clear=True), mock.patch.dict(
            sys.modules, {"torch.distributed": None}
        ):
            c = self.client(d.url)
            keras_model().fit(xt[:256], yt[:256], epochs=2, batch_size=32, validation_data=(xv, yv), verbose=0,
                              callbacks=[HeraldCallback("ddp-keras", client=c, ranks=ranks, batch_interval=0)])
            self.assertTrue(c.flush(10))
            return [e for e in d.snapshot() if e["type"] != "heartbeat"]

    def test_every_rank_reports_with_the_job_and_ranks_zero_keeps_rank_zero_only(self) -> None:
        job = {"HERALD_JOB": "keras-7", "WORLD_SIZE": "2"}
        rank1 = self.fit({**job, "RANK": "1"}, "all")
        self.assertEqual([e["type"] for e in rank1], ["run_started", "epoch_ended", "epoch_ended", "run_finished"])
        self.assertEqual((rank1[0]["rank"], rank1[0]["job"], rank1[0]["world_size"]), (1, "keras-7", 2))
        for e in rank1[1:3]:
            self.assertGreater(e["train_loss"], 0)
            self.assertIn("accuracy", e["metrics"])
        rank0 = self.fit({**job, "RANK": "0"}, "all")
        self.assertEqual((rank0[0]["rank"], rank0[0]["job"]), (0, "keras-7"))
        self.assertIn("batch_ended", [e["type"] for e in rank0])
        self.assertEqual(self.fit({**job, "RANK": "1"}, "zero"), [])
        zero = self.fit({**job, "RANK": "0"}, "zero")
        self.assertEqual(zero[0]["type"], "run_started")
        self.assertNotIn("job", zero[0])
        self.assertEqual(zero[-1]["type"], "run_finished")


class Torchrun(ClientTest):
    """Real ``torchrun --nproc-per-node 2`` jobs on CPU (gloo) running ``ddp_fit.py``: fastai's
    ``DistributedTrainer`` (``Learner.distrib_ctx``) and transformers' ``Trainer``. torchrun's default rendezvous
    id is ``none``, so the job id comes from the one broadcast from rank 0."""

    def torchrun(self, framework: str, ranks: str) -> List[Dict[str, Any]]:
        env = env_for_child(HERALD_SPOOL_DIR=self.spool_dir, DDP_OUT=os.path.join(self.tmp, "out"),
                            OMP_NUM_THREADS="1")
        for var in _JOB_VARS:
            env.pop(var, None)
        with FakeDaemon() as d:
            env["HERALD_URL"] = d.url
            out = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                 "--master-port", str(free_port()), "ddp_fit.py", framework, ranks],
                env=env, capture_output=True, text=True, timeout=300,
            )
            self.assertEqual(out.returncode, 0, out.stderr[-6000:])
            return [e for e in d.snapshot() if e["type"] != "heartbeat"]

    def check_every_rank(self, events: List[Dict[str, Any]], name: str) -> None:
        starts = {e["run"]: e for e in events if e["type"] == "run_started"}
        self.assertEqual(sorted(s["rank"] for s in starts.values()), [0, 1], events)
        jobs = {s["job"] for s in starts.values()}
        self.assertEqual(len(jobs), 1, "one job id for both ranks")
        self.assertTrue(next(iter(jobs)))
        for run, start in starts.items():
            self.assertEqual((start["name"], start["world_size"]), (name, 2))
            mine = [e for e in events if e["run"] == run]
            self.assertEqual([e["seq"] for e in mine], list(range(len(mine))), "gapless per rank")
            ended = [e for e in mine if e["type"] == "epoch_ended"]
            self.assertEqual([e["epoch"] for e in ended], [0, 1], f"rank {start['rank']}")
            for e in ended:
                self.assertTrue(e["train_loss"] > 0, e)
            self.assertEqual((mine[-1]["type"], mine[-1]["status"]), ("run_finished", "completed"))
            kinds = {e["type"] for e in mine}
            if start["rank"] == 0:
                self.assertLessEqual({"epoch_started", "batch_ended"}, kinds)
            else:
                self.assertEqual(kinds, {"run_started", "epoch_ended", "run_finished"}, "a non-zero rank's batches "
                                 "and epoch starts stay off the wire")

    def check_rank_zero_only(self, events: List[Dict[str, Any]], name: str) -> None:
        self.assertEqual(len({e["run"] for e in events}), 1, events)
        start = events[0]
        self.assertEqual((start["type"], start["name"], start["rank"]), ("run_started", name, 0))
        self.assertNotIn("job", start)
        self.assertEqual((events[-1]["type"], events[-1]["status"]), ("run_finished", "completed"))

    def test_fastai_distributed_trainer(self) -> None:
        self.check_every_rank(self.torchrun("fastai", "all"), "ddp-fastai")
        events = self.torchrun("fastai", "zero")
        self.check_rank_zero_only(events, "ddp-fastai")
        self.assertIn("accuracy", [e for e in events if e["type"] == "epoch_ended"][-1]["metrics"])

    def test_transformers_trainer(self) -> None:
        events = self.torchrun("transformers", "all")
        self.check_every_rank(events, "ddp-transformers")
        zero = next(e["run"] for e in events if e["type"] == "run_started" and e["rank"] == 0)
        self.assertIn("valid_loss", [e for e in events if e["type"] == "epoch_ended" and e["run"] == zero][-1])
        self.check_rank_zero_only(self.torchrun("transformers", "zero"), "ddp-transformers")


if __name__ == "__main__":
    unittest.main()

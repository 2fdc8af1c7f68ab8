"""The Python client against the real ``herald serve`` and a local webhook sink: real fastai 2.8 training on the
digits data, ``herald stop RUN`` ending a long fit (fastai, Keras, Lightning), the daemon down at the start and
started mid-run with nothing lost, ``python -m herald send`` and ``@herald.notify``.

The binary comes from ``HERALD_BIN`` (tests/e2e/python.rs sets it), else ``target/debug/herald``.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
import urllib.request  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from typing import Any, Callable, Dict, List, Optional  # noqa: E402

from support import REPO, ClientTest, env_for_child, free_port  # noqa: E402

import herald  # noqa: E402
import digits  # noqa: E402


def herald_bin() -> str:
    path = os.environ.get("HERALD_BIN") or os.path.join(REPO, "target", "debug", "herald")
    if not os.path.exists(path):
        raise AssertionError(
            f"the herald binary is missing at {path}: run `cargo build -p herald` or set HERALD_BIN "
            "(`cargo xtask test` does both)"
        )
    return path


class WebhookSink:
    """A local webhook receiver: records every JSON body the daemon's webhook notifier POSTs."""

    def __init__(self) -> None:
        self.bodies: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsable": raw.decode("utf-8", "replace")}
                with sink._lock:
                    sink.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def events(self, run: Optional[str] = None) -> List[Dict[str, Any]]:
        with self._lock:
            out = [b["event"] for b in self.bodies if "event" in b]
        return [e for e in out if run is None or e["run"] == run]

    def wait_for(self, predicate: Callable[[List[Dict[str, Any]]], bool], timeout: float = 30) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"the webhook got {[(e['run'], e['seq'], e['type']) for e in events]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Daemon:
    """``herald serve`` with a config that routes lifecycle events to the sink."""

    def __init__(self, tmp: str, sink: WebhookSink, port: int, socket_path: str = "", token: str = ""):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config = os.path.join(tmp, "herald.toml")
        self.log = os.path.join(tmp, "daemon.log")
        self.token = token
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(
                "[daemon]\n"
                f'listen = "127.0.0.1:{port}"\n'
                f"socket = {json.dumps(socket_path)}\n"
                + (f"token = {json.dumps(token)}\n" if token else "")
                +
                f"state_dir = {json.dumps(os.path.join(tmp, 'state'))}\n"
                "[[notifier]]\n"
                'name = "hook"\n'
                'type = "webhook"\n'
                f'url = "{sink.url}"\n'
                'events = ["run_started", "epoch_ended", "run_finished", "run_failed", "message"]\n'
            )
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait: bool = True) -> "Daemon":
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([herald_bin(), "--config", self.config, "serve"], stdout=logf, stderr=logf)
        logf.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, f"herald serve exited: {self.read_log()}"
            try:
                request = urllib.request.Request(self.url + "/healthz")
                if self.token:
                    request.add_header("Authorization", f"Bearer {self.token}")
                with urllib.request.urlopen(request, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"herald serve did not answer /healthz in {timeout} s: {self.read_log()}")
            time.sleep(0.05)

    def stop_run(self, run: str) -> None:
        out = subprocess.run([herald_bin(), "--config", self.config, "stop", run], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, f"herald stop failed: {out.stdout}{out.stderr}"

    def read_log(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def lifecycle(events: List[Dict[str, Any]]) -> List[Any]:
    return [(e["type"], e.get("epoch")) for e in sorted(events, key=lambda e: e["seq"])]


class AgainstTheDaemon(ClientTest):
    def setUp(self) -> None:
        super().setUp()
        self.sink = WebhookSink()
        self.daemon = Daemon(self.tmp, self.sink, free_port())

    def tearDown(self) -> None:
        self.daemon.close()
        self.sink.close()
        super().tearDown()

    def stop_when_started(self, name: str) -> None:
        """Run `herald stop RUN` once the run's start has reached the webhook."""

        def watch() -> None:
            events = self.sink.wait_for(lambda es: any(e["type"] == "run_started" and e.get("name") == name
                                                       for e in es), timeout=120)
            run = next(e["run"] for e in events if e["type"] == "run_started" and e.get("name") == name)
            self.daemon.stop_run(run)

        threading.Thread(target=watch, daemon=True).start()

    def fastai(self):
        from fastai.callback.progress import ProgressCallback

        learn = digits.fastai_learner()
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *args: None
        return learn

    def test_fastai_training_start_epochs_finish(self) -> None:
        from herald.fastai import HeraldCallback

        self.daemon.start()
        c = self.client(self.daemon.url)
        learn = self.fastai()
        learn.fit_one_cycle(4, 1e-2, cbs=HeraldCallback("digits-fastai", client=c))
        events = self.sink.wait_for(lambda es: any(e["type"] == "run_finished" for e in es))
        self.assertEqual(lifecycle(events), [("run_started", None)] + [("epoch_ended", i) for i in range(4)]
                         + [("run_finished", None)])
        ended = [e for e in events if e["type"] == "epoch_ended"]
        for e, row in zip(ended, learn.recorder.values):
            self.assertAlmostEqual(e["metrics"]["accuracy"], float(row[2]), places=6)
        self.assertGreater(ended[-1]["metrics"]["accuracy"], 0.9)
        self.assertEqual(events[-1]["status"], "completed")

    def test_herald_stop_ends_a_long_fastai_fit(self) -> None:
        from herald.fastai import HeraldCallback

        self.daemon.start()
        c = self.client(self.daemon.url)
        learn = self.fastai()
        self.stop_when_started("long-fastai")
        learn.fit_one_cycle(300, 1e-2, cbs=HeraldCallback("long-fastai", client=c, batch_interval=0.1))
        self.assertLess(len(learn.recorder.values), 300)
        events = self.sink.wait_for(lambda es: any(e["type"] == "run_finished" for e in es))
        finished = [e for e in events if e["type"] == "run_finished"][0]
        self.assertEqual(finished["status"], "stopped")

    def test_herald_stop_ends_keras_and_lightning_fits(self) -> None:
        import keras
        import lightning.pytorch as L
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from herald.keras import HeraldCallback as KerasCallback
        from herald.lightning import HeraldCallback as LightningCallback
        from test_frameworks import keras_model, lightning_module

        self.assertEqual(keras.backend.backend(), "torch")
        self.daemon.start()
        c = self.client(self.daemon.url)
        xt, yt, xv, yv = digits.arrays()

        self.stop_when_started("long-keras")
        history = keras_model().fit(xt, yt, epochs=300, batch_size=32, validation_data=(xv, yv), verbose=0,
                                    callbacks=[KerasCallback("long-keras", client=c, batch_interval=0.1)])
        self.assertLess(len(history.history["loss"]), 300)

        self.stop_when_started("long-lightning")
        train = DataLoader(TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)), batch_size=32)
        valid = DataLoader(TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)), batch_size=64)
        trainer = L.Trainer(max_epochs=300, callbacks=[LightningCallback("long-lightning", client=c,
                                                                         batch_interval=0.1)],
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=self.tmp,
                            num_sanity_val_steps=0)
        trainer.fit(lightning_module(), train, valid)
        self.assertLess(trainer.current_epoch, 299)

        events = self.sink.wait_for(lambda es: sum(e["type"] == "run_finished" for e in es) == 2)
        finished = {e["run"]: e for e in events if e["type"] == "run_finished"}
        names = {e["run"]: e["name"] for e in events if e["type"] == "run_started"}
        self.assertEqual(sorted(names[r] for r in finished), ["long-keras", "long-lightning"])
        for e in finished.values():
            self.assertEqual(e["status"], "stopped")
            self.assertIn("stopped on request", e["reason"])

    def test_daemon_down_at_start_then_started_mid_run_loses_nothing(self) -> None:
        from fastai.callback.core import Callback

        from herald.fastai import HeraldCallback

        daemon = self.daemon

        class StartDaemonAfterEpoch(Callback):
            order = 99

            def after_epoch(self) -> None:
                if self.learn.epoch == 1:
                    daemon.start(wait=False)

        c = self.client(self.daemon.url, retry_max_s=0.5)
        learn = self.fastai()
        learn.fit_one_cycle(5, 1e-2, cbs=[HeraldCallback("offline-first", client=c), StartDaemonAfterEpoch()])
        self.assertGreater(c.stats.spooled, 0, "the daemon was down at the start: events must have been spooled")
        daemon.wait_healthy()
        events = self.sink.wait_for(lambda es: any(e["type"] == "run_finished" for e in es))
        self.assertEqual(lifecycle(events), [("run_started", None)] + [("epoch_ended", i) for i in range(5)]
                         + [("run_finished", None)])
        self.assertEqual(self.spool_lines(), [])

    def test_unix_socket_and_token(self) -> None:
        self.daemon.close()
        sock = os.path.join(self.tmp, "herald.sock")
        self.daemon = Daemon(self.tmp, self.sink, free_port(), socket_path=sock, token="s3cret-token")
        self.daemon.start()
        env = env_for_child(HERALD_URL=sock, HERALD_TOKEN="s3cret-token", HERALD_SPOOL_DIR=self.spool_dir)
        out = subprocess.run([sys.executable, "-m", "herald", "send", "over the socket"], env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "")
        wrong = self.client(self.daemon.url, token="wrong")  # over TCP: the 0600 socket is its own guard
        herald.send("with a wrong token", client=wrong)
        self.assertTrue(wrong.flush(10))
        self.assertIn("HERALD_TOKEN", wrong.stats.last_error)
        events = self.sink.wait_for(lambda es: any(e["type"] == "message" for e in es))
        self.assertEqual([e["text"] for e in events], ["over the socket"])

    def test_send_and_notify(self) -> None:
        self.daemon.start()
        out = subprocess.run([sys.executable, "-m", "herald", "send", "backup done", "--title", "nightly"],
                             env=env_for_child(HERALD_URL=self.daemon.url, HERALD_SPOOL_DIR=self.spool_dir),
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        c = self.client(self.daemon.url)

        @herald.notify(name="nightly-job", client=c)
        def job() -> int:
            return 42

        self.assertEqual(job(), 42)
        events = self.sink.wait_for(lambda es: any(e["type"] == "run_finished" for e in es)
                                    and any(e["type"] == "message" for e in es))
        message = [e for e in events if e["type"] == "message"][0]
        self.assertEqual((message["title"], message["text"]), ("nightly", "backup done"))
        finished = [e for e in events if e["type"] == "run_finished"][0]
        self.assertEqual(finished["reason"], "returned 42")


if __name__ == "__main__":
    unittest.main()

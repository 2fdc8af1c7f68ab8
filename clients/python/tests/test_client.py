"""The sender against the fake daemon: order and seq, token, Unix socket, stop, spooling while the daemon is down
and the replay when it is back, rejected batches, drops under back-pressure, exit and fork."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import unittest

from support import ClientTest, free_port, run_python

import herald
from fake_daemon import FakeDaemon


def emit_run(run: herald.Run, epochs: int = 3, batches: int = 4) -> None:
    run.start(n_epochs=epochs, batches_per_epoch=batches, metric_names=["accuracy"])
    for epoch in range(epochs):
        run.epoch_started()
        for b in range(batches):
            run.batch_ended(1.0 / (1 + epoch * batches + b), lr=0.01, force=True)
        run.epoch_ended(valid_loss=0.5 / (epoch + 1), metrics={"accuracy": 0.8 + 0.05 * epoch})
    run.finish()


def lifecycle(events: list) -> list:
    return [(e["seq"], e["type"]) for e in events if e["type"] not in ("batch_ended", "heartbeat")]


class ClientBehaviour(ClientTest):
    def test_events_arrive_in_order_with_gapless_seq(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            runs = [herald.Run(f"r{i}", client=c, rank=0) for i in range(3)]
            for r in runs:
                emit_run(r)
            events = d.wait_for(lambda es: sum(e["type"] == "run_finished" for e in es) == 3)
        self.assertEqual(len(events), 3 * (1 + 3 * (1 + 4 + 1) + 1))
        self.assert_gapless(events)
        self.assertEqual(self.spool_lines(), [])

    def test_token_is_sent_as_bearer(self) -> None:
        with FakeDaemon(token="s3cret") as d:
            c = self.client(d.url, token="s3cret")
            herald.send("hi", client=c)
            d.wait_for(lambda es: len(es) == 1)
            self.assertEqual(d.auth_headers[-1], "Bearer s3cret")

    def test_wrong_token_keeps_events_in_the_spool(self) -> None:
        with FakeDaemon(token="right") as d:
            c = self.client(d.url, token="wrong")
            herald.send("hi", client=c)
            self.assertTrue(c.flush(10))
            self.assertEqual(d.snapshot(), [])
            self.assertIn("HERALD_TOKEN", c.stats.last_error)
            self.assertEqual(len(self.spool_lines()), 1)

    def test_unix_socket(self) -> None:
        path = os.path.join(self.tmp, "herald.sock")
        for url in (path, "unix://" + path):
            with self.subTest(url=url), FakeDaemon(unix_path=path) as d:
                c = self.client(url)
                herald.send("over a socket", client=c)
                events = d.wait_for(lambda es: len(es) == 1)
                self.assertEqual(events[0]["text"], "over a socket")

    def test_bad_url_is_a_clear_error(self) -> None:
        for url, words in (("ftp://x", "scheme"), ("unix://", "socket path"), ("http://:80", "host")):
            with self.subTest(url=url), self.assertRaisesRegex(herald.ConfigError, words):
                herald.Client(url, spool_dir=self.spool_dir)

    def test_stop_request_reaches_the_run(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            run = herald.Run("stoppable", client=c, rank=0, batch_interval=0)
            run.start(n_epochs=100)
            d.wait_for(lambda es: len(es) == 1)
            self.assertFalse(run.should_stop)
            d.stop_run(run.id)
            deadline = time.monotonic() + 10
            while not run.should_stop:
                self.assertLess(time.monotonic(), deadline, "the stop never reached the run")
                run.batch_ended(1.0, lr=0.1)
                time.sleep(0.01)
            run.finish("stopped")
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
            self.assertEqual(events[-1]["status"], "stopped")

    def test_an_open_run_sends_heartbeats_and_a_finished_one_stops(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url, heartbeat_s=0.1)
            run = herald.Run("long-epoch", client=c, rank=0)
            run.start(n_epochs=1)
            events = d.wait_for(lambda es: sum(e["type"] == "heartbeat" for e in es) >= 3)
            run.finish()
            events = d.wait_for(lambda es: es[-1]["type"] == "run_finished")
            self.assert_gapless(events)
            count = len(events)
            herald.send("a later message", client=c)  # the sender runs on; no heartbeat for the ended run
            later = d.wait_for(lambda es: any(e["type"] == "message" for e in es))
            self.assertEqual([e["type"] for e in later[count:]], ["message"])
            self.assertNotIn(run.id, c._active, "an ended run is no longer kept alive with heartbeats")

    def test_daemon_down_at_start_then_up_nothing_lost(self) -> None:
        port = free_port()
        c = self.client(f"http://127.0.0.1:{port}", retry_max_s=0.2)
        run = herald.Run("offline-first", client=c, rank=0)
        run.start(n_epochs=6, batches_per_epoch=4, metric_names=["accuracy"])
        for epoch in range(3):
            run.epoch_ended(train_loss=1.0, valid_loss=0.5, metrics={"accuracy": 0.9})
        self.assertTrue(c.flush(10))
        self.assertTrue(c.down)
        self.assertEqual(len(self.spool_lines()), 4)
        with FakeDaemon(port=port) as d:
            for epoch in range(3):
                run.epoch_ended(train_loss=1.0, valid_loss=0.5, metrics={"accuracy": 0.9})
                time.sleep(0.05)
            run.finish()
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        self.assertEqual(lifecycle(events), [(0, "run_started")] + [(i, "epoch_ended") for i in range(1, 7)]
                         + [(7, "run_finished")])
        self.assertEqual([e["epoch"] for e in events if e["type"] == "epoch_ended"], list(range(6)))
        self.assertFalse(c.down)
        self.assertEqual(self.spool_lines(), [])

    def test_daemon_restarts_mid_run_nothing_lost(self) -> None:
        port = free_port()
        c = self.client(f"http://127.0.0.1:{port}", retry_max_s=0.2)
        run = herald.Run("flaky", client=c, rank=0, batch_interval=0)
        received = []
        d = FakeDaemon(port=port).start()
        run.start(n_epochs=9)
        for phase in range(3):
            for _ in range(3):
                run.epoch_started()
                for b in range(5):
                    run.batch_ended(0.5, lr=0.01)
                run.epoch_ended(valid_loss=0.4, metrics={"accuracy": 0.9})
            if phase == 0:
                self.assertTrue(c.flush(10))
                received += d.snapshot()
                d.close()
            elif phase == 1:
                self.assertTrue(c.flush(10))
                d = FakeDaemon(port=port).start()
        run.finish()
        d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        received += d.snapshot()
        d.close()
        self.assert_gapless(received)
        self.assertEqual(sum(e["type"] == "epoch_ended" for e in received), 9)
        self.assertEqual(sum(e["type"] == "batch_ended" for e in received), 45)

    def test_5xx_is_retried(self) -> None:
        with FakeDaemon() as d:
            d.fail_with = 503
            c = self.client(d.url, retry_max_s=0.2)
            herald.send("one", client=c)
            self.assertTrue(c.flush(10))
            self.assertTrue(c.down)
            d.fail_with = None
            herald.send("two", client=c)
            events = d.wait_for(lambda es: len(es) == 2)
        self.assertEqual([e["text"] for e in events], ["one", "two"])

    def test_an_unencodable_event_is_set_aside_and_the_rest_flows(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            c.emit("hand-made", "epoch_ended", {"epoch": 0, "n_epochs": 1, "train_loss": float("nan"),
                                                "elapsed_s": 1.0})
            c.emit("hand-made", "message", {"title": "t", "text": object(), "level": "info"})
            herald.send("still flowing", client=c, run_id="hand-made")
            events = d.wait_for(lambda es: len(es) == 1)
        self.assertEqual((events[0]["text"], events[0]["seq"]), ("still flowing", 0))
        self.assertEqual(c.stats.rejected, 2)
        with open(os.path.join(self.spool_dir, "rejected.ndjson"), encoding="utf-8") as f:
            kept = [json.loads(line) for line in f]
        self.assertIn("cannot encode the event as JSON", kept[0]["error"])
        self.assertEqual(kept[0]["events"][0]["type"], "epoch_ended")

    def test_big_batches_are_cut_under_the_daemons_body_limit(self) -> None:
        port = free_port()
        c = self.client(f"http://127.0.0.1:{port}", retry_max_s=0.2)
        text = "x" * 20_000
        for i in range(60):  # 1.2 MB while the daemon is down: spooled, then replayed in parts
            herald.send(f"{i} {text}", client=c, run_id="big")
        self.assertTrue(c.flush(10))
        with FakeDaemon(port=port) as d:
            herald.send("60 wake up", client=c, run_id="big")
            d.wait_for(lambda es: len(es) == 61 and not c.down)
            before = d.requests
            for i in range(61, 120):  # and 1.2 MB queued at once with the daemon up
                herald.send(f"{i} {text}", client=c, run_id="big")
            events = d.wait_for(lambda es: len(es) == 120)
            self.assertGreaterEqual(d.requests - before, 2)
        self.assertEqual([int(e["text"].split()[0]) for e in events], list(range(120)))
        self.assert_gapless(events)
        self.assertEqual(c.stats.rejected, 0)

    def test_rejected_batch_is_kept_aside_and_later_events_flow(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            c.emit("bad-run", "epoch_ended", {"epoch": -1})  # what a buggy integration might write
            herald.send("after", client=c)
            self.assertTrue(c.flush(10))
            events = d.wait_for(lambda es: len(es) == 1)
        self.assertEqual(events[0]["text"], "after")
        self.assertEqual(c.stats.rejected, 1)
        with open(os.path.join(self.spool_dir, "rejected.ndjson"), encoding="utf-8") as f:
            kept = [json.loads(line) for line in f]
        self.assertIn("HTTP 400", kept[0]["error"])
        self.assertEqual(kept[0]["events"][0]["run"], "bad-run")

    def test_a_hanging_daemon_never_blocks_emit_and_only_batches_are_dropped(self) -> None:
        with FakeDaemon() as d:
            d.hold.clear()
            c = self.client(d.url, queue_size=10, timeout=30)
            run = herald.Run("busy", client=c, rank=0, batch_interval=0)
            run.start(n_epochs=1)
            deadline = time.monotonic() + 10
            while d.arrived == 0:  # the sender has taken run_started and hangs in its POST
                self.assertLess(time.monotonic(), deadline, "the sender never posted")
                time.sleep(0.01)
            released = threading.Timer(20, d.hold.set)
            released.start()
            for _ in range(1000):
                run.batch_ended(0.1, lr=0.01)
            run.epoch_ended(valid_loss=0.1)
            run.finish()
            self.assertTrue(d.hold.is_set() is False, "emit waited for the daemon")
            released.cancel()
            d.hold.set()
            events = d.wait_for(lambda es: es and es[-1]["type"] == "run_finished")
        self.assertGreaterEqual(c.stats.dropped, 980)
        self.assertEqual([e["type"] for e in events if e["type"] != "batch_ended"],
                         ["run_started", "epoch_ended", "run_finished"])
        self.assert_gapless(events)

    def test_orphaned_spool_of_a_dead_process_is_replayed(self) -> None:
        port = free_port()
        code = (
            "import herald\n"
            f"c = herald.Client('http://127.0.0.1:{port}', spool_dir={self.spool_dir!r}, timeout=1)\n"
            "herald.set_default_client(c)\n"
            "with herald.run('dead-before-delivery', n_epochs=1) as run:\n"
            "    run.epoch_ended(train_loss=0.3, valid_loss=0.2)\n"
        )
        out = run_python(code)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("cannot reach the daemon", out.stderr)
        self.assertEqual(len(self.spool_lines()), 3)
        with FakeDaemon(port=port) as d:
            c = self.client(d.url)
            herald.send("a new process", client=c)
            events = d.wait_for(lambda es: len(es) == 4)
        self.assertEqual(sorted(e["type"] for e in events), ["epoch_ended", "message", "run_finished", "run_started"])
        self.assertEqual(self.spool_lines(), [])

    def test_events_emitted_just_before_exit_are_delivered(self) -> None:
        with FakeDaemon() as d:
            code = (
                "import herald\n"
                f"herald.set_default_client(herald.Client({d.url!r}, spool_dir={self.spool_dir!r}))\n"
                "run = herald.run('quick', n_epochs=2)\n"
                "run.start()\n"
                "run.epoch_ended(train_loss=0.3)\n"
                "run.epoch_ended(train_loss=0.2)\n"
                "run.finish()\n"
            )
            out = run_python(code)
            self.assertEqual(out.returncode, 0, out.stderr)
            events = d.wait_for(lambda es: len(es) == 4, timeout=5)
        self.assertEqual(events[-1]["type"], "run_finished")

    @unittest.skipUnless(hasattr(os, "fork"), "needs fork")
    def test_a_forked_child_gets_its_own_sender(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            herald.send("parent", client=c)
            d.wait_for(lambda es: len(es) == 1)
            herald.set_default_client(c)
            try:
                pid = os.fork()
                if pid == 0:  # the child: a new thread must start for it
                    try:
                        herald.send("child", client=c)
                        ok = c.flush(10)
                        c.close()
                        os._exit(0 if ok else 1)
                    except BaseException:  # noqa: BLE001 - never return into the test runner from a child
                        os._exit(2)
                _, status = os.waitpid(pid, 0)
            finally:
                herald.set_default_client(None)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
            events = d.wait_for(lambda es: len(es) == 2)
        self.assertEqual(sorted(e["text"] for e in events), ["child", "parent"])


class CommandLine(ClientTest):
    def test_send(self) -> None:
        with FakeDaemon() as d:
            out = run_python_module(["send", "backup done", "--title", "nightly", "--level", "warning"],
                                    HERALD_URL=d.url, HERALD_SPOOL_DIR=self.spool_dir)
            self.assertEqual(out.returncode, 0, out.stderr)
            events = d.wait_for(lambda es: len(es) == 1)
        self.assertEqual((events[0]["title"], events[0]["text"], events[0]["level"]), ("nightly", "backup done", "warning"))

    def test_send_with_the_daemon_down_keeps_the_message_then_flush_delivers_it(self) -> None:
        port = free_port()
        env = dict(HERALD_URL=f"http://127.0.0.1:{port}", HERALD_SPOOL_DIR=self.spool_dir)
        out = run_python_module(["send", "kept for later", "--timeout", "2"], **env)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("python -m herald flush", out.stderr)
        with FakeDaemon(port=port) as d:
            out = run_python_module(["flush"], **env)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("replayed 1 events", out.stdout)
            events = d.wait_for(lambda es: len(es) == 1)
        self.assertEqual(events[0]["text"], "kept for later")

    def test_bad_url(self) -> None:
        out = run_python_module(["send", "x"], HERALD_URL="ftp://nowhere", HERALD_SPOOL_DIR=self.spool_dir)
        self.assertEqual(out.returncode, 2)
        self.assertIn("scheme", out.stderr)


def run_python_module(args: list, **env: str):
    import subprocess

    from support import env_for_child

    return subprocess.run([sys.executable, "-m", "herald", *args], env=env_for_child(**env),
                          capture_output=True, text=True, timeout=60)


if __name__ == "__main__":
    unittest.main()

"""The plugin over the protocol, as the daemon drives it, against recording HTTP sinks and the real Apprise:
the handshake, what json:// and form:// receive, partial failures retried only where they failed (also by a
restarted plugin), malformed input, and that no URL ever reaches stdout, stderr or a message."""

import base64
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import PNG, SRC, Plugin, Sink, notification  # noqa: E402

SECRET = "pa55w0rdXYZ"


class PluginTest(unittest.TestCase):
    def sink(self, **kw):
        s = Sink(**kw)
        self.addCleanup(s.close)
        return s

    def plugin(self, config, **kw):
        p = Plugin(config, **kw)
        self.addCleanup(p.close)
        return p

    def assertNoSecret(self, *texts):
        for text in texts:
            self.assertNotIn(SECRET, json.dumps(text) if not isinstance(text, str) else text)


class Handshake(PluginTest):
    def test_ready_declares_image_unless_attach_plot_is_off(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url()]})
        self.assertEqual(p.handshake["type"], "ready", p.handshake)
        self.assertEqual((p.handshake["name"], p.handshake["protocol_version"]), ("apprise", "1.0"))
        self.assertEqual(p.handshake["capabilities"], ["image"])
        self.assertEqual(p.stop(), 0)
        q = self.plugin({"urls": [sink.url()], "attach_plot": False})
        self.assertEqual(q.handshake["capabilities"], [])
        self.assertEqual(q.stop(), 0)

    def test_a_bad_url_is_a_handshake_error_naming_its_position_only(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url(auth=f"u:{SECRET}@"), f"nope://{SECRET}@example.org/x"]})
        self.assertEqual(p.handshake["type"], "error", p.handshake)
        self.assertIn("urls: URL 2 of 2 (scheme `nope`): unknown scheme", p.handshake["message"])
        self.assertNotEqual(p.proc.wait(timeout=10), 0)
        self.assertNoSecret(p.handshake, p.log())

    def test_another_major_version_is_refused(self):
        hello = {"type": "hello", "protocol": "herald-plugin", "version": "2.0", "config": {}}
        proc = subprocess.run(
            [sys.executable, "-m", "herald_notify_apprise"],
            input=json.dumps(hello) + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, PYTHONPATH=SRC),
        )
        answer = json.loads(proc.stdout.splitlines()[0])
        self.assertEqual(answer["type"], "error")
        self.assertIn("protocol 2.0", answer["message"])
        self.assertNotEqual(proc.returncode, 0)


class Deliveries(PluginTest):
    def test_json_and_form_get_title_body_type_and_the_plot(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url("json", "/j", f"bot:{SECRET}@"), sink.url("form", "/f")]})
        n = notification(kind="run_finished", seq=5, image=True, status="completed", reason="done", duration_s=1.0)
        answer = p.deliver("1", n)
        self.assertEqual(answer["type"], "delivered", answer)
        self.assertEqual(answer["receipt"], {"urls": 2, "delivered": [1, 2], "this_attempt": [1, 2]})
        by_path = {r["path"]: r for r in sink.delivered()}
        self.assertEqual(sorted(by_path), ["/f", "/j"])
        body = json.loads(by_path["/j"]["body"])
        self.assertEqual((body["title"], body["message"], body["type"]), ("r1: run_finished 5", "**markdown 5**", "success"))
        self.assertEqual(body["attachments"][0]["filename"], "loss.png")
        self.assertEqual(base64.b64decode(body["attachments"][0]["base64"]), PNG)
        form = by_path["/f"]
        self.assertTrue(form["type"].startswith("multipart/form-data"), form["type"])
        self.assertIn(b'name="title"\r\n\r\nr1: run_finished 5', form["body"])
        self.assertIn(b'filename="loss.png"', form["body"])
        self.assertIn(PNG, form["body"])
        self.assertEqual(p.stop(), 0)
        self.assertNoSecret(p.log())

    def test_format_picks_the_rendering_and_levels_pick_the_type(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url()], "format": "text"})
        self.assertEqual(p.deliver("1", notification(seq=1, level="warning"))["type"], "delivered")
        self.assertEqual(p.deliver("2", notification(kind="run_failed", seq=2, error="boom"))["type"], "delivered")
        bodies = sink.json_bodies()
        self.assertEqual([(b["message"], b["type"]) for b in bodies], [("plain 1", "warning"), ("plain 2", "failure")])
        self.assertEqual(p.stop(), 0)

    def test_without_attach_plot_no_image_goes(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url()], "attach_plot": False})
        self.assertEqual(p.deliver("1", notification(image=True))["type"], "delivered")
        self.assertEqual(sink.json_bodies()[0]["attachments"], [])
        self.assertEqual(p.stop(), 0)

    def test_concurrent_deliveries_are_answered_by_id(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url()]})
        for i in range(5):
            p.send({"type": "deliver", "id": f"c{i}", "notification": notification(run=f"r{i}", seq=i)})
        answers = {a["id"]: a["type"] for a in (p.read() for _ in range(5))}
        self.assertEqual(answers, {f"c{i}": "delivered" for i in range(5)})
        self.assertEqual(len(sink.delivered()), 5)
        self.assertEqual(p.stop(), 0)


class PartialFailure(PluginTest):
    def test_the_retry_goes_only_to_the_failed_url_even_after_a_restart(self):
        good, flaky = self.sink(), self.sink(fail_first=1)
        state = tempfile.TemporaryDirectory()
        self.addCleanup(state.cleanup)
        config = {"urls": [good.url(auth=f"u:{SECRET}@"), flaky.url()], "state_dir": state.name}
        p = self.plugin(config)
        first = p.deliver("1", notification(seq=3, attempt=1))
        self.assertEqual(first["type"], "failed", first)
        self.assertTrue(first["retryable"])
        self.assertIn("1 of 2 Apprise URLs failed: URL 2 (json): ", first["message"])
        self.assertIn("500", first["message"], "Apprise's reason is in the message")
        self.assertIn("the retry goes only to the failed ones", first["message"])
        self.assertEqual(len(good.delivered()), 1)
        self.assertEqual(len(os.listdir(state.name)), 1, "the progress is on disk")
        self.assertEqual(p.stop(), 0)
        with open(os.path.join(state.name, os.listdir(state.name)[0]), encoding="utf-8") as f:
            self.assertNoSecret(first, p.log(), f.read())

        # A new process, as after a crash or a daemon restart: the retry reaches only the flaky sink.
        q = self.plugin(config)
        second = q.deliver("1", notification(seq=3, attempt=2))
        self.assertEqual(second["type"], "delivered", second)
        self.assertEqual(second["receipt"], {"urls": 2, "delivered": [1, 2], "this_attempt": [2]})
        self.assertEqual(len(good.delivered()), 1, "no second copy for the URL that had it")
        self.assertEqual(len(flaky.delivered()), 1)
        self.assertEqual(len(flaky.requests), 2)
        self.assertEqual(os.listdir(state.name), [], "the progress is dropped once every URL has it")
        # Another notification of the same run goes to both again.
        self.assertEqual(q.deliver("2", notification(seq=4))["type"], "delivered")
        self.assertEqual((len(good.delivered()), len(flaky.delivered())), (2, 2))
        self.assertEqual(q.stop(), 0)

    def test_progress_is_per_notifier_name(self):
        good, flaky = self.sink(), self.sink(fail_first=1)
        state = tempfile.TemporaryDirectory()
        self.addCleanup(state.cleanup)
        config = {"urls": [good.url(), flaky.url()], "state_dir": state.name}
        p = self.plugin(config, name="one")
        self.assertEqual(p.deliver("1", notification(seq=0))["type"], "failed")
        p.stop()
        q = self.plugin(config, name="two")
        answer = q.deliver("1", notification(seq=0))
        self.assertEqual(answer["receipt"]["this_attempt"], [1, 2], "another notifier's progress does not apply")
        q.stop()

    def test_a_url_that_is_down_fails_retryably_with_the_reason(self):
        sink = self.sink()
        down = Sink()
        down.close()  # nothing listens on its port any more
        p = self.plugin({"urls": [down.url(auth=f"u:{SECRET}@")]})
        answer = p.deliver("1", notification())
        self.assertEqual(answer["type"], "failed", answer)
        self.assertTrue(answer["retryable"])
        self.assertIn("1 of 1 Apprise URLs failed: URL 1 (json): ", answer["message"])
        self.assertNoSecret(answer, p.log())
        self.assertEqual(sink.requests, [])
        p.stop()


class MalformedInput(PluginTest):
    def test_it_survives_junk_and_answers_on(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url()]})
        p.send(b"this is not JSON")
        p.send(b'{"type":"no_such_message","id":"x"}')
        p.send(b"[1,2,3]")
        p.send(b'{"type":"deliver","id":"bad"}')
        self.assertEqual(p.read(), {"type": "failed", "id": "bad", "message": "malformed deliver: no notification", "retryable": False})
        p.send({"type": "deliver", "id": "half", "notification": {"title": "t"}})
        half = p.read()
        self.assertEqual((half["id"], half["type"], half["retryable"]), ("half", "failed", False))
        self.assertEqual(p.deliver("ok", notification())["type"], "delivered")
        self.assertEqual(p.stop(), 0)
        log = p.log()
        self.assertIn("not JSON", log)
        self.assertIn("no_such_message", log)

    def test_end_of_stdin_ends_the_plugin(self):
        sink = self.sink()
        p = self.plugin({"urls": [sink.url()]})
        p.proc.stdin.close()
        self.assertEqual(p.proc.wait(timeout=20), 0)


if __name__ == "__main__":
    unittest.main()

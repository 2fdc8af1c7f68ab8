"""Test helpers: a recording HTTP sink on 127.0.0.1 and the plugin driven over the protocol as a child process.

The sink records every request (path, content type, body) and answers from a script of statuses, then 200.
`Plugin` runs `python -m herald_notify_apprise` with this interpreter, so the tests exercise the installed
package against the real Apprise; stderr goes to a file the tests read back (to check that no URL is logged).
"""

import base64
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

# The smallest valid PNG (1x1, transparent).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAACklEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg=="
)


class Sink:
    """A recording HTTP service: `fail_first` requests are answered with `status`, the rest 200."""

    def __init__(self, fail_first=0, status=500):
        self.requests = []
        self.lock = threading.Lock()
        self.script = [status] * fail_first
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with sink.lock:
                    code = sink.script.pop(0) if sink.script else 200
                    sink.requests.append(
                        {"path": self.path, "type": self.headers.get("content-type", ""), "body": body, "status": code}
                    )
                reply = b"ok" if code == 200 else b"broken"
                self.send_response(code)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scheme="json", path="/hook", auth=""):
        return f"{scheme}://{auth}127.0.0.1:{self.port}{path}"

    def delivered(self):
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]

    def json_bodies(self):
        return [json.loads(r["body"]) for r in self.delivered()]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def notification(run="r1", seq=0, kind="message", image=False, attempt=1, **payload):
    event = {"v": 1, "run": run, "seq": seq, "time": "2026-11-27T10:00:00Z", "type": kind}
    event.update(payload)
    n = {
        "run": {"run": run, "name": run, "epochs": []},
        "event": event,
        "title": f"{run}: {kind} {seq}",
        "text": f"plain {seq}",
        "html": f"<b>html {seq}</b>",
        "markdown": f"**markdown {seq}**",
        "attempt": attempt,
    }
    if image:
        n["image"] = {"filename": "loss.png", "mime": "image/png", "bytes": base64.b64encode(PNG).decode()}
    return n


class Plugin:
    """The plugin as a child process; `hello` is sent at start and its answer kept in `handshake`."""

    def __init__(self, config, name="team", state_dir=None):
        self.tmp = tempfile.TemporaryDirectory()
        if state_dir is not None and "state_dir" not in config:
            config = dict(config, state_dir=state_dir)
        self.stderr_path = os.path.join(self.tmp.name, "stderr")
        self.stderr = open(self.stderr_path, "wb")
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env["XDG_STATE_HOME"] = os.path.join(self.tmp.name, "state")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herald_notify_apprise"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.send({"type": "hello", "protocol": "herald-plugin", "version": "1.0", "name": name, "config": config})
        self.handshake = self.read()

    def send(self, message):
        line = message if isinstance(message, (bytes, str)) else json.dumps(message)
        if isinstance(line, str):
            line = line.encode()
        self.proc.stdin.write(line.rstrip(b"\n") + b"\n")
        self.proc.stdin.flush()

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            return None
        return json.loads(line)

    def deliver(self, id_, n):
        self.send({"type": "deliver", "id": id_, "notification": n})
        return self.read()

    def log(self):
        if not self.stderr.closed:
            self.stderr.flush()
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout=20):
        """Send `shutdown`; returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.send({"type": "shutdown"})
            except (BrokenPipeError, OSError):
                pass
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.stderr.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            if not f.closed:
                f.close()
        self.tmp.cleanup()


def wait_for(what, check, limit=10.0):
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        time.sleep(0.01)

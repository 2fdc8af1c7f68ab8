"""A faithful stand-in for ``herald serve``'s ingest, for the client's unit tests: ``POST /v1/events`` on
127.0.0.1 (or a Unix socket) that validates every event the way docs/events.md says the daemon does, stores
accepted batches all or nothing, answers ``202 {"accepted": N, "control": {...}}`` and can be told to fail.

It is not the daemon: no outbox, no notifiers. The end-to-end tests use the real one.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
LOOSE_STRINGS = ("NaN", "Infinity", "-Infinity")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _loose(x: Any) -> bool:
    return _finite(x) or x in LOOSE_STRINGS


# type -> {field: checker}; required fields only (optional ones are checked when present).
REQUIRED: Dict[str, Dict[str, Callable[[Any], bool]]] = {
    "run_started": {
        "name": lambda x: isinstance(x, str),
        "host": lambda x: isinstance(x, str),
        "pid": _is_int,
        "n_epochs": _is_int,
        "batches_per_epoch": _is_int,
        "metric_names": lambda x: isinstance(x, list) and all(isinstance(n, str) for n in x),
    },
    "epoch_started": {"epoch": _is_int},
    "batch_ended": {
        "epoch": _is_int,
        "batch": _is_int,
        "n_batches": _is_int,
        "loss": _loose,
        "smooth_loss": _loose,
        "lr": _finite,
    },
    "epoch_ended": {"epoch": _is_int, "n_epochs": _is_int, "train_loss": _loose, "elapsed_s": _finite},
    "run_finished": {
        "status": lambda x: x in ("completed", "stopped", "failed"),
        "reason": lambda x: isinstance(x, str),
        "duration_s": _finite,
    },
    "run_failed": {"error": lambda x: isinstance(x, str)},
    "message": {"title": lambda x: isinstance(x, str), "text": lambda x: isinstance(x, str)},
    "heartbeat": {},
    "alert": {"title": lambda x: isinstance(x, str), "text": lambda x: isinstance(x, str)},
}
OPTIONAL: Dict[str, Dict[str, Callable[[Any], bool]]] = {
    "run_started": {
        "rank": _is_int,
        "hyper": lambda x: isinstance(x, dict),
        "job": lambda x: isinstance(x, str) and bool(x),
        "world_size": lambda x: _is_int(x) and x >= 1,
    },
    "epoch_ended": {
        "valid_loss": _loose,
        "metrics": lambda x: isinstance(x, dict) and all(_loose(v) for v in x.values()),
    },
    "run_finished": {
        "best": lambda x: isinstance(x, dict)
        and isinstance(x.get("name"), str)
        and _finite(x.get("value"))
        and _is_int(x.get("epoch"))
    },
    "run_failed": {"traceback": lambda x: isinstance(x, str)},
    "message": {"level": lambda x: x in ("info", "warning", "error")},
    "alert": {
        "rule": lambda x: isinstance(x, str),
        "level": lambda x: x in ("info", "warning", "error"),
        "epoch": _is_int,
    },
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON; write it as the string \"{name}\"")


def check_event(e: Any) -> Optional[str]:
    """``None`` when ``e`` is a valid event, else what is wrong with it."""
    if not isinstance(e, dict):
        return "an event must be a JSON object"
    if e.get("v") != 1:
        return f"`v` must be 1, found {e.get('v')!r}"
    if not isinstance(e.get("run"), str) or not e["run"]:
        return "`run` must be a non-empty string"
    if not _is_int(e.get("seq")):
        return "`seq` must be a non-negative integer"
    if not isinstance(e.get("time"), str) or not TIME_RE.match(e["time"]):
        return f"`time` must be RFC 3339, found {e.get('time')!r}"
    kind = e.get("type")
    if kind not in REQUIRED:
        return f"unknown event type {kind!r}"
    for field, ok in REQUIRED[kind].items():
        if field not in e:
            return f"`{field}` is missing"
        if not ok(e[field]):
            return f"`{field}` is invalid: {e[field]!r}"
    for field, ok in OPTIONAL.get(kind, {}).items():
        if field in e and not ok(e[field]):
            return f"`{field}` is invalid: {e[field]!r}"
    return None


class FakeDaemon:
    """Start with :meth:`start`; read :attr:`events`; steer with :attr:`fail_with`, :attr:`hold`, :meth:`stop_run`."""

    def __init__(self, port: int = 0, unix_path: Optional[str] = None, token: Optional[str] = None):
        self.port = port
        self.unix_path = unix_path
        self.token = token
        self.events: List[Dict[str, Any]] = []
        self.requests = 0
        #: POSTs that reached the handler, answered or still held.
        self.arrived = 0
        self.auth_headers: List[Optional[str]] = []
        #: When set, answer every POST with this status (and store nothing).
        self.fail_with: Optional[int] = None
        #: When cleared, POSTs wait for it to be set before answering (a daemon that hangs).
        self.hold = threading.Event()
        self.hold.set()
        self.stopped_runs: set = set()
        self._lock = threading.Lock()
        self._server: Any = None
        self._conns: set = set()
        self._thread: Optional[threading.Thread] = None

    # -- control ------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.unix_path is not None:
            return self.unix_path
        return f"http://127.0.0.1:{self.port}"

    def stop_run(self, run: str) -> None:
        with self._lock:
            self.stopped_runs.add(run)

    def snapshot(self) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def of_type(self, kind: str) -> List[Dict[str, Any]]:
        return [e for e in self.snapshot() if e["type"] == kind]

    def wait_for(self, predicate: Callable[[List[Dict[str, Any]]], bool], timeout: float = 20.0) -> List[Dict[str, Any]]:
        """Poll until ``predicate(events)`` holds; ``AssertionError`` with what arrived on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.snapshot()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                kinds = [(e["run"], e["seq"], e["type"]) for e in events]
                raise AssertionError(f"timed out after {timeout} s; events so far: {kinds}")
            time.sleep(0.02)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> "FakeDaemon":
        handler = self._handler()
        if self.unix_path is not None:

            class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True

            if os.path.exists(self.unix_path):
                os.remove(self.unix_path)
            self._server = UnixServer(self.unix_path, handler)
        else:
            ThreadingHTTPServer.allow_reuse_address = True
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
            self._server.daemon_threads = True
            self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop like a killed daemon: the listener and every open connection go."""
        self.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.unix_path is not None and os.path.exists(self.unix_path):
            os.remove(self.unix_path)

    def __enter__(self) -> "FakeDaemon":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the handler ----------------------------------------------------------------------------------------

    def _handler(self) -> Any:
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with daemon._lock:
                    daemon._conns.add(self.connection)

            def finish(self) -> None:
                with daemon._lock:
                    daemon._conns.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
                pass

            def _answer(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with daemon._lock:
                    daemon.arrived += 1
                daemon.hold.wait()
                with daemon._lock:
                    daemon.requests += 1
                    daemon.auth_headers.append(self.headers.get("Authorization"))
                if self.path != "/v1/events":
                    return self._answer(404, {"error": f"no route {self.path}"})
                if length > 1024 * 1024:
                    return self._answer(413, {"error": f"the body is {length} bytes; the limit is 1 MiB"})
                if daemon.fail_with is not None:
                    return self._answer(daemon.fail_with, {"error": "told to fail"})
                if daemon.token is not None and self.headers.get("Authorization") != f"Bearer {daemon.token}":
                    return self._answer(401, {"error": "missing or wrong token"})
                try:
                    text = raw.decode("utf-8")
                    try:
                        doc = json.loads(text, parse_constant=_refuse_constant)
                        batch = doc if isinstance(doc, list) else [doc]
                    except ValueError:
                        batch = [json.loads(x, parse_constant=_refuse_constant) for x in text.splitlines() if x.strip()]
                except ValueError as err:
                    return self._answer(400, {"error": f"malformed JSON: {err}"})
                for i, e in enumerate(batch):
                    problem = check_event(e)
                    if problem is not None:
                        return self._answer(400, {"error": problem, "index": i})
                with daemon._lock:
                    daemon.events.extend(batch)
                    runs = {e["run"] for e in batch}
                    control = {r: {"stop": r in daemon.stopped_runs} for r in runs}
                return self._answer(202, {"accepted": len(batch), "control": control})

        return Handler

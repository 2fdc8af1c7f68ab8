"""Shared pieces of the client's tests: a temporary spool folder, clients pointed at a fake daemon, a free port,
the events doc's examples, and subprocess helpers that run the venv's Python with the package importable."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", "src"))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, SRC)
sys.path.insert(0, HERE)

import herald  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doc_examples() -> Dict[str, List[Dict[str, Any]]]:
    """The JSON examples of docs/events.md by type."""
    with open(os.path.join(REPO, "docs", "events.md"), encoding="utf-8") as f:
        text = f.read()
    out: Dict[str, List[Dict[str, Any]]] = {}
    for block in re.findall(r"```json\n(.*?)```", text, flags=re.S):
        e = json.loads(block)
        out.setdefault(e["type"], []).append(e)
    return out


def env_for_child(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + HERE + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_python(code: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env_for_child(**env), capture_output=True, text=True, timeout=timeout
    )


class ClientTest(unittest.TestCase):
    """Each test gets its own spool folder; clients made with :meth:`client` are closed at the end."""

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="herald-py-test-")
        self.spool_dir = os.path.join(self.tmp, "spool")
        self._clients: List[herald.Client] = []

    def tearDown(self) -> None:
        for c in self._clients:
            c.close(timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def client(self, url: str, token: Optional[str] = None, **kwargs: Any) -> herald.Client:
        kwargs.setdefault("linger_s", 0.02)
        kwargs.setdefault("timeout", 2.0)
        c = herald.Client(url, token, spool_dir=self.spool_dir, **kwargs)
        self._clients.append(c)
        return c

    def spool_lines(self) -> List[str]:
        lines: List[str] = []
        if not os.path.isdir(self.spool_dir):
            return lines
        for name in sorted(os.listdir(self.spool_dir)):
            if name.endswith(".ndjson") and name != "rejected.ndjson":
                with open(os.path.join(self.spool_dir, name), encoding="utf-8") as f:
                    lines += [x for x in f.read().splitlines() if x.strip()]
        return lines

    def assert_gapless(self, events: List[Dict[str, Any]]) -> None:
        """Per run: seq 0, 1, 2, ... in arrival order, each once."""
        by_run: Dict[str, List[int]] = {}
        for e in events:
            by_run.setdefault(e["run"], []).append(e["seq"])
        for run, seqs in by_run.items():
            self.assertEqual(seqs, list(range(len(seqs))), f"run {run}: seqs {seqs}")

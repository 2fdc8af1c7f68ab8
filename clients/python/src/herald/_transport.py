"""How the client reaches the daemon: the endpoint (``HERALD_URL``: TCP, TLS or a Unix socket), one kept-alive
HTTP connection, and what an answer means for the events it carried (:class:`Outcome`).
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import socket
import ssl
import urllib.parse
from typing import Any, Dict, Mapping, Optional

log = logging.getLogger("herald")

DEFAULT_URL = "http://127.0.0.1:7878"
#: The daemon refuses bodies over 1 MiB; batches are cut to stay well below.
MAX_BODY = 768 * 1024
EVENTS_PATH = "/v1/events"


class ConfigError(ValueError):
    """A Herald setting (``HERALD_URL`` and friends) that cannot be used; the message says how to fix it."""


# --------------------------------------------------------------------------------------------------------------
# Transport


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix domain socket (the daemon's ``$XDG_RUNTIME_DIR/herald.sock``)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Endpoint:
    """Where the daemon listens, parsed from ``HERALD_URL``.

    Accepted: ``http://host:port[/prefix]``, ``https://...``, ``host:port``, ``unix:///path/to/herald.sock``,
    ``unix:/path``, or a bare socket path (``/run/user/1000/herald.sock``, ``./herald.sock``, ``~/herald.sock``).
    """

    def __init__(self, url: Optional[str] = None):
        raw = (url if url is not None else os.environ.get("HERALD_URL", "")).strip() or DEFAULT_URL
        self.url = raw
        self.unix_path: Optional[str] = None
        self.scheme = "http"
        self.host = "127.0.0.1"
        self.port: Optional[int] = None
        self.prefix = ""
        if raw.startswith("unix:"):
            path = raw[len("unix:") :]
            if path.startswith("//"):
                path = path[2:]
            if not path:
                raise ConfigError(f"HERALD_URL `{raw}` names no socket path; write unix:///path/to/herald.sock")
            self.unix_path = os.path.expanduser(path)
            return
        if raw.startswith(("/", "./", "../", "~")):
            self.unix_path = os.path.expanduser(raw)
            return
        if "://" not in raw:
            raw = "http://" + raw
        parts = urllib.parse.urlsplit(raw)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(
                f"HERALD_URL `{self.url}` has scheme `{parts.scheme}`; use http://, https://, unix:// or a socket path"
            )
        if not parts.hostname:
            raise ConfigError(f"HERALD_URL `{self.url}` names no host; for example http://127.0.0.1:7878")
        try:
            self.port = parts.port
        except ValueError as err:
            raise ConfigError(f"HERALD_URL `{self.url}` has a bad port: {err}") from None
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.prefix = parts.path.rstrip("/")

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.unix_path is not None:
            return _UnixHTTPConnection(self.unix_path, timeout)
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def __str__(self) -> str:
        return self.url


class Outcome:
    """What became of one POST."""

    OK = "ok"
    #: The daemon is unreachable or asked us to come back later: spool and retry.
    RETRY = "retry"
    #: The daemon refused the batch as malformed: keep it aside, never resend.
    REJECTED = "rejected"

    def __init__(self, kind: str, detail: str = "", control: Optional[Mapping[str, Any]] = None):
        self.kind = kind
        self.detail = detail
        self.control = control or {}


class Transport:
    """One keep-alive connection to the daemon, used by the sender thread only."""

    def __init__(self, endpoint: Endpoint, token: Optional[str], timeout: float):
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout
        self._conn: Optional[http.client.HTTPConnection] = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def post(self, body: bytes, timeout: Optional[float] = None) -> Outcome:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        path = self.endpoint.prefix + EVENTS_PATH
        t = self.timeout if timeout is None else max(0.05, min(timeout, self.timeout))
        for attempt in (0, 1):  # a kept-alive connection the daemon closed fails once; reconnect once
            if self._conn is None:
                self._conn = self.endpoint.connection(t)
            elif self._conn.sock is not None:
                self._conn.sock.settimeout(t)
            fresh = attempt == 1
            try:
                self._conn.request("POST", path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
                status = resp.status
                if resp.will_close:
                    self.close()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as err:
                self.close()
                if fresh:
                    return Outcome(Outcome.RETRY, f"connection lost: {err}")
                continue
            except (OSError, http.client.HTTPException) as err:
                self.close()
                return Outcome(Outcome.RETRY, _describe_os_error(err))
            return _classify(status, data)
        return Outcome(Outcome.RETRY, "connection lost")  # pragma: no cover - the loop always returns


def _describe_os_error(err: BaseException) -> str:
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.errno in (errno.ECONNREFUSED, errno.ENOENT):
        return "connection refused (is `herald serve` running?)"
    return f"{type(err).__name__}: {err}"


def _classify(status: int, data: bytes) -> Outcome:
    text = data.decode("utf-8", "replace").strip()
    if 200 <= status < 300:
        control: Dict[str, Any] = {}
        try:
            doc = json.loads(text) if text else {}
            if isinstance(doc, dict) and isinstance(doc.get("control"), dict):
                control = doc["control"]
        except ValueError:
            log.debug("herald: the daemon's answer is not JSON: %.200s", text)
        return Outcome(Outcome.OK, control=control)
    detail = f"HTTP {status}: {text[:500]}"
    if status in (401, 403):
        return Outcome(Outcome.RETRY, detail + " (check HERALD_TOKEN against the daemon's `token`)")
    if status in (408, 425, 429) or status >= 500:
        return Outcome(Outcome.RETRY, detail)
    return Outcome(Outcome.REJECTED, detail)

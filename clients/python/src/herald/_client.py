"""The sender: a background thread that ships events to the Herald daemon, and the spool that keeps them while the
daemon is unreachable.

Every integration (fastai, Keras, Lightning, transformers, ``herald.run``, ``herald.notify``) hands its events to a
:class:`Client`. ``Client.emit`` only appends to an in-memory queue and returns: the training loop never waits on
the network. The queue is bounded for the high-frequency types (``batch_ended``, ``heartbeat``: dropped and counted
when full) and unbounded for lifecycle events, which are few and never dropped. The sender thread gives each event
its per-run ``seq`` when it takes it from the queue (so dropped events leave no gaps), posts batches to
``POST /v1/events``, and reads ``control.stop`` from the answers. When the daemon cannot be reached (refused, timed
out, 5xx, 429, 401/403), events go to an append-only spool file (NDJSON, fsynced) and are replayed in order, with
backoff, before anything newer is sent; spool files left by dead processes are replayed too. A batch the daemon
rejects as malformed (other 4xx) is kept in ``rejected.ndjson`` beside the spool with the daemon's error.

It deliberately does not retry forever at exit: ``close`` waits ``flush_timeout`` seconds at most, and what is not
sent by then stays in the spool for the next client (or ``python -m herald flush``).
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import threading
import time
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

from . import _wire
from ._spool import SpoolFile, default_spool_dir
from ._transport import MAX_BODY, ConfigError, Endpoint, Outcome, Transport

__all__ = ["Client", "ConfigError", "Endpoint", "Stats", "default_client", "set_default_client"]

try:  # POSIX advisory locks mark which spool files belong to a live process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("herald")

# --------------------------------------------------------------------------------------------------------------
# Client


class Stats:
    """Counters a caller can read (tests, ``python -m herald send``)."""

    def __init__(self) -> None:
        self.sent = 0
        self.spooled = 0
        self.replayed = 0
        self.rejected = 0
        self.dropped = 0
        self.last_error = ""

    def __repr__(self) -> str:
        return (
            f"Stats(sent={self.sent}, spooled={self.spooled}, replayed={self.replayed}, "
            f"rejected={self.rejected}, dropped={self.dropped}, last_error={self.last_error!r})"
        )


_Item = Tuple[str, str, str, Mapping[str, Any], bool]


class Client:
    """Ships events to the daemon from a background thread. Thread-safe; ``emit`` never blocks on I/O.

    Settings default to the environment: ``HERALD_URL`` (default ``http://127.0.0.1:7878``; a Unix socket path
    works too), ``HERALD_TOKEN`` (sent as a Bearer token), ``HERALD_SPOOL_DIR`` (default
    ``$XDG_STATE_HOME/herald/client-spool``).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        spool_dir: Optional[str] = None,
        queue_size: int = 10_000,
        timeout: float = 5.0,
        heartbeat_s: float = 30.0,
        flush_timeout: float = 5.0,
        batch_max: int = 500,
        linger_s: float = 0.05,
        retry_max_s: float = 10.0,
    ):
        self.endpoint = Endpoint(url)
        self.token = token if token is not None else (os.environ.get("HERALD_TOKEN") or None)
        self.spool_dir = spool_dir or default_spool_dir()
        self.queue_size = queue_size
        self.timeout = timeout
        self.heartbeat_s = heartbeat_s
        self.flush_timeout = flush_timeout
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.retry_max_s = retry_max_s
        self.stats = Stats()
        self._init_state()

    def _init_state(self) -> None:
        self._queue: Deque[_Item] = collections.deque()
        self._queued_droppable = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._enqueued = 0
        self._handled = 0
        self._closing = False
        self._thread: Optional[threading.Thread] = None
        self._stop: Dict[str, bool] = {}
        # Sender-thread state.
        self._seq: Dict[str, int] = {}
        self._active: Dict[str, float] = {}  # run -> monotonic time of its last event, for heartbeats
        self._spool: Optional[SpoolFile] = None
        self._down = False
        self._backoff = 0.5
        self._next_try = 0.0
        self._next_orphan_scan = 0.0

    def _after_fork_in_child(self) -> None:
        """A forked child (a DataLoader worker, say) starts with no thread and no spool of its own."""
        self.stats = Stats()
        self._init_state()

    # -- the training side ------------------------------------------------------------------------------------

    def emit(self, run: str, type_: str, payload: Mapping[str, Any], t: Optional[float] = None) -> bool:
        """Queue one event; ``False`` when a droppable event was dropped because the queue is full."""
        droppable = type_ in _wire.DROPPABLE
        stamp = _wire.rfc3339(time.time() if t is None else t)
        with self._lock:
            if self._closing:
                # Emitting after close: start again rather than leave the event in a queue nobody reads.
                self._closing = False
                if self._thread is not None and not self._thread.is_alive():
                    self._thread = None
            if droppable:
                if self._queued_droppable >= self.queue_size:
                    self.stats.dropped += 1
                    return False
                self._queued_droppable += 1
            wake = not droppable or not self._queue  # a batch event only wakes an idle sender
            self._queue.append((run, type_, stamp, payload, droppable))
            self._enqueued += 1
            start = self._thread is None
            if start:
                self._thread = threading.Thread(target=self._run_thread, name="herald-sender", daemon=True)
        if start:
            self._thread.start()  # type: ignore[union-attr]
        if wake:
            self._wake.set()
        return True

    def stop_requested(self, run: str) -> bool:
        """Whether the daemon asked ``run`` to stop (``herald stop RUN``, ``/stop`` from the phone)."""
        return self._stop.get(run, False)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything emitted so far was posted, spooled or set aside; ``False`` on timeout."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        with self._lock:
            target = self._enqueued
            if self._thread is None:
                return True
        self._wake.set()
        with self._progress:
            while self._handled < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(min(left, 0.1))
        return True

    def close(self, timeout: Optional[float] = None) -> bool:
        """Send or spool what is queued, then stop the thread; waits ``flush_timeout`` seconds at most."""
        with self._lock:
            self._closing = True
            thread = self._thread
        if thread is None:
            return True
        self._wake.set()
        thread.join(self.flush_timeout if timeout is None else timeout)
        return not thread.is_alive()

    def replay_spools(self) -> int:
        """Replay, in the calling thread, the spool files that stopped processes left; returns how many events
        reached the daemon. For ``python -m herald flush``; a running client does this by itself."""
        transport = Transport(self.endpoint, self.token, self.timeout)
        before = self.stats.replayed
        try:
            self._replay_orphans(transport)
        finally:
            transport.close()
        return self.stats.replayed - before

    @property
    def down(self) -> bool:
        """Whether the last attempt to reach the daemon failed (events are being spooled)."""
        return self._down

    # -- the sender thread ------------------------------------------------------------------------------------

    def _run_thread(self) -> None:
        transport = Transport(self.endpoint, self.token, self.timeout)
        try:
            while True:
                try:
                    self._loop(transport)
                    return
                except Exception:  # noqa: BLE001 - the last line of defence: log, pause, go on sending
                    log.exception("herald: the sender thread hit a bug; it goes on in a second")
                    transport.close()
                    time.sleep(1.0)
        finally:
            transport.close()
            if self._spool is not None:
                self._spool.close()

    def _take(self) -> Tuple[List[str], int]:
        """Up to ``batch_max`` queued events as JSON lines with their seqs, and how many queue items that was."""
        with self._lock:
            n = min(len(self._queue), self.batch_max)
            items = [self._queue.popleft() for _ in range(n)]
            self._queued_droppable -= sum(1 for it in items if it[4])
        out: List[str] = []
        now = time.monotonic()
        for run, type_, stamp, payload, _ in items:
            if self._encode_into(out, run, stamp, type_, payload):
                if type_ in ("run_finished", "run_failed"):
                    self._active.pop(run, None)
                elif type_ == "run_started" or run in self._active:
                    self._active[run] = now
        return out, n

    def _encode_into(self, out: List[str], run: str, stamp: str, type_: str, payload: Mapping[str, Any]) -> bool:
        """Give the event the run's next seq and append its JSON line. An event that cannot be encoded (a bare
        NaN or an object in a field a caller filled by hand) is set aside with the reason and takes no seq, so
        what is sent keeps its seqs gapless."""
        seq = self._seq.get(run, 0)
        try:
            line = _wire.dumps(_wire.event(run, seq, stamp, type_, payload))
        except (TypeError, ValueError) as err:
            event = {"run": run, "time": stamp, "type": type_, "payload": repr(payload)[:10_000]}
            self._reject([json.dumps(event)], f"cannot encode the event as JSON: {err}")
            return False
        self._seq[run] = seq + 1
        out.append(line)
        return True

    def _heartbeats(self) -> List[str]:
        if self.heartbeat_s <= 0:
            return []
        now = time.monotonic()
        out: List[str] = []
        for run, last in list(self._active.items()):
            if now - last >= self.heartbeat_s:
                self._active[run] = now
                self._encode_into(out, run, _wire.rfc3339(time.time()), "heartbeat", {})
        return out

    def _mark_handled(self, n: int) -> None:
        if n:
            with self._progress:
                self._handled += n
                self._progress.notify_all()

    def _loop(self, transport: Transport) -> None:
        while True:
            with self._lock:
                queued = len(self._queue)
                closing = self._closing
            if not queued:
                if closing:
                    return
                woke = self._wake.wait(self._idle_wait())
                self._wake.clear()
                with self._lock:
                    closing = self._closing
                if woke and not closing and self.linger_s > 0:
                    # Gather what follows the first event (epoch_ended, then epoch_started) into one POST.
                    time.sleep(self.linger_s)
            batch, counted = self._take()
            batch += self._heartbeats()
            with self._lock:
                closing = self._closing
            deadline_post = self.flush_timeout / 2 if closing else None
            for lines in _split_by_size(batch, MAX_BODY):
                if self._down:
                    self._to_spool(lines)
                else:
                    self._settle(lines, transport.post(_body(lines), deadline_post))
            self._mark_handled(counted)
            if self._down and not closing and time.monotonic() >= self._next_try:
                self._replay_own(transport)
            if not self._down and time.monotonic() >= self._next_orphan_scan:
                self._next_orphan_scan = time.monotonic() + 60.0
                if not closing:
                    self._replay_orphans(transport)

    def _idle_wait(self) -> float:
        """How long the sender may sleep with nothing queued: until the next retry while the daemon is down,
        until the next heartbeat is due while a run is open, else 5 s."""
        now = time.monotonic()
        if self._down:
            return min(1.0, max(0.0, self._next_try - now))
        wait = 5.0
        if self.heartbeat_s > 0 and self._active:
            wait = min(wait, max(0.0, min(self._active.values()) + self.heartbeat_s - now))
        return wait

    def _settle(self, lines: List[str], outcome: Outcome) -> None:
        if outcome.kind == Outcome.OK:
            self.stats.sent += len(lines)
            self._apply_control(outcome.control)
        elif outcome.kind == Outcome.REJECTED:
            self._reject(lines, outcome.detail)
        else:
            self._went_down(outcome.detail)
            self._to_spool(lines)

    def _went_down(self, detail: str) -> None:
        self.stats.last_error = detail
        if not self._down:
            log.warning(
                "herald: cannot reach the daemon at %s (%s); keeping events in %s until it answers",
                self.endpoint,
                detail,
                self.spool_dir,
            )
        self._down = True
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.retry_max_s)

    def _to_spool(self, lines: List[str]) -> None:
        try:
            if self._spool is None:
                self._spool = SpoolFile.create(self.spool_dir)
            self._spool.append(lines)
            self.stats.spooled += len(lines)
        except OSError as err:
            self.stats.last_error = f"cannot write the spool in {self.spool_dir}: {err}"
            log.error("herald: %s; %d events are lost (set HERALD_SPOOL_DIR to a writable folder)",
                      self.stats.last_error, len(lines))

    def _apply_control(self, control: Mapping[str, Any]) -> None:
        for run, c in control.items():
            if isinstance(c, dict) and c.get("stop") is True:
                if not self._stop.get(run):
                    log.info("herald: the daemon asks run %s to stop", run)
                self._stop[run] = True

    def _reject(self, lines: List[str], detail: str) -> None:
        self.stats.rejected += len(lines)
        self.stats.last_error = detail
        path = os.path.join(self.spool_dir, "rejected.ndjson")
        try:
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(_wire.dumps({"error": detail, "events": [json.loads(x) for x in lines]}) + "\n")
            kept = f"kept in {path}"
        except (OSError, ValueError) as err:
            kept = f"and could not be kept ({err})"
        log.error("herald: the daemon rejected %d events: %s; %s", len(lines), detail, kept)

    def _replay(self, spool: SpoolFile, transport: Transport) -> bool:
        """Post a spool's pending lines in order; ``True`` once it is empty."""
        while spool.pending():
            lines, offset = spool.read_chunk(self.batch_max, MAX_BODY)
            if offset == spool.sent:
                return True  # nothing complete left: at most a line cut short by a crash
            if lines:
                outcome = transport.post(_body(lines))
                if outcome.kind == Outcome.RETRY:
                    self._went_down(outcome.detail)
                    return False
                if outcome.kind == Outcome.REJECTED:
                    self._reject(lines, outcome.detail)
                else:
                    self.stats.replayed += len(lines)
                    self._apply_control(outcome.control)
            spool.mark_sent(offset)
        return True

    def _replay_own(self, transport: Transport) -> None:
        if self._spool is None or self._replay(self._spool, transport):
            if self._down:
                log.warning("herald: reached the daemon at %s again; spooled events replayed", self.endpoint)
            self._down = False
            self._backoff = 0.5

    def _replay_orphans(self, transport: Transport) -> None:
        try:
            names = sorted(os.listdir(self.spool_dir))
        except OSError:
            return
        own = self._spool.path if self._spool is not None else None
        for name in names:
            path = os.path.join(self.spool_dir, name)
            if not name.endswith(".ndjson") or name == "rejected.ndjson" or path == own:
                continue
            spool = SpoolFile.adopt(path)
            if spool is None:
                continue
            try:
                done = self._replay(spool, transport)
            finally:
                spool.close(remove_if_empty=True)
            if not done:
                return
            log.info("herald: replayed the events a stopped process left in %s", path)


def _body(lines: List[str]) -> bytes:
    """A JSON array of encoded events."""
    return ("[" + ",".join(lines) + "]").encode("utf-8")


def _split_by_size(lines: List[str], max_bytes: int) -> List[List[str]]:
    """Consecutive parts of ``lines`` (encoded events) under ``max_bytes`` each (an event alone may be larger)."""
    parts: List[List[str]] = []
    current: List[str] = []
    size = 0
    for e in lines:
        n = len(e) + 1
        if current and size + n > max_bytes:
            parts.append(current)
            current, size = [], 0
        current.append(e)
        size += n
    if current:
        parts.append(current)
    return parts


# --------------------------------------------------------------------------------------------------------------
# The process-wide client

_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process's shared client, made from the environment on first use and flushed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def set_default_client(client: Optional[Client]) -> None:
    """Replace the shared client (tests, or a program that configures the client in code)."""
    global _default
    with _default_lock:
        _default = client


def _close_default() -> None:
    client = _default
    if client is not None:
        client.close()


def _after_fork() -> None:
    client = _default
    if client is not None:
        client._after_fork_in_child()


atexit.register(_close_default)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

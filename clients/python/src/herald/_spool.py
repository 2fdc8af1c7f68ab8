"""The spool: an append-only NDJSON file per process (fsynced, locked while its process lives) that keeps events
while the daemon is unreachable, with the offset of what was already replayed beside it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, List, Optional, Tuple

try:  # POSIX advisory locks mark which spool files belong to a live process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# --------------------------------------------------------------------------------------------------------------
# Spool


def default_spool_dir() -> str:
    explicit = os.environ.get("HERALD_SPOOL_DIR")
    if explicit:
        return os.path.expanduser(explicit)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "herald", "client-spool")


class SpoolFile:
    """An append-only NDJSON file of events waiting for the daemon, with a sidecar holding how many bytes of it
    were already delivered.

    The owning process holds an exclusive ``flock`` on it for its lifetime; a file nobody holds belongs to a dead
    process, and any client may take it over and replay it.
    """

    def __init__(self, path: str, handle: Any):
        self.path = path
        self._f = handle
        self.sent = _read_offset(path + ".sent")

    @classmethod
    def create(cls, directory: str) -> "SpoolFile":
        os.makedirs(directory, mode=0o700, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}.ndjson"
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        f = os.fdopen(fd, "a+b")
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cls(path, f)

    @classmethod
    def adopt(cls, path: str) -> Optional["SpoolFile"]:
        """Take over another process's spool file, or ``None`` when its owner still holds it."""
        try:
            f = open(path, "a+b")
        except OSError:
            return None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                return None
        return cls(path, f)

    def append(self, lines: List[str]) -> None:
        """Append encoded events, one per line, and fsync."""
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        self._f.write(data)
        self._f.flush()
        os.fsync(self._f.fileno())

    def size(self) -> int:
        return os.fstat(self._f.fileno()).st_size

    def pending(self) -> bool:
        return self.size() > self.sent

    def read_chunk(self, max_events: int, max_bytes: int = 1 << 62) -> Tuple[List[str], int]:
        """Up to ``max_events`` complete lines (and about ``max_bytes``, at least one line) after what was
        delivered, and the offset after them."""
        lines: List[str] = []
        size = 0
        with open(self.path, "rb") as r:
            r.seek(self.sent)
            offset = self.sent
            while len(lines) < max_events:
                line = r.readline()
                if not line or not line.endswith(b"\n"):
                    break  # end, or a line cut by a crash mid-write: nothing more to read
                if lines and size + len(line) > max_bytes:
                    break
                size += len(line)
                offset += len(line)
                text = line.decode("utf-8", "replace").strip()
                if text:
                    lines.append(text)
        return lines, offset

    def mark_sent(self, offset: int) -> None:
        self.sent = offset
        if offset >= self.size():
            self._f.truncate(0)
            self.sent = 0
            _remove(self.path + ".sent")
        else:
            _write_offset(self.path + ".sent", offset)

    def close(self, remove_if_empty: bool = True) -> None:
        try:
            empty = self.size() <= self.sent
        except OSError:
            empty = False
        if remove_if_empty and empty:
            _remove(self.path)
            _remove(self.path + ".sent")
        self._f.close()


def _read_offset(path: str) -> int:
    try:
        with open(path, encoding="ascii") as f:
            return max(0, int(f.read().strip() or 0))
    except (OSError, ValueError):
        return 0


def _write_offset(path: str, offset: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(str(offset))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

"""Which Apprise URLs a notification already reached, remembered on disk across retries and restarts.

Apprise reports success or failure per URL, and Herald retries a notification as a whole. So that a retry after
a partial failure goes only to the URLs that failed, the plugin writes the positions that succeeded to one
small file per notification (run, seq) in `state_dir`, as soon as one succeeds while others are still
pending, and deletes it when every URL has the notification. A restarted plugin (after a crash, a hang, a
daemon restart) reads it back. Herald's plugin protocol hands a plugin the receipt of the run's previous
*successful* delivery only, never the progress of a failed one, hence the file; the receipt of the final
success lists the positions too.

The file name is a hash of the notifier's name, the list of URLs and the notification's (run, seq), so two
notifiers, two daemons or a changed URL list never share progress; it holds positions and the run id, never
a URL. Files older than `MAX_AGE_S` (past any `max_age` a retry could have) are pruned at start-up. A failure
to write is logged and costs at most a duplicate, never a delivery.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from typing import Set

MAX_AGE_S = 30 * 24 * 3600


def log(text: str) -> None:
    print(f"herald-notify-apprise: {text}", file=sys.stderr, flush=True)


class Progress:
    def __init__(self, directory: str, notifier: str, fingerprint: str):
        self.directory = directory
        self.notifier = notifier
        self.fingerprint = fingerprint

    def path(self, run: str, seq: int) -> str:
        key = "\0".join([self.notifier, self.fingerprint, run, str(seq)])
        return os.path.join(self.directory, hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:40] + ".json")

    def load(self, run: str, seq: int) -> Set[int]:
        """The positions (from 1) that already have this notification; empty when none is remembered."""
        path = self.path(run, seq)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as e:
            log(f"ignoring unreadable progress file {path}: {e}")
            return set()
        if not isinstance(data, dict) or data.get("fingerprint") != self.fingerprint:
            return set()
        done = data.get("delivered")
        if not isinstance(done, list):
            return set()
        return {p for p in done if isinstance(p, int) and not isinstance(p, bool)}

    def save(self, run: str, seq: int, done: Set[int], total: int) -> None:
        path = self.path(run, seq)
        record = {
            "run": run,
            "seq": seq,
            "urls": total,
            "delivered": sorted(done),
            "fingerprint": self.fingerprint,
            "time": time.time(),
        }
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(tmp, path)
        except OSError as e:
            log(
                f"cannot remember which URLs have run {run} seq {seq} in {self.directory} ({e.strerror or e}); "
                "a restart before the retry may send it to them again"
            )
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def clear(self, run: str, seq: int) -> None:
        try:
            os.unlink(self.path(run, seq))
        except FileNotFoundError:
            pass
        except OSError as e:
            log(f"cannot delete a progress file in {self.directory}: {e.strerror or e}")

    def prune(self, now: float = None) -> int:
        """Delete progress files older than MAX_AGE_S; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0
        for name in names:
            if not (name.endswith(".json") or name.endswith(".tmp")):
                continue
            path = os.path.join(self.directory, name)
            try:
                if now - os.stat(path).st_mtime > MAX_AGE_S:
                    os.unlink(path)
                    removed += 1
            except OSError:
                continue
        return removed

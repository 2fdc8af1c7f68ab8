"""The protocol loop: Herald's plugin protocol 1.0 on stdin and stdout (docs/plugin-protocol.md).

`main` reads `hello`, answers `ready` (capability `image` when `attach_plot` is on) or `error` naming the bad
key, then answers each `deliver` by id from a thread pool, so the daemon's `concurrency` deliveries run at
once, until `shutdown` or the end of stdin; it then finishes what is in flight and exits 0. stdout carries
protocol messages only: `sys.stdout` is pointed at stderr so that nothing else (a stray print in a library)
can reach the host. Malformed input is logged to stderr and skipped.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import sys
import threading
from typing import BinaryIO

import apprise

from . import __version__
from .config import ConfigError, parse
from .deliver import Malformed, Message, deliver
from .progress import Progress, log

PROTOCOL_VERSION = "1.0"
# Deliveries handled at once; the daemon sends at most its `concurrency` (default 1).
WORKERS = 32


class Out:
    """Protocol messages to the host, one JSON object per line, whole lines from any thread."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        with self.lock:
            self.stream.write(line)
            self.stream.flush()


def handshake(line: str) -> dict:
    """The `hello` message, or a ValueError saying why it is not one this plugin speaks."""
    try:
        hello = json.loads(line)
    except ValueError:
        raise ValueError("the first line is not JSON; expected `hello`") from None
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise ValueError("the first message is not `hello`")
    version = str(hello.get("version", ""))
    if version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
        raise ValueError(
            f"the host speaks herald-plugin protocol {version}, this plugin speaks {PROTOCOL_VERSION}: install a "
            "herald-notify-apprise made for that version"
        )
    return hello


def main() -> int:
    out = Out(sys.stdout.buffer)
    sys.stdout = sys.stderr
    lines = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    try:
        hello = handshake(lines.readline())
        config = parse(hello.get("config") if hello.get("config") is not None else {})
    except (ValueError, ConfigError) as e:
        out.send({"type": "error", "message": str(e)})
        return 1
    name = hello.get("name") if isinstance(hello.get("name"), str) else ""
    progress = Progress(config.state_dir, name, config.fingerprint)
    progress.prune()
    out.send(
        {
            "type": "ready",
            "name": "apprise",
            "version": __version__,
            "protocol_version": PROTOCOL_VERSION,
            "capabilities": ["image"] if config.attach_plot else [],
        }
    )
    log(
        f"ready with apprise {apprise.__version__}: {len(config.services)} URL(s): "
        f"{', '.join(str(s) for s in config.services)}; format {config.body}"
    )

    fanout = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fanout")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="deliver")

    def handle(id_: str, notification: object) -> None:
        try:
            with Message(notification, config) as message:
                ok, result = deliver(message, config, progress, fanout)
        except Malformed as e:
            out.send({"type": "failed", "id": id_, "message": f"malformed notification: {e}", "retryable": False})
            return
        except Exception as e:  # a bug here must still answer, and must not show a URL
            text = config.scrub(f"{type(e).__name__}: {e}")
            log(f"delivery {id_}: internal error: {text}")
            out.send({"type": "failed", "id": id_, "message": f"internal error in the plugin: {text}", "code": "plugin_error"})
            return
        if ok:
            out.send({"type": "delivered", "id": id_, "receipt": result})
        else:
            out.send({"type": "failed", "id": id_, "message": result, "code": "apprise", "retryable": True})

    try:
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                log("ignoring a line that is not JSON")
                continue
            if not isinstance(message, dict):
                log("ignoring a message that is not a JSON object")
                continue
            kind = message.get("type")
            if kind == "shutdown":
                break
            if kind == "command_result":
                continue
            if kind != "deliver":
                log(f"ignoring a message of unknown type {str(kind)[:40]!r}")
                continue
            id_ = message.get("id")
            if not isinstance(id_, str):
                log("ignoring a deliver without an id")
                continue
            if "notification" not in message:
                out.send({"type": "failed", "id": id_, "message": "malformed deliver: no notification", "retryable": False})
                continue
            pool.submit(handle, id_, message["notification"])
    finally:
        pool.shutdown(wait=True)
        fanout.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

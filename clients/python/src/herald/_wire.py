"""Herald's wire format (docs/events.md) in plain Python: run ids, timestamps, numbers and JSON encoding.

Used by the client and every integration. It builds payload dictionaries only; it does not send anything and it
does not validate events the way the daemon does (the daemon is the judge; this module makes sure that what we
write is what the daemon reads: non-finite losses as strings, finite numbers elsewhere, UTC RFC 3339 times).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Mapping, Optional

PROTOCOL_VERSION = 1

#: Event types a sender may drop first under back-pressure; every other type marks the run's life.
DROPPABLE = frozenset({"batch_ended", "heartbeat"})

_run_counter = itertools.count()
_run_counter_lock = threading.Lock()


def new_run_id(now: Optional[float] = None) -> str:
    """A run id unique per run: UTC start time, process id, a per-process counter and 8 random hex digits
    (so that two machines never make the same id, as in cluster mode, without asking the host).

    Looks like ``20261127T094606Z-4242-0-9f3a0c1e``, the shape the Rust trainer uses. Older ids without the
    random part stay valid: a run id is any string.
    """
    stamp = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    with _run_counter_lock:
        n = next(_run_counter)
    return f"{stamp:%Y%m%dT%H%M%SZ}-{os.getpid()}-{n}-{secrets.token_hex(4)}"


def rfc3339(t: float) -> str:
    """A Unix time as RFC 3339 in UTC with milliseconds: ``2026-11-27T09:46:06.120Z``."""
    stamp = datetime.fromtimestamp(t, tz=timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{stamp.microsecond // 1000:03d}Z"


def to_float(x: Any) -> float:
    """A Python float from a float, int, numpy scalar or one-element tensor.

    Raises ``TypeError`` or ``ValueError`` when ``x`` is not a number.
    """
    if isinstance(x, float):
        return x
    if isinstance(x, bool):
        raise TypeError(f"expected a number, found a bool ({x})")
    if isinstance(x, int):
        return float(x)
    item = getattr(x, "item", None)
    if callable(item):  # numpy scalars and arrays, torch tensors
        x = item()
    return float(x)


def loose(x: Any) -> Any:
    """A loss or metric value for the wire: a finite float as is, NaN and infinities as the strings the
    protocol uses (``"NaN"``, ``"Infinity"``, ``"-Infinity"``)."""
    v = to_float(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def finite(x: Any, field: str) -> float:
    """A number the protocol requires finite (``lr``, ``elapsed_s``, ...); ``ValueError`` naming ``field`` when
    it is not."""
    v = to_float(x)
    if not math.isfinite(v):
        raise ValueError(f"`{field}` must be a finite number, found {v}")
    return v


def json_value(x: Any, depth: int = 0) -> Any:
    """Any Python value as a JSON value for free-form fields such as ``hyper``.

    Non-finite floats become their protocol strings, tuples and sets lists, numpy and torch scalars numbers,
    anything else its ``str``. Deep structures are cut at 8 levels.
    """
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if isinstance(x, float):
        return loose(x)
    if depth >= 8:
        return str(x)
    if isinstance(x, Mapping):
        return {str(k): json_value(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [json_value(v, depth + 1) for v in x]
    if callable(getattr(x, "item", None)) and getattr(x, "ndim", 0) == 0:
        try:
            v = x.item()
        except Exception:  # noqa: BLE001 - a foreign type's item() may raise anything
            return str(x)
        if isinstance(v, (bool, int, float, str)):
            return json_value(v, depth + 1)
    return str(x)


def metrics_dict(names: Iterable[str], values: Iterable[Any]) -> Dict[str, Any]:
    """``metrics`` of an ``epoch_ended``: names to loose numbers, in the given order; values that are not
    numbers (``None``, strings) are left out."""
    out: Dict[str, Any] = {}
    for name, value in zip(names, values):
        try:
            out[str(name)] = loose(value)
        except (TypeError, ValueError):
            continue
    return out


def event(run: str, seq: int, t: str, type_: str, payload: Mapping[str, Any]) -> Dict[str, Any]:
    """The flat wire object: the envelope first, then the payload fields."""
    out: Dict[str, Any] = {"v": PROTOCOL_VERSION, "run": run, "seq": seq, "time": t, "type": type_}
    out.update(payload)
    return out


def dumps(obj: Any) -> str:
    """Compact JSON that refuses bare NaN (the payload builders already turned those into strings)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_batch(events: Iterable[Mapping[str, Any]]) -> bytes:
    """A JSON array of events, UTF-8."""
    return ("[" + ",".join(dumps(e) for e in events) + "]").encode("utf-8")

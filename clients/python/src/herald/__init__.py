"""Herald's Python client: training notifications on your phone, sent through the ``herald serve`` daemon.

Importing ``herald`` needs only the standard library; each framework integration imports its framework when you
import it (``herald.fastai``, ``herald.keras``, ``herald.lightning``, ``herald.transformers``).

- ``herald.run("name")``: a run for a plain training loop (``with herald.run(...) as run: run.epoch_ended(...)``).
- ``@herald.notify`` / ``with herald.notify("name"):``: knockknock-style start, finish and crash messages.
- ``herald.send("text")`` and ``python -m herald send "text"``: one message.
- ``herald.Client``: the background sender (``HERALD_URL``, ``HERALD_TOKEN``, ``HERALD_SPOOL_DIR``).

It does not deliver to phones itself: the daemon does, with retries, rate limits and stall detection.
"""

from __future__ import annotations

from typing import Any, Optional

from ._client import Client, ConfigError, Endpoint, Stats, default_client, set_default_client
from ._run import Run, Smoother, detect_job, detect_rank, detect_world_size
from ._wire import new_run_id
from .notify import notify

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ConfigError",
    "Endpoint",
    "Run",
    "Smoother",
    "Stats",
    "default_client",
    "detect_job",
    "detect_rank",
    "detect_world_size",
    "new_run_id",
    "notify",
    "run",
    "send",
    "set_default_client",
]


def run(name: Optional[str] = None, **kwargs: Any) -> Run:
    """A :class:`Run` for a plain training loop; use it as a context manager::

        with herald.run("digits-mlp", n_epochs=10, metric_names=["accuracy"]) as run:
            for epoch in range(10):
                ...
                run.epoch_ended(train_loss=tl, valid_loss=vl, metrics={"accuracy": acc})
                if run.should_stop:
                    break
    """
    return Run(name, **kwargs)


def send(
    text: str,
    title: Optional[str] = None,
    level: str = "info",
    *,
    run_id: Optional[str] = None,
    client: Optional[Client] = None,
) -> str:
    """Queue one ``message`` event and return its run id (a fresh one unless ``run_id`` is given)."""
    if level not in ("info", "warning", "error"):
        raise ValueError(f"level must be info, warning or error, found {level!r}")
    c = client if client is not None else default_client()
    rid = run_id or "message-" + new_run_id()
    c.emit(rid, "message", {"title": title or "herald", "text": str(text), "level": level})
    return rid

"""The constructor that the Keras, Lightning and transformers ``HeraldCallback`` share.

Each of them inherits its framework's callback class and keeps a :class:`~herald._run.Reporter` as
``self.herald``; :class:`ReporterCallback` takes the Reporter's settings once for all three. The fastai callback
does not use it: it also takes ``every``, and fastai's ``Callback`` has its own constructor.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ._client import Client
from ._run import Reporter

__all__ = ["ReporterCallback"]


class ReporterCallback:
    """A mixin listed before the framework's base class: it keeps a :class:`Reporter` built from the settings
    (``name``, ``monitor``, ``batch_interval``, ``hyper``, ``client``, ``ranks``, as in the fastai callback) as
    ``self.herald``, after the base class's ``__init__`` ran with no arguments."""

    herald: Reporter

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        monitor: Optional[str] = None,
        batch_interval: float = 0.5,
        hyper: Optional[Mapping[str, Any]] = None,
        client: Optional[Client] = None,
        ranks: str = "all",
    ):
        super().__init__()
        self.herald = Reporter(name, monitor=monitor, batch_interval=batch_interval, hyper=hyper, client=client,
                               ranks=ranks)

"""``@herald.notify``: knockknock's decorator, reporting through the Herald daemon.

Wrap any function (or block) and get a message when it starts, when it finishes (with its duration and return
value) and when it crashes (with the traceback; the exception still propagates). Distributed-aware: only rank 0
(``RANK``, else ``LOCAL_RANK``) reports start and finish; a crash is reported from any rank.

It knows nothing of epochs; for training loops use ``herald.run`` or a framework callback.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional

from ._client import Client
from ._run import Run, end_run_for_exception

_REPR_LIMIT = 500


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as err:  # noqa: BLE001 - a user's __repr__ may raise anything
        text = f"<unprintable {type(value).__name__}: {err}>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 1] + "…"


class notify:  # noqa: N801 - used as a decorator, named like a function
    """Report a function's or a block's start, finish and crash.

    >>> @herald.notify                      # doctest: +SKIP
    ... def train(): ...
    >>> @herald.notify(name="nightly")      # doctest: +SKIP
    ... def train(): ...
    >>> with herald.notify("backup") as run:  # doctest: +SKIP
    ...     copy_everything()
    """

    def __init__(
        self,
        name: Any = None,
        *,
        client: Optional[Client] = None,
        hyper: Optional[dict] = None,
        rank: Optional[int] = None,
    ):
        self._func: Optional[Callable[..., Any]] = None
        if callable(name):
            self._func, name = name, None
            functools.update_wrapper(self, self._func)
        self.name: Optional[str] = name
        self.client = client
        self.hyper = hyper
        self.rank = rank
        self._runs: List[Run] = []

    def _new_run(self, name: str) -> Run:
        return Run(name, client=self.client, hyper=self.hyper, rank=self.rank)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._func is None:
            # @herald.notify(name=...) : this call receives the function.
            if len(args) != 1 or kwargs or not callable(args[0]):
                raise TypeError("herald.notify(...) decorates one function: write @herald.notify(name=...)")
            return notify(args[0], client=self.client, hyper=self.hyper, rank=self.rank)._named(self.name)
        return self._call(*args, **kwargs)

    def _named(self, name: Optional[str]) -> "notify":
        self.name = name
        return self

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        func = self._func
        assert func is not None, "_call is only reached for a decorated function"
        qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", "function")
        name = self.name or qualname.split("<locals>.")[-1]
        run = self._new_run(name)
        run.start(hyper={"function": f"{getattr(func, '__module__', '?')}.{name}"})
        try:
            value = func(*args, **kwargs)
        except BaseException as exc:
            end_run_for_exception(run, exc)
            raise
        run.finish("completed", f"returned {_short_repr(value)}")
        return value

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """Decorating a method binds like a function."""
        if obj is None or self._func is None:
            return self
        return functools.partial(self._call, obj)

    def __enter__(self) -> Run:
        run = self._new_run(self.name or "block")
        run.start()
        self._runs.append(run)
        return run

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        run = self._runs.pop()
        if exc is None:
            run.finish("stopped" if run.should_stop else "completed", None if run.should_stop else "done")
        else:
            end_run_for_exception(run, exc)
        return False

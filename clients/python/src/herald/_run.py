"""One training run as Herald sees it: :class:`Run` turns calls (started, epoch ended, finished, failed) into
events for the client, and is also the plain-loop helper behind ``with herald.run("name") as run:``.

The framework integrations build on it. It keeps what the events need (the run id, the start time, fastai's
smoothed loss, the best value of the monitored metric, the batch throttle) and never raises from a reporting
call into a training loop except for arguments that cannot be numbers. It does not send anything itself: the
:class:`~herald._client.Client` does, from its thread.

:class:`Reporter` is what every framework callback (fastai, Keras, Lightning, transformers) has in common, used
by composition: the callback's settings, its current :class:`Run`, the stop check and the warn-once log, so that
each framework's module holds only that framework's hooks. :func:`number` reads a framework's loss or metric.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
import threading
import traceback as tb_module
import weakref
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from . import _wire
from ._client import Client, default_client

log = logging.getLogger("herald")

_LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity", "wer", "cer")


def detect_rank() -> int:
    """The process's distributed rank from ``RANK`` (torchrun, Lightning, accelerate), else ``LOCAL_RANK``,
    else 0. A value that is not an integer counts as 0."""
    for var in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(var)
        if value is not None and value.strip():
            try:
                return int(value)
            except ValueError:
                log.warning("herald: %s=%r is not an integer; reporting as rank 0", var, value)
                return 0
    return 0


def detect_world_size() -> Optional[int]:
    """The number of ranks: ``WORLD_SIZE`` (torchrun, Lightning, accelerate), else SLURM's ``SLURM_NTASKS``, else
    ``torch.distributed``'s world size when it is initialized, else None (unknown)."""
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                log.warning("herald: %s=%r is not an integer; ignored", var, value)
    dist = _torch_distributed()
    if dist is not None:
        try:
            return int(dist.get_world_size())
        except Exception:  # noqa: BLE001 - a broken process group is not ours to report
            return None
    return None


def _torch_distributed() -> Any:
    """``torch.distributed`` when the program imported it and initialized a process group, else None. Herald never
    imports torch itself."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist
    except Exception:  # noqa: BLE001
        return None
    return None


def detect_job() -> Optional[str]:
    """The id shared by every rank of this distributed job, derived in this order (no extra communication
    between ranks for the first three):

    1. ``HERALD_JOB``, when set;
    2. SLURM's ``SLURM_JOB_ID`` with ``SLURM_STEP_ID`` (``"4242.0"``; the job id alone without a step);
    3. ``TORCHELASTIC_RUN_ID`` (torchrun's ``--rdzv-id``), unless it is ``none``, torchrun's default;
    4. when ``torch.distributed`` is initialized with more than one rank: rank 0's fresh id, sent to every rank
       with one ``broadcast_object_list`` (a collective: every rank must start its run at the same point);
    5. else None: not a distributed job.
    """
    env = os.environ
    job = env.get("HERALD_JOB", "").strip()
    if job:
        return job
    slurm = env.get("SLURM_JOB_ID", "").strip()
    if slurm:
        step = env.get("SLURM_STEP_ID", "").strip()
        return f"{slurm}.{step}" if step else slurm
    elastic = env.get("TORCHELASTIC_RUN_ID", "").strip()
    if elastic and elastic != "none":
        return elastic
    dist = _torch_distributed()
    if dist is None:
        return None
    try:
        if int(dist.get_world_size()) <= 1:
            return None
        box = [_wire.new_run_id() if int(dist.get_rank()) == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return str(box[0]) if box[0] else None
    except Exception as err:  # noqa: BLE001 - reporting never breaks training
        log.warning("herald: could not share a job id over torch.distributed (%s); reporting rank 0 only", err)
        return None


def default_name() -> str:
    """The script's file name without its extension (``train`` for ``python train.py``), else ``python``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    base = os.path.splitext(os.path.basename(argv0))[0]
    return base if base and base not in ("-c", "-m", "ipykernel_launcher") else "python"


def lower_is_better(name: str) -> bool:
    """Whether a smaller value of the metric ``name`` is better (losses and error rates)."""
    n = name.lower()
    return any(word in n for word in _LOWER_IS_BETTER)


_open_runs: "weakref.WeakSet[Run]" = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_installed = False


def _install_excepthook() -> None:
    """Frameworks without an exception hook (Keras, transformers, plain scripts) still report a crash: an
    exception that reaches the top of the program fails every run still open, then the previous hook runs."""
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        _hook_installed = True
        previous = sys.excepthook

        def herald_excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
            for run in list(_open_runs):
                try:
                    end_run_for_exception(run, exc if exc is not None else exc_type())
                except Exception:  # noqa: BLE001 - never hide the user's traceback behind ours
                    pass
            previous(exc_type, exc, tb)

        sys.excepthook = herald_excepthook


class Smoother:
    """fastai's smoothed loss: an exponential moving average with beta 0.98, debiased.

    Losses 2.0, 1.0, 0.5 give 2.0, 1.494949, 1.156577.
    """

    def __init__(self, beta: float = 0.98):
        self.beta = beta
        self.count = 0
        self.mov_avg = 0.0
        self.value = math.nan

    def add(self, loss: float) -> float:
        self.count += 1
        self.mov_avg = self.beta * self.mov_avg + (1 - self.beta) * loss
        self.value = self.mov_avg / (1 - self.beta**self.count)
        return self.value


class Run:
    """A run reporting to the Herald daemon.

    >>> with herald.run("digits-mlp", n_epochs=10, metric_names=["accuracy"]) as run:  # doctest: +SKIP
    ...     for epoch in range(10):
    ...         for xb, yb in train:
    ...             loss = step(xb, yb)
    ...             run.batch_ended(loss, lr=opt.param_groups[0]["lr"])
    ...             if run.should_stop:
    ...                 break
    ...         run.epoch_ended(valid_loss=vl, metrics={"accuracy": acc})

    In a distributed job every rank reports (``ranks="all"``, the default): each rank is a run of its own with
    the job id (:func:`detect_job`), its rank and the world size, and the daemon groups them into one job. Rank 0
    sends everything; another rank sends ``run_started``, ``epoch_ended``, heartbeats and its end, and its
    ``batch_ended`` only with ``rank_batches=True``. With ``ranks="zero"``, or when no job id can be derived, only
    rank 0 reports and another rank stays quiet unless it fails, when it reports ``run_started`` (with its rank)
    and ``run_failed``.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        n_epochs: int = 0,
        batches_per_epoch: int = 0,
        metric_names: Iterable[str] = (),
        hyper: Optional[Mapping[str, Any]] = None,
        monitor: Optional[str] = None,
        batch_interval: float = 0.5,
        rank: Optional[int] = None,
        client: Optional[Client] = None,
        run_id: Optional[str] = None,
        job: Optional[str] = None,
        world_size: Optional[int] = None,
        ranks: str = "all",
        rank_batches: bool = False,
    ):
        if ranks not in ("all", "zero"):
            raise ValueError(f"ranks must be 'all' or 'zero', found {ranks!r}")
        self.client = client if client is not None else default_client()
        self.id = run_id or _wire.new_run_id()
        self.name = name or default_name()
        self.rank = detect_rank() if rank is None else int(rank)
        self.ranks = ranks
        self.job = job
        self.world_size = None if world_size is None else int(world_size)
        self.rank_batches = bool(rank_batches)
        self.n_epochs = int(n_epochs)
        self.batches_per_epoch = int(batches_per_epoch)
        self.metric_names = [str(m) for m in metric_names]
        self.hyper: Dict[str, Any] = dict(hyper or {})
        self.monitor = monitor
        self.batch_interval = batch_interval
        self.smoother = Smoother()
        self.started_at: Optional[float] = None
        self.ended = False
        self.status: Optional[str] = None
        self.best: Optional[Dict[str, Any]] = None
        self._start_sent = False
        self._epoch = -1
        self._epoch_t0: Optional[float] = None
        self._batch = 0
        self._last_batch_sent = -math.inf
        # Whether the last batch sent had a finite loss: the first non-finite one after it goes out at once,
        # throttle or not, so that the daemon's `nan` rule hears of a divergence before the run ends.
        self._sent_finite = True
        self._stop_seen = False
        self._last_epoch_end: Optional[float] = None

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def reports(self) -> bool:
        """Whether this process reports start, epochs and finish: rank 0, and every rank of a job when ``ranks`` is
        ``"all"``."""
        return self.rank <= 0 or (self.job is not None and self.ranks == "all")

    @property
    def leads(self) -> bool:
        """Whether this process speaks for the job (rank 0): epoch starts, messages and alerts."""
        return self.rank <= 0

    @property
    def sends_batches(self) -> bool:
        """Whether ``batch_ended`` goes on the wire from this process: rank 0, or any reporting rank with
        ``rank_batches``."""
        return self.leads or (self.rank_batches and self.reports)

    @property
    def should_stop(self) -> bool:
        """Whether a stop was requested for this run (``herald stop RUN`` or ``/stop`` from the phone)."""
        if not self._stop_seen and self.client.stop_requested(self.id):
            self._stop_seen = True
        return self._stop_seen

    @property
    def epoch(self) -> int:
        """The current epoch, 0-based (-1 before the first)."""
        return self._epoch

    # -- events ---------------------------------------------------------------------------------------------

    def _emit(self, type_: str, payload: Mapping[str, Any]) -> None:
        self.client.emit(self.id, type_, payload)

    def start(
        self,
        n_epochs: Optional[int] = None,
        batches_per_epoch: Optional[int] = None,
        metric_names: Optional[Iterable[str]] = None,
        hyper: Optional[Mapping[str, Any]] = None,
    ) -> "Run":
        """Report ``run_started``. Arguments given here replace the constructor's."""
        if n_epochs is not None:
            self.n_epochs = int(n_epochs)
        if batches_per_epoch is not None:
            self.batches_per_epoch = int(batches_per_epoch)
        if metric_names is not None:
            self.metric_names = [str(m) for m in metric_names]
        if hyper:
            self.hyper.update(hyper)
        if self.ranks == "all" and self.started_at is None:
            if self.world_size is None:
                self.world_size = detect_world_size()
            if self.job is None and ((self.world_size or 1) > 1 or os.environ.get("HERALD_JOB", "").strip()):
                self.job = detect_job()
        self.started_at = time.time()
        _open_runs.add(self)
        _install_excepthook()
        if self.reports:
            self._send_start()
        return self

    def _send_start(self) -> None:
        if self._start_sent:
            return
        self._start_sent = True
        payload: Dict[str, Any] = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "rank": max(0, self.rank),
        }
        if self.job is not None:
            payload["job"] = str(self.job)
        if self.world_size is not None:
            payload["world_size"] = max(1, self.world_size)
        payload.update(
            {
                "n_epochs": max(0, self.n_epochs),
                "batches_per_epoch": max(0, self.batches_per_epoch),
                "metric_names": list(self.metric_names),
                "hyper": _wire.json_value(self.hyper),
            }
        )
        self._emit("run_started", payload)

    def epoch_started(self, epoch: Optional[int] = None) -> None:
        """Report ``epoch_started``; without ``epoch``, the next one."""
        self._epoch = self._epoch + 1 if epoch is None else int(epoch)
        self._epoch_t0 = time.time()
        self._batch = 0
        if self.leads:
            self._emit("epoch_started", {"epoch": max(0, self._epoch)})

    def batch_due(self) -> bool:
        """Whether a ``batch_ended`` sent now would pass the throttle (at most one per ``batch_interval`` s)."""
        return time.monotonic() - self._last_batch_sent >= self.batch_interval

    def batch_ended(
        self,
        loss: Any,
        *,
        lr: Any = 0.0,
        smooth_loss: Any = None,
        epoch: Optional[int] = None,
        batch: Optional[int] = None,
        n_batches: Optional[int] = None,
        force: bool = False,
    ) -> bool:
        """Record a training batch; send ``batch_ended`` when the throttle allows (or ``force``).

        Without ``smooth_loss`` the run smooths ``loss`` itself, fastai's way; call it for every batch then.
        The first NaN or infinite loss after a finite one is sent at once, throttle or not. Returns whether an
        event was queued.
        """
        value = _wire.to_float(loss)
        smooth = self.smoother.add(value) if smooth_loss is None else _wire.to_float(smooth_loss)
        if smooth_loss is not None:
            self.smoother.value = smooth
        b = self._batch if batch is None else int(batch)
        self._batch = b + 1
        finite = math.isfinite(value) and math.isfinite(smooth)
        if not self.sends_batches or not (force or self.batch_due() or (self._sent_finite and not finite)):
            return False
        self._sent_finite = finite
        self._last_batch_sent = time.monotonic()
        if self._epoch < 0:
            self._epoch = 0
        self._emit(
            "batch_ended",
            {
                "epoch": max(0, self._epoch if epoch is None else int(epoch)),
                "batch": max(0, b),
                "n_batches": max(0, self.batches_per_epoch if n_batches is None else int(n_batches)),
                "loss": _wire.loose(value),
                "smooth_loss": _wire.loose(smooth),
                "lr": _wire.finite(lr, "lr"),
            },
        )
        return True

    def epoch_ended(
        self,
        train_loss: Any = None,
        valid_loss: Any = None,
        metrics: Optional[Mapping[str, Any]] = None,
        *,
        epoch: Optional[int] = None,
        elapsed_s: Optional[float] = None,
        report: bool = True,
    ) -> None:
        """Report ``epoch_ended`` (a row of the results table); ``report=False`` only records it (for the best
        value) without sending.

        ``train_loss`` defaults to the smoothed loss after the last batch, ``epoch`` to the current one,
        ``elapsed_s`` to the time since ``epoch_started`` (or since the previous epoch ended).
        """
        now = time.time()
        if epoch is not None:
            self._epoch = int(epoch)
        elif self._epoch_t0 is None:
            self._epoch += 1  # no epoch_started call: count epochs here
        if self._epoch < 0:
            self._epoch = 0
        t0 = self._epoch_t0 if self._epoch_t0 is not None else (self._last_epoch_end or self.started_at or now)
        elapsed = now - t0 if elapsed_s is None else _wire.finite(elapsed_s, "elapsed_s")
        self._epoch_t0 = None
        self._last_epoch_end = now
        train = self.smoother.value if train_loss is None else train_loss
        mets = dict(metrics or {})
        for name in mets:
            if name not in self.metric_names:
                self.metric_names.append(str(name))
        payload: Dict[str, Any] = {
            "epoch": self._epoch,
            "n_epochs": max(self.n_epochs, self._epoch + 1),
            "train_loss": _wire.loose(train),
        }
        if valid_loss is not None:
            payload["valid_loss"] = _wire.loose(valid_loss)
        payload["metrics"] = _wire.metrics_dict(list(mets), list(mets.values()))
        payload["elapsed_s"] = max(0.0, elapsed)
        self._track_best(payload)
        if self.reports and report:
            self._emit("epoch_ended", payload)

    def _track_best(self, payload: Mapping[str, Any]) -> None:
        values: Dict[str, Any] = dict(payload.get("metrics", {}))
        if "valid_loss" in payload:
            values["valid_loss"] = payload["valid_loss"]
        name = self.monitor or (next(iter(payload.get("metrics", {})), None) or "valid_loss")
        value = values.get(name)
        if not isinstance(value, float) or not math.isfinite(value):
            return
        if self.best is None or (
            value < self.best["value"] if lower_is_better(name) else value > self.best["value"]
        ):
            self.best = {"name": name, "value": value, "epoch": payload["epoch"]}

    def heartbeat(self) -> None:
        """Tell the daemon the run is alive (the client also does this by itself every 30 s)."""
        if self.reports:
            self._emit("heartbeat", {})

    def message(self, text: str, title: Optional[str] = None, level: str = "info") -> None:
        """Free text for the phone (``level`` is info, warning or error)."""
        if level not in ("info", "warning", "error"):
            raise ValueError(f"level must be info, warning or error, found {level!r}")
        if self.leads:
            self._emit("message", {"title": title or self.name, "text": str(text), "level": level})

    def alert(self, title: str, text: str, level: str = "warning") -> None:
        """Something needs attention (like ``wandb.alert``): an ``alert`` event, which notifiers show prominently
        (Telegram: a new message with sound). ``level`` is info, warning or error; the alert names the current
        epoch once one has started."""
        if level not in ("info", "warning", "error"):
            raise ValueError(f"level must be info, warning or error, found {level!r}")
        if self.leads:
            payload: Dict[str, Any] = {"title": str(title), "text": str(text), "level": level}
            if self._epoch >= 0:
                payload["epoch"] = self._epoch
            self._emit("alert", payload)

    def finish(self, status: str = "completed", reason: Optional[str] = None) -> None:
        """Report ``run_finished`` once (``completed``, ``stopped`` or ``failed``)."""
        if status not in ("completed", "stopped", "failed"):
            raise ValueError(f"status must be completed, stopped or failed, found {status!r}")
        if self.ended:
            return
        self.ended = True
        self.status = status
        _open_runs.discard(self)
        if not self.reports:
            return
        if reason is None:
            done = self._epoch + 1
            if status == "completed":
                reason = f"completed all {self.n_epochs} epochs" if self.n_epochs else "completed"
            elif status == "stopped":
                reason = "stopped on request" + (f" after {done} of {self.n_epochs} epochs" if self.n_epochs else "")
            else:
                reason = "failed"
        payload: Dict[str, Any] = {"status": status, "reason": reason, "duration_s": self.duration_s()}
        if self.best is not None:
            payload["best"] = dict(self.best)
        self._send_start()  # a run that never reported its start still gets one, so the end has a context
        self._emit("run_finished", payload)

    def fail(self, error: Any, traceback: Optional[str] = None) -> None:
        """Report ``run_failed`` once; ``error`` may be an exception (its traceback is then taken from it).

        Any rank reports failures.
        """
        if self.ended:
            return
        self.ended = True
        self.status = "failed"
        _open_runs.discard(self)
        if isinstance(error, BaseException):
            if traceback is None and error.__traceback__ is not None:
                traceback = "".join(tb_module.format_exception(type(error), error, error.__traceback__))
            error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        payload: Dict[str, Any] = {"error": str(error) or "unknown error"}
        if traceback:
            payload["traceback"] = _clip_traceback(traceback)
        self._send_start()
        self._emit("run_failed", payload)

    def duration_s(self) -> float:
        return max(0.0, time.time() - self.started_at) if self.started_at is not None else 0.0

    # -- context manager ------------------------------------------------------------------------------------

    def __enter__(self) -> "Run":
        if self.started_at is None:
            self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        end_run_for_exception(self, exc)
        return False


def end_run_for_exception(run: Run, exc: Optional[BaseException]) -> None:
    """Finish ``run`` the way an exception (or its absence) says: none is completed (or stopped when a stop was
    requested), ``KeyboardInterrupt`` is stopped, anything else failed with its traceback."""
    if exc is None:
        run.finish("stopped" if run.should_stop else "completed")
    elif isinstance(exc, KeyboardInterrupt):
        run.finish("stopped", "interrupted (KeyboardInterrupt)")
    elif isinstance(exc, SystemExit) and not exc.code:
        run.finish("completed", "the program exited (SystemExit)")
    else:
        run.fail(exc)


def _clip_traceback(text: str, limit: int = 16_000) -> str:
    """Long tracebacks keep their end, where the error is."""
    if len(text) <= limit:
        return text
    return "…(cut)\n" + text[-limit:]


def number(value: Any, convert: Optional[Callable[[Any], Any]] = None) -> Optional[float]:
    """``value`` as a float (an int, float, numpy scalar or one-element tensor), or None when it is not a number.

    ``convert`` first turns anything but an int or float into one of those (Keras: ``convert_to_numpy``).
    """
    try:
        if convert is not None and not isinstance(value, (int, float)):
            value = convert(value)
        return _wire.to_float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


class Reporter:
    """What a framework callback keeps between its hooks, and does the same way in every framework.

    The settings every ``HeraldCallback`` takes (``name``, ``monitor``, ``batch_interval``, ``hyper``,
    ``client``, ``ranks``: ``"all"`` (default) reports every rank of a distributed job, ``"zero"`` rank 0 only, as the fastai callback documents them), the :class:`Run` of the current fit (``run``, None when
    the fit is not reported), whether a stop request was acted on (``stop_requested``), and the rule that a
    failing hook is logged once and training goes on (:meth:`warn`). The callback reads its framework and calls
    the run; it holds a Reporter rather than inheriting one, since it must inherit its framework's base class.
    """

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
        if ranks not in ("all", "zero"):
            raise ValueError(f"ranks must be 'all' or 'zero', found {ranks!r}")
        self.ranks = ranks
        self.name = name
        self.monitor = monitor
        self.batch_interval = batch_interval
        self.hyper: Dict[str, Any] = dict(hyper or {})
        self.client = client
        self.run: Optional[Run] = None
        self.stop_requested = False
        self._warned: set = set()

    def new_run(self, fallback_name: Optional[str] = None, *, hyper: Mapping[str, Any], **run_args: Any) -> Run:
        """A :class:`Run` with these settings, not started: the framework's ``hyper`` with the user's on top, the
        framework's name for the run (``fallback_name``) when the user gave none, and ``run_args`` (epochs,
        batches per epoch, metric names, rank) as :class:`Run` takes them."""
        merged = dict(hyper)
        merged.update(self.hyper)
        return Run(
            self.name or fallback_name,
            hyper=merged,
            monitor=self.monitor,
            batch_interval=self.batch_interval,
            client=self.client,
            ranks=self.ranks,
            **run_args,
        )

    def start(self, hook: str, make: Callable[[], Run]) -> Optional[Run]:
        """A fit begins: forget the previous fit's stop request and start the run ``make`` builds (it reads the
        framework, so it runs here, where a failure is caught). When that fails, warn and report nothing of this
        fit. Returns the run, or None."""
        self.stop_requested = False
        self.run = None
        try:
            self.run = make().start()
        except Exception as err:  # noqa: BLE001 - reporting never breaks training
            self.warn(hook, err)
            self.run = None
        return self.run

    def stop_due(self, action: str) -> bool:
        """Whether a stop was requested for the run and not yet acted on: true once, and logged with ``action``
        (what the callback does about it); the callback then tells its framework to stop."""
        run = self.run
        if run is None or self.stop_requested or not run.should_stop:
            return False
        self.stop_requested = True
        log.warning("herald: stop requested for run %s; %s", run.id, action)
        return True

    def warn(self, hook: str, err: BaseException) -> None:
        """Reporting must never break training: log a failing hook once and go on."""
        if hook not in self._warned:
            self._warned.add(hook)
            log.warning("herald: %s could not report (%s: %s); training goes on", hook, type(err).__name__, err)

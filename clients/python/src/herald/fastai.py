"""fastai (>= 2.7) integration: ``HeraldCallback`` reports a ``fit`` to the Herald daemon.

    from herald.fastai import HeraldCallback
    learn.fit_one_cycle(10, 1e-2, cbs=HeraldCallback())

What it sends: ``run_started`` in ``before_fit`` (metric names, epochs, batches per epoch, lr, bs, model class),
``epoch_started``, ``batch_ended`` (loss, smoothed loss, lr) at most once per ``batch_interval`` seconds,
``epoch_ended`` with the Recorder's row after each epoch (every ``every`` epochs), and ``run_finished``
(``completed``, or ``stopped`` after a ``CancelFitException``) in ``after_fit``. A fit cancelled in a batch whose
loss is NaN or infinite (fastai's ``TerminateOnNaNCallback``, which runs before this callback and so hides that
batch from it) sends that batch first, so the daemon's ``nan`` rule fires before the run's end. When ``fit`` raises, it sends
``run_failed`` with the traceback and the exception still propagates. A stop request from the daemon (``herald
stop RUN``, ``/stop`` from the phone) raises ``CancelFitException``, so fastai ends the fit cleanly.

It runs right after the Recorder (order 51) and reads the Recorder's values; it does not print, plot or change
training. ``lr_find`` fits are not reported. Importing this module imports fastai.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

from fastai.callback.core import (
    Callback,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from fastai.learner import Recorder

from . import _wire
from ._client import Client
from ._run import Reporter, Run

_CONTROL_FLOW = (
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)

__all__ = ["HeraldCallback"]


def _last_group(value: Any) -> float:
    """A scheduled hyperparameter as fastai's last parameter group sees it (schedules give one per group)."""
    if isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) > 0:
        value = value[-1]
    return _wire.to_float(value)


class HeraldCallback(Callback):
    """Report each ``fit`` as a Herald run.

    - ``name``: the run's name (default: the script's name).
    - ``every``: send ``epoch_ended`` every this many epochs (the last epoch always); the daemon's routing can
      thin notifications further, so 1 is usually right.
    - ``monitor``: the metric whose best value ``run_finished`` reports (default: the first metric, else
      ``valid_loss``).
    - ``batch_interval``: seconds between ``batch_ended`` events (default 0.5).
    - ``hyper``: extra hyperparameters to show beside lr, bs and the model class.
    - ``client``: a :class:`herald.Client` (default: the process's, configured from ``HERALD_URL``).
    - ``ranks``: ``"all"`` (default) reports every rank of a distributed job (``DistributedTrainer`` under
      ``torchrun``) with its job id, so the daemon names a hung, slow or dead rank; ``"zero"`` reports rank 0 only.
    """

    order = Recorder.order + 1
    remove_on_fetch = True

    #: The events this callback handles. fastai calls every callback for every event, and an event a callback
    #: does not define costs a failed attribute lookup through the Learner and the model (about 10 µs, seven
    #: times per training batch); ``__call__`` skips the others outright.
    _herald_events = frozenset(
        {"before_fit", "before_epoch", "after_batch", "after_epoch", "after_cancel_fit", "after_fit"}
    )

    def __call__(self, event_name: str) -> Any:
        if event_name == "after_batch":
            # The hot path: fastai's own dispatch would look up `training` through the Learner every batch.
            if self.run:  # fastai's own flag; the Herald run is `self.herald.run`
                self.after_batch()
            return None
        if event_name not in self._herald_events:
            return None
        return super().__call__(event_name)

    def __init__(
        self,
        name: Optional[str] = None,
        every: int = 1,
        *,
        monitor: Optional[str] = None,
        batch_interval: float = 0.5,
        hyper: Optional[Mapping[str, Any]] = None,
        client: Optional[Client] = None,
        ranks: str = "all",
    ):
        if int(every) < 1:
            raise ValueError(f"every must be 1 or more epochs, found {every}")
        self.herald = Reporter(name, monitor=monitor, batch_interval=batch_interval, hyper=hyper, client=client,
                               ranks=ranks)
        self.herald_every = int(every)
        self.herald_cancelled = False
        self.herald_diverged: Optional[float] = None
        self._herald_orig_with_events: Any = None

    # -- helpers ----------------------------------------------------------------------------------------------

    def _herald_metric_names(self) -> List[str]:
        rec = getattr(self.learn, "recorder", None)
        names = list(getattr(rec, "metric_names", None) or [])
        if names:
            names = [str(n) for n in names[1:] if str(n) not in ("time", "train_loss", "valid_loss")]
            return names
        return [str(getattr(m, "name", m)) for m in (self.learn.metrics or [])]

    def _herald_hyper(self) -> Dict[str, Any]:
        learn = self.learn
        hyper: Dict[str, Any] = {}
        lr = None
        for cb in learn.cbs:
            scheds = getattr(cb, "scheds", None)
            if isinstance(scheds, dict) and "lr" in scheds:
                try:
                    lr = max(_last_group(scheds["lr"](i / 20)) for i in range(21))
                    hyper["schedule"] = type(cb).__name__
                except Exception:  # noqa: BLE001 - a user's schedule may be anything
                    lr = None
        if lr is None and learn.opt is not None:
            lr = learn.opt.hypers[-1].get("lr")
        if lr is not None:
            hyper["lr"] = lr
        try:
            hyper["bs"] = learn.dls.train.bs
        except Exception:  # noqa: BLE001 - DataLoaders without bs
            pass
        hyper["model"] = type(learn.model).__name__
        opt_func = getattr(learn, "opt_func", None)
        if opt_func is not None:
            hyper["opt"] = getattr(opt_func, "__name__", type(opt_func).__name__)
        if getattr(learn, "wd", None) is not None:
            hyper["wd"] = learn.wd
        return hyper

    def _herald_wrap_fit(self) -> None:
        """fastai has no event for an exception out of ``fit``; wrap the learner's ``_with_events`` (called per
        epoch, phase and batch) so an error inside an epoch is reported before it propagates."""
        learn = self.learn
        if "_with_events" in vars(learn):
            return  # already wrapped (nested fits)
        original = learn._with_events
        cb = self

        def _with_events(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except _CONTROL_FLOW:
                raise
            except BaseException as exc:
                cb._herald_fit_raised(exc)
                raise

        self._herald_orig_with_events = original
        learn._with_events = _with_events

    def _herald_unwrap_fit(self) -> None:
        learn = self.learn
        if learn is not None and "_with_events" in vars(learn):
            del learn._with_events
        self._herald_orig_with_events = None

    def _herald_fit_raised(self, exc: BaseException) -> None:
        run = self.herald.run
        if run is None or run.ended:
            return
        try:
            if isinstance(exc, KeyboardInterrupt):
                run.finish("stopped", f"interrupted (KeyboardInterrupt) in epoch {run.epoch + 1} of {run.n_epochs}")
            else:
                run.fail(exc)
        except Exception as err:  # noqa: BLE001
            self.herald.warn("run_failed", err)
        self._herald_unwrap_fit()

    def _herald_check_stop(self) -> None:
        if self.herald.stop_due("cancelling the fit"):
            raise CancelFitException()

    # -- fastai events ----------------------------------------------------------------------------------------

    def before_fit(self) -> None:
        self.herald_cancelled = False
        self.herald_diverged: Optional[float] = None
        if hasattr(self.learn, "lr_finder"):
            self.herald.run, self.herald.stop_requested = None, False
            return  # lr_find is a mock training: not a run
        if self.herald.start("before_fit", self._herald_new_run) is not None:
            self._herald_wrap_fit()

    def _herald_new_run(self) -> Run:
        try:
            n_batches = len(self.learn.dls.train)
        except TypeError:
            n_batches = 0
        return self.herald.new_run(
            n_epochs=self.learn.n_epoch,
            batches_per_epoch=n_batches,
            metric_names=self._herald_metric_names(),
            hyper=self._herald_hyper(),
        )

    def before_epoch(self) -> None:
        if self.herald.run is None:
            return
        try:
            self.herald.run.epoch_started(self.learn.epoch)
        except Exception as err:  # noqa: BLE001
            self.herald.warn("before_epoch", err)

    def after_batch(self) -> None:
        run = self.herald.run
        if run is None:
            return
        self._herald_check_stop()
        if not self.learn.training or not run.batch_due():
            return
        try:
            loss = self.learn.loss
            self._herald_batch_ended(run, loss if loss is not None else float("nan"))
        except Exception as err:  # noqa: BLE001
            self.herald.warn("after_batch", err)

    def _herald_batch_ended(self, run: Run, loss: Any) -> None:
        """Sends the current batch's ``batch_ended`` with ``loss`` (due or not: the caller decided)."""
        learn = self.learn
        run.batch_ended(
            loss,
            smooth_loss=getattr(learn, "smooth_loss", loss),
            lr=learn.opt.hypers[-1]["lr"],
            epoch=learn.epoch,
            batch=learn.iter,
            n_batches=learn.n_iter,
            force=True,
        )

    def after_epoch(self) -> None:
        run = self.herald.run
        if run is None:
            return
        try:
            epoch = self.learn.epoch
            last = epoch + 1 >= self.learn.n_epoch
            train_loss, valid_loss, metrics = self._herald_row()
            run.epoch_ended(
                train_loss,
                valid_loss,
                metrics,
                epoch=epoch,
                report=last or (epoch + 1) % self.herald_every == 0,
            )
        except Exception as err:  # noqa: BLE001
            self.herald.warn("after_epoch", err)
        self._herald_check_stop()

    def _herald_row(self) -> Any:
        """The Recorder's values for the epoch that just ended: train loss, valid loss, metrics."""
        rec = getattr(self.learn, "recorder", None)
        values = list(getattr(self.learn, "final_record", None) or [])
        names = [str(n) for n in (getattr(rec, "metric_names", None) or [])[1:] if str(n) != "time"]
        if len(values) != len(names):
            # A cancelled train or validation phase leaves its columns out.
            names = names[-len(values):] if getattr(rec, "cancel_train", False) else names[: len(values)]
        row = {n: v for n, v in zip(names, values) if v is not None}
        train_loss = row.pop("train_loss", getattr(self.learn, "smooth_loss", float("nan")))
        valid_loss = row.pop("valid_loss", None)
        metrics = {}
        for n, v in row.items():
            try:
                metrics[n] = _wire.to_float(v)
            except (TypeError, ValueError):
                continue
        return train_loss, valid_loss, metrics

    def after_cancel_fit(self) -> None:
        self.herald_cancelled = True
        run = self.herald.run
        learn = self.learn
        if run is None or not learn.training or getattr(learn, "loss", None) is None:
            return
        try:
            loss = _wire.to_float(learn.loss)
            if not math.isfinite(loss):
                self.herald_diverged = loss
                self._herald_batch_ended(run, loss)
        except Exception as err:  # noqa: BLE001
            self.herald.warn("after_cancel_fit", err)

    def after_fit(self) -> None:
        run = self.herald.run
        self._herald_unwrap_fit()
        if run is None or run.ended:
            return
        try:
            done = run.epoch + 1
            if self.herald.stop_requested:
                run.finish("stopped", f"stopped on request after {done} of {run.n_epochs} epochs")
            elif self.herald_cancelled:
                d = self.herald_diverged
                why = "" if d is None else f": loss {'NaN' if math.isnan(d) else d}"
                run.finish("stopped", f"fit cancelled (CancelFitException{why}) after {done} of {run.n_epochs} epochs")
            else:
                run.finish("completed", f"completed all {run.n_epochs} epochs")
        except Exception as err:  # noqa: BLE001
            self.herald.warn("after_fit", err)

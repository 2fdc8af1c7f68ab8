"""Keras 3 integration: ``HeraldCallback`` reports ``model.fit`` to the Herald daemon.

    from herald.keras import HeraldCallback
    model.fit(x, y, epochs=10, validation_data=(xv, yv), callbacks=[HeraldCallback()])

``run_started`` in ``on_train_begin`` (epochs, steps per epoch, optimizer, lr, model class), ``epoch_started``,
``batch_ended`` at most once per ``batch_interval`` seconds (Keras' running loss of the epoch), ``epoch_ended``
from the epoch's logs (``loss`` is the train loss, ``val_loss`` the valid loss, every other log a metric, under
Keras' own names), ``run_finished`` in ``on_train_end`` (``stopped`` when training ended before its last epoch,
through a stop request or another callback). A stop request sets ``model.stop_training``. An exception inside a
training step is reported as ``run_failed`` (the exception still propagates); an exception elsewhere is reported
when it reaches the top of the program.

Works with any Keras 3 backend; the tests use torch. Importing this module imports keras.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import keras

from ._callback import ReporterCallback
from ._run import Run, end_run_for_exception, number

__all__ = ["HeraldCallback"]

_NOT_METRICS = ("loss", "val_loss", "learning_rate", "lr")


def _number(value: Any) -> Optional[float]:
    return number(value, keras.ops.convert_to_numpy)


class HeraldCallback(ReporterCallback, keras.callbacks.Callback):
    """Report each ``fit`` as a Herald run (``name``, ``monitor``, ``batch_interval``, ``hyper``, ``client`` as
    in the fastai callback)."""

    #: The batch hook only reads the logs and may set ``model.stop_training``: Keras may call it from its
    #: dispatch thread, so the training loop does not wait for the logs of each batch on its account.
    async_safe = True

    _epochs_done = 0
    _train_function: Any = None

    def _lr(self) -> Optional[float]:
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return None
        return _number(opt.learning_rate)

    def _hyper(self) -> Dict[str, Any]:
        hyper: Dict[str, Any] = {"model": type(self.model).__name__}
        opt = getattr(self.model, "optimizer", None)
        if opt is not None:
            hyper["opt"] = type(opt).__name__
            lr = self._lr()
            if lr is not None:
                hyper["lr"] = lr
        return hyper

    def _wrap_train_function(self) -> None:
        """Keras has no hook for an exception in ``fit``; wrap the compiled train step to report one."""
        original = getattr(self.model, "train_function", None)
        if original is None or getattr(original, "_herald_wrapped", False):
            return
        cb = self

        def train_function(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                run = cb.herald.run
                if run is not None and not run.ended:
                    end_run_for_exception(run, exc)
                cb._unwrap_train_function()
                raise

        train_function._herald_wrapped = True  # type: ignore[attr-defined]
        self._train_function = original
        self.model.train_function = train_function

    def _unwrap_train_function(self) -> None:
        if self._train_function is not None:
            self.model.train_function = self._train_function
            self._train_function = None

    def on_train_begin(self, logs: Optional[Mapping[str, Any]] = None) -> None:
        self._epochs_done = 0
        if self.herald.start("on_train_begin", self._new_run) is not None:
            self._wrap_train_function()

    def _new_run(self) -> Run:
        params = self.params or {}
        return self.herald.new_run(
            n_epochs=int(params.get("epochs") or 0),
            batches_per_epoch=int(params.get("steps") or 0),
            hyper=self._hyper(),
        )

    def on_epoch_begin(self, epoch: int, logs: Optional[Mapping[str, Any]] = None) -> None:
        if self.herald.run is not None:
            try:
                self.herald.run.epoch_started(epoch)
            except Exception as err:  # noqa: BLE001
                self.herald.warn("on_epoch_begin", err)

    def _check_stop(self) -> None:
        if self.herald.stop_due("ending fit after this step"):
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: Optional[Mapping[str, Any]] = None) -> None:
        run = self.herald.run
        if run is None:
            return
        self._check_stop()
        if not run.batch_due():
            return
        try:
            loss = _number((logs or {}).get("loss", float("nan")))
            run.batch_ended(
                float("nan") if loss is None else loss,
                smooth_loss=loss if loss is not None else float("nan"),
                lr=self._lr() or 0.0,
                batch=batch,
                force=True,
            )
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_train_batch_end", err)

    def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, Any]] = None) -> None:
        self._epochs_done = epoch + 1
        run = self.herald.run
        if run is None:
            return
        try:
            values = {k: _number(v) for k, v in (logs or {}).items()}
            metrics = {k: v for k, v in values.items() if k not in _NOT_METRICS and v is not None}
            if run.monitor is None:
                run.monitor = next((k for k in metrics if k.startswith("val_")), None) or next(iter(metrics), None)
            train_loss = values.get("loss")
            run.epoch_ended(
                train_loss if train_loss is not None else float("nan"),
                values.get("val_loss"),
                metrics,
                epoch=epoch,
            )
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_epoch_end", err)
        self._check_stop()

    def on_train_end(self, logs: Optional[Mapping[str, Any]] = None) -> None:
        self._unwrap_train_function()
        run = self.herald.run
        if run is None or run.ended:
            return
        try:
            n = run.n_epochs
            if self.herald.stop_requested:
                run.finish("stopped", f"stopped on request after {self._epochs_done} of {n} epochs")
            elif self._epochs_done < n:
                run.finish("stopped", f"stopped early (model.stop_training) after {self._epochs_done} of {n} epochs")
            else:
                run.finish("completed", f"completed all {n} epochs")
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_train_end", err)

"""Hugging Face transformers integration: ``HeraldCallback`` (a ``TrainerCallback``) reports ``Trainer.train``
to the Herald daemon.

    from herald.transformers import HeraldCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[HeraldCallback()])

``run_started`` in ``on_train_begin`` (epochs, steps per epoch, lr, batch size, model class), ``epoch_started``,
``batch_ended`` from the Trainer's ``loss`` logs (at most once per ``batch_interval`` seconds), ``epoch_ended``
once the epoch's evaluation is in (the Trainer evaluates after ``on_epoch_end``; an epoch without evaluation is
sent at the next epoch's start or at the end), ``run_finished`` in ``on_train_end``. A stop request sets
``control.should_training_stop``. Only the main process (``state.is_world_process_zero``) reports start, epochs
and finish; a crash is reported when the exception reaches the top of the program.

Importing this module imports transformers.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, Mapping, Optional

from transformers import TrainerCallback

from . import _wire
from ._client import Client
from ._run import Run

log = logging.getLogger("herald")

__all__ = ["HeraldCallback"]


def _number(value: Any) -> Optional[float]:
    try:
        return _wire.to_float(value)
    except (TypeError, ValueError):
        return None


class HeraldCallback(TrainerCallback):
    """Report each ``train`` as a Herald run (``name``, ``monitor``, ``batch_interval``, ``hyper``, ``client`` as
    in the fastai callback)."""

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        monitor: Optional[str] = None,
        batch_interval: float = 0.5,
        hyper: Optional[Mapping[str, Any]] = None,
        client: Optional[Client] = None,
    ):
        self.run_name = name
        self.monitor = monitor
        self.batch_interval = batch_interval
        self.extra_hyper = dict(hyper or {})
        self.client = client
        self.run: Optional[Run] = None
        self._stop_requested = False
        self._train_loss: Optional[float] = None
        self._pending: Optional[Dict[str, Any]] = None
        self._warned: set = set()

    def _warn(self, hook: str, err: BaseException) -> None:
        if hook not in self._warned:
            self._warned.add(hook)
            log.warning("herald: %s could not report (%s: %s); training goes on", hook, type(err).__name__, err)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._stop_requested = False
        self._train_loss = None
        self._pending = None
        try:
            n_epochs = int(math.ceil(args.num_train_epochs)) if args.max_steps <= 0 else 0
            per_epoch = state.max_steps // n_epochs if n_epochs and state.max_steps else 0
            if not n_epochs and state.num_train_epochs:
                n_epochs = int(state.num_train_epochs)
            hyper: Dict[str, Any] = {
                "lr": args.learning_rate,
                "bs": args.per_device_train_batch_size,
                "model": type(model).__name__ if model is not None else "?",
                "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            }
            hyper.update(self.extra_hyper)
            self.run = Run(
                self.run_name or getattr(args, "run_name", None),
                n_epochs=n_epochs,
                batches_per_epoch=per_epoch,
                hyper=hyper,
                monitor=self.monitor,
                batch_interval=self.batch_interval,
                rank=0 if state.is_world_process_zero else max(1, int(getattr(args, "process_index", 1))),
                client=self.client,
            ).start()
        except Exception as err:  # noqa: BLE001 - reporting never breaks training
            self._warn("on_train_begin", err)
            self.run = None

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and self.run is not None:
            self.run.epoch_ended(pending["train_loss"], None, {}, epoch=pending["epoch"],
                                 elapsed_s=pending["elapsed_s"])

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            self._flush_pending()
            self.run.epoch_started(int(state.epoch or 0))
        except Exception as err:  # noqa: BLE001
            self._warn("on_epoch_begin", err)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is not None and not self._stop_requested and run.should_stop:
            self._stop_requested = True
            log.warning("herald: stop requested for run %s; setting control.should_training_stop", run.id)
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[Mapping[str, Any]] = None,
               **kwargs: Any) -> None:
        run = self.run
        if run is None or not logs:
            return
        try:
            loss = _number(logs.get("loss")) if "loss" in logs else None
            if loss is not None:
                self._train_loss = loss
                if run.batch_due():
                    run.batch_ended(loss, lr=_number(logs.get("learning_rate")) or 0.0,
                                    epoch=max(0, run.epoch), batch=int(state.global_step), force=True)
        except Exception as err:  # noqa: BLE001
            self._warn("on_log", err)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is None:
            return
        t0 = getattr(run, "_epoch_t0", None)
        self._pending = {
            "epoch": max(0, run.epoch),
            "train_loss": self._train_loss if self._train_loss is not None else float("nan"),
            "elapsed_s": time.time() - t0 if t0 else 0.0,
        }

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Optional[Mapping[str, Any]] = None,
                    **kwargs: Any) -> None:
        run = self.run
        if run is None or self._pending is None:
            return
        try:
            pending, self._pending = self._pending, None
            values = {k: _number(v) for k, v in (metrics or {}).items()}
            valid_loss = values.pop("eval_loss", None)
            skip = ("epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
            mets = {k: v for k, v in values.items() if v is not None and k not in skip}
            run.epoch_ended(pending["train_loss"], valid_loss, mets, epoch=pending["epoch"],
                            elapsed_s=pending["elapsed_s"])
        except Exception as err:  # noqa: BLE001
            self._warn("on_evaluate", err)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is None or run.ended:
            return
        try:
            self._flush_pending()
            done, n = run.epoch + 1, run.n_epochs
            if self._stop_requested:
                run.finish("stopped", f"stopped on request after {done} of {n} epochs")
            else:
                run.finish("completed", f"completed all {n} epochs" if n else "completed")
        except Exception as err:  # noqa: BLE001
            self._warn("on_train_end", err)

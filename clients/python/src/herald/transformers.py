"""Hugging Face transformers integration: ``HeraldCallback`` (a ``TrainerCallback``) reports ``Trainer.train``
to the Herald daemon.

    from herald.transformers import HeraldCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[HeraldCallback()])

``run_started`` in ``on_train_begin`` (epochs, steps per epoch, lr, batch size, model class), ``epoch_started``,
``batch_ended`` from the Trainer's ``loss`` logs (at most once per ``batch_interval`` seconds), ``epoch_ended``
once the epoch's evaluation is in (the Trainer evaluates after ``on_epoch_end``; an epoch without evaluation is
sent at the next epoch's start or at the end), ``run_finished`` in ``on_train_end``. A stop request sets
``control.should_training_stop``. Under ``torchrun`` every process reports with the job id
(``herald.detect_job``), the main one (``state.is_world_process_zero``) as rank 0; ``HeraldCallback(ranks="zero")``
reports the main process only. A crash is reported when the exception reaches the top of the program.

Importing this module imports transformers.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Mapping, Optional

from transformers import TrainerCallback

from ._callback import ReporterCallback
from ._run import Run, number

__all__ = ["HeraldCallback"]


class HeraldCallback(ReporterCallback, TrainerCallback):
    """Report each ``train`` as a Herald run (``name``, ``monitor``, ``batch_interval``, ``hyper``, ``client`` as
    in the fastai callback)."""

    _train_loss: Optional[float] = None
    _pending: Optional[Dict[str, Any]] = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._train_loss = None
        self._pending = None
        self.herald.start("on_train_begin", lambda: self._new_run(args, state, model))

    def _new_run(self, args: Any, state: Any, model: Any) -> Run:
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
        return self.herald.new_run(
            getattr(args, "run_name", None),
            n_epochs=n_epochs,
            batches_per_epoch=per_epoch,
            hyper=hyper,
            rank=0 if state.is_world_process_zero else max(1, int(getattr(args, "process_index", 1))),
        )

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and self.herald.run is not None:
            self.herald.run.epoch_ended(pending["train_loss"], None, {}, epoch=pending["epoch"],
                                 elapsed_s=pending["elapsed_s"])

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.herald.run is None:
            return
        try:
            self._flush_pending()
            self.herald.run.epoch_started(int(state.epoch or 0))
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_epoch_begin", err)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.herald.stop_due("setting control.should_training_stop"):
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[Mapping[str, Any]] = None,
               **kwargs: Any) -> None:
        run = self.herald.run
        if run is None or not logs:
            return
        try:
            loss = number(logs.get("loss")) if "loss" in logs else None
            if loss is not None:
                self._train_loss = loss
                if run.batch_due():
                    run.batch_ended(loss, lr=number(logs.get("learning_rate")) or 0.0,
                                    epoch=max(0, run.epoch), batch=int(state.global_step), force=True)
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_log", err)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.herald.run
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
        run = self.herald.run
        if run is None or self._pending is None:
            return
        try:
            pending, self._pending = self._pending, None
            values = {k: number(v) for k, v in (metrics or {}).items()}
            valid_loss = values.pop("eval_loss", None)
            skip = ("epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
            mets = {k: v for k, v in values.items() if v is not None and k not in skip}
            run.epoch_ended(pending["train_loss"], valid_loss, mets, epoch=pending["epoch"],
                            elapsed_s=pending["elapsed_s"])
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_evaluate", err)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.herald.run
        if run is None or run.ended:
            return
        try:
            self._flush_pending()
            done, n = run.epoch + 1, run.n_epochs
            if self.herald.stop_requested:
                run.finish("stopped", f"stopped on request after {done} of {n} epochs")
            else:
                run.finish("completed", f"completed all {n} epochs" if n else "completed")
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_train_end", err)

"""Lightning 2.x integration: ``HeraldCallback`` reports ``trainer.fit`` to the Herald daemon.

    from herald.lightning import HeraldCallback
    trainer = L.Trainer(max_epochs=10, callbacks=[HeraldCallback()])

``run_started`` in ``on_train_start`` (max epochs, training batches, lr, the module's ``hparams``), ``epoch_started``,
``batch_ended`` at most once per ``batch_interval`` seconds, ``epoch_ended`` in ``on_train_epoch_end`` from
``trainer.callback_metrics`` (``train_loss``/``loss`` is the train loss, ``val_loss``/``valid_loss`` the valid
loss, the rest metrics, under the names you logged), ``run_finished`` in ``on_train_end``, ``run_failed`` from
``on_exception`` (a ``KeyboardInterrupt`` is a stop). A stop request sets ``trainer.should_stop``.

Under a distributed strategy the ranks decide a stop together, after every training batch and at each epoch's end:
one ``trainer.strategy.reduce_boolean_decision`` (an all-reduce of one number), true when any rank was asked to
stop. Each rank learns of a stop request from its own daemon answer, at its own batch; stopping alone would leave
the others waiting in the next gradient all-reduce.

Distributed (DDP strategies): every rank reports with the job id (``herald.detect_job``), so the daemon shows the
job as one run and names a hung, slow or dead rank; ``HeraldCallback(ranks="zero")`` reports global rank 0 only
(a failure is reported from any rank). Uses
``lightning.pytorch`` when installed, else ``pytorch_lightning``; importing this module imports it.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    from pytorch_lightning import Callback  # type: ignore[no-redef]

from ._callback import ReporterCallback
from ._run import Run, end_run_for_exception, number

__all__ = ["HeraldCallback"]

_TRAIN_LOSS = ("train_loss", "loss", "train_loss_epoch")
_VALID_LOSS = ("val_loss", "valid_loss", "val_loss_epoch")


class HeraldCallback(ReporterCallback, Callback):
    """Report each ``fit`` as a Herald run (``name``, ``monitor``, ``batch_interval``, ``hyper``, ``client`` as
    in the fastai callback)."""

    @staticmethod
    def _lr(trainer: Any) -> Optional[float]:
        try:
            return float(trainer.optimizers[0].param_groups[0]["lr"])
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return None

    def _hyper(self, trainer: Any, pl_module: Any) -> Dict[str, Any]:
        hyper: Dict[str, Any] = {"model": type(pl_module).__name__}
        try:
            hyper.update(dict(pl_module.hparams))
        except (AttributeError, TypeError, ValueError):
            pass
        lr = self._lr(trainer)
        if lr is not None:
            hyper.setdefault("lr", lr)
        if trainer.optimizers:
            hyper["opt"] = type(trainer.optimizers[0]).__name__
        return hyper

    def _run_for(self, trainer: Any, pl_module: Any) -> Run:
        n_batches = trainer.num_training_batches
        n_batches = int(n_batches) if isinstance(n_batches, (int, float)) and math.isfinite(n_batches) else 0
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else 0
        return self.herald.new_run(
            n_epochs=max_epochs,
            batches_per_epoch=n_batches,
            hyper=self._hyper(trainer, pl_module),
            rank=int(trainer.global_rank),
        )

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.herald.start("on_train_start", lambda: self._run_for(trainer, pl_module))

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.herald.run is not None:
            try:
                self.herald.run.epoch_started(trainer.current_epoch)
            except Exception as err:  # noqa: BLE001
                self.herald.warn("on_train_epoch_start", err)

    def _check_stop(self, trainer: Any) -> None:
        """Stop when this rank was asked to, or, under a distributed strategy, any rank was: every rank calls this
        at the same points (even one whose run did not start), since the decision is a collective."""
        due = self.herald.stop_due("setting trainer.should_stop")
        if getattr(trainer, "world_size", 1) > 1:
            try:
                due = bool(trainer.strategy.reduce_boolean_decision(due, all=False))
            except Exception as err:  # noqa: BLE001
                self.herald.warn("stop decision", err)
        if due:
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._check_stop(trainer)
        run = self.herald.run
        if run is None:
            return
        if not run.sends_batches or not run.batch_due():
            return
        try:
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            value = number(loss.detach() if hasattr(loss, "detach") else loss)
            if value is None:
                return
            run.batch_ended(value, lr=self._lr(trainer) or 0.0, epoch=trainer.current_epoch, batch=batch_idx,
                            force=True)
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_train_batch_end", err)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        run = self.herald.run
        if run is None:
            self._check_stop(trainer)
            return
        try:
            values = {str(k): number(v) for k, v in trainer.callback_metrics.items()}
            values = {k: v for k, v in values.items() if v is not None}
            train_loss = next((values.pop(k) for k in _TRAIN_LOSS if k in values), None)
            valid_loss = next((values.pop(k) for k in _VALID_LOSS if k in values), None)
            for k in _TRAIN_LOSS + _VALID_LOSS:
                values.pop(k, None)
            metrics = {k: v for k, v in values.items() if not k.endswith("_step")}
            run.epoch_ended(train_loss, valid_loss, metrics, epoch=trainer.current_epoch)
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_train_epoch_end", err)
        self._check_stop(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        run = self.herald.run
        if run is None or run.ended:
            return
        try:
            done = run.epoch + 1
            n = run.n_epochs
            if self.herald.stop_requested:
                run.finish("stopped", f"stopped on request after {done} of {n} epochs")
            elif n and done < n:
                run.finish("stopped", f"stopped early (trainer.should_stop) after {done} of {n} epochs")
            else:
                run.finish("completed", f"completed all {n} epochs" if n else "completed")
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_train_end", err)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        run = self.herald.run
        try:
            if run is None:
                run = self._run_for(trainer, pl_module)  # failed before training started: still report it
            if not run.ended:
                end_run_for_exception(run, exception)
        except Exception as err:  # noqa: BLE001
            self.herald.warn("on_exception", err)

"""Keras 3 (torch backend), Lightning 2 and transformers callbacks with tiny models on the digits data, against
the fake daemon: start, one epoch_ended per epoch with the metrics, finish; a stop request; a failure."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import threading  # noqa: E402
import unittest  # noqa: E402

from support import ClientTest  # noqa: E402

from fake_daemon import FakeDaemon  # noqa: E402
import digits  # noqa: E402


def stop_when_started(d: FakeDaemon) -> None:
    """Ask the run to stop as soon as its run_started arrives, as `herald stop RUN` would."""

    def watch() -> None:
        events = d.wait_for(lambda es: any(e["type"] == "run_started" for e in es), timeout=60)
        d.stop_run(next(e["run"] for e in events if e["type"] == "run_started"))

    threading.Thread(target=watch, daemon=True).start()


def finished(d: FakeDaemon, kind: str = "run_finished") -> list:
    return d.wait_for(lambda es: bool(es) and es[-1]["type"] == kind, timeout=30)


# ------------------------------------------------------------------------------------------------------------
# Keras


def keras_model(fail_after: int = 0):
    import keras

    class FailAfter(keras.layers.Layer):
        """Passes its input through; raises on the training call number `fail_after` (0: never)."""

        def __init__(self, n: int, **kwargs):
            super().__init__(**kwargs)
            self.n, self.calls = n, 0

        def call(self, x, training=None):
            if training and self.n:
                self.calls += 1
                if self.calls > self.n:
                    raise RuntimeError("the GPU fell off the bus")
            return x

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), FailAfter(fail_after), keras.layers.Dense(128, activation="relu"),
         keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class KerasCallback(ClientTest):
    def setUp(self) -> None:
        super().setUp()
        import keras

        self.assertEqual(keras.backend.backend(), "torch")
        from herald.keras import HeraldCallback

        self.cb = HeraldCallback
        self.data = digits.arrays()

    def fit(self, model, epochs, cb):
        xt, yt, xv, yv = self.data
        return model.fit(xt, yt, epochs=epochs, batch_size=32, validation_data=(xv, yv), verbose=0, callbacks=[cb])

    def test_fit_reports_start_each_epoch_and_finish(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            history = self.fit(keras_model(), 3, self.cb("keras-digits", client=c, batch_interval=0.05))
            events = finished(d)
        self.assert_gapless(events)
        started = events[0]
        self.assertEqual((started["type"], started["n_epochs"], started["batches_per_epoch"]), ("run_started", 3, 45))
        self.assertEqual(started["hyper"]["opt"], "Adam")
        ended = [e for e in events if e["type"] == "epoch_ended"]
        self.assertEqual([e["epoch"] for e in ended], [0, 1, 2])
        for i, e in enumerate(ended):
            self.assertAlmostEqual(e["train_loss"], history.history["loss"][i], places=5)
            self.assertAlmostEqual(e["valid_loss"], history.history["val_loss"][i], places=5)
            self.assertAlmostEqual(e["metrics"]["val_accuracy"], history.history["val_accuracy"][i], places=5)
        self.assertGreater(ended[-1]["metrics"]["val_accuracy"], 0.9)
        self.assertEqual(events[-1]["status"], "completed")
        self.assertEqual(events[-1]["best"]["name"], "val_accuracy")

    def test_stop_request_sets_stop_training(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            stop_when_started(d)
            history = self.fit(keras_model(), 200, self.cb("keras-long", client=c, batch_interval=0.02))
            events = finished(d)
        self.assertLess(len(history.history["loss"]), 200)
        self.assertEqual(events[-1]["status"], "stopped")
        self.assertIn("stopped on request", events[-1]["reason"])

    def test_error_in_a_training_step_is_reported_and_propagates(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            with self.assertRaisesRegex(RuntimeError, "fell off the bus"):
                self.fit(keras_model(fail_after=50), 3, self.cb("keras-broken", client=c))
            events = finished(d, "run_failed")
        self.assertIn("fell off the bus", events[-1]["error"])
        self.assertIn("Traceback", events[-1]["traceback"])


# ------------------------------------------------------------------------------------------------------------
# Lightning


def lightning_module(fail_at: int = -1):
    import lightning.pytorch as L
    import torch
    import torch.nn.functional as F

    class Digits(L.LightningModule):
        def __init__(self, lr: float = 1e-2):
            super().__init__()
            self.save_hyperparameters()
            self.net = digits.mlp()
            self.steps = 0

        def training_step(self, batch, batch_idx):
            self.steps += 1
            if self.steps == fail_at:
                raise ValueError("loss exploded at step %d" % self.steps)
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    return Digits()


class LightningCallback(ClientTest):
    def setUp(self) -> None:
        super().setUp()
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from herald.lightning import HeraldCallback

        self.cb = HeraldCallback
        xt, yt, xv, yv = digits.arrays()
        torch.manual_seed(0)
        self.train = DataLoader(TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)), batch_size=32, shuffle=True)
        self.valid = DataLoader(TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)), batch_size=64)

    def trainer(self, epochs, cb):
        import lightning.pytorch as L

        return L.Trainer(max_epochs=epochs, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                         default_root_dir=self.tmp, num_sanity_val_steps=0)

    def test_fit_reports_start_each_epoch_and_finish(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            self.trainer(3, self.cb("lightning-digits", client=c, batch_interval=0.05)).fit(
                lightning_module(), self.train, self.valid)
            events = finished(d)
        self.assert_gapless(events)
        started = events[0]
        self.assertEqual((started["n_epochs"], started["batches_per_epoch"], started["hyper"]["lr"]), (3, 45, 0.01))
        ended = [e for e in events if e["type"] == "epoch_ended"]
        self.assertEqual([e["epoch"] for e in ended], [0, 1, 2])
        for e in ended:
            self.assertIn("valid_loss", e)
            self.assertEqual(list(e["metrics"]), ["val_acc"])
        self.assertGreater(ended[-1]["metrics"]["val_acc"], 0.9)
        self.assertEqual(events[-1]["status"], "completed")

    def test_stop_request_sets_should_stop(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            stop_when_started(d)
            trainer = self.trainer(200, self.cb("lightning-long", client=c, batch_interval=0.02))
            trainer.fit(lightning_module(), self.train, self.valid)
            events = finished(d)
        self.assertLess(trainer.current_epoch, 199)
        self.assertEqual(events[-1]["status"], "stopped")

    def test_error_is_reported_and_propagates(self) -> None:
        with FakeDaemon() as d:
            c = self.client(d.url)
            with self.assertRaisesRegex(ValueError, "loss exploded"):
                self.trainer(3, self.cb("lightning-broken", client=c)).fit(
                    lightning_module(fail_at=60), self.train, self.valid)
            events = finished(d, "run_failed")
        self.assertIn("loss exploded at step 60", events[-1]["error"])
        self.assertIn("training_step", events[-1]["traceback"])

    def test_only_rank_zero_reports_start_and_finish(self) -> None:
        from herald.lightning import HeraldCallback

        class Rank1Trainer:
            global_rank = 1
            max_epochs = 1
            num_training_batches = 3
            optimizers = []
            current_epoch = 0
            callback_metrics = {}
            should_stop = False

        with FakeDaemon() as d:
            c = self.client(d.url)
            cb = HeraldCallback("ddp", client=c)
            t, m = Rank1Trainer(), lightning_module()
            cb.on_train_start(t, m)
            cb.on_train_epoch_start(t, m)
            cb.on_train_epoch_end(t, m)
            cb.on_train_end(t, m)
            self.assertTrue(c.flush(10))
            self.assertEqual(d.snapshot(), [])
            cb2 = HeraldCallback("ddp", client=c)
            cb2.on_train_start(t, m)
            cb2.on_exception(t, m, RuntimeError("NCCL timeout"))
            events = finished(d, "run_failed")
        self.assertEqual([(e["type"], e.get("rank")) for e in events], [("run_started", 1), ("run_failed", None)])


# ------------------------------------------------------------------------------------------------------------
# transformers


class TransformersCallback(ClientTest):
    def test_train_reports_start_each_epoch_with_eval_and_finish(self) -> None:
        import numpy as np
        import torch
        import torch.nn.functional as F
        from transformers import Trainer, TrainingArguments

        from herald.transformers import HeraldCallback

        class Mlp(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = digits.mlp()

            def forward(self, x, labels=None):
                logits = self.net(x)
                return {"loss": F.cross_entropy(logits, labels), "logits": logits}

        xt, yt, xv, yv = digits.arrays()
        train = [{"x": torch.from_numpy(x), "labels": int(y)} for x, y in zip(xt, yt)]
        valid = [{"x": torch.from_numpy(x), "labels": int(y)} for x, y in zip(xv, yv)]

        def accuracy(p):
            return {"accuracy": float((np.argmax(p.predictions, axis=1) == p.label_ids).mean())}

        args = TrainingArguments(output_dir=self.tmp, num_train_epochs=2, per_device_train_batch_size=32,
                                 per_device_eval_batch_size=64, learning_rate=1e-2, eval_strategy="epoch",
                                 logging_steps=5, save_strategy="no", report_to=[], use_cpu=True,
                                 disable_tqdm=True, seed=0)
        with FakeDaemon() as d:
            c = self.client(d.url)
            trainer = Trainer(model=Mlp(), args=args, train_dataset=train, eval_dataset=valid,
                              compute_metrics=accuracy, callbacks=[HeraldCallback("hf-digits", client=c)])
            trainer.train()
            events = finished(d)
        self.assert_gapless(events)
        self.assertEqual((events[0]["n_epochs"], events[0]["batches_per_epoch"]), (2, 45))
        ended = [e for e in events if e["type"] == "epoch_ended"]
        self.assertEqual([e["epoch"] for e in ended], [0, 1])
        for e in ended:
            self.assertIn("valid_loss", e)
            self.assertGreater(e["metrics"]["eval_accuracy"], 0.8)
        self.assertEqual(events[-1]["status"], "completed")


if __name__ == "__main__":
    unittest.main()

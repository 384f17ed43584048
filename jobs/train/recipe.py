"""jobs.train's recipe, the same for both loops and every worker: the learning rate per step,
the best validation epoch kept as the model, and early stopping.

The rate is a schedule over the run's steps, not its epochs, so that a small dataset (a few
steps an epoch) and a large one get the same shape: a linear warm-up from a tenth of the peak
over the first WARMUP of the steps, then a cosine decay to FINAL of the peak at the last step
(Keras' own `CosineDecay`). The optimizer reads it at its step counter, which the backup
restores, so a restarted run continues on the same curve.

The peak grows with the global batch by the square-root rule (for Adam; the linear rule is
SGD's): `peak = base × sqrt(global batch / REFERENCE_BATCH)`. The base rate is the one for a
batch of REFERENCE_BATCH (one worker at the default batch): two workers of 64 take steps of
128 images at √2 × the base rate.

The model kept is the epoch with the best validation accuracy (ties: the lower validation
loss), not the last: after every epoch that beats the best so far, every worker checkpoints
the weights (saving is a collective), the chief into the candidate's `best/`, the others into
their scratch dir, as the backup is saved, and before it: a worker lost between the two saves
redoes the epoch, and the best weights kept are still ones that were trained and validated. A
restarted run reads which epoch was best from that checkpoint; when training ends every worker
loads the best weights (its own copy, equal to the chief's), and that is what is exported.
With `patience` N, training stops after N epochs without a better one (0: never).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

log = logging.getLogger("jobs.train")

REFERENCE_BATCH = 64  # the global batch that the base rate is for
WARMUP = 0.05  # of the run's steps: the linear warm-up
START = 0.1  # of the peak: the warm-up's first rate
FINAL = 0.01  # of the peak: the rate at the run's last step


def peak_rate(base: float, global_batch: int) -> float:
    """The schedule's highest rate: `base` scaled by the square-root rule."""
    return base * math.sqrt(global_batch / REFERENCE_BATCH)


def schedule(base: float, global_batch: int, total_steps: int):
    """The run's learning rate per optimizer step (0 to total_steps - 1): a Keras
    `CosineDecay` with a linear warm-up, in steps computed from the fractions above."""
    import tf_keras as keras

    peak = peak_rate(base, global_batch)
    warmup = round(WARMUP * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=START * peak if warmup else peak,
        decay_steps=max(1, total_steps - 1 - warmup),
        alpha=FINAL,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def current_rate(optimizer) -> float:
    """The rate of the optimizer's last step (its schedule at its step counter, less one), as
    the epoch's rate in history.json, MLflow and TensorBoard."""
    rate = optimizer._learning_rate  # the schedule itself (`learning_rate` is its last value)
    if callable(rate):
        return float(rate(max(0, int(optimizer.iterations.numpy()) - 1)))
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


def better(logs: dict, accuracy: float, loss: float) -> bool:
    """Whether an epoch's logs beat the best so far: higher validation accuracy, or the same
    with a lower validation loss. Without a validation split, the training figures."""
    prefix = "val_" if "val_accuracy" in logs else ""
    new_accuracy, new_loss = logs.get(f"{prefix}accuracy"), logs.get(f"{prefix}loss", math.inf)
    if new_accuracy is None:
        return False
    return new_accuracy > accuracy or (new_accuracy == accuracy and new_loss < loss)


class Best:
    """The best epoch so far, its validation figures and its weights, checkpointed by every
    worker: `directory` is the chief's (read by all), `save_to` this worker's own."""

    def __init__(self, model, directory: Path, save_to: Path, chief: bool, patience: int = 0):
        import tensorflow as tf

        self.directory, self.chief, self.patience = directory, chief, patience
        self.epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.accuracy = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_accuracy")
        self.loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_loss")
        self.model = model
        self.checkpoint = tf.train.Checkpoint(model=model, epoch=self.epoch, accuracy=self.accuracy, loss=self.loss)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(save_to), max_to_keep=1)

    def begin(self, first_epoch: int) -> None:
        """At the run's first epoch: a fresh start forgets an earlier run's best (the chief
        removes it); a resumed one reads the best epoch's figures (not its weights)."""
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(str(self.directory))
        if first_epoch == 0 or latest is None:
            if self.chief:
                shutil.rmtree(self.directory, ignore_errors=True)
            return
        figures = tf.train.Checkpoint(epoch=self.epoch, accuracy=self.accuracy, loss=self.loss)
        figures.restore(latest).expect_partial()
        log.info("the best epoch so far: %d (validation accuracy %.4f)", self.best_epoch + 1, self.best_accuracy)

    @property
    def best_epoch(self) -> int:
        return int(self.epoch.numpy())

    @property
    def best_accuracy(self) -> float:
        return float(self.accuracy.numpy())

    def end_epoch(self, epoch: int, logs: dict) -> bool:
        """Checkpoints the weights if this epoch is the best so far (on every worker: the logs
        are all-reduced, so all decide alike); whether training should stop now."""
        if better(logs, self.best_accuracy, float(self.loss.numpy())):
            prefix = "val_" if "val_accuracy" in logs else ""
            self.epoch.assign(epoch)
            self.accuracy.assign(logs[f"{prefix}accuracy"])
            self.loss.assign(logs.get(f"{prefix}loss", math.inf))
            self.manager.save()  # every worker: a collective
        stop = bool(self.patience) and epoch - self.best_epoch >= self.patience
        if stop:
            log.info("no better validation accuracy for %d epochs: training stops early", self.patience)
        return stop

    def restore(self) -> None:
        """Every worker loads the best weights (before the export): its own copy when it saved one
        in this process, else (a restarted worker whose best epoch came before the restart) the
        chief's. The replicas' weights are equal after every step, so the copies are too; and a
        worker must not read the chief's folder while the chief may still be writing its newest
        best there and deleting the one before (a save ends on each worker at its own time)."""
        import tensorflow as tf

        latest = self.manager.latest_checkpoint or tf.train.latest_checkpoint(str(self.directory))
        if latest is None:
            return  # no epoch was validated: the weights as they are
        tf.train.Checkpoint(model=self.model).restore(latest).expect_partial()
        log.info("the model is epoch %d's, the best on validation", self.best_epoch + 1)

    def callback(self):
        """The same as a Keras callback, for `fit`: the best kept, early stopping, the best
        weights loaded when training ends."""
        import tf_keras as keras

        best = self

        class Callback(keras.callbacks.Callback):
            first = None

            def on_epoch_begin(self, epoch, logs=None):
                if self.first is None:
                    self.first = epoch
                    best.begin(epoch)

            def on_epoch_end(self, epoch, logs=None):
                if best.end_epoch(epoch, {k: float(v) for k, v in (logs or {}).items()}):
                    self.model.stop_training = True

            def on_train_end(self, logs=None):
                best.restore()

        return Callback()

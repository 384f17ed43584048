"""jobs.train's record of training, the same for both loops: the chief's history.json and
per-epoch MLflow metrics (the learning rate among them), the epoch lines and the images/s."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from jobs.core.files import read_json, write_json
from jobs.core.paths import Candidate
from jobs.train.recipe import current_rate

log = logging.getLogger("jobs.train")


class Progress:
    """The chief's record of training: history.json (all epochs, across restarts) and
    per-epoch metrics in MLflow. Built lazily as a Keras callback by `callback()`."""

    def __init__(self, candidate: Candidate, tracker, mlflow_run: str | None, images_per_epoch: int):
        self.candidate = candidate
        self.tracker = tracker
        self.mlflow_run = mlflow_run
        self.images_per_epoch = images_per_epoch
        previous = read_json(candidate.history) if candidate.history.exists() else {}
        self.epochs: list[dict] = previous.get("epochs", [])
        self.first_epoch: int | None = None

    def begin_epoch(self, epoch: int) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
            # Forget epochs that the restored backup does not include: they are redone.
            self.epochs = [e for e in self.epochs if e["epoch"] < epoch]
            if epoch:
                log.info("resumed from the backup at epoch %d", epoch + 1)
        self._started = time.monotonic()

    def end_epoch(self, epoch: int, logs: dict, lr: float, epochs: int | None = None) -> None:
        seconds = time.monotonic() - self._started
        record = {k: float(v) for k, v in logs.items() if k != "lr"}  # lr: the scheduler's copy
        record.update(
            epoch=epoch,
            learning_rate=lr,
            seconds=seconds,
            images_per_second=self.images_per_epoch / seconds if seconds else 0.0,
        )
        log.info("%s", epoch_line(record, epochs))
        self.epochs.append(record)
        write_json(self.candidate.history, {"epochs": self.epochs})
        self.tracker.log_metrics(self.mlflow_run, {k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    def callback(self):
        import tf_keras as keras

        progress = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                progress.begin_epoch(epoch)

            def on_epoch_end(self, epoch, logs=None):
                lr = current_rate(self.model.optimizer)
                progress.end_epoch(epoch, logs or {}, lr, self.params.get("epochs"))

        return Callback()


def images_per_second(epochs: Sequence[dict]) -> float:
    """Images/s over epoch records (`{"seconds", "images_per_second"}`, as in history.json):
    every image trained on, over the time spent on them; 0 for no time."""
    seconds = sum(e["seconds"] for e in epochs)
    return sum(e["images_per_second"] * e["seconds"] for e in epochs) / seconds if seconds else 0.0


def epoch_line(record: dict, epochs: int | None) -> str:
    """The per-epoch progress line: loss, accuracy, throughput and the time left at this pace."""
    number = record["epoch"] + 1
    line = (
        f"epoch {number}/{epochs or '?'}: loss {record.get('loss', float('nan')):.4f}, "
        f"accuracy {record.get('accuracy', float('nan')):.4f}, {record['images_per_second']:,.0f} images/s, "
        f"{record['seconds']:.1f} s"
    )
    if epochs and number < epochs:
        left = round((epochs - number) * record["seconds"])
        return f"{line}; about {f'{left // 60} min {left % 60:02d} s' if left >= 60 else f'{left} s'} left"
    return f"{line}; training done, now saving the model (and uploading it to MLflow)"

"""jobs.train's custom training loop: the same model, batch, loss, optimizer, schedule and
records as Keras `fit`, with fewer collectives per step under MultiWorkerMirroredStrategy.

Per call into the runtime (`tf.function`) it runs `steps_per_execution` steps, each one
`strategy.run` of a step whose only collective is the gradient all-reduce (inside Adam's
`apply_gradients`). The loss is the per-example loss averaged over the global batch
(`tf.nn.compute_average_loss`) plus the model's regularisation losses scaled per replica,
so the summed gradients equal one process's on the global batch. Loss and accuracy are
accumulated per replica in sync-on-read variables and all-reduced once per epoch, where
`fit` reads its metrics and sums its logs across workers (a few small collectives) after
every call.

Backup, as tf-keras's BackupAndRestore does it: after every finished epoch every worker saves a
checkpoint of the model, the optimizer and the epoch (saving is a collective), the chief to
the candidate's backup dir and the others to their scratch dir; on start the chief's is
restored, so a restarted group resumes at the last finished epoch; it is removed once
training ends. The learning rate is the optimizer's schedule at its step counter (restored
with it), and the best validation epoch is kept and loaded at the end (jobs.train.recipe).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("jobs.loop")

# Accumulated per replica over an epoch: training loss × examples, correct, examples; the same
# for validation. All-reduced together, once per epoch.
TOTALS = ("loss", "correct", "count", "val_loss", "val_correct", "val_count")


# `--profile`: the profiler's trace covers this many training steps of the second epoch (the
# first one traces and compiles the step functions, which is not where a step's time goes);
# under Keras fit, its first call (`profiled_calls`).
PROFILE_STEPS = 5


def profiled_calls(steps: int, epochs: int, per_call: int) -> tuple[int, int]:
    """Keras fit's `profile_batch` for `--profile`: fit counts its calls into the runtime (one per
    `steps_per_execution` steps) from 1 over the run, so this is the second epoch's first call
    (the first epoch's when there is one), traced alone."""
    first = len(calls(steps, per_call)) * min(1, epochs - 1) + 1
    return first, first


def calls(steps: int, per_call: int) -> list[int]:
    """The steps of each call into the runtime for an epoch of `steps`: full calls of
    `per_call`, then the rest."""
    full, rest = divmod(steps, per_call)
    return [per_call] * full + ([rest] if rest else [])


def epoch_logs(totals) -> dict[str, float]:
    """The epoch's figures, as `fit` names them, from the all-reduced TOTALS: means over every
    example (`fit` weighs each batch's loss by its size, which is the same)."""
    values = dict(zip(TOTALS, (float(v) for v in totals), strict=True))
    logs = {}
    for prefix in ("", "val_"):
        count = values[f"{prefix}count"]
        if count:
            logs[f"{prefix}loss"] = values[f"{prefix}loss"] / count
            logs[f"{prefix}accuracy"] = values[f"{prefix}correct"] / count
    return logs


@dataclasses.dataclass
class Hooks:
    """What jobs.train does around each epoch (None: nothing)."""

    begin_epoch: Callable[[int], None] | None = None
    end_epoch: Callable[[int, dict, float], None] | None = None


class Loop:
    """The model, Adam and the step functions, built inside the strategy's scope."""

    def __init__(self, strategy, model, learning_rate, transfer: str = "float32"):
        """`learning_rate`: a rate or a Keras schedule over the optimizer's steps."""
        import tensorflow as tf
        import tf_keras as keras

        self.strategy = strategy
        self.model = model
        self.transfer = transfer  # the gradients' type between workers (see `_summed`)
        with strategy.scope():
            self.optimizer = keras.optimizers.Adam(learning_rate)
            self.optimizer.build(model.trainable_variables)  # slots exist before a restore
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.totals = tf.Variable(
                tf.zeros([len(TOTALS)]),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                name="totals",
            )
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=self.optimizer, epoch=self.epoch)
        self.loss = keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE)

    def _add(self, loss, labels, probabilities, offset: int) -> None:
        import tensorflow as tf

        predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        update = tf.scatter_nd([[offset], [offset + 1], [offset + 2]], tf.stack([loss, correct, count]), [len(TOTALS)])
        self.totals.assign_add(update)

    def _train_step(self, images, labels):
        import tensorflow as tf

        global_batch = tf.shape(labels)[0] * self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            probabilities = self.model(images, training=True)
            per_example = self.loss(labels, probabilities)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
        gradients = tape.gradient(loss, self.model.trainable_variables)
        if self.transfer != "bfloat16" or self.strategy.num_replicas_in_sync == 1:
            self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables, strict=True))
        else:
            summed = self._summed(gradients)
            pairs = zip(summed, self.model.trainable_variables, strict=True)
            self.optimizer.apply_gradients(pairs, skip_gradients_aggregation=True)
        # The replica's share of the global mean × the global batch: its examples' loss sum.
        self._add(loss * tf.cast(global_batch, tf.float32), labels, probabilities, 0)

    def _summed(self, gradients):
        """The gradients summed over the replicas, sent as bfloat16 (half the bytes) and added
        in float32: every gradient flattened into one vector, one all-gather (of int32: a pair of
        bfloat16 each, as CPU gathers take no bfloat16), then a sum in the same order on every
        worker, so the mirrored weights stay equal."""
        import tensorflow as tf

        flat = tf.concat([tf.reshape(g, [-1]) for g in gradients], axis=0)
        size = flat.shape.num_elements()
        half = tf.cast(tf.pad(flat, [[0, size % 2]]), tf.bfloat16)
        packed = tf.bitcast(tf.reshape(half, [-1, 2]), tf.int32)
        gathered = tf.distribute.get_replica_context().all_gather(packed[None], axis=0)
        unpacked = tf.reshape(tf.bitcast(gathered, tf.bfloat16), [tf.shape(gathered)[0], -1])[:, :size]
        total = tf.reduce_sum(tf.cast(unpacked, tf.float32), axis=0)
        sizes = [g.shape.num_elements() for g in gradients]
        return [tf.reshape(t, g.shape) for t, g in zip(tf.split(total, sizes), gradients, strict=True)]

    def _eval_step(self, images, labels):
        import tensorflow as tf

        probabilities = self.model(images, training=False)
        loss = tf.reduce_sum(self.loss(labels, probabilities))
        if self.model.losses:
            loss += tf.add_n(self.model.losses) * tf.cast(tf.shape(labels)[0], tf.float32)
        self._add(loss, labels, probabilities, 3)

    def functions(self):
        """The two tf.functions: `steps` training steps from an iterator, one validation pass."""
        import tensorflow as tf

        strategy = self.strategy

        @tf.function
        def train(iterator, steps):
            for _ in tf.range(steps):
                strategy.run(self._train_step, args=next(iterator))

        @tf.function
        def validate(iterator):
            # An iterator made eagerly by the caller: iterating the distributed dataset itself
            # here would build its iterator in graph mode, where tf.data can only read its options
            # the legacy way (and warns so, on every worker).
            for batch in iterator:
                strategy.run(self._eval_step, args=batch)

        return train, validate

    def restore(self, backup: Path) -> int:
        """Restores the newest backup in `backup`, if any; the epoch to start at."""
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(str(backup))
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def fit(self, train_ds, validation_ds, epochs: int, steps: int, steps_per_execution: int, where, best=None) -> dict:
        """Trains from the backup's epoch to `epochs` (or an early stop); `where`: Places;
        `best`: a recipe.Best, whose weights the model has when this returns. Returns `fit`'s
        History.history: per-epoch lists of loss, accuracy, val_loss, val_accuracy, lr."""
        import tensorflow as tf

        from jobs.train.recipe import current_rate

        strategy = self.strategy
        train, validate = self.functions()
        first = self.restore(where.backup)
        iterator = iter(strategy.experimental_distribute_dataset(train_ds))
        validation = strategy.experimental_distribute_dataset(validation_ds)
        manager = tf.train.CheckpointManager(self.checkpoint, str(where.save_to), max_to_keep=1)
        writers = where.writers()
        history: dict[str, list[float]] = {}
        if best is not None:
            best.begin(first)
        for epoch in range(first, epochs):
            if where.hooks.begin_epoch:
                where.hooks.begin_epoch(epoch)
            self.totals.assign(tf.zeros([len(TOTALS)]))
            if where.profile and epoch == min(1, epochs - 1):
                # The traced steps as a call of their own on every worker, so that all make the
                # same calls; the chief (which writes TensorBoard's logs) traces them.
                traced = min(PROFILE_STEPS, steps)
                if where.tensorboard is not None:
                    tf.profiler.experimental.start(str(where.tensorboard / "train"))
                train(iterator, tf.constant(traced))
                if where.tensorboard is not None:
                    tf.profiler.experimental.stop()
                parts = calls(steps - traced, steps_per_execution)
            else:
                parts = calls(steps, steps_per_execution)
            for count in parts:
                train(iterator, tf.constant(count))
            validate(iter(validation))
            logs = epoch_logs(self.totals.read_value().numpy())  # the epoch's one metrics all-reduce
            lr = current_rate(self.optimizer)
            stop = best is not None and best.end_epoch(epoch, logs)  # before the backup: see recipe
            self.epoch.assign(epoch + 1)
            manager.save()  # every worker: a collective
            for key, value in {**logs, "lr": lr}.items():
                history.setdefault(key, []).append(value)
            write_scalars(writers, epoch, logs, lr)
            if where.hooks.end_epoch:
                where.hooks.end_epoch(epoch, logs, lr)
            if stop:
                break
        if best is not None:
            best.restore()
        if where.chief:
            shutil.rmtree(where.backup, ignore_errors=True)
        return history


@dataclasses.dataclass
class Places:
    """Where a worker keeps its backup and TensorBoard logs: the chief's are the candidate's,
    the others' go to its scratch dir."""

    backup: Path  # the chief's backup dir, restored from by every worker
    scratch: Path
    tensorboard: Path | None  # None: no TensorBoard logs (the others)
    chief: bool
    hooks: Hooks = dataclasses.field(default_factory=Hooks)
    profile: bool = False  # the profiler's trace of PROFILE_STEPS steps (the chief's, into tensorboard/train)

    @property
    def save_to(self) -> Path:
        return self.backup if self.chief else self.scratch / "backup"

    def writers(self) -> dict:
        import tensorflow as tf

        if self.tensorboard is None:
            return {}
        return {name: tf.summary.create_file_writer(str(self.tensorboard / name)) for name in ("train", "validation")}


def write_scalars(writers: dict, epoch: int, logs: dict, lr: float) -> None:
    """TensorBoard's scalars as the Keras callback names them: epoch_loss and epoch_accuracy
    under train/ and validation/, epoch_learning_rate under train/."""
    import tensorflow as tf

    if not writers:
        return
    train = {"loss": logs.get("loss"), "accuracy": logs.get("accuracy"), "learning_rate": lr}
    validation = {"loss": logs.get("val_loss"), "accuracy": logs.get("val_accuracy")}
    for name, scalars in (("train", train), ("validation", validation)):
        with writers[name].as_default():
            for key, value in scalars.items():
                if value is not None:
                    tf.summary.scalar(f"epoch_{key}", value, step=epoch)
        writers[name].flush()

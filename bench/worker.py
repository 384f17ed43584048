"""One MultiWorkerMirroredStrategy worker timing the parts of a training step of the cnn.

    python -m bench.worker --out split.json    (in each worker, with TF_CONFIG set)

Started by bench.training in WORKERS processes, as jobs.local starts jobs.train. Every worker
runs the same blocks in the same order (each block starts with an all-reduce, a barrier); the
chief writes the milliseconds per step: forward+backward, the gradient all-reduce (in float32,
and in bfloat16), a custom-loop step, jobs.train's custom loop (jobs.loop, steps_per_execution
10; and with its gradients sent as bfloat16, added in float32), and Keras fit steps with
steps_per_execution 1 and 10.

The collectives' options and the threads are flags, so that each can be measured against
jobs.train's (RING, every gradient in one all-reduce, jobs.cpus's threads):
`--implementation auto`, `--bytes-per-pack N` (gradients in packs of about N bytes, one
all-reduce each; 0 is one pack), `--inter-threads N`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.core.cli import parser, positive_int, run
from jobs.core.files import write_json
from jobs.ingest.data import IMAGE_SHAPE
from jobs.train.models import NUM_CLASSES

PARTS = ("compute", "allreduce", "allreduce_bf16", "custom", "loop", "loop_bf16", "fit", "fit_spe")


@dataclasses.dataclass
class Step:
    """What a timed block needs: the strategy, the model and one fixed batch per worker."""

    strategy: object
    model: object
    optimizer: object
    images: object
    labels: object
    global_batch: int
    seed: int


def build_parser():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the chief writes its timings here (JSON)")
    p.add_argument("--steps", type=positive_int, default=40, help="steps per timed block")
    p.add_argument("--fit-steps", type=positive_int, default=60, help="steps per model.fit block")
    p.add_argument("--repeats", type=positive_int, default=1, help="times each block is measured")
    p.add_argument("--batch", type=positive_int, default=64, help="images per worker and step")
    p.add_argument("--steps-per-execution", type=positive_int, default=10, help="the loop's and the second fit's")
    p.add_argument("--implementation", choices=("ring", "auto"), default="ring", help="the collectives' implementation")
    p.add_argument("--bytes-per-pack", type=int, default=0, help="gradient bytes per all-reduce (0: all in one)")
    p.add_argument("--inter-threads", type=positive_int, help="inter-op threads (default: as jobs.cpus sets them)")
    return p


def setup(batch: int, implementation: str = "ring", bytes_per_pack: int = 0, inter_threads: int | None = None):
    """The strategy first (before any other TF op), configured as jobs.distributed does but
    with the given collective options, then the model, the optimizer, a batch."""
    import tensorflow as tf

    from jobs.core.cpus import configure_threads
    from jobs.train import distributed

    cluster = distributed.current()
    configure_threads()
    if inter_threads:
        tf.config.threading.set_inter_op_parallelism_threads(inter_threads)
    distributed.coordination(cluster, distributed.HEARTBEAT_TIMEOUT, distributed.START_TIMEOUT)
    options = tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=bytes_per_pack,
        implementation=getattr(tf.distribute.experimental.CommunicationImplementation, implementation.upper()),
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from jobs.ingest import data
    from jobs.train import models

    with strategy.scope():
        model = models.build("cnn")
        optimizer = keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(cluster.task_index)
    images = data.to_model_input(rng.integers(0, 256, (batch, *IMAGE_SHAPE), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, NUM_CLASSES, batch), tf.int64)
    step = Step(strategy, model, optimizer, images, labels, batch * cluster.workers, cluster.task_index)
    return cluster, step


def step_functions(step: Step) -> dict[str, Callable]:
    """The three custom blocks as tf.functions: compute alone, all-reduce alone, both + Adam."""
    import tensorflow as tf
    import tf_keras as keras

    model, strategy = step.model, step.strategy
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE)
    zeros = [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables]
    halves = [tf.zeros(v.shape, tf.bfloat16) for v in model.trainable_variables]

    def gradients():
        with tf.GradientTape() as tape:
            per_example = loss_fn(step.labels, model(step.images, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=step.global_batch)
        return tape.gradient(loss, model.trainable_variables)

    def checksum(tensors):
        return tf.add_n([tf.reduce_sum(t) for t in tensors])

    def reduce_zeros(tensors=zeros):
        reduced = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tensors)
        return checksum([tf.cast(t, tf.float32) for t in reduced])

    def apply():
        step.optimizer.apply_gradients(zip(gradients(), model.trainable_variables, strict=True))
        return tf.constant(0.0)

    return {
        "compute": tf.function(lambda: strategy.run(lambda: checksum(gradients()))),
        "allreduce": tf.function(lambda: strategy.run(reduce_zeros)),
        "allreduce_bf16": tf.function(lambda: strategy.run(lambda: reduce_zeros(halves))),
        "custom": tf.function(lambda: strategy.run(apply)),
    }


def timed(step: Step, fn: Callable, barrier: Callable, steps: int) -> float:
    """ms per call of `fn` after two warm-up calls; the barrier lines the workers up first."""
    barrier()
    for _ in range(2):
        fn()
    started = time.perf_counter()
    for _ in range(steps):
        result = fn()
    for value in step.strategy.experimental_local_results(result):
        value.numpy()
    return (time.perf_counter() - started) / steps * 1000


def fit_ms(step: Step, fit_steps: int, steps_per_execution: int) -> float:
    """Per-step time of model.fit as jobs.train compiles it, between the first and the last
    batch end (the iterator's creation, the first call and the epoch end are outside)."""
    import tf_keras as keras

    from jobs.ingest import data

    times: list[float] = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: times.append(time.perf_counter()))
    with step.strategy.scope():
        step.model.compile(
            keras.optimizers.Adam(1e-3),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
        )
    total = max(fit_steps, 3 * steps_per_execution)
    total -= total % steps_per_execution
    split = data.synthetic(2_000, 10, seed=step.seed)["train"]
    pipeline = data.training_pipeline(split, step.global_batch)
    step.model.fit(pipeline, epochs=1, steps_per_epoch=total, callbacks=[clock], verbose=0)
    return (times[-1] - times[0]) / ((len(times) - 1) * steps_per_execution) * 1000


def loop_ms(step: Step, loop, train, iterator, barrier: Callable, calls: int, steps_per_execution: int) -> float:
    """Per-step time of jobs.loop's training function, `steps_per_execution` steps a call."""
    import tensorflow as tf

    count = tf.constant(steps_per_execution)
    barrier()
    train(iterator, count)  # warm-up (the first traces)
    loop.totals.read_value().numpy()
    started = time.perf_counter()
    for _ in range(calls):
        train(iterator, count)
    loop.totals.read_value().numpy()  # waits for the last call; one all-reduce, as once per epoch
    return (time.perf_counter() - started) / (calls * steps_per_execution) * 1000


def measure(step: Step, args) -> dict[str, list[float]]:
    from jobs.ingest import data
    from jobs.train.loop import Loop

    functions = step_functions(step)
    loops = {
        "loop": Loop(step.strategy, step.model, 1e-3),
        "loop_bf16": Loop(step.strategy, step.model, 1e-3, "bfloat16"),
    }
    trains = {name: loop.functions()[0] for name, loop in loops.items()}
    pipeline = data.training_pipeline(data.synthetic(2_000, 10, seed=step.seed)["train"], step.global_batch)
    iterator = iter(step.strategy.experimental_distribute_dataset(pipeline))
    calls = max(2, args.steps // args.steps_per_execution)
    ms: dict[str, list[float]] = {name: [] for name in PARTS}
    for _ in range(args.repeats):
        for name in ("compute", "allreduce", "allreduce_bf16", "custom"):
            ms[name].append(timed(step, functions[name], functions["allreduce"], args.steps))
        for name, loop in loops.items():
            ms[name].append(
                loop_ms(step, loop, trains[name], iterator, functions["allreduce"], calls, args.steps_per_execution)
            )
        ms["fit"].append(fit_ms(step, args.fit_steps, 1))
        ms["fit_spe"].append(fit_ms(step, args.fit_steps, args.steps_per_execution))
    return ms


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cluster, step = setup(args.batch, args.implementation, args.bytes_per_pack, args.inter_threads)
    ms = measure(step, args)
    if cluster.is_chief:
        weights = step.model.trainable_variables
        result = {
            "workers": cluster.workers,
            "batch_per_worker": args.batch,
            "steps_per_execution": args.steps_per_execution,
            "implementation": args.implementation,
            "bytes_per_pack": args.bytes_per_pack,
            "inter_threads": args.inter_threads,
            "ms": ms,
            "gradient_bytes": int(sum(v.shape.num_elements() * v.dtype.size for v in weights)),
        }
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

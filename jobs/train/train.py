"""Train one candidate model, on one process or on several with MultiWorkerMirroredStrategy.

The cluster comes from TF_CONFIG exactly as the training operator injects it (absent for a
single replica). Every worker trains and saves (saving is a collective): the chief to the
candidate's folder, the others to temp folders they delete. The loop is jobs.loop's (several
steps per call, one collective per step: the gradients; `--loop fit` runs Keras fit, the previous
loop, with BackupAndRestore). Progress survives a lost worker through a backup per finished epoch
on the shared volume: a restarted job resumes at the last finished epoch. The chief alone talks
to MLflow.

Reproducible: the seed fixes the initial weights, dropout and the shuffling order
(`tf_keras.utils.set_random_seed`, a seeded tf.data shuffle), and TensorFlow's op determinism
(on by default; `--no-deterministic` turns it off) removes the rest, so the same seed, data,
settings and thread count give the same metrics, on one process or on several. A run resumed
from its backup continues from the restored weights with a fresh shuffle, so it is not
bit-identical to an uninterrupted one.

Each epoch also scores the validation split (carved from the training images by ingest), so
the curves show training and validation for every epoch; the model exported is the epoch with
the best validation accuracy (jobs.train.recipe: the schedule in steps, the rate scaled with the
global batch, the best epoch, `--patience`), logged to MLflow as a LoggedModel of the candidate's
run at that epoch's step, the child of the pipeline run's parent run.

Exit status, for a TFJob with `restartPolicy: ExitCode` and for jobs.local alike: 0 trained;
1 this worker's own error (bad input, a missing dataset, an unexpected exception), not worth a
restart; 2 a usage error; 203 (`distributed.EXIT_PEER_LOST`) a lost peer, aborted collectives or
peers that never started: restart the group, which resumes from the backup.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from jobs.core import tf_errors
from jobs.core.cli import (
    JobError,
    abort,
    add_run_arguments,
    emit,
    non_negative_int,
    parser,
    positive_float,
    positive_int,
)
from jobs.core.cpus import configure_threads, pinned_to
from jobs.core.files import atomic_dir, read_json, write_json
from jobs.core.paths import Candidate, Work
from jobs.ingest import data
from jobs.tracking.tracker import Tracker, dataset_inputs
from jobs.train import distributed, loop, models, recipe, run_info
from jobs.train.progress import Progress, images_per_second

log = logging.getLogger("jobs.train")


@dataclasses.dataclass(frozen=True)
class Config:
    """One training job's settings, as its flags give them (`build_parser` owns the defaults)."""

    work_dir: Path
    run_id: str
    dataset: str
    model: str
    epochs: int
    steps_per_epoch: int | None
    steps_per_execution: int
    loop: str
    gradient_transfer: str
    batch_per_worker: int
    learning_rate: float
    seed: int
    deterministic: bool
    patience: int
    profile: bool
    max_attempts: int
    heartbeat_timeout: float
    start_timeout: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})


def fail(err, what: str) -> NoReturn:
    """Ends the worker on a TensorFlow error with one line: EXIT_PEER_LOST when a peer was lost
    or never came (a TFJob with restartPolicy ExitCode recreates the pod), 1 for its own error.
    At once: with its collectives aborted, TensorFlow's runtime is half torn down, and a normal
    interpreter shutdown can hang or print tracebacks from its threads."""
    code = distributed.EXIT_PEER_LOST if distributed.transient(err) else 1
    abort(f"{what}: {type(err).__name__}: {tf_errors.reason(err, lines=2, limit=300)}", code)


def start_tracking(candidate: Candidate, config: Config, params: dict, datasets: dict):
    """The chief's MLflow run, a child of the pipeline run's parent run, named after the
    candidate; reused when a restarted chief finds it in run.json. `datasets`: the MLflow
    dataset inputs (train, validation) it trains on."""

    tracker = Tracker()
    info = run_info.read(candidate)
    info["attempts"] = info.get("attempts", 0) + 1
    mlflow_run = info.get("mlflow_run_id")
    if not mlflow_run:
        parent = tracker.pipeline_run(Work(config.work_dir), config.run_id, {"dataset": config.dataset})
        mlflow_run = tracker.start_run(
            config.model,
            {"pipeline_run": config.run_id, "role": "candidate", "model": config.model, "dataset": config.dataset},
            parent=parent,
        )
        tracker.log_params(mlflow_run, params)
        tracker.log_inputs(mlflow_run, datasets)
        tracker.log_inputs(parent, datasets)
        info.update(mlflow_run_id=mlflow_run, params=params)
    write_json(candidate.run_info, info)
    tracker.set_tags(mlflow_run, run_info.restart_tags(info))
    return tracker, mlflow_run


def log_model(progress: Progress, candidate: Candidate, config: Config, params: dict, example, epoch: int) -> None:
    """The trained SavedModel (`epoch`'s weights) as the run's LoggedModel (signature, input
    example); its id goes to run.json for evaluate and promote."""
    model_id = progress.tracker.log_model(
        progress.mlflow_run,
        candidate.model,
        name=config.model,
        step=epoch,
        example=example,
        params=params,
        tags={"pipeline_run": config.run_id, "model": config.model, "dataset": config.dataset},
    )
    if model_id:
        write_json(candidate.run_info, {**read_json(candidate.run_info), "model_id": model_id})


def run_params(
    config: Config, cluster: distributed.Cluster, steps: int, threads: int, records: dict, manifest: dict
) -> dict:
    """The training run's parameters, as logged and tracked."""
    split = manifest.get("validation", data.DEFAULT_VALIDATION)
    global_batch = config.batch_per_worker * cluster.workers
    return {
        "model": config.model,
        "dataset": config.dataset,
        "epochs": config.epochs,
        "workers": cluster.workers,
        "batch_per_worker": config.batch_per_worker,
        "global_batch": global_batch,
        "steps_per_epoch": steps,
        "steps_per_execution": config.steps_per_execution,
        "loop": config.loop,
        "gradient_transfer": config.gradient_transfer if config.loop == "custom" else "float32",
        "base_learning_rate": config.learning_rate,
        "peak_learning_rate": recipe.peak_rate(config.learning_rate, global_batch),
        "schedule": f"warm-up {recipe.WARMUP:g} of the steps, cosine to {recipe.FINAL:g} of the peak",
        "total_steps": steps * config.epochs,
        "patience": config.patience,
        "shuffle_buffer": records["train"]["examples"],
        "threads": threads,
        "cpus": pinned_to(),  # this process's (the chief's): jobs.local pins each worker to its own
        "seed": config.seed,
        "deterministic": config.deterministic,
        "train_examples": records["train"]["examples"],
        "validation_examples": records["validation"]["examples"],
        "validation_fraction": split["fraction"],
        "validation_split_seed": split["seed"],
    }


def compiled(config: Config, steps: int, rate):
    """The candidate's model, compiled (inside the strategy's scope); `rate`: the schedule."""
    import tf_keras as keras

    model = models.build(config.model)
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # Several steps per call into the runtime: fewer per-step syncs of the loss and
        # metrics between workers (make bench measured about 15% per step with 10).
        steps_per_execution=min(config.steps_per_execution, steps),
    )
    return model


def clear_leftovers(candidate: Candidate, cluster: distributed.Cluster) -> None:
    """What a killed attempt of this worker left: its scratch dir (and the chief's half-saved model)."""
    leftovers = [f".{cluster.name}-*"] + ([".model.tmp-*", ".model.old-*"] if cluster.is_chief else [])
    for stale in (path for pattern in leftovers for path in candidate.root.glob(pattern)):
        shutil.rmtree(stale, ignore_errors=True)


def results(history: dict, seconds: float, best: recipe.Best) -> dict:
    """The last epoch's training figures (History.history's lists), the best epoch (the
    model's) and its validation figures, and the time spent training."""
    last = {k: float(v[-1]) for k, v in history.items() if v}
    result = {"train_seconds": seconds, "accuracy": last.get("accuracy", 0.0), "loss": last.get("loss", 0.0)}
    result.update({k: last[k] for k in ("val_accuracy", "val_loss") if k in last})
    if best.best_epoch >= 0:
        result.update(best_epoch=best.best_epoch, val_accuracy=best.best_accuracy, val_loss=float(best.loss.numpy()))
    return result


def finish_tracking(
    progress: Progress, candidate: Candidate, config: Config, params: dict, result: dict, example
) -> None:
    """The chief's end: the results in run.json, the run's last metrics, the model, the logs."""
    result["resumed_at_epoch"] = progress.first_epoch or 0
    result["images_per_second"] = images_per_second(progress.epochs)
    info = read_json(candidate.run_info)
    write_json(candidate.run_info, {**info, **result, "epochs_trained": len(progress.epochs)})
    restarts = int(run_info.restart_tags(info)["restarts"])
    figures = {"train_seconds": result["train_seconds"], "restarts": restarts}
    if "best_epoch" in result:
        figures.update(best_epoch=result["best_epoch"], best_val_accuracy=result["val_accuracy"])
    progress.tracker.log_metrics(progress.mlflow_run, figures)
    epoch = result.get("best_epoch", max((e["epoch"] for e in progress.epochs), default=config.epochs - 1))
    log_model(progress, candidate, config, params, example, epoch)
    progress.tracker.log_artifacts(progress.mlflow_run, candidate.tensorboard, "tensorboard")
    progress.tracker.end_run(progress.mlflow_run)


def fit(model, pipelines, config: Config, steps: int, place: tuple, progress, best: recipe.Best) -> dict:
    """The previous loop (`--loop fit`): Keras `fit` with the best epoch kept (before the
    backup, as the custom loop does), BackupAndRestore, TensorBoard's callback (with the
    profiler's trace of the second epoch's first call when `--profile`) and the chief's
    Progress callback. Its History.history."""
    import tf_keras as keras

    candidate, scratch, chief = place
    per_call = min(config.steps_per_execution, steps)  # as `compiled` sets it
    profile = loop.profiled_calls(steps, config.epochs, per_call) if config.profile and chief else None
    callbacks = [
        best.callback(),
        keras.callbacks.BackupAndRestore(str(candidate.backup)),
        keras.callbacks.TensorBoard(
            str(candidate.tensorboard if chief else scratch / "tb"), profile_batch=profile or 0
        ),
    ]
    if progress is not None:
        callbacks.append(progress.callback())
    training, validation = pipelines
    history = model.fit(
        training,
        validation_data=validation,
        epochs=config.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=2 if progress is None else 0,  # the chief logs its own line per epoch
    )
    return history.history


def custom(strategy, model, pipelines, config: Config, steps: int, place: tuple, progress, best, rate):
    """The custom loop (`--loop custom`, jobs.loop): the same schedule, best epoch, backup and records."""
    candidate, scratch, chief = place
    hooks = loop.Hooks()
    if progress is not None:
        end = progress.end_epoch
        hooks = loop.Hooks(progress.begin_epoch, lambda epoch, logs, lr: end(epoch, logs, lr, config.epochs))
    places = loop.Places(
        candidate.backup, scratch, candidate.tensorboard if chief else None, chief, hooks, config.profile
    )
    return loop.Loop(strategy, model, rate, config.gradient_transfer).fit(
        *pipelines,
        epochs=config.epochs,
        steps=steps,
        steps_per_execution=config.steps_per_execution,
        where=places,
        best=best,
    )


def start(config: Config) -> tuple[distributed.Cluster, Candidate, Path, int, object]:
    """What comes before any training: the dataset is there, this worker's start is counted,
    the thread pools are sized, and the strategy is formed (before any other TensorFlow op)."""
    cluster = distributed.current()
    work = Work(config.work_dir)
    candidate = work.candidate(config.run_id, config.model)
    dataset_dir = work.dataset(config.dataset)
    if not (dataset_dir / "manifest.json").exists():
        raise JobError(f"no dataset at {dataset_dir}: run the ingest step first")
    attempt = run_info.count_attempt(candidate, cluster.name, config.max_attempts)
    if attempt > 1:
        log.info("%s: attempt %d of at most %d", cluster.name, attempt, config.max_attempts)

    threads = configure_threads()
    import tensorflow as tf

    try:
        strategy = distributed.strategy(cluster, config.heartbeat_timeout, config.start_timeout)
    except tf.errors.OpError as err:
        fail(err, f"{cluster.name} could not form the cluster of {cluster.workers} within {config.start_timeout:g} s")
    return cluster, candidate, dataset_dir, threads, strategy


def fit_and_save(
    config: Config, strategy, model, pipelines, steps: int, place: tuple, progress, rate
) -> tuple[dict, float, recipe.Best]:
    """Trains with the chosen loop, then every worker saves the best epoch's model (only the
    chief's copy is kept, renamed into place whole, and then its best checkpoint removed); a
    TensorFlow error ends the worker (`fail`). `place`: the candidate, this worker's scratch
    dir and whether it is the chief; `rate`: the schedule."""
    import tensorflow as tf

    from jobs.train import export  # imports TensorFlow: not before the arguments are checked

    candidate, scratch, chief = place
    best = recipe.Best(model, candidate.best, candidate.best if chief else scratch / "best", chief, config.patience)
    try:
        started = time.monotonic()
        if config.loop == "fit":
            history = fit(model, pipelines, config, steps, place, progress, best)
        else:
            history = custom(strategy, model, pipelines, config, steps, place, progress, best, rate)
        seconds = time.monotonic() - started
        if chief:
            with atomic_dir(candidate.model) as tmp:
                export.save(model, tmp)
            shutil.rmtree(candidate.best, ignore_errors=True)  # every worker has saved: none reads it now
        else:
            export.save(model, scratch / "model")
    except tf.errors.OpError as err:
        shutil.rmtree(scratch, ignore_errors=True)
        if progress is not None:
            progress.tracker.end_run(progress.mlflow_run, "FAILED")
        fail(err, f"training failed on {distributed.current().name}")
    return history, seconds, best


def train(config: Config) -> dict:
    """One candidate trained on this worker's share: its results (the chief also tracks them)."""
    cluster, candidate, dataset_dir, threads, strategy = start(config)
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(config.seed)  # initial weights, dropout, shuffling
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    splits, records = data.model_splits(dataset_dir, ("train", "validation"))
    train_split, validation = splits["train"], splits["validation"]
    manifest = data.read_manifest(dataset_dir)
    global_batch = config.batch_per_worker * cluster.workers
    steps = config.steps_per_epoch or max(1, len(train_split.labels) // global_batch)
    params = run_params(config, cluster, steps, threads, records, manifest)
    log.info("%s on %s of %d: %s", config.model, cluster.name, cluster.workers, params)
    candidate.root.mkdir(parents=True, exist_ok=True)

    rate = recipe.schedule(config.learning_rate, global_batch, steps * config.epochs)
    with strategy.scope():
        model = compiled(config, steps, rate) if config.loop == "fit" else models.build(config.model)
    clear_leftovers(candidate, cluster)
    scratch = Path(tempfile.mkdtemp(prefix=f".{cluster.name}-", dir=candidate.root))
    progress = None
    node = cluster.name if cluster.distributed else None  # system metrics per worker
    monitor = None
    try:
        if cluster.is_chief:
            datasets = dataset_inputs(config.dataset, dataset_dir, records, manifest["source"])
            tracker, mlflow_run = start_tracking(candidate, config, params, datasets)
            progress = Progress(candidate, tracker, mlflow_run, steps * global_batch)
            monitor = tracker.system_metrics(lambda: mlflow_run, node)
        else:
            monitor = Tracker().system_metrics(lambda: run_info.read(candidate).get("mlflow_run_id"), node)
        pipelines = (
            data.training_pipeline(train_split, global_batch, seed=config.seed),
            data.evaluation_pipeline(validation, global_batch),
        )
        place = (candidate, scratch, cluster.is_chief)
        history, seconds, best = fit_and_save(config, strategy, model, pipelines, steps, place, progress, rate)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if monitor is not None:
            monitor.stop()
    run_info.reset_attempts(candidate, cluster.name)  # succeeded: the next training starts at one

    result = results(history, seconds, best)
    if progress is not None:
        finish_tracking(progress, candidate, config, params, result, validation.images[:5])
    return result


def build_parser() -> argparse.ArgumentParser:
    """The step's flags: their defaults are the pipeline's (jobs.steps reads them)."""
    p = parser(__doc__.splitlines()[0])
    add_run_arguments(p)
    p.add_argument("--model", required=True, choices=models.NAMES, help="the candidate to train")
    p.add_argument("--epochs", type=positive_int, default=5, help="passes over the training split")
    p.add_argument("--steps-per-epoch", type=positive_int, help="default: one pass over the training split")
    p.add_argument(
        "--steps-per-execution",
        type=positive_int,
        default=10,
        help="training steps run per call into the TensorFlow runtime",
    )
    p.add_argument(
        "--loop",
        choices=("custom", "fit"),
        default="custom",
        help="the training loop: custom (jobs.loop) or Keras fit, the previous one",
    )
    p.add_argument(
        "--gradient-transfer",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the custom loop's gradients between workers: bfloat16 sends half the bytes, added in float32",
    )
    p.add_argument("--batch-per-worker", type=positive_int, default=64, help="global batch = this x workers")
    p.add_argument(
        "--learning-rate",
        type=positive_float,
        default=1e-3,
        help=f"Adam's peak rate for a global batch of {recipe.REFERENCE_BATCH}, times sqrt(global batch / "
        f"{recipe.REFERENCE_BATCH}); warm-up over the first {recipe.WARMUP * 100:g}%% of the run's steps, "
        f"then a cosine decay to {recipe.FINAL * 100:g}%% of it (docs/training.md)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, dropout and shuffling")
    p.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TensorFlow's op determinism: the same seed gives the same metrics",
    )
    p.add_argument(
        "--patience",
        type=non_negative_int,
        default=0,
        help="stop after this many epochs without a better validation accuracy (0: train every epoch); "
        "the model is the best epoch's either way",
    )
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the chief writes TensorFlow's profiler trace of a few steps of the second epoch to TensorBoard",
    )
    p.add_argument(
        "--max-attempts",
        type=positive_int,
        default=4,
        help="starts of one worker for one candidate (counted on the work volume) before it gives up with exit 1",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=positive_float,
        default=distributed.HEARTBEAT_TIMEOUT,
        help="seconds without a heartbeat before a worker counts as lost and the others stop",
    )
    p.add_argument(
        "--start-timeout",
        type=positive_float,
        default=distributed.START_TIMEOUT,
        help="seconds the workers wait for each other to start",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    result = train(Config.from_args(args))
    emit(**result)
    return 0

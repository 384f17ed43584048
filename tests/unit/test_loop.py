"""jobs.loop, jobs.train's custom training loop: its pure parts, the same figures as Keras fit
from the same seed, and a resume from its backup after a crash. In one process (the default
strategy); two workers are tests/pipeline/test_train.py's and faults/test_training.py's."""

from __future__ import annotations

import pytest

from jobs.train import loop, recipe

STEPS, BATCH, EPOCHS = 6, 32, 4


def rate():
    """The run's schedule, as jobs.train builds it."""
    return recipe.schedule(1e-3, BATCH, EPOCHS * STEPS)


def last_step_rates(epochs) -> list[float]:
    """The schedule's rate at each epoch's last step."""
    return [float(rate()((epoch + 1) * STEPS - 1)) for epoch in epochs]


def test_calls_split_an_epoch_into_full_calls_and_the_rest():
    assert loop.calls(75, 10) == [10] * 7 + [5]
    assert loop.calls(20, 10) == [10, 10]
    assert loop.calls(3, 10) == [3]
    assert sum(loop.calls(937, 7)) == 937


def test_epoch_logs_are_means_over_every_example_named_as_fit_names_them():
    logs = loop.epoch_logs([12.0, 90.0, 120.0, 3.0, 27.0, 30.0])
    assert logs == pytest.approx({"loss": 0.1, "accuracy": 0.75, "val_loss": 0.1, "val_accuracy": 0.9})
    assert loop.epoch_logs([1.0, 1.0, 2.0, 0.0, 0.0, 0.0]) == pytest.approx({"loss": 0.5, "accuracy": 0.5})


def fresh(small_data):
    """New pipelines: each iterator of one reshuffles differently, so each run gets its own."""
    from jobs.ingest import data

    return (
        data.training_pipeline(small_data["train"], BATCH, seed=0),
        data.evaluation_pipeline(small_data["test"], BATCH),
    )


def seeded(small_data, seed: int = 0):
    """As jobs.train starts: the seed, the model, then the pipelines."""
    import tf_keras as keras

    from jobs.train import models

    keras.utils.set_random_seed(seed)
    model = models.build("cnn")
    return model, fresh(small_data)


def places(tmp_path, hooks=None, profile=False) -> loop.Places:
    return loop.Places(tmp_path / "backup", tmp_path / "scratch", tmp_path / "tb", True, hooks or loop.Hooks(), profile)


def fit_custom(model, pipelines, tmp_path, hooks=None, best=None, profile=False) -> tuple[loop.Loop, dict]:
    import tensorflow as tf

    custom = loop.Loop(tf.distribute.get_strategy(), model, rate())
    where = places(tmp_path, hooks, profile)
    history = custom.fit(*pipelines, epochs=EPOCHS, steps=STEPS, steps_per_execution=4, where=where, best=best)
    return custom, history


def test_custom_loop_trains_as_fit_does(small_data, tmp_path):
    """The same seed, data, model, loss, optimizer and schedule: the same per-epoch figures
    as Keras fit, and TensorBoard's scalars under the names the Keras callback writes."""
    import tf_keras as keras

    model, pipelines = seeded(small_data)
    custom_best = best(model, tmp_path / "custom")
    _, custom = fit_custom(model, pipelines, tmp_path, best=custom_best)
    custom_weights = model.get_weights()
    model, pipelines = seeded(small_data)
    fit_best = best(model, tmp_path / "fit")
    model.compile(keras.optimizers.Adam(rate()), "sparse_categorical_crossentropy", metrics=["accuracy"])
    fit = model.fit(
        pipelines[0],
        validation_data=pipelines[1],
        epochs=EPOCHS,
        steps_per_epoch=STEPS,
        callbacks=[fit_best.callback()],
        verbose=0,
    ).history
    assert custom_best.best_epoch == fit_best.best_epoch >= 0, "the same best epoch in both loops"
    for mine, keras_own in zip(custom_weights, model.get_weights(), strict=True):
        assert mine == pytest.approx(keras_own, rel=1e-3, abs=1e-5), "both models are the best epoch's"
    assert custom["lr"] == pytest.approx(last_step_rates(range(EPOCHS)))
    assert custom["lr"][-1] == pytest.approx(1e-3 * recipe.peak_rate(1.0, BATCH) * recipe.FINAL)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert custom[key] == pytest.approx(fit[key], rel=1e-4, abs=1e-6), key
    assert not (tmp_path / "backup").exists(), "the backup is removed once training ends"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected = {
        "train": {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"},
        "validation": {"epoch_loss", "epoch_accuracy"},
    }
    for name, tags in expected.items():
        events = EventAccumulator(str(tmp_path / "tb" / name))
        events.Reload()
        assert set(events.Tags()["tensors"]) == tags, name
        assert [e.step for e in events.Tensors("epoch_loss")] == list(range(EPOCHS))


def test_profile_traces_steps_of_the_second_epoch_and_keeps_the_epoch_s_steps(small_data, tmp_path):
    """`--profile`: TensorFlow's profiler trace in TensorBoard's train/ logs, where its Profile
    tab reads it; the epoch still runs its STEPS steps (the traced ones as a call of their own)."""
    model, pipelines = seeded(small_data)
    custom, _ = fit_custom(model, pipelines, tmp_path, profile=True)
    assert list((tmp_path / "tb" / "train" / "plugins" / "profile").rglob("*.xplane.pb")), "no trace written"
    assert int(custom.optimizer.iterations.numpy()) == EPOCHS * STEPS
    # Keras fit counts its calls: 6 steps of 4 per call are 2 calls an epoch, so the second epoch's first is call 3.
    assert loop.profiled_calls(STEPS, EPOCHS, 4) == (3, 3)
    assert loop.profiled_calls(STEPS, 1, 4) == (1, 1)


class Crash(Exception):
    pass


def best(model, where) -> recipe.Best:
    return recipe.Best(model, where / "best", where / "best", chief=True)


def test_a_restarted_loop_resumes_after_the_last_finished_epoch(small_data, tmp_path):
    """A crash after epoch 2's backup: a new loop (fresh weights from another seed) restores the
    backup, weights and Adam's state, and trains epochs 3 and 4 only."""
    import numpy as np

    model, pipelines = seeded(small_data)
    saved = []
    per_epoch: dict[int, list] = {}  # each epoch's weights and validation accuracy
    accuracy: dict[int, float] = {}

    def record(epoch, logs):
        per_epoch[epoch] = [w.copy() for w in model.get_weights()]
        accuracy[epoch] = logs["val_accuracy"]

    def end(epoch, logs, lr):
        record(epoch, logs)
        if epoch == 1:
            saved.extend(w.copy() for w in model.get_weights())
            raise Crash

    with pytest.raises(Crash):
        fit_custom(model, pipelines, tmp_path, loop.Hooks(end_epoch=end), best=best(model, tmp_path))
    assert (tmp_path / "backup" / "checkpoint").exists()

    import tensorflow as tf

    model, pipelines = seeded(small_data, seed=7)
    restored = loop.Loop(tf.distribute.get_strategy(), model, rate())
    assert restored.restore(tmp_path / "backup") == 2
    for weights, kept in zip(model.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(weights, kept)
    assert int(restored.optimizer.iterations.numpy()) == 2 * STEPS, "Adam's state is restored too"

    began: list[int] = []
    hooks = loop.Hooks(began.append, lambda epoch, logs, lr: record(epoch, logs))
    resumed = best(model, tmp_path)
    _, history = fit_custom(model, pipelines, tmp_path, hooks, best=resumed)
    assert began == [2, 3]
    assert history["lr"] == pytest.approx(last_step_rates([2, 3])), "the schedule goes on from the restored step"
    assert not (tmp_path / "backup").exists()
    # The model is the best validation epoch's of all four, before the crash or after it.
    assert resumed.best_accuracy == pytest.approx(max(accuracy.values()))
    assert accuracy[resumed.best_epoch] == pytest.approx(max(accuracy.values()))
    for weights, kept in zip(model.get_weights(), per_epoch[resumed.best_epoch], strict=True):
        np.testing.assert_array_equal(weights, kept)


def test_gradients_sent_as_bfloat16_are_rounded_once_and_keep_their_shapes():
    """`--gradient-transfer bfloat16`: the gradients travel as bfloat16 (half the bytes), packed
    in pairs, and come back float32 in their own shapes; an odd count is padded and trimmed."""
    import numpy as np
    import tensorflow as tf

    from jobs.train import models

    strategy = tf.distribute.get_strategy()
    custom = loop.Loop(strategy, models.build("cnn"), 1e-3, "bfloat16")
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(size=shape), tf.float32) for shape in ((3, 3), (5,), (3, 1))]
    summed = tf.function(lambda: strategy.run(custom._summed, args=(gradients,)))()
    for got, sent in zip(summed, gradients, strict=True):
        assert got.dtype == tf.float32 and got.shape == sent.shape
        np.testing.assert_array_equal(got.numpy(), tf.cast(tf.cast(sent, tf.bfloat16), tf.float32).numpy())
        np.testing.assert_allclose(got.numpy(), sent.numpy(), rtol=2**-8)

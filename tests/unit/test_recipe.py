"""jobs.train.recipe: the learning rate per step for one and two workers, and the best
validation epoch kept (its weights, also across a restart, and early stopping), in one process.
The loops' use of both is tests/unit/test_loop.py's; two workers are tests/pipeline/test_train.py's."""

from __future__ import annotations

import math

import pytest

from jobs.train import recipe


@pytest.mark.parametrize("workers", [1, 2])
def test_the_schedule_warms_up_then_decays_over_the_run_s_steps(workers):
    """1,000 steps of a global batch of 64 per worker: a warm-up over the first 50 steps from a
    tenth of the peak, the peak at step 50, half of it (plus FINAL's share) halfway through the
    decay, FINAL of it at the last step; the peak √2 × the base for two workers."""
    schedule = recipe.schedule(1e-3, 64 * workers, 1000)
    peak = 1e-3 * math.sqrt(workers)
    assert recipe.peak_rate(1e-3, 64 * workers) == pytest.approx(peak)
    at = {step: float(schedule(step)) for step in (0, 25, 50, 50 + 949 // 2, 999, 5000)}
    assert at[0] == pytest.approx(0.1 * peak)
    assert at[25] == pytest.approx(0.55 * peak)
    assert at[50] == pytest.approx(peak)
    assert at[50 + 949 // 2] == pytest.approx(peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 474 / 949))))
    assert at[999] == pytest.approx(0.01 * peak)
    assert at[5000] == pytest.approx(0.01 * peak), "after the last step the rate stays at its end"


def test_the_schedule_has_the_same_shape_for_a_small_dataset_and_a_large_one():
    """In fractions of the run: 80 steps (a small dataset, 10 an epoch) and 8,000 give the same
    rates at the same fraction of the run."""
    small, large = recipe.schedule(1e-3, 64, 80), recipe.schedule(1e-3, 64, 8000)
    for fraction in (0.05, 0.25, 0.5, 0.75):
        assert float(small(round(fraction * 79))) == pytest.approx(float(large(round(fraction * 7999))), rel=0.05)


def test_a_run_of_one_step_takes_the_peak():
    assert float(recipe.schedule(1e-3, 64, 1)(0)) == pytest.approx(1e-3)


def test_an_epoch_is_better_by_validation_accuracy_then_loss():
    assert recipe.better({"val_accuracy": 0.8, "val_loss": 0.9}, 0.7, 0.1)
    assert recipe.better({"val_accuracy": 0.8, "val_loss": 0.4}, 0.8, 0.5)
    assert not recipe.better({"val_accuracy": 0.8, "val_loss": 0.6}, 0.8, 0.5)
    assert not recipe.better({"val_accuracy": 0.7, "val_loss": 0.1}, 0.8, 0.5)
    assert recipe.better({"accuracy": 0.6, "loss": 1.0}, -1.0, math.inf), "no validation split: the training figures"


def tiny_model(value: float):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    set_to(model, value)
    return model


def set_to(model, value: float) -> None:
    model.set_weights([w * 0 + value for w in model.get_weights()])


def weight(model) -> float:
    return float(model.get_weights()[0][0, 0])


def test_the_best_epoch_s_weights_are_the_model_also_after_a_restart(tmp_path):
    """Validation accuracy 0.5, 0.8, 0.7 over epochs 0-2, a crash, then 0.75 at epoch 3 after a
    restart: the model ends with epoch 1's weights, read from the chief's checkpoint by a new
    Best that knows which epoch was best from it alone."""
    model = tiny_model(0.0)
    best = recipe.Best(model, tmp_path / "best", tmp_path / "best", chief=True)
    best.begin(0)
    for epoch, accuracy in enumerate((0.5, 0.8, 0.7)):
        set_to(model, epoch + 1.0)  # "training": the weights of epoch N are N + 1
        assert not best.end_epoch(epoch, {"val_accuracy": accuracy, "val_loss": 1.0})

    model = tiny_model(-1.0)  # a restarted worker: other weights (the backup's would be epoch 2's)
    resumed = recipe.Best(model, tmp_path / "best", tmp_path / "best", chief=True)
    resumed.begin(3)
    assert (resumed.best_epoch, resumed.best_accuracy) == (1, pytest.approx(0.8))
    set_to(model, 4.0)
    resumed.end_epoch(3, {"val_accuracy": 0.75, "val_loss": 0.5})
    resumed.restore()
    assert weight(model) == 2.0, "epoch 1's weights"


def test_a_fresh_run_forgets_an_earlier_run_s_best(tmp_path):
    model = tiny_model(1.0)
    best = recipe.Best(model, tmp_path / "best", tmp_path / "best", chief=True)
    best.begin(0)
    best.end_epoch(0, {"val_accuracy": 0.9, "val_loss": 0.1})
    again = recipe.Best(model, tmp_path / "best", tmp_path / "best", chief=True)
    again.begin(0)
    assert again.best_epoch == -1 and not (tmp_path / "best").exists()
    set_to(model, 5.0)
    again.end_epoch(0, {"val_accuracy": 0.3, "val_loss": 2.0})
    set_to(model, 6.0)
    again.restore()
    assert weight(model) == 5.0


def test_a_worker_that_is_not_the_chief_saves_to_its_own_dir_and_loads_its_own_copy(tmp_path):
    """The chief may still be replacing its best checkpoint (and deleting the one before) when
    another worker restores: a worker reads the copy it saved itself, equal to the chief's."""
    chief_model, other_model = tiny_model(1.0), tiny_model(1.0)
    chief = recipe.Best(chief_model, tmp_path / "best", tmp_path / "best", chief=True)
    other = recipe.Best(other_model, tmp_path / "best", tmp_path / "scratch" / "best", chief=False)
    for best in (chief, other):
        best.begin(0)
        best.end_epoch(0, {"val_accuracy": 0.9, "val_loss": 0.1})
    assert list((tmp_path / "scratch" / "best").glob("ckpt-*")), "the other worker saved (a collective)"
    for path in (tmp_path / "best").glob("ckpt-*"):
        path.unlink()  # the chief's folder mid-replacement: the file the state names is gone
    set_to(other_model, 7.0)
    other.restore()
    assert weight(other_model) == 1.0


def test_a_restarted_worker_without_a_copy_loads_the_chief_s(tmp_path):
    """A worker restarted after its run's best epoch saved nothing in this process: it reads the
    chief's copy, which nothing writes then (a newer best would have been saved by every worker)."""
    chief_model = tiny_model(3.0)
    chief = recipe.Best(chief_model, tmp_path / "best", tmp_path / "best", chief=True)
    chief.begin(0)
    chief.end_epoch(0, {"val_accuracy": 0.9, "val_loss": 0.1})
    restarted = recipe.Best(tiny_model(7.0), tmp_path / "best", tmp_path / "scratch" / "best", chief=False)
    restarted.begin(1)
    restarted.restore()
    assert weight(restarted.model) == 3.0


@pytest.mark.parametrize(("patience", "stops_at"), [(0, None), (2, 3), (1, 2)])
def test_early_stopping_after_patience_epochs_without_a_better_one(tmp_path, patience, stops_at):
    best = recipe.Best(tiny_model(0.0), tmp_path / "best", tmp_path / "best", chief=True, patience=patience)
    best.begin(0)
    stopped = None
    for epoch, accuracy in enumerate((0.5, 0.8, 0.7, 0.79, 0.9)):
        if best.end_epoch(epoch, {"val_accuracy": accuracy, "val_loss": 1.0}):
            stopped = epoch
            break
    assert stopped == stops_at

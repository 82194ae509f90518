"""One training run: target detection, evaluation spacing, statuses, early stopping, schedules."""
import math

import numpy as np
import pytest

from minigrad.training.schedules import BatchSchedule, LRSchedule, scaled_lr
from minigrad.training.train import TRACE_COLUMNS, Budget, build_model, next_eval_step, train


def model_for(ds, seed=0):
    return build_model(ds, [16], seed=seed)


def test_trace_has_every_column_and_reaches_the_target(blobs):
    trace = train(model_for(blobs), blobs, 16, 0.1, budget=Budget(epochs=20), target=0.1)
    assert trace.status == "COMPLETE"
    assert set(TRACE_COLUMNS) <= set(trace.columns)
    n = len(trace.columns["step"])
    assert all(len(v) == n for v in trace.columns.values())
    steps = trace.columns["step"]
    # the target was first met at the recorded step, and not at the evaluation before it
    i = list(steps).index(trace.steps_to_target)
    assert trace.columns["val_error"][i] <= 0.1 and (i == 0 or trace.columns["val_error"][i - 1] > 0.1)
    assert trace.examples_to_target == trace.steps_to_target * 16
    assert trace.columns["step"][-1] == trace.steps_to_target  # stopped at the target
    assert np.all(np.diff(trace.columns["compute_s"]) >= 0) and trace.columns["eval_s"][-1] > 0
    assert np.all(np.isfinite(trace.columns["grad_norm"]))


def test_evaluation_points_are_within_four_percent():
    step, points = 0, []
    for _ in range(400):
        step = next_eval_step(step, 1.04)
        points.append(step)
    points = np.array(points)
    gaps = np.diff(points)
    assert list(points[:25]) == list(range(1, 26))  # every step while 4% is less than one step
    # the target was first met somewhere in (p_k, p_k+1]: reporting p_k+1 overstates it by less than 5%
    assert np.all((gaps - 1) / (points[:-1] + 1) <= 0.05)
    assert np.all(gaps[-100:] / points[-101:-1] <= 0.0401)
    assert points[-1] > 1e6  # a million steps take a few hundred evaluations


def test_budget_exhausted_without_target_is_incomplete(blobs):
    trace = train(model_for(blobs), blobs, 8, 1e-4, budget=Budget(steps=50), target=0.01)
    assert trace.status == "INCOMPLETE" and trace.steps_to_target is None
    assert trace.columns["step"][-1] == 50


def test_divergence_ends_the_run_cleanly(blobs):
    trace = train(model_for(blobs), blobs, 8, 1e4, budget=Budget(epochs=5), target=0.1)
    assert trace.status == "DIVERGED"
    assert trace.columns["step"][-1] < 5 * 600 / 8


def test_no_target_runs_the_whole_budget(blobs):
    trace = train(model_for(blobs), blobs, 32, 0.05, budget=Budget(examples=3200))
    assert trace.status == "COMPLETE" and trace.columns["examples"][-1] >= 3200
    assert math.isfinite(trace.attrs["test_error"])


def test_early_stopping_keeps_the_best_parameters(blobs):
    model = model_for(blobs)
    trace = train(model, blobs, 16, 0.1, budget=Budget(epochs=30), patience=5)
    best = trace.attrs["best_val_error"]
    assert trace.columns["step"][-1] < 30 * 600 / 16  # stopped early
    assert model.evaluate(blobs.X_val, blobs.y_val)[1] == pytest.approx(best)
    assert best == pytest.approx(trace.columns["val_error"].min())


def test_same_seed_same_trace(blobs):
    a = train(model_for(blobs), blobs, 16, 0.1, budget=Budget(steps=100), seed=3)
    b = train(model_for(blobs), blobs, 16, 0.1, budget=Budget(steps=100), seed=3)
    c = train(model_for(blobs), blobs, 16, 0.1, budget=Budget(steps=100), seed=4)
    np.testing.assert_array_equal(a.columns["val_loss"], b.columns["val_loss"])
    assert not np.array_equal(a.columns["val_loss"], c.columns["val_loss"])


def test_learning_rate_schedules():
    step = LRSchedule(1.0, "step", milestones=[2, 4], gamma=0.5)
    assert [step(e) for e in (0, 1.9, 2, 4.5)] == [1.0, 1.0, 0.5, 0.25]
    cos = LRSchedule(2.0, "cosine", total_epochs=10)
    assert cos(0) == pytest.approx(2.0) and cos(5) == pytest.approx(1.0) and cos(10) == pytest.approx(0.0, abs=1e-12)
    warm = LRSchedule(1.0, warmup_epochs=5)
    assert warm(2.5) == pytest.approx(0.5) and warm(6) == 1.0
    assert scaled_lr(0.1, 256, 32, "linear") == pytest.approx(0.8)
    assert scaled_lr(0.1, 128, 32, "sqrt") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="cosine"):
        LRSchedule(1.0, "cosine")


def test_batch_size_schedule_grows_the_batch_in_training(blobs):
    schedule = BatchSchedule(8, milestones=[1, 2], factor=4)
    trace = train(model_for(blobs), blobs, 8, 0.05, budget=Budget(epochs=3), batch_schedule=schedule)
    sizes = trace.columns["batch_size"]
    assert sizes[0] == 8 and sizes[-1] == 128 and set(sizes) <= {8, 32, 128}
    # fewer steps than a fixed batch of 8 would need for the same 3 epochs
    assert trace.columns["step"][-1] < 3 * 600 / 8


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch size"),
    (dict(batch_size=601), "batch size"),
    (dict(target=1.5), "target"),
])
def test_bad_settings(blobs, kwargs, match):
    settings = dict(batch_size=8, lr=0.1, budget=Budget(steps=5))
    settings.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(model_for(blobs), blobs, **settings)


def test_budget_needs_exactly_one_limit():
    with pytest.raises(ValueError, match="exactly one"):
        Budget(steps=5, epochs=1)
    with pytest.raises(ValueError, match="> 0"):
        Budget(epochs=0)

"""The compiled training loop: samplers keep the reference samplers' contract (tests/reference_samplers.py), the chunk equals step-by-step training,
schedules change at the right steps, NaN stops, keep-last batches, determinism, and rewinding."""
import math

import numpy as np
import pytest

from minigrad import data
from minigrad.engine import loop as L
from minigrad.engine import steps as S
from minigrad.engine.model import MLP
from minigrad.engine.optim import make_optimizer
from minigrad.training.schedules import BatchSchedule, LRSchedule
from minigrad.training.train import Budget
from tests import reference_samplers


def labels(n=103, k=4, seed=0):
    # unequal classes and n prime: no batch size divides it
    return np.random.default_rng(seed).choice(k, size=n, p=[0.4, 0.3, 0.2, 0.1]).astype(np.int64)


@pytest.mark.parametrize("kind", ["shuffle", "replacement", "stratified"])
@pytest.mark.parametrize("drop_last", [True, False])
def test_epoch_count_follows_the_python_samplers(kind, drop_last):
    # the same sequence of batch sizes gives the same batch lengths and the same epoch after every batch
    y = labels()
    ours = L.SamplerState(kind, y, seed=1, drop_last=drop_last)
    theirs = reference_samplers.make_sampler(kind, y, 10, seed=1, drop_last=drop_last)
    sizes = np.random.default_rng(2).choice([1, 7, 10, 32], size=60)
    for B in sizes:
        a, b = ours.next_batch(B), theirs.next_batch(B)
        assert len(a) == len(b)
        assert ours.epoch == pytest.approx(theirs.epoch, abs=1e-12)


@pytest.mark.parametrize("drop_last", [True, False])
def test_shuffle_sees_every_example_once_per_epoch(drop_last):
    y = labels()
    n, B = len(y), 10
    s = L.SamplerState("shuffle", y, seed=3, drop_last=drop_last)
    orders = []
    for _ in range(3):  # three epochs
        batches = [s.next_batch(B) for _ in range(n // B)]
        if not drop_last:
            batches.append(s.next_batch(B))
            assert len(batches[-1]) == n % B  # the kept remainder
        seen = np.concatenate(batches)
        assert len(np.unique(seen)) == len(seen) == (n if not drop_last else n - n % B)
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
    assert s.epoch == pytest.approx(3.0 if not drop_last else 2 + (n - n % B) / n)


def test_stratified_class_counts_equal_the_python_sampler():
    y = labels()
    ours = L.SamplerState("stratified", y, seed=0, drop_last=True)
    theirs = reference_samplers.StratifiedSampler(y, 10, seed=0, drop_last=True)
    for B in np.random.default_rng(4).choice([1, 3, 10, 25], size=80):
        expected = theirs.class_counts(B)
        theirs.next_batch(B)
        got = np.bincount(y[ours.next_batch(B)], minlength=4)
        np.testing.assert_array_equal(got, expected)


def test_stratified_queues_cycle_through_each_class():
    y = labels()
    s = L.SamplerState("stratified", y, seed=5, drop_last=True)
    drawn = np.concatenate([s.next_batch(len(y)) for _ in range(2)])
    for c in range(4):
        members = np.flatnonzero(y == c)
        first = drawn[np.isin(drawn, members)][:len(members)]
        assert sorted(first) == sorted(members)  # every member once before any repeats


def test_replacement_draws_uniformly():
    y = labels(n=50)
    s = L.SamplerState("replacement", y, seed=0, drop_last=True)
    counts = np.bincount(np.concatenate([s.next_batch(50) for _ in range(400)]), minlength=50)
    assert counts.min() > 0.8 * 400 and counts.max() < 1.2 * 400  # 400 expected each, sd 20


def test_seeds_give_different_orders():
    y = labels()
    a = L.SamplerState("shuffle", y, seed=0, drop_last=True).next_batch(50)
    b = L.SamplerState("shuffle", y, seed=1, drop_last=True).next_batch(50)
    assert not np.array_equal(a, b)


# ----------------------------------------------------------------------------------------------- the stepper
@pytest.fixture(scope="module")
def blobs():
    r = np.random.default_rng(0)
    centres = r.standard_normal((3, 6)) * 3

    def split(n):
        y = r.integers(0, 3, n)
        return (centres[y] + r.standard_normal((n, 6))).astype(np.float32), y.astype(np.int64)

    (Xt, yt), (Xv, yv), (Xs, ys) = split(203), split(100), split(50)
    return data.Dataset(name="blobs", X_train=Xt, y_train=yt, X_val=Xv, y_val=yv, X_test=Xs, y_test=ys,
                        n_classes=3, info={})


def stepper(ds, optimizer="sgd", lr=LRSchedule(0.05), batch=BatchSchedule(8), budget=Budget(steps=10**6),
            sampler="shuffle", drop_last=True, seed=0, dtype=np.float32, backend="blas", sizes=(6, 16, 3)):
    model = MLP(list(sizes), dtype=dtype, backend=backend, seed=0)
    opt = make_optimizer(optimizer, lr(0.0))
    batch.max_batch_size = len(ds.y_train)
    state = L.SamplerState(sampler, ds.y_train, seed=seed, drop_last=drop_last)
    return L.Stepper(model, ds.X_train.astype(dtype), ds.y_train, opt, state, lr, batch, budget)


def reference_run(ds, steps, optimizer="sgd", lr=LRSchedule(0.05), batch=BatchSchedule(8), sampler="shuffle",
                  drop_last=True, seed=0, dtype=np.float32, backend="blas", sizes=(6, 16, 3)):
    # the same run one step at a time from Python: compiled draw, np.take, MLP.train_step_trusted
    model = MLP(list(sizes), dtype=dtype, backend=backend, seed=0)
    opt = make_optimizer(optimizer, lr(0.0))
    state = L.SamplerState(sampler, ds.y_train, seed=seed, drop_last=drop_last)
    X = ds.X_train.astype(dtype)
    lrs, rows = [], []
    for _ in range(steps):
        epoch = state.epoch
        opt.lr = lr(epoch)
        idx = state.next_batch(batch(epoch))
        model.train_step_trusted(np.take(X, idx, axis=0), np.take(ds.y_train, idx), opt)
        lrs.append(opt.lr)
        rows.append(len(idx))
    return model, lrs, rows


WIDE = (6, 96, 3)  # a first layer wider than B = 64: kernels_large folds its update too (fold_first)


@pytest.mark.parametrize("optimizer,backend,B,sizes", [
    ("sgd", "blas", 1, (6, 16, 3)), ("sgd", "blas", 8, (6, 16, 3)), ("sgd", "blas", 64, (6, 16, 3)),
    ("sgd", "blas", 64, WIDE), ("sgd", "blas-unfused", 64, (6, 16, 3)), ("adam", "blas", 8, (6, 16, 3)),
    ("momentum", "loops", 8, (6, 16, 3)), ("sgd", "per-example", 4, (6, 16, 3))])
@pytest.mark.parametrize("sampler", ["shuffle", "stratified"])
def test_chunk_equals_step_by_step(blobs, optimizer, backend, B, sizes, sampler):
    # every path of MLP.train_step_trusted (fused SGD small and large, small kernels, BLAS, optimizers with state,
    # per-example)
    s = stepper(blobs, optimizer, batch=BatchSchedule(B), sampler=sampler, backend=backend, sizes=sizes)
    assert s.run(60) == L.REACHED and s.step == 60
    model, _, rows = reference_run(blobs, 60, optimizer, batch=BatchSchedule(B), sampler=sampler, backend=backend,
                                   sizes=sizes)
    assert s.model.step_path(B, s.opt) == model.step_path(B, make_optimizer(optimizer, 0.05))
    np.testing.assert_array_equal(s.model.params, model.params)
    assert s.examples == sum(rows)
    # negative control: another seed's order gives other parameters
    other = stepper(blobs, optimizer, batch=BatchSchedule(B), sampler=sampler, backend=backend, seed=1, sizes=sizes)
    other.run(60)
    assert not np.array_equal(other.model.params, model.params)


@pytest.mark.parametrize("B", [1, 8])
def test_chunk_equals_step_by_step_on_the_fused_small_step(blobs, monkeypatch, B):
    # kernels_small's fused step (the loop's run_fused_serial, or the parallel step on two threads), which the
    # thresholds give only to larger models on two threads: forced here
    monkeypatch.setattr(S, "FUSED_SGD_MAX", {1: 24, 2: 40})
    monkeypatch.setattr(S, "FUSED_SGD_MIN_PARAMS", 0)
    s = stepper(blobs, batch=BatchSchedule(B))
    assert s.model.step_path(B, s.opt).startswith("fused-sgd")
    assert s.run(60) == L.REACHED
    model, _, _ = reference_run(blobs, 60, batch=BatchSchedule(B))
    np.testing.assert_array_equal(s.model.params, model.params)
    np.testing.assert_allclose(s.model.grads, model.grads, rtol=1e-5, atol=1e-7)


def test_step_path_thresholds():
    # plain SGD: the fused small step only for models of FUSED_SGD_MIN_PARAMS parameters or more, up to
    # FUSED_SGD_MAX rows on two or more threads; kernels_large's step otherwise; other optimizers leave both
    small, large = MLP([32, 64, 64, 10]), MLP([784, 256, 256, 10])
    assert small.n_params < S.FUSED_SGD_MIN_PARAMS <= large.n_params
    for B in (1, 8, 64):
        assert small.step_path(B, "sgd") == "blas-fused-sgd"
    T = S.fused_workers()
    assert large.step_path(1, "sgd") == ("fused-sgd-parallel" if T > 1 else "blas-fused-sgd")
    assert large.step_path(S.fused_sgd_max(2) + 1, "sgd") == "blas-fused-sgd"
    assert small.step_path(1, "adam") == "blas-small" and small.step_path(64, "adam") == "blas"


def test_schedules_change_at_the_right_steps(blobs):
    lr = LRSchedule(0.05, "step", milestones=[1, 2.5], gamma=0.5, warmup_epochs=0.5)
    batch = BatchSchedule(4, milestones=[1, 2], factor=4)
    s = stepper(blobs, lr=lr, batch=batch, drop_last=False)
    lrs, rows = [], []
    while s.step < 120:
        before = s.examples
        s.run(s.step + 1)
        lrs.append(s.lr)
        rows.append(s.examples - before)
    model, ref_lrs, ref_rows = reference_run(blobs, 120, lr=lr, batch=batch, drop_last=False)
    assert rows == ref_rows and lrs == ref_lrs
    assert {4, 16, 64} <= set(rows) and 203 % 4 in rows  # the schedule's sizes and a kept remainder
    np.testing.assert_array_equal(s.model.params, model.params)
    # and in one call: the chunk changes workspaces where the batch size changes
    t = stepper(blobs, lr=lr, batch=batch, drop_last=False)
    assert t.run(120) == L.REACHED
    np.testing.assert_array_equal(t.model.params, model.params)


def test_cosine_schedule_in_the_loop_equals_the_python_one():
    lr = LRSchedule(0.3, "cosine", total_epochs=3.0, warmup_epochs=0.4)
    params, milestones = L.lr_schedule_arrays(lr)
    for epoch in np.linspace(0, 3.5, 57):
        assert L.lr_at(params, milestones, epoch) == pytest.approx(lr(epoch), rel=1e-15, abs=1e-300)


def test_nan_stops_at_the_first_nonfinite_loss(blobs):
    s = stepper(blobs, lr=LRSchedule(1e6), batch=BatchSchedule(8))
    assert s.run(10**5) == L.NONFINITE
    assert not math.isfinite(s.last_loss) and s.step < 50
    # the reference loop meets its first non-finite loss at the same step
    model = MLP([6, 16, 3], seed=0)
    opt = make_optimizer("sgd", 1e6)
    state = L.SamplerState("shuffle", blobs.y_train, seed=0, drop_last=True)
    for step in range(50):
        idx = state.next_batch(8)
        try:
            model.train_step_trusted(np.take(blobs.X_train, idx, axis=0), np.take(blobs.y_train, idx), opt)
        except FloatingPointError:
            break
    assert step == s.step


def test_budget_ends_the_chunk(blobs):
    s = stepper(blobs, budget=Budget(examples=100), batch=BatchSchedule(8))
    assert s.run(10**6) == L.BUDGET_DONE and s.examples == 104
    e = stepper(blobs, budget=Budget(epochs=2), batch=BatchSchedule(8), drop_last=False)
    assert e.run(10**6) == L.BUDGET_DONE and e.examples == 2 * 203 and e.epoch == pytest.approx(2.0)


def test_snapshot_and_restore_replay_bitwise(blobs):
    s = stepper(blobs, optimizer="momentum", batch=BatchSchedule(8))
    s.run(30)
    snap = s.snapshot()
    s.run(70)
    first = s.model.params.copy()
    s.restore(snap)
    assert s.step == 30
    s.run(70)
    np.testing.assert_array_equal(s.model.params, first)


def test_evaluator_equals_model_evaluate(blobs):
    model = MLP([6, 16, 3], seed=2)
    for rows in (7, 100, 512):
        ev = L.Evaluator(model, blobs.X_val, blobs.y_val, rows=rows)
        loss, error = ev()
        ref_loss, ref_error = model.evaluate(blobs.X_val, blobs.y_val, batch_size=rows)
        assert loss == pytest.approx(ref_loss, rel=1e-12) and error == ref_error


@pytest.mark.parametrize("B,sizes", [(4, (6, 16, 3)), (64, (6, 16, 3)), (64, WIDE)])
def test_fused_step_leaves_the_gradient_readable(blobs, B, sizes):
    # after a chunk of fused SGD steps (small or large), model.grads is the last batch's gradient, as after
    # MLP.train_step_trusted and as the unfused step computes it
    s = stepper(blobs, batch=BatchSchedule(B), sizes=sizes)
    s.run(5)
    model, _, _ = reference_run(blobs, 5, batch=BatchSchedule(B), sizes=sizes)
    np.testing.assert_allclose(s.model.grads, model.grads, rtol=1e-5, atol=1e-7)
    plain, _, _ = reference_run(blobs, 5, batch=BatchSchedule(B), sizes=sizes, backend="blas-unfused")
    np.testing.assert_allclose(s.model.grads, plain.grads, rtol=1e-4, atol=1e-6)
    assert np.abs(s.model.grads).max() > 1e-3  # a gradient, not zeros


def test_large_step_meeting_nan_leaves_the_plain_gradient(blobs):
    # kernels_large.sgd_step returns before its backward pass at a NaN/Inf loss; the loop then forms the gradient
    # through the plain path, as MLP.train_step_trusted does
    s = stepper(blobs, lr=LRSchedule(1e6), batch=BatchSchedule(64))
    assert s.model.step_path(64, s.opt) == "blas-fused-sgd"
    assert s.run(10**5) == L.NONFINITE
    model = MLP([6, 16, 3], seed=0)
    opt = make_optimizer("sgd", 1e6)
    state = L.SamplerState("shuffle", blobs.y_train, seed=0, drop_last=True)
    for _ in range(s.step + 1):
        idx = state.next_batch(64)
        try:
            model.train_step_trusted(np.take(blobs.X_train, idx, axis=0), np.take(blobs.y_train, idx), opt)
        except FloatingPointError:
            break
    np.testing.assert_array_equal(s.model.grads, model.grads)  # NaNs in the same places, the rest equal

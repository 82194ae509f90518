"""Gradient noise scale: the estimators against brute-force per-example gradients, E|G_B|^2 = |G|^2 + tr(Sigma)/B,
the eval hook, and the noise-against-batch-size core."""
import math

import numpy as np
import pytest

from minigrad.instruments import noise
from minigrad.engine.model import MLP
from minigrad.training.train import Budget, build_model, train


def population(n=40, seed=0):
    """A small float64 problem and its brute-force per-example gradients g_i (n, P)."""
    r = np.random.default_rng(seed)
    model = MLP([4, 8, 3], activation="tanh", dtype=np.float64, seed=seed)
    X, y = r.standard_normal((n, 4)), r.integers(0, 3, n)
    g = []
    for i in range(n):
        model.loss_and_grad(X[i:i + 1].copy(), y[i:i + 1].copy())
        g.append(model.grads.copy())
    g = np.array(g)
    G = g.mean(0)
    return model, X, y, g, float(G @ G), float(((g - G) ** 2).sum(1).mean())


def test_batch_estimators_match_brute_force_per_example_gradients():
    model, X, y, g, _, _ = population()
    idx = np.array([3, 7, 7, 12, 30, 1])  # with a repeat: draws with replacement
    B = len(idx)
    g2, tr = noise.sample_estimates(model, X, y, idx)
    gb = g[idx]
    mean_sq, bar_sq = (gb ** 2).sum(1).mean(), gb.mean(0) @ gb.mean(0)
    assert g2 == pytest.approx((B * bar_sq - mean_sq) / (B - 1), rel=1e-10)
    assert tr == pytest.approx(B / (B - 1) * (mean_sq - bar_sq), rel=1e-10)
    assert tr == pytest.approx(((gb - gb.mean(0)) ** 2).sum(1).sum() / (B - 1), rel=1e-10)  # the sample variance


def test_full_gradient_stats_are_the_population_values():
    model, X, y, g, g2, tr = population()
    stats = noise.full_gradient_stats(model, X, y, chunk=7)  # chunks that do not divide n
    assert stats["g2"] == pytest.approx(g2, rel=1e-10)
    assert stats["trsigma"] == pytest.approx(tr, rel=1e-10)
    assert stats["b_simple"] == pytest.approx(tr / g2, rel=1e-10)


def test_estimators_are_unbiased_and_the_naive_one_is_not():
    model, X, y, _, g2, tr = population()
    rng = np.random.default_rng(1)
    B, draws = 4, 3000
    est, naive = [], []
    for _ in range(draws):
        idx = rng.integers(0, len(y), B)
        est.append(noise.sample_estimates(model, X, y, idx))
        naive.append(float(model.grads @ model.grads))  # |G_B|^2 as an estimate of |G|^2
    est, naive = np.array(est), np.array(naive)
    se = est.std(0, ddof=1) / math.sqrt(draws)
    assert abs(est[:, 0].mean() - g2) < 4 * se[0]
    assert abs(est[:, 1].mean() - tr) < 4 * se[1]
    # negative control: without the correction, |G_B|^2 overestimates |G|^2 by tr(Sigma)/B, far outside the error
    assert naive.mean() - g2 > 10 * naive.std(ddof=1) / math.sqrt(draws)
    assert naive.mean() - g2 == pytest.approx(tr / B, rel=0.1)


def mean_sqnorm_by_batch(model, X, y, sizes, draws, replace, seed=2):
    rng = np.random.default_rng(seed)
    means, ses = [], []
    for B in sizes:
        sq = np.array([g @ g for g in noise.minibatch_gradients(model, X, y, B, draws, rng, replace=replace)])
        means.append(sq.mean())
        ses.append(sq.std(ddof=1) / math.sqrt(draws))
    return np.array(means), np.array(ses)


def test_mean_sqnorm_is_linear_in_inverse_batch_size_with_slope_trace_sigma():
    model, X, y, _, g2, tr = population()
    sizes = [1, 2, 4, 8, 16, 32]
    means, ses = mean_sqnorm_by_batch(model, X, y, sizes, draws=3000, replace=True)
    intercept, slope, _ = noise.fit_inverse_b(sizes, means, ses)
    assert slope == pytest.approx(tr, rel=0.05)
    assert intercept == pytest.approx(g2, rel=0.15)
    exact = g2 + tr / np.array(sizes)
    assert np.all(np.abs(means - exact) < 4 * ses)


def test_without_replacement_the_finite_population_form_holds_and_the_plain_one_fails():
    # negative control for the check above: batches drawn without replacement from n = 40 examples obey
    # |G|^2 - tr/(n-1) + tr n / ((n-1) B), and the check rejects the plain |G|^2 + tr/B
    model, X, y, _, g2, tr = population()
    n, sizes = len(y), np.array([1, 2, 4, 8, 16, 32])
    means, ses = mean_sqnorm_by_batch(model, X, y, sizes, draws=3000, replace=False)
    finite = g2 - tr / (n - 1) + tr * n / ((n - 1) * sizes)
    plain = g2 + tr / sizes
    assert np.all(np.abs(means - finite) < 4 * ses)
    assert np.any(np.abs(means - plain) > 4 * ses)


def test_two_batch_estimator_inverts_the_expectation():
    g2, tr = 0.7, 30.0
    small, big = g2 + tr / 8, g2 + tr / 256
    assert noise.two_batch_estimates(small, 8, big, 256) == pytest.approx((g2, tr), rel=1e-12)
    with pytest.raises(ValueError):
        noise.two_batch_estimates(small, 256, big, 8)


def test_small_pieces():
    with pytest.raises(ValueError, match="at least 2"):
        noise.batch_estimates(np.ones(1), 1.0)
    assert math.isnan(noise.b_simple(-0.1, 5.0)) and noise.b_simple(2.0, 5.0) == 2.5
    ema = noise.EMA(0.5)
    assert [ema.update(x) for x in (4.0, 0.0, 2.0)] == [4.0, 2.0, 2.0]
    with pytest.raises(ValueError):
        noise.EMA(0.0)


def test_gns_hook_records_b_simple_and_leaves_the_run_unchanged(blobs):
    plain = train(build_model(blobs, [16]), blobs, 32, 0.2, budget=Budget(epochs=6))
    hook = noise.GNSHook(batch_size=64, batches=2, seed=0)
    hooked = train(build_model(blobs, [16]), blobs, 32, 0.2, budget=Budget(epochs=6), eval_hooks=(hook,))
    assert np.array_equal(plain.params, hooked.params)  # bit for bit: its own random stream, grads put back
    for name in ("val_error", "train_loss", "grad_norm"):
        assert np.array_equal(plain.columns[name], hooked.columns[name])
    cols = hooked.columns
    n = len(cols["step"])
    assert all(len(cols[k]) == n for k in ("gns_g2", "gns_trsigma", "gns_b_simple", "gns_s"))
    assert np.all(np.isfinite(cols["gns_trsigma"])) and np.all(cols["gns_trsigma"] > 0)
    assert np.all(cols["gns_s"] >= 0)
    # the smoothed ratio is the ratio of the moving averages of the two columns
    g2, tr = noise.EMA(0.25), noise.EMA(0.25)
    expected = [noise.b_simple(g2.update(a), tr.update(b)) for a, b in zip(cols["gns_g2"], cols["gns_trsigma"])]
    assert np.allclose(cols["gns_b_simple"], expected, equal_nan=True)
    # and it grows as the loss falls (item 4 on a toy problem)
    assert np.nanmedian(cols["gns_b_simple"][-5:]) > 3 * np.nanmedian(cols["gns_b_simple"][:5])


def test_two_batch_hook_is_unbiased_and_pools_over_its_window(blobs):
    from types import SimpleNamespace

    model, X, y, _, g2, tr = population(n=60, seed=4)
    data = SimpleNamespace(X_train=X, y_train=y)
    hook = noise.TwoBatchHook(small=4, big=32, window=3, seed=1)
    before = model.grads.copy()
    rows = [hook(model, data, step) for step in range(400)]
    assert np.array_equal(model.grads, before)  # the training loop's gradient is put back
    g2s, trs = np.array([r["tb_g2"] for r in rows]), np.array([r["tb_trsigma"] for r in rows])
    # drawn with replacement, both are unbiased: their means agree with the exact values within 4 standard errors
    for est, exact in ((g2s, g2), (trs, tr)):
        assert abs(est.mean() - exact) < 4 * est.std(ddof=1) / math.sqrt(len(est))
    # the ratio of the window's means, not the mean of ratios
    assert rows[-1]["tb_b_simple"] == pytest.approx(trs[-3:].mean() / g2s[-3:].mean())
    # negative control: the batch sizes swapped in the estimator give a clearly biased tr(Sigma)
    swapped = [noise.two_batch_estimates(1.0, 4, 2.0, 32)[1], noise.two_batch_estimates(2.0, 4, 1.0, 32)[1]]
    assert swapped[0] < 0 < swapped[1]
    with pytest.raises(ValueError, match="small < big"):
        noise.TwoBatchHook(small=32, big=32)


def test_noise_vs_batch_follows_the_finite_population_prediction():
    model, X, y, _, g2, tr = population(n=300, seed=3)
    out = noise.noise_vs_batch(model, X, y, [1, 4, 16, 64, 256], draws=50, min_examples=2000, time_steps=False)
    assert out["g2"] == pytest.approx(g2, rel=1e-9) and out["trsigma"] == pytest.approx(tr, rel=1e-9)
    assert np.all(np.abs(out["spread_rms"] / out["predicted_rms"] - 1) < 0.1)
    assert list(out["draws"]) == [2000, 500, 125, 50, 50]
    slope = np.polyfit(np.log(out["batch_size"][:3]), np.log(out["spread_rms"][:3]), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.05)
    assert np.isnan(out["step_time_s"]).all()
    with pytest.raises(ValueError, match="between 1 and"):
        noise.noise_vs_batch(model, X, y, [1, 301])


def test_step_time_is_measured_on_a_copy():
    model, X, y, _, _, _ = population()
    before = model.params.copy()
    assert noise.step_time(model, X, y, 32, min_time=0.0, min_repeats=3) > 0
    assert np.array_equal(model.params, before)


def test_b_simple_near_target_pools_the_estimates_where_the_target_was_reached():
    def trace(errors, g2, tr):
        return {"val_error": np.array(errors), "gns_g2": np.array(g2), "gns_trsigma": np.array(tr),
                "gns_b_simple": np.array(tr) / np.array(g2)}

    runs = [trace([0.5, 0.3, 0.2, 0.1], [4.0, 2.0, 1.0, 0.5], [10.0, 10.0, 10.0, 10.0]),
            trace([0.5, 0.2, 0.2], [1.0, 3.0, 9.0], [20.0, 30.0, 90.0]),
            trace([0.5, 0.4], [1.0, 1.0], [1.0, 1.0]),  # never reaches 0.2: left out
            {"val_error": np.array([0.1])}]  # no GNS columns: left out
    out = noise.b_simple_near_target(runs, 0.2, window=2)
    # run 1 reaches 0.2 at index 2 (rows 1, 2), run 2 at index 1 (rows 0, 1)
    assert out["b_simple"] == pytest.approx(np.mean([10, 10, 20, 30]) / np.mean([2.0, 1.0, 1.0, 3.0]))
    assert out["trials"] == 2 and out["median_smoothed"] == pytest.approx(np.median([10.0, 10.0]))
    assert noise.b_simple_near_target(runs[2:], 0.2) == {}


def test_full_noise_hook_measures_at_checkpoints_and_at_the_target(blobs):
    steps = 6 * (600 // 32)
    hook = noise.FullNoiseHook(count=5, total_steps=steps, target=0.2)
    checkpoints = list(hook.checkpoints)
    assert checkpoints[0] == 1 and checkpoints[-1] == steps
    model = build_model(blobs, [16])
    trace = train(model, blobs, 32, 0.2, budget=Budget(epochs=6), eval_hooks=(hook,))
    cols = trace.columns
    measured = np.isfinite(cols["full_b_simple"])
    hit = int(np.flatnonzero(cols["val_error"] <= 0.2)[0])
    assert cols["at_target"].sum() == 1 and cols["at_target"][hit] == 1 and measured[hit]
    # measured exactly at the first evaluation at or after each checkpoint (several checkpoints can fall between two
    # evaluations), and at the target
    expected = {int(np.flatnonzero(cols["step"] >= c)[0]) for c in checkpoints} | {hit}
    assert set(np.flatnonzero(measured).tolist()) == expected and len(expected) >= 3
    last = noise.full_gradient_stats(model, blobs.X_train, blobs.y_train)  # the run ends at the last checkpoint
    assert cols["full_b_simple"][-1] == pytest.approx(last["b_simple"], rel=1e-5)
    assert np.allclose(cols["full_b_simple"][measured], cols["full_trsigma"][measured] / cols["full_g2"][measured])


def test_hook_warm_up_touches_neither_the_model_nor_the_hook(blobs):
    # train() calls warm_up before the first step so that the hooks' compile time is not counted as evaluation time
    for make in (lambda: noise.GNSHook(batch_size=64, seed=1), lambda: noise.TwoBatchHook(small=8, big=64, seed=1),
                 lambda: noise.FullNoiseHook(4, 100)):
        model = build_model(blobs, [16])
        params, grads = model.params.copy(), model.grads.copy()
        warmed, cold = make(), make()
        warmed.warm_up(model, blobs)
        assert np.array_equal(model.params, params) and np.array_equal(model.grads, grads)
        a, b = warmed(model, blobs, 1), cold(model, blobs, 1)
        a.pop("gns_s", None), b.pop("gns_s", None)
        assert a.keys() == b.keys()
        np.testing.assert_array_equal(list(a.values()), list(b.values()))  # the same random draws


# ------------------------------------------------------------------------------ a rate that is blowing up
def _blown_up_model(scale):
    import minigrad

    model = minigrad.MLP([20, 64, 10], dtype=np.float32, seed=0)
    model.params[...] *= scale  # gradients near float32's limit, as at a learning rate that is diverging
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((300, 20)).astype(np.float32), rng.integers(0, 10, 300)


def test_noise_estimates_at_a_blowing_up_rate_raise_no_warning():
    import warnings

    from minigrad.instruments import noise

    model, X, y = _blown_up_model(1e18)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g2, tr = noise.sample_estimates(model, X, y, np.arange(256))  # float64 norms: no overflow
        assert np.isfinite(g2) and np.isfinite(tr)
        assert all(np.isnan(v) for v in noise.batch_estimates(np.array([1.0, np.inf, 2.0]), 1.0))  # no estimate
        assert all(np.isnan(v) for v in noise.batch_estimates(np.array([1e308, 1e308]), 1.0))


def test_negative_control_float32_norms_of_that_model_overflow():
    import warnings

    model, X, y = _blown_up_model(1e18)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="overflow"):
            model.loss_and_grad(X[:256], y[:256], np.empty(256, np.float32))


@pytest.mark.slow
def test_a_study_with_a_diverging_rate_raises_no_numeric_warning(tmp_path):
    """The whole study in this process, reference rates that diverge among them, numeric warnings as errors: every
    phase, the noise hook and the statistics turn a blow-up into NaN or DIVERGED, never a warning. (The overflow
    this guards against is reproduced, with its negative control, by the two tests above.)"""
    import warnings

    import minigrad
    from minigrad.study.executors import InlineExecutor

    config = minigrad.make_config(data_options={"n_train": 1200, "n_val": 400, "n_test": 400}, hidden=[16],
                                  batch_sizes=[8, 256], reference_lrs=[0.1, 30.0, 1e4], seeds=1, lr_points=3,
                                  max_widen=1, reference_epochs=10.0, equal_epochs=1.0, adaptive_budget=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        study = minigrad.run_study(config, tmp_path / "s.h5", executor=InlineExecutor(), echo=lambda *a: None,
                                   measure_throughput=False)
        answer = study.answer()
    statuses = {r.attrs["status"] for r in study.file.runs.values()}
    assert "DIVERGED" in statuses and answer.sentence
